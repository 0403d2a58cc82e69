//! HTTP/2's own attacks on the real binary with `http2: true` (issue 11): a PING flood, and 64 slow
//! streams on one connection, each while the store delivers from another address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// GOAWAY's frame type, and the error code of a peer generating excessive load (RFC 9113).
const GOAWAY: u8 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// An HTTP/2 frame: its 9-byte header and `payload`.
fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&stream_id.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Reads the server's frames until a GOAWAY (its error code) or the end of the connection (`None`).
async fn goaway_code(mut read: tokio::net::tcp::OwnedReadHalf) -> Option<u32> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while received.len() >= 9 {
            let length = u32::from_be_bytes([0, received[0], received[1], received[2]]) as usize;
            if received.len() < 9 + length {
                break;
            }
            if received[3] == GOAWAY && length >= 8 {
                return Some(u32::from_be_bytes(received[13..17].try_into().unwrap()));
            }
            received.drain(..9 + length);
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One PING flood from 127.0.0.2 until `until`: the preface, an empty SETTINGS frame, then PING frames as
/// fast as the connection takes them, reading the server's frames meanwhile; a new connection when one
/// ends. Returns the GOAWAY error codes received, one per connection that got one.
async fn ping_flood(addr: SocketAddr, until: Instant) -> Vec<u32> {
    let pings: Vec<u8> = (0..1000u64).flat_map(|n| frame(0x6, 0, 0, &n.to_be_bytes())).collect();
    let opening = [PREFACE, &frame(0x4, 0, 0, &[])].concat();
    let mut codes = Vec::new();
    while Instant::now() < until {
        let Ok(stream) = connect_from("127.0.0.2", addr).await else { continue };
        let (read, mut write) = stream.into_split();
        let mut reader = tokio::spawn(goaway_code(read));
        let mut written = write.write_all(&opening).await;
        while written.is_ok() && Instant::now() < until {
            written = write.write_all(&pings).await;
        }
        // Past `until` on a connection still open, the GOAWAY may never come.
        match tokio::time::timeout(Duration::from_secs(1), &mut reader).await {
            Ok(code) => codes.extend(code.unwrap()),
            Err(_) => reader.abort(),
        }
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_gets_enhance_your_calm_and_the_store_is_served() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("http2-ping-flood");
    let upstream = Upstream::start().await;
    let route = format!("  - name: orders\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let file = config_file(&dir, &route, "http2: true\n");
    let process = HookgateProcess::start(&file);
    let until = Instant::now() + Duration::from_secs(5);
    let floods: Vec<_> = (0..4).map(|_| tokio::spawn(ping_flood(process.addr, until))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deliveries = Deliveries::every_quarter_second(process.addr, 16, 11_000).await;
    let mut codes = Vec::new();
    for flood in floods {
        codes.extend(flood.await.unwrap());
    }
    deliveries.assert_survived("four PING floods over HTTP/2");
    assert_eq!(upstream.received().len(), deliveries.succeeded());
    assert!(!codes.is_empty(), "no flooding connection got a GOAWAY");
    assert!(codes.iter().all(|&code| code == ENHANCE_YOUR_CALM), "GOAWAY error codes: {codes:?}");
    let metrics = process.metrics().await;
    let counted = metric_sample(&metrics, "hookgate_http2_control_floods_total").unwrap_or(0.0);
    assert!(counted >= codes.len() as f64, "{} GOAWAYs received, {counted} counted", codes.len());
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Posts to `/hooks/main` on `send` with a well-formed signature that matches nothing and
/// `Content-Length: 1000`, then one body byte every 500 ms, opening a new stream when the gateway ends
/// one, until `until`. Returns how many streams it opened (it stops early if the connection ends).
async fn slow_stream(addr: SocketAddr, send: h2::client::SendRequest<Bytes>, until: Instant) -> usize {
    let mut opened = 0;
    while Instant::now() < until {
        let Ok(mut send) = send.clone().ready().await else { return opened };
        let request = http::Request::post(format!("http://{addr}/hooks/main"))
            .header("x-wc-webhook-topic", "order.created")
            .header("x-wc-webhook-signature", FORGED_SIGNATURE)
            .header("content-length", "1000")
            .body(())
            .unwrap();
        let Ok((answer, mut body)) = send.send_request(request, false) else { return opened };
        opened += 1;
        let answer = tokio::spawn(answer);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if body.send_data(Bytes::from_static(b"x"), false).is_err() {
                break;
            }
        }
        answer.abort();
    }
    opened
}

/// 64 slow streams on one HTTP/2 connection from 127.0.0.2 for 6 s (a new connection if the gateway
/// ends one), while the store delivers: what its deliveries got, and how many streams were opened.
async fn store_under_slow_streams(addr: SocketAddr) -> (Deliveries, usize) {
    let until = Instant::now() + Duration::from_secs(6);
    let attacker = tokio::spawn(async move {
        let mut opened = 0;
        while Instant::now() < until {
            let Ok(stream) = connect_from("127.0.0.2", addr).await else { continue };
            let Ok((send, connection)) = h2::client::handshake(stream).await else { continue };
            let connection = tokio::spawn(connection);
            let streams: Vec<_> = (0..64).map(|_| tokio::spawn(slow_stream(addr, send.clone(), until))).collect();
            for stream in streams {
                opened += stream.await.unwrap();
            }
            connection.abort();
        }
        opened
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deliveries = Deliveries::every_quarter_second(addr, 16, 12_000).await;
    (deliveries, attacker.await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_slow_streams_on_one_connection_take_no_capacity_from_signed_deliveries() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("http2-slow-streams");
    let upstream = Upstream::start().await;
    let file = dir.join("hookgate.yaml");
    let route = format!("  - name: orders\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    std::fs::write(&file, probe_limits(fixture_config(&route, "http2: true\n"))).unwrap();
    let process = HookgateProcess::start(&file);
    let (deliveries, opened) = store_under_slow_streams(process.addr).await;
    deliveries.assert_survived("64 slow HTTP/2 streams, proxy mode");
    // 64 at once, each ended by body_timeout (2 s) and opened again: about three rounds in 6 s.
    assert!(opened >= 128, "only {opened} slow streams were opened");
    deliveries.assert_only_these_reached(&upstream.received(), true);
    let metrics = process.metrics().await;
    let calmed = metric_sample(&metrics, "hookgate_http2_control_floods_total").unwrap_or(0.0);
    assert_eq!(calmed, 0.0, "a client opening and resetting streams is no control-frame flood");
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_slow_streams_on_one_connection_take_no_capacity_from_signed_deliveries_in_queue_mode() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("http2-slow-streams-queue");
    let file = dir.join("hookgate.yaml");
    let extra = format!("http2: true\n{}", queue_delivery(&Backend::Sqlite, &dir, ""));
    std::fs::write(&file, probe_limits(fixture_config(ROUTE_TO_NOWHERE, &extra))).unwrap();
    let process = HookgateProcess::start(&file);
    let (deliveries, opened) = store_under_slow_streams(process.addr).await;
    deliveries.assert_survived("64 slow HTTP/2 streams, queue mode");
    assert!(opened >= 128, "only {opened} slow streams were opened");
    drop(process);
    deliveries.assert_only_these_spooled(&file);
    std::fs::remove_dir_all(dir).unwrap();
}
