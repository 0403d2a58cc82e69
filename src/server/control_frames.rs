//! A per-connection limit on the frames an HTTP/2 client sends without asking for anything (issue 11).
//! h2 answers every PING and SETTINGS, and reads every WINDOW_UPDATE, PRIORITY, RST_STREAM naming a closed
//! stream, unknown frame type and empty DATA frame, with no bound on how many: one connection sending
//! them as fast as it can keeps a core busy and slows every other connection down.
//!
//! [`ControlFrameLimit`] sits between hyper and the plaintext of an HTTP/2 connection (after TLS). It reads
//! the frame headers of what passes each way as the bytes go by, without keeping a payload, and counts the
//! client's control frames in a token bucket. Past it, it writes a GOAWAY with `ENHANCE_YOUR_CALM` between
//! two of hyper's frames and fails the read, so hyper closes the connection.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Control frames a client may send at once. A legitimate client sends a handful when it connects (its
/// SETTINGS and WINDOW_UPDATE, the ACK of hookgate's SETTINGS), then one now and again (a cancelled
/// request's RST_STREAM); a browser-like client adds a few PRIORITY frames. 400 is far above any of them,
/// and a flood passes it within one read (400 PINGs are 6.8 kB).
const BURST: f64 = 400.0;
/// Control frames a second a client earns back, up to [`BURST`]. A legitimate client's steady rate is
/// near zero (the frames hookgate's own PINGs, SETTINGS and DATA call for are given back, see
/// [`Frame::answers_due`]), and a flood sends thousands of frames in the time this earns one hundred.
const PER_SECOND: f64 = 100.0;

/// The client's connection preface (RFC 9113, section 3.4), which comes before its first frame.
const PREFACE_BYTES: usize = 24;
/// Every frame starts with a 9-byte header: length (24 bits), type, flags, stream id (31 bits).
const HEADER_BYTES: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
/// The flag of a DATA frame that ends its stream.
const END_STREAM: u8 = 0x1;
/// The flag of a PING or SETTINGS frame that answers one (the same bit as END_STREAM).
const ACK: u8 = 0x1;
/// The flag of a DATA frame whose first payload byte is a pad length.
const PADDED: u8 = 0x8;
/// GOAWAY's error code for a peer that may be generating excessive load (RFC 9113, section 7).
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// An HTTP/2 connection's stream with the client's control frames rate-limited: past [`BURST`] and
/// [`PER_SECOND`], a GOAWAY `ENHANCE_YOUR_CALM` is written when hyper's output is between two frames, and
/// every later read or write fails.
///
/// When hyper's output is in the middle of a frame, the connection is closed without a GOAWAY rather than
/// waiting: hyper (h2) writes until all it has is written or the socket is full, so a partly written frame
/// means the client has left hookgate's output unread. It would not read a GOAWAY either, and closing a
/// socket with unread input resets it, dropping whatever was still queued; waiting would only hold the
/// connection.
pub struct ControlFrameLimit<T> {
    inner: T,
    /// The client's frames (after its preface).
    from_client: FrameReader,
    /// hyper's frames: where they begin and end, so that a GOAWAY goes between two of them.
    to_client: FrameReader,
    bucket: TokenBucket,
    /// The highest stream id of a client HEADERS frame passed to hyper: the GOAWAY's last stream id.
    last_stream_id: u32,
    /// Set once past the limit: the connection is over.
    calmed: bool,
}

impl<T> ControlFrameLimit<T> {
    /// `inner` is an HTTP/2 connection's stream from its first byte (the client's preface).
    pub fn new(inner: T) -> ControlFrameLimit<T> {
        ControlFrameLimit {
            inner,
            from_client: FrameReader::after(PREFACE_BYTES),
            to_client: FrameReader::after(0),
            bucket: TokenBucket::full(Instant::now()),
            last_stream_id: 0,
            calmed: false,
        }
    }

    /// Notes frames hyper wrote: those the client is due to answer give their tokens back.
    fn sent(&mut self, bytes: &[u8]) {
        let mut due = 0;
        self.to_client.feed(bytes, |frame| due += frame.answers_due());
        self.bucket.give_back(due);
    }
}

impl<T: AsyncWrite + Unpin> ControlFrameLimit<T> {
    /// Past the limit: counts it, and writes the GOAWAY when hyper's output is between two frames and the
    /// socket takes it at once.
    fn calm(&mut self, cx: &mut Context<'_>) {
        self.calmed = true;
        metrics::counter!(crate::metrics::HTTP2_CONTROL_FLOODS_TOTAL).increment(1);
        let sent = self.to_client.at_frame_boundary() && self.write_goaway(cx);
        tracing::debug!(goaway_sent = sent, "HTTP/2 control frames past the limit: ENHANCE_YOUR_CALM");
    }

    /// Writes the GOAWAY and flushes it; false when the socket does not take it all at once.
    fn write_goaway(&mut self, cx: &mut Context<'_>) -> bool {
        let frame = goaway(self.last_stream_id);
        let mut written = 0;
        while written < frame.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &frame[written..]) {
                Poll::Ready(Ok(n)) if n > 0 => written += n,
                _ => return false,
            }
        }
        matches!(Pin::new(&mut self.inner).poll_flush(cx), Poll::Ready(Ok(())))
    }
}

/// The error every read and write returns once past the limit; hyper ends the connection on it.
fn calmed() -> std::io::Error {
    std::io::Error::other("HTTP/2 control frames past the limit (GOAWAY ENHANCE_YOUR_CALM)")
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ControlFrameLimit<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.calmed {
            return Poll::Ready(Err(calmed()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let (mut control_frames, mut last_stream_id) = (0, this.last_stream_id);
        this.from_client.feed(&buf.filled()[before..], |frame| {
            control_frames += u32::from(frame.is_control());
            if frame.kind == HEADERS {
                last_stream_id = last_stream_id.max(frame.stream_id);
            }
        });
        if control_frames == 0 || this.bucket.take(control_frames, Instant::now()) {
            this.last_stream_id = last_stream_id;
            return Poll::Ready(Ok(()));
        }
        // hyper never sees what was read with the frame past the limit.
        buf.set_filled(before);
        this.calm(cx);
        Poll::Ready(Err(calmed()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ControlFrameLimit<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.calmed {
            return Poll::Ready(Err(calmed()));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, data))?;
        this.sent(&data[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.calmed {
            return Poll::Ready(Err(calmed()));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for buf in bufs {
            let taken = left.min(buf.len());
            this.sent(&buf[..taken]);
            left -= taken;
        }
        Poll::Ready(Ok(n))
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A GOAWAY frame (RFC 9113, section 6.8) on stream 0 with `last_stream_id` and `ENHANCE_YOUR_CALM`.
fn goaway(last_stream_id: u32) -> [u8; HEADER_BYTES + 8] {
    let mut frame = [0u8; HEADER_BYTES + 8];
    frame[..3].copy_from_slice(&[0, 0, 8]);
    frame[3] = GOAWAY;
    frame[9..13].copy_from_slice(&(last_stream_id & 0x7fff_ffff).to_be_bytes());
    frame[13..].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    frame
}

/// One frame's header, and the pad length of a padded DATA frame.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Frame {
    length: u32,
    kind: u8,
    flags: u8,
    stream_id: u32,
    /// A padded DATA frame's pad length (its first payload byte).
    pad_length: Option<u8>,
}

impl Frame {
    fn parse(header: &[u8; HEADER_BYTES]) -> Frame {
        Frame {
            length: u32::from_be_bytes([0, header[0], header[1], header[2]]),
            kind: header[3],
            flags: header[4],
            stream_id: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
            pad_length: None,
        }
    }

    /// A DATA frame with PADDED set has its pad length as its first payload byte.
    fn pad_length_follows(&self) -> bool {
        self.kind == DATA && self.flags & PADDED != 0 && self.length > 0
    }

    /// Whether this frame, from a client, asks for nothing: every frame but HEADERS, CONTINUATION and DATA
    /// that carries data or ends its stream. That includes RST_STREAM: h2 bounds the resets of streams it
    /// still tracks (rapid reset), but drops one naming a closed stream without counting it; a client
    /// resets a stream only to cancel a request, far below the limit.
    fn is_control(&self) -> bool {
        match self.kind {
            HEADERS | CONTINUATION => false,
            DATA => self.flags & END_STREAM == 0 && self.data_length() == 0,
            _ => true,
        }
    }

    /// The bytes of data a DATA frame carries, padding aside.
    fn data_length(&self) -> u32 {
        self.length.saturating_sub(self.pad_length.map_or(0, |pad| u32::from(pad) + 1))
    }

    /// Control frames this frame, sent to the client, calls for: an ACK of a PING or SETTINGS, up to two
    /// WINDOW_UPDATEs (the stream's and the connection's) for a DATA frame's bytes.
    fn answers_due(&self) -> u32 {
        match self.kind {
            DATA if self.length > 0 => 2,
            PING | SETTINGS if self.flags & ACK == 0 => 1,
            _ => 0,
        }
    }
}

/// The frame headers of one direction of an HTTP/2 connection, read as its bytes pass in pieces of any
/// size: payloads are skipped, never kept.
struct FrameReader {
    /// Bytes still to pass before the first frame (the client's preface).
    skip: usize,
    header: [u8; HEADER_BYTES],
    header_filled: usize,
    payload_left: usize,
    /// A padded DATA frame whose pad length has not passed yet.
    awaiting_pad_length: Option<Frame>,
}

impl FrameReader {
    /// A reader whose first frame starts after `skip` bytes.
    fn after(skip: usize) -> FrameReader {
        FrameReader { skip, header: [0; HEADER_BYTES], header_filled: 0, payload_left: 0, awaiting_pad_length: None }
    }

    /// Whether the bytes so far end exactly where a frame does.
    fn at_frame_boundary(&self) -> bool {
        self.skip == 0 && self.header_filled == 0 && self.payload_left == 0
    }

    /// Reads the next bytes of the stream, calling `on_frame` for each frame whose header (and, for a
    /// padded DATA frame, pad length) is complete.
    fn feed(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(&Frame)) {
        while let Some(&first) = bytes.first() {
            let taken = if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                n
            } else if self.payload_left > 0 {
                if let Some(mut frame) = self.awaiting_pad_length.take() {
                    frame.pad_length = Some(first);
                    on_frame(&frame);
                }
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                n
            } else {
                let n = (HEADER_BYTES - self.header_filled).min(bytes.len());
                self.header[self.header_filled..self.header_filled + n].copy_from_slice(&bytes[..n]);
                self.header_filled += n;
                if self.header_filled == HEADER_BYTES {
                    self.header_filled = 0;
                    let frame = Frame::parse(&self.header);
                    self.payload_left = frame.length as usize;
                    if frame.pad_length_follows() {
                        self.awaiting_pad_length = Some(frame);
                    } else {
                        on_frame(&frame);
                    }
                }
                n
            };
            bytes = &bytes[taken..];
        }
    }
}

/// A token bucket: [`BURST`] tokens at first, [`PER_SECOND`] more each second up to [`BURST`].
struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn full(now: Instant) -> TokenBucket {
        TokenBucket { tokens: BURST, refilled: now }
    }

    /// Takes `count` tokens, after adding those earned since the last take; false when there are fewer.
    fn take(&mut self, count: u32, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * PER_SECOND;
        self.tokens = (self.tokens + earned).min(BURST);
        self.refilled = now;
        if self.tokens < f64::from(count) {
            return false;
        }
        self.tokens -= f64::from(count);
        true
    }

    /// Gives `count` tokens back, up to [`BURST`].
    fn give_back(&mut self, count: u32) {
        self.tokens = (self.tokens + f64::from(count)).min(BURST);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        bytes.extend_from_slice(&[kind, flags]);
        bytes.extend_from_slice(&stream_id.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    fn ping() -> Vec<u8> {
        frame(PING, 0, 0, &[7; 8])
    }

    /// The frames `reader` reports for `pieces` fed one after another.
    fn frames_of(pieces: &[&[u8]]) -> Vec<Frame> {
        let mut reader = FrameReader::after(PREFACE_BYTES);
        let mut frames = Vec::new();
        for piece in pieces {
            reader.feed(piece, |frame| frames.push(*frame));
        }
        assert!(reader.at_frame_boundary());
        frames
    }

    /// A client's preface and frames of every shape: empty, padded, with a payload, of an unknown type.
    fn client_stream() -> Vec<u8> {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(frame(HEADERS, 0x4, 3, &[0x82, 0x86, 0x84, 0x41, 0x00]));
        bytes.extend(frame(DATA, PADDED, 3, &[2, 0, 0]));
        bytes.extend(frame(DATA, PADDED, 3, &[1, b'x', 0]));
        bytes.extend(frame(DATA, END_STREAM, 3, b"abc"));
        bytes.extend(ping());
        bytes.extend(frame(0x20, 0, 0, &[1, 2]));
        bytes
    }

    #[test]
    fn frames_are_read_alike_however_the_stream_is_split() {
        let stream = client_stream();
        let whole = frames_of(&[&stream]);
        let kinds: Vec<(u8, u32, Option<u8>)> = whole.iter().map(|f| (f.kind, f.stream_id, f.pad_length)).collect();
        assert_eq!(
            kinds,
            [
                (SETTINGS, 0, None),
                (HEADERS, 3, None),
                (DATA, 3, Some(2)),
                (DATA, 3, Some(1)),
                (DATA, 3, None),
                (PING, 0, None),
                (0x20, 0, None)
            ]
        );
        for at in 0..=stream.len() {
            assert_eq!(frames_of(&[&stream[..at], &stream[at..]]), whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frames_of(&bytes), whole, "one byte at a time");
    }

    #[test]
    fn only_frames_that_ask_for_nothing_are_counted() {
        let counted: Vec<bool> = frames_of(&[&client_stream()]).iter().map(Frame::is_control).collect();
        // SETTINGS, HEADERS, padding only, one padded byte, the last bytes, PING, an unknown type.
        assert_eq!(counted, [true, false, true, false, false, true, true]);
        let others = [frame(DATA, 0, 1, &[]), frame(DATA, END_STREAM, 1, &[]), frame(0x8, 0, 0, &[0, 0, 0, 1])];
        let counted: Vec<bool> = others.iter().map(|f| Frame::parse(f[..9].try_into().unwrap()).is_control()).collect();
        assert_eq!(counted, [true, false, true], "an empty DATA frame counts unless it ends its stream");
    }

    #[test]
    fn the_bucket_takes_a_burst_then_its_rate_and_what_was_given_back() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(start);
        assert!(bucket.take(BURST as u32, start));
        assert!(!bucket.take(1, start));
        let second = start + Duration::from_secs(1);
        assert!(bucket.take(PER_SECOND as u32, second));
        assert!(!bucket.take(1, second));
        bucket.give_back(2);
        assert!(bucket.take(2, second));
        assert!(!bucket.take(1, second));
        let much_later = start + Duration::from_secs(3600);
        assert!(bucket.take(BURST as u32, much_later));
        assert!(!bucket.take(1, much_later), "never more than the burst");
    }

    #[test]
    fn the_goaway_is_exact() {
        assert_eq!(goaway(0x8000_0007), [0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0xb]);
    }

    /// A client connected to a [`ControlFrameLimit`] over an in-memory pipe that holds 1 MiB.
    fn connection() -> (tokio::io::DuplexStream, ControlFrameLimit<tokio::io::DuplexStream>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        (client, ControlFrameLimit::new(server))
    }

    /// Reads from `server` until a read fails; returns what hyper would have seen.
    async fn read_until_calmed(server: &mut ControlFrameLimit<tokio::io::DuplexStream>) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match server.read(&mut buffer).await {
                Ok(0) => panic!("the client's frames ended before the limit"),
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
                Err(error) => {
                    assert_eq!(error.to_string(), calmed().to_string());
                    return seen;
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_gets_a_goaway_after_the_last_whole_frame_and_nothing_more() {
        let (mut client, mut server) = connection();
        let opening = [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &frame(HEADERS, 0x5, 5, &[0x82])].concat();
        client.write_all(&opening).await.unwrap();
        let mut seen = vec![0; opening.len()];
        server.read_exact(&mut seen).await.unwrap();
        assert_eq!(seen, opening, "what is under the limit passes unchanged");
        // hyper's SETTINGS, written in two pieces: the second ends a frame.
        let settings = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 64]);
        server.write_all(&settings[..4]).await.unwrap();
        server.write_all(&settings[4..]).await.unwrap();
        let flood: Vec<u8> = (0..BURST as usize + 1).flat_map(|_| ping()).collect();
        client.write_all(&flood).await.unwrap();
        let passed = read_until_calmed(&mut server).await;
        assert!(passed.len() < flood.len(), "the read that went past the limit is not passed on");
        assert!(server.write(&settings).await.is_err(), "no write after the GOAWAY");
        drop(server);
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, [&settings[..], &goaway(5)].concat());
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_while_a_frame_is_half_written_closes_without_a_goaway() {
        let (mut client, mut server) = connection();
        client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let settings = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 64]);
        server.write_all(&settings[..11]).await.unwrap();
        let flood: Vec<u8> = (0..BURST as usize + 1).flat_map(|_| ping()).collect();
        client.write_all(&flood).await.unwrap();
        read_until_calmed(&mut server).await;
        drop(server);
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, &settings[..11], "nothing is written into the middle of a frame");
    }

    #[tokio::test(start_paused = true)]
    async fn pings_and_data_hookgate_sends_give_back_the_answers_they_call_for() {
        let (mut client, mut server) = connection();
        client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let burst: Vec<u8> = (0..BURST as usize).flat_map(|_| ping()).collect();
        client.write_all(&burst).await.unwrap();
        let mut seen = vec![0; 24 + burst.len()];
        server.read_exact(&mut seen).await.unwrap();
        // hookgate pings, and sends an answer's DATA: one PING ACK and two WINDOW_UPDATEs are due.
        server.write_all(&[ping(), frame(DATA, 0, 1, b"{}")].concat()).await.unwrap();
        let answers = [frame(PING, ACK, 0, &[7; 8]), frame(0x8, 0, 1, &[0, 0, 0, 2]), frame(0x8, 0, 0, &[0, 0, 0, 2])];
        client.write_all(&answers.concat()).await.unwrap();
        let mut seen = vec![0; 17 + 13 + 13];
        server.read_exact(&mut seen).await.unwrap();
        assert_eq!(seen, answers.concat());
    }
}
