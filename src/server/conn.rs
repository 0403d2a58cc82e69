//! One client connection: the TLS handshake or protocol detection (HTTP/2's preface or an HTTP/1 request
//! line), then hyper serving it with a write deadline, closed when it idles (see [`super::idle`]) or at a
//! stop. From the accept to the first request head is bounded by `header_timeout` in all.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::idle::{self, Activity, Deadlines, Tracked};

use crate::answer::Body;
use crate::config::Limits;

use super::control_frames::ControlFrameLimit;

/// The first bytes of every HTTP/2 connection (RFC 9113, section 3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HTTP/2 connections are pinged this often, and closed when a ping goes unanswered for as long.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Streams one HTTP/2 connection may have open at once.
const HTTP2_MAX_STREAMS: u32 = 64;
/// hyper's read buffer bound; it also bounds the request line and header block a client can send.
const MAX_HEADER_BUFFER_BYTES: usize = 64 * 1024;

/// hyper's HTTP/1 and HTTP/2 settings, made once per listener and cloned for each connection.
#[derive(Clone)]
pub struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    header_timeout: Duration,
    body_timeout: Duration,
    idle_timeout: Duration,
    /// Whether HTTP/2 is served at all (`http2`); without it a connection opening with the preface is
    /// closed, and TLS offers only `http/1.1` by ALPN.
    http2_enabled: bool,
}

impl Protocols {
    /// The settings for a listener started with `limits` (header_timeout is fixed at start), serving
    /// HTTP/2 only when `http2`.
    pub fn new(limits: &Limits, http2_enabled: bool) -> Protocols {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(MAX_HEADER_BUFFER_BYTES)
            .keep_alive(true);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(HTTP2_MAX_STREAMS)
            .max_header_list_size(MAX_HEADER_BUFFER_BYTES as u32)
            .keep_alive_interval(HTTP2_KEEP_ALIVE)
            .keep_alive_timeout(HTTP2_KEEP_ALIVE);
        Protocols {
            http1,
            http2,
            header_timeout: limits.header_timeout,
            body_timeout: limits.body_timeout,
            idle_timeout: limits.idle_timeout,
            http2_enabled,
        }
    }

    /// The write deadline and idle timeout of new connections: `body_timeout` and `idle_timeout` in force
    /// (a reload may change them; `header_timeout` is fixed at start).
    pub fn with_timeouts(mut self, limits: &Limits) -> Protocols {
        self.body_timeout = limits.body_timeout;
        self.idle_timeout = limits.idle_timeout;
        self
    }

    /// Serves one connection until it ends, idles or a graceful stop (`stop` changing) ends it. The
    /// handshake, the first bytes that tell the protocol and the first request head must all arrive within
    /// `header_timeout` of the accept: a connection that sends nothing is closed rather than kept open.
    pub async fn serve<S>(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        service: S,
        stop: watch::Receiver<()>,
    ) where
        S: Service<Request<Incoming>, Response = Response<Body>, Error = std::convert::Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let deadlines = Deadlines {
            accepted: Instant::now(),
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
        };
        let first_bytes_by = deadlines.accepted + self.header_timeout;
        let _ = stream.set_nodelay(true);
        let stream = WriteDeadline::new(stream, self.body_timeout);
        let result = match tls {
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let Ok(Ok(stream)) = tokio::time::timeout_at(first_bytes_by, acceptor.accept(stream)).await else {
                    return;
                };
                // ALPN offers h2 only when http2 is on (see the config's TLS setup).
                let is_http2 = self.http2_enabled && stream.get_ref().1.alpn_protocol() == Some(b"h2");
                self.serve_io(TokioIo::new(stream), is_http2, service, stop, deadlines).await
            }
            None => {
                let Ok(Ok((is_http2, stream))) = tokio::time::timeout_at(first_bytes_by, sniff(stream)).await else {
                    return;
                };
                if is_http2 && !self.http2_enabled {
                    tracing::debug!(%peer, "an HTTP/2 preface, and http2 is off: closing");
                    return;
                }
                self.serve_io(TokioIo::new(stream), is_http2, service, stop, deadlines).await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%peer, error = %error, "connection ended with an error");
        }
    }

    async fn serve_io<I, S>(
        self,
        io: TokioIo<I>,
        is_http2: bool,
        service: S,
        stop: watch::Receiver<()>,
        deadlines: Deadlines,
    ) -> Result<(), hyper::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<Body>, Error = std::convert::Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let (activity, watched) = Activity::new(deadlines.accepted);
        let service = Tracked::new(service, activity);
        let expired = idle::expired(watched.clone(), deadlines);
        // A connection being closed for idling gets as long again as the first request had, then is dropped.
        let grace = self.header_timeout;
        if is_http2 {
            let io = TokioIo::new(ControlFrameLimit::new(io.into_inner()));
            let connection = self.http2.serve_connection(io, service);
            drive(connection, |c| c.graceful_shutdown(), stop, (expired, watched), grace).await
        } else {
            let connection = self.http1.serve_connection(io, service);
            drive(connection, |c| c.graceful_shutdown(), stop, (expired, watched), grace).await
        }
    }
}

/// Runs a hyper connection to its end, shutting it down gracefully (`shutdown`: HTTP/2's GOAWAY, or HTTP/1's
/// close after the answer in progress) at a stop or once it has idled. One that never sent a request head is
/// dropped at once; one that idled and is still open `grace` later (a client that does not close on a
/// GOAWAY) is dropped as soon as no request of it is in flight, never in the middle of one.
async fn drive<C>(
    connection: C,
    shutdown: impl Fn(Pin<&mut C>),
    mut stop: watch::Receiver<()>,
    (expired, mut watched): (impl Future<Output = idle::Expired>, idle::Watched),
    grace: Duration,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection, expired);
    let mut closing = false;
    let (mut idled, mut grace_over) = (None, false);
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            _ = stop.changed(), if !closing => {
                closing = true;
                shutdown(connection.as_mut());
            }
            why = &mut expired, if !closing => {
                metrics::counter!(crate::metrics::CONNECTIONS_IDLED_TOTAL, "reason" => why.as_str()).increment(1);
                if why == idle::Expired::FirstRequest {
                    return Ok(());
                }
                closing = true;
                idled = Some(Instant::now() + grace);
                shutdown(connection.as_mut());
            }
            () = tokio::time::sleep_until(idled.unwrap_or_else(Instant::now)), if idled.is_some() && !grace_over => {
                grace_over = true;
            }
            () = watched.quiet(), if grace_over => return Ok(()),
        }
    }
}

/// Reads just enough of a new connection to tell HTTP/2's preface from an HTTP/1 request line, and gives
/// back the stream with those bytes put in front again.
async fn sniff<S: AsyncRead + Unpin>(mut stream: S) -> std::io::Result<(bool, Prefixed<S>)> {
    let mut seen = Vec::with_capacity(HTTP2_PREFACE.len());
    let mut buffer = [0u8; 24];
    while seen.len() < HTTP2_PREFACE.len() && HTTP2_PREFACE.starts_with(&seen) {
        let n = stream.read(&mut buffer[..HTTP2_PREFACE.len() - seen.len()]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buffer[..n]);
    }
    let is_http2 = seen.as_slice() == HTTP2_PREFACE;
    Ok((is_http2, Prefixed { prefix: Bytes::from(seen), inner: stream }))
}

/// A client connection whose writes must make progress: a client that leaves its answers unread (the
/// socket's buffers full) for longer than `limit` is disconnected, instead of holding the connection and
/// its task for ever. hyper has no write timeout of its own.
struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, limit: Duration) -> WriteDeadline<T> {
        WriteDeadline { inner, limit, stalled: None }
    }

    /// Passes a finished write through; a pending one starts (or keeps) the stall timer and fails once it
    /// runs out.
    fn watch<R>(&mut self, cx: &mut Context<'_>, result: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client left its answer unread for longer than limits.body_timeout",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        this.watch(cx, result)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, result)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, result)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, result)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A stream whose first bytes were already read: they are served again before the rest.
struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
