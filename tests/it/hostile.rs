//! Hostile input on real sockets, against a queue-mode gateway with a real upstream and spool: slow
//! clients, oversized and malformed requests. Each refused request gets its status, reaches no upstream,
//! stores nothing in the spool, and the gateway goes on answering valid deliveries.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use hookgate::secret::Secret;
use hookgate::verify::{Algorithm, sign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    gateway: TestGateway,
    upstream: Upstream,
    dir: std::path::PathBuf,
}

async fn setup(name: &str, limits: &str) -> Setup {
    let dir = temp_dir(name);
    let upstream = Upstream::start().await;
    let routes = format!("  - name: all\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let config = fixture_config(&routes, &queue_delivery(&Backend::Sqlite, &dir, "")).replace(
        "limits:\n  max_body_bytes: 1048576\n  header_timeout: 5s\n  body_timeout: 5s\n",
        &format!("limits:\n  max_body_bytes: 65536\n{limits}"),
    );
    assert!(config.contains("max_body_bytes: 65536"), "the limits were replaced");
    Setup { gateway: TestGateway::start(&config).await, upstream, dir }
}

/// Events stored in the spool, read with SQLite itself.
fn stored_events(dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(dir.join("spool.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    conn.query_row("SELECT count(*) FROM events", [], |row| row.get(0)).unwrap()
}

/// Nothing reached the upstream and nothing was stored; then a valid delivery is still answered, stored
/// and delivered.
async fn still_serves_and_nothing_passed(setup: &Setup) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(setup.upstream.received().is_empty(), "a refused request reached the upstream");
    assert_eq!(stored_events(&setup.dir), 0, "a refused request was stored");
    let answer = send_raw(setup.gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.text().contains("queued"), "{}", answer.text());
    eventually(WAIT, "the valid delivery arrives", || setup.upstream.received().len() == 1).await;
    assert_eq!(stored_events(&setup.dir), 1);
}

fn order() -> Fixture {
    Fixture::load("order-created")
}

/// The order-created fixture's request with some headers replaced or removed (`None`), with `body`.
fn fixture_with(changes: &[(&str, Option<&str>)], body: &[u8]) -> Vec<u8> {
    let mut headers = order().headers_with(changes);
    headers.push(("Host".into(), "hooks.example.com".into()));
    raw_request("POST", "/hooks/main", "HTTP/1.1", &headers, body)
}

fn with_connection_close(mut request: Vec<u8>) -> Vec<u8> {
    let at = request.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    request.splice(at..at, b"Connection: close\r\n".iter().copied());
    request
}

/// Sends `request` (ignoring a write cut short by the server's answer) and reads one answer, or `None`
/// when the server closed the connection without one.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)?.parse().ok())
}

// Over 80 lines: a table of malformed requests, each built here, sent to one gateway and spool.
#[tokio::test]
async fn malformed_requests_get_their_status_and_nothing_passes() {
    let setup = setup("hostile-malformed", "  header_timeout: 5s\n  body_timeout: 5s\n").await;
    let fixture = order();
    let body = fixture.body.clone();
    let signature = fixture.field("signature").to_owned();
    let secret = Secret::new(fixture.field("secret").as_bytes().to_vec());
    // A body whose SHA-256 signature holds '+' or '/', to spell it in the URL-safe alphabet.
    let (url_safe_body, url_safe_signature) = (0..)
        .map(|n| format!(r#"{{"id":{n},"status":"processing"}}"#).into_bytes())
        .map(|b| {
            let s = sign(Algorithm::Sha256, &secret, &b);
            (b, s)
        })
        .find(|(_, s)| s.contains(['+', '/']))
        .unwrap();
    let url_safe = url_safe_signature.replace('+', "-").replace('/', "_");
    let sha1 = sign(Algorithm::Sha1, &secret, &body);
    let sha512 = sign(Algorithm::Sha512, &secret, &body);
    let mut inner_space = signature.clone();
    inner_space.insert(20, ' ');
    let mut inner_tab = signature.clone();
    inner_tab.insert(10, '\t');

    // Two signatures, the bogus one before the valid one, and after it: neither order passes.
    let mut two_signatures = fixture_with(&[], &body);
    let at = two_signatures.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    two_signatures.splice(at..at, format!("X-WC-Webhook-Signature: {}\r\n", "A".repeat(44)).into_bytes());
    let mut valid_first = fixture_with(&[], &body);
    let at =
        valid_first.windows(signature.len()).position(|w| w == signature.as_bytes()).unwrap() + signature.len() + 2;
    valid_first.splice(at..at, format!("X-WC-Webhook-Signature: {}\r\n", "A".repeat(44)).into_bytes());
    let mut non_utf8_topic = fixture_with(&[("X-WC-Webhook-Topic", Some("order.created"))], &body);
    let at = non_utf8_topic.windows(13).position(|w| w == b"order.created").unwrap();
    non_utf8_topic.splice(at + 6..at + 13, b"cr\xffted".iter().copied());
    let mut non_utf8_signature = fixture_with(&[], &body);
    let at = non_utf8_signature.windows(signature.len()).position(|w| w == signature.as_bytes()).unwrap();
    non_utf8_signature[at + 5] = 0xff;
    // RFC 9112: an HTTP/1.1 request has exactly one Host, and no request has two.
    let no_host = raw_request("POST", "/hooks/main", "HTTP/1.1", &order().headers_with(&[]), &body);
    let mut two_hosts = fixture_with(&[], &body);
    let at = two_hosts.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    two_hosts.splice(at..at, b"Host: other.example.com\r\n".iter().copied());
    let ping = |body: &[u8]| {
        raw_request(
            "POST",
            "/hooks/main",
            "HTTP/1.1",
            &[("Host".into(), "h".into()), ("Content-Type".into(), "application/x-www-form-urlencoded".into())],
            body,
        )
    };
    let head_only = |content_length: &str| {
        format!("POST /hooks/main HTTP/1.1\r\nHost: h\r\nX-WC-Webhook-Signature: {signature}\r\nContent-Length: {content_length}\r\n\r\n")
            .into_bytes()
    };
    let huge_headers = {
        let mut request = fixture_with(&[], &body);
        let at = request.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        // Few headers (hyper's own limit is 100 of them) but 70 KB: past the 64 KiB head bound.
        let filler: String = (0..7).map(|i| format!("X-Filler-{i}: {}\r\n", "v".repeat(10_000))).collect();
        request.splice(at..at, filler.into_bytes());
        request
    };

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("two signature headers, the valid one second", two_signatures, 401),
        ("two signature headers, the valid one first", valid_first, 401),
        (
            "a signature with a space inside",
            fixture_with(&[("X-WC-Webhook-Signature", Some(&inner_space))], &body),
            401,
        ),
        ("a signature with a tab inside", fixture_with(&[("X-WC-Webhook-Signature", Some(&inner_tab))], &body), 401),
        (
            "a valid signature in the URL-safe alphabet",
            fixture_with(&[("X-WC-Webhook-Signature", Some(&url_safe))], &url_safe_body),
            401,
        ),
        (
            "a valid SHA-1 signature on a SHA-256 source",
            fixture_with(&[("X-WC-Webhook-Signature", Some(&sha1))], &body),
            401,
        ),
        (
            "a valid SHA-512 signature on a SHA-256 source",
            fixture_with(&[("X-WC-Webhook-Signature", Some(&sha512))], &body),
            401,
        ),
        ("a non-UTF-8 byte in the signature", non_utf8_signature, 401),
        ("a valid signature with a non-UTF-8 topic", non_utf8_topic, 400),
        ("an empty body with another body's signature", fixture_with(&[], b""), 401),
        ("a ping with an extra field", ping(b"webhook_id=535&extra=1"), 401),
        ("a ping with a huge id", ping(format!("webhook_id={}", "9".repeat(40)).as_bytes()), 401),
        ("a ping with a sign", ping(b"webhook_id=+535"), 401),
        ("an unsigned body that is no ping", ping(&body), 401),
        ("Content-Length that is no number", head_only("12abc"), 400),
        ("a negative Content-Length", head_only("-1"), 400),
        ("Content-Length past max_body_bytes, body never sent", head_only("10000000"), 413),
        ("a header block past 64 KiB", huge_headers, 431),
        ("a valid HTTP/1.1 delivery without Host", no_host, 400),
        ("a valid delivery with two Host headers", two_hosts, 400),
    ];
    for (what, request, status) in cases {
        assert_eq!(exchange(setup.gateway.addr, &with_connection_close(request)).await, Some(status), "{what}");
    }
    // Two different Content-Length headers: refused by the HTTP parser.
    let mut two_lengths = fixture_with(&[], &body);
    let at = two_lengths.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    two_lengths.splice(at..at, b"Content-Length: 5\r\n".iter().copied());
    assert_eq!(exchange(setup.gateway.addr, &two_lengths).await, Some(400), "two Content-Length headers");
    still_serves_and_nothing_passed(&setup).await;
    setup.gateway.stop().await;
}

#[tokio::test]
async fn a_chunked_body_past_the_bound_stops_being_read_at_the_bound() {
    let setup = setup("hostile-chunked", "  header_timeout: 5s\n  body_timeout: 5s\n").await;
    let head = String::from_utf8(fixture_with(&[], b""))
        .unwrap()
        .replace("Content-Length: 0\r\n", "Transfer-Encoding: chunked\r\n");
    let mut stream = TcpStream::connect(setup.gateway.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // 16 KiB chunks, far past the 64 KiB bound: the gateway answers 413 and stops reading.
    let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
    let mut sent = 0usize;
    let answered = loop {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break true;
        }
        sent += 0x4000;
        if sent > 64 * 1024 * 1024 {
            break false;
        }
        let mut peek = [0u8; 12];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut peek)).await
            && n > 0
        {
            break true;
        }
    };
    assert!(answered, "the gateway read {sent} bytes of a 64 KiB-bounded body without answering");
    assert!(sent < 8 * 1024 * 1024, "reading stopped near the bound, not after {sent} bytes");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(answer.starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&answer));
    still_serves_and_nothing_passed(&setup).await;
    setup.gateway.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_only_the_valid_one_passes() {
    let setup = setup("hostile-pipelined", "  header_timeout: 5s\n  body_timeout: 5s\n").await;
    let fixture = order();
    let mut pipeline = Vec::new();
    pipeline.extend(raw_request("POST", "/hooks/main", "HTTP/1.1", &[("Host".into(), "h".into())], b"webhook_id=535"));
    pipeline.extend(fixture_with(&[("X-WC-Webhook-Signature", Some(&"B".repeat(44)))], &fixture.body));
    pipeline.extend(fixture_with(&[], &fixture.body));
    pipeline.extend(with_connection_close(raw_request(
        "GET",
        "/hooks/main",
        "HTTP/1.1",
        &[("Host".into(), "h".into())],
        b"",
    )));
    let mut stream = TcpStream::connect(setup.gateway.addr).await.unwrap();
    stream.write_all(&pipeline).await.unwrap();
    let mut answers = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answers)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&answers);
    let statuses: Vec<&str> = text.match_indices("HTTP/1.1 ").map(|(i, _)| &text[i + 9..i + 12]).collect();
    assert_eq!(statuses, ["200", "401", "200", "405"], "{text}");
    eventually(WAIT, "the one valid delivery arrives", || setup.upstream.received().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(setup.upstream.received().len(), 1);
    assert_eq!(stored_events(&setup.dir), 1, "only the valid delivery was stored");
    setup.gateway.stop().await;
}

#[tokio::test]
async fn a_client_dribbling_its_headers_is_cut_off_at_header_timeout() {
    let setup = setup("hostile-dribble", "  header_timeout: 2s\n  body_timeout: 5s\n").await;
    let request = order().request("/hooks/main");
    let mut stream = TcpStream::connect(setup.gateway.addr).await.unwrap();
    let started = Instant::now();
    let mut sent = 0;
    // One byte a second: the headers alone would take minutes.
    let closed = loop {
        if stream.write_all(&request[sent..sent + 1]).await.is_err() {
            break true;
        }
        sent += 1;
        let mut buffer = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => break true,
            Err(_) if started.elapsed() > Duration::from_secs(20) => break false,
            Err(_) => {}
        }
    };
    assert!(closed, "still open after 20 s of dribbling");
    assert!(sent < 20, "cut off after {sent} of {} bytes", request.len());
    still_serves_and_nothing_passed(&setup).await;
    setup.gateway.stop().await;
}

#[tokio::test]
async fn a_stalled_body_is_cut_off_at_body_timeout_with_408() {
    let setup = setup("hostile-stall", "  header_timeout: 5s\n  body_timeout: 1s\n").await;
    let request = order().request("/hooks/main");
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut stream = TcpStream::connect(setup.gateway.addr).await.unwrap();
    // The headers and half the body, then nothing.
    stream.write_all(&request[..head_end + order().body.len() / 2]).await.unwrap();
    let answer = read_response(&mut stream).await;
    assert_eq!(answer.status, 408, "{}", answer.text());
    still_serves_and_nothing_passed(&setup).await;
    setup.gateway.stop().await;
}

/// Two thousand connections that never send a byte do not stand between WooCommerce and an answer: a signed
/// delivery is answered while every one of them is still open.
#[tokio::test]
async fn two_thousand_idle_connections_do_not_delay_a_signed_delivery() {
    // All 2,000 from this one address stay open only under a per-client cap above them (the default, 256,
    // closes the rest at accept: tests/it/load.rs).
    let setup =
        setup("hostile-idle", "  header_timeout: 60s\n  body_timeout: 5s\n  max_connections_per_client: 4000\n").await;
    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        idle.push(TcpStream::connect(setup.gateway.addr).await.expect("connect (is the open-file limit above 4,100?)"));
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        send_raw(setup.gateway.addr, &Fixture::load("order-created").request("/hooks/main")),
    )
    .await
    .expect("answered within 10 s despite 2,000 idle connections");
    assert_eq!(answer.status, 200, "{}", answer.text());
    // Every idle connection is still open: the answer did not wait for them to time out.
    let mut open = 0;
    for stream in &idle {
        let mut byte = [0u8; 1];
        if let Err(e) = stream.try_read(&mut byte)
            && e.kind() == std::io::ErrorKind::WouldBlock
        {
            open += 1;
        }
    }
    assert_eq!(open, 2000, "the idle connections were all still open when the delivery was answered");
    eventually(WAIT, "the delivery arrives", || setup.upstream.received().len() == 1).await;
    drop(idle);
    setup.gateway.stop().await;
}

/// A client that pipelines requests and never reads the answers fills its socket; the gateway's writes stall
/// and, after `body_timeout`, it drops the connection instead of keeping it (and its task) for ever.
#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_disconnected() {
    // Proxy mode, so the upstream's large answer is relayed to the client.
    let big: &'static str = Box::leak("x".repeat(512 * 1024).into_boxed_str());
    let upstream = Upstream::answering(UpstreamAnswer { body: big, ..UpstreamAnswer::default() }).await;
    let routes = format!("  - name: all\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let config = fixture_config(&routes, "").replace("  body_timeout: 5s\n", "  body_timeout: 1s\n");
    let gateway = TestGateway::start(&config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(gateway.addr).await.unwrap();
    let request = fixture_with(&[], &order().body);
    let pipelined = 40;
    for _ in 0..pipelined {
        if stream.write_all(&request).await.is_err() {
            break;
        }
    }
    // Read nothing while the gateway's writes stall past body_timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut answers = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answers)).await;
    assert!(ended.is_ok(), "the connection was still open");
    let complete = String::from_utf8_lossy(&answers).matches("HTTP/1.1 200").count();
    assert!(complete < pipelined, "all {complete} answers were written: the stalled connection was not dropped");
    // And the gateway serves the next client.
    let answer = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    assert_eq!(answer.status, 200);
    gateway.stop().await;
}
