//! How long a connection may sit without a request (issue 11), against the real binary: its first request
//! head within `header_timeout` of the accept, HTTP/2's preface included, and no longer than
//! `limits.idle_timeout` with nothing in flight, over HTTP/1 keep-alive and HTTP/2 alike.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// The first bytes of an HTTP/2 connection: the preface and an empty SETTINGS frame.
const PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A HEADERS frame on stream 1 ending the stream: `GET /` for authority `h`, in HPACK's static table.
const GET_ON_STREAM_1: &[u8] = b"\x00\x00\x06\x01\x05\x00\x00\x00\x01\x82\x86\x84\x41\x01h";

/// A gateway with `http2: true` and these timeouts, started as the real binary.
fn start(dir: &std::path::Path, header_timeout: &str, idle_timeout: &str) -> HookgateProcess {
    let file = config_file(dir, ROUTE_TO_NOWHERE, "http2: true\n");
    let config = std::fs::read_to_string(&file).unwrap().replace(
        "  header_timeout: 5s\n",
        &format!("  header_timeout: {header_timeout}\n  idle_timeout: {idle_timeout}\n"),
    );
    assert!(config.contains("idle_timeout"));
    std::fs::write(&file, config).unwrap();
    HookgateProcess::start(&file)
}

/// Everything the gateway sends until it closes the connection, or `None` if it is still open after
/// `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    });
    read.await.ok().map(|()| received)
}

/// The (type, stream) of each whole HTTP/2 frame in `bytes`.
fn frames(bytes: &[u8]) -> Vec<(u8, u32)> {
    split_frames(bytes).iter().map(|frame| (frame[3], stream_of(frame))).collect()
}

fn stream_of(frame: &[u8]) -> u32 {
    u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff
}

/// The whole frames at the start of `bytes`, each with its 9-byte header.
fn split_frames(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut found = Vec::new();
    while bytes.len() >= 9 {
        let length = 9 + u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes.len() < length {
            break;
        }
        found.push(&bytes[..length]);
        bytes = &bytes[length..];
    }
    found
}

/// Like [`read_until_closed`], as an HTTP/2 client that acknowledges the gateway's PINGs (as every real
/// client does; a graceful close waits for one round trip).
async fn http2_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let (mut chunk, mut answered) = ([0u8; 4096], 0);
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
            let pings: Vec<Vec<u8>> = split_frames(&received)
                .into_iter()
                .filter(|frame| frame[3] == 0x6 && frame[4] & 0x1 == 0)
                .skip(answered)
                .map(|frame| [&[0, 0, 8, 0x6, 0x1, 0, 0, 0, 0], &frame[9..]].concat())
                .collect();
            answered += pings.len();
            for ack in pings {
                let _ = stream.write_all(&ack).await;
            }
        }
    });
    read.await.ok().map(|()| received)
}

const HEADERS: u8 = 0x1;
const GOAWAY: u8 = 0x7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_that_sends_no_request_is_closed_at_the_header_timeout() {
    let dir = temp_dir("idle-http2-no-request");
    let process = start(&dir, "1s", "60s");
    // The preface and SETTINGS, then nothing; and half a preface, then nothing.
    let mut after_preface = TcpStream::connect(process.addr).await.unwrap();
    after_preface.write_all(PREFACE_AND_SETTINGS).await.unwrap();
    let mut half_preface = TcpStream::connect(process.addr).await.unwrap();
    half_preface.write_all(&PREFACE_AND_SETTINGS[..12]).await.unwrap();
    let sent = http2_until_closed(&mut after_preface, Duration::from_secs(4)).await;
    let sent = sent.expect("an HTTP/2 connection without a request is closed within the header timeout");
    // Dropped at once, with no GOAWAY: it has no stream to finish, and a GOAWAY would wait on its PING.
    assert!(!frames(&sent).iter().any(|(kind, _)| *kind == HEADERS), "no answer: {:?}", frames(&sent));
    assert!(read_until_closed(&mut half_preface, Duration::from_secs(4)).await.is_some(), "half a preface");
    let metrics = process.metrics().await;
    assert_eq!(
        metric_sample(&metrics, "hookgate_connections_idled_total{reason=\"first_request\"}"),
        Some(1.0),
        "counted once: the half preface is closed before it is an HTTP/2 connection, by the sniff's deadline"
    );
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_is_closed_once_it_has_idled_after_its_requests() {
    let dir = temp_dir("idle-http2-after-request");
    let process = start(&dir, "30s", "1s");
    let mut stream = TcpStream::connect(process.addr).await.unwrap();
    stream.write_all(PREFACE_AND_SETTINGS).await.unwrap();
    stream.write_all(GET_ON_STREAM_1).await.unwrap();
    let sent = http2_until_closed(&mut stream, Duration::from_secs(4)).await;
    let sent = sent.expect("an idle HTTP/2 connection is closed after limits.idle_timeout, not header_timeout");
    let frames = frames(&sent);
    assert!(frames.contains(&(HEADERS, 1)), "the request was answered first: {frames:?}");
    assert!(frames.contains(&(GOAWAY, 0)), "then a GOAWAY: {frames:?}");
    let metrics = process.metrics().await;
    assert_eq!(metric_sample(&metrics, "hookgate_connections_idled_total{reason=\"idle\"}"), Some(1.0));
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_keep_alive_connection_is_closed_once_it_has_idled() {
    let dir = temp_dir("idle-http1-keep-alive");
    let process = start(&dir, "30s", "1s");
    let mut stream = TcpStream::connect(process.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let answer = read_response(&mut stream).await;
    assert_eq!(answer.header("connection"), None, "kept alive: {}", answer.text());
    let after = read_until_closed(&mut stream, Duration::from_secs(4)).await;
    assert_eq!(after.as_deref(), Some(&b""[..]), "closed after limits.idle_timeout, not header_timeout");
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_longer_than_the_idle_timeout_is_answered() {
    let dir = temp_dir("idle-request-in-flight");
    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(2500), ..Default::default() }).await;
    let route = format!("  - name: orders\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let file = config_file(&dir, &route, "");
    // Both deadlines well under the upstream's 2.5 s: neither may cut the request in flight.
    let config = std::fs::read_to_string(&file)
        .unwrap()
        .replace("  header_timeout: 5s\n", "  header_timeout: 1s\n  idle_timeout: 1s\n");
    assert!(config.contains("idle_timeout: 1s"));
    std::fs::write(&file, config).unwrap();
    let process = HookgateProcess::start(&file);
    let answer = send_raw(process.addr, &signed_request("/hooks/main", "order.created", br#"{"id":1}"#)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(upstream.received().len(), 1);
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}
