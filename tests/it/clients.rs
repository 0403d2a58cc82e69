//! Requests in flight per client address (issue 11): `limits.max_requests_per_client`, counted for the
//! peer or, behind a proxy in `trusted_proxies`, for the client its `X-Forwarded-For` names; HTTP/1
//! requests and HTTP/2 streams alike.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A route to `upstream` taking every topic.
fn route_to(upstream: &Upstream) -> String {
    format!("  - name: orders\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"))
}

/// `fixture_config` with `limits` added to its `limits` section, bodies given 20 s (so that a held
/// request outlasts the test), and `extra` at the top level.
fn config_with(routes: &str, limits: &str, extra: &str) -> String {
    let config =
        fixture_config(routes, extra).replace("  body_timeout: 5s\n", &format!("  body_timeout: 20s\n{limits}"));
    assert!(config.contains(limits));
    config
}

/// An unsigned request from `from` whose 60-byte body comes one byte every 300 ms until `until`: the head
/// of its answer when one came before then (a refused request is answered at once, an empty string when
/// the connection closed without one), `None` while its body was still being read.
async fn slow_unsigned_request(from: &'static str, addr: SocketAddr, until: Instant) -> Option<String> {
    let mut stream = connect_from(from, addr).await.unwrap();
    let head = "POST /hooks/main HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 60\r\n\r\nwebhook_id=";
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut answer, mut chunk) = (Vec::new(), [0u8; 1024]);
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => {
                let n = read.unwrap_or(0);
                answer.extend_from_slice(&chunk[..n]);
                if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    return Some(String::from_utf8_lossy(&answer).into_owned());
                }
            }
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                if Instant::now() >= until {
                    return None;
                }
                let _ = stream.write_all(b"1").await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_holding_slow_requests_past_its_cap_is_answered_429_while_the_store_delivers() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("clients-slow-requests");
    let upstream = Upstream::start().await;
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, config_with(&route_to(&upstream), "  max_requests_per_client: 8\n", "")).unwrap();
    let mut process = HookgateProcess::start(&file);
    // 24 slow unsigned requests from 127.0.0.2, each on its own connection (far below the 256 connections
    // one address may open): 8 are read, slowly; the other 16 are refused at once, their bodies unread.
    let until = Instant::now() + Duration::from_secs(5);
    let attackers: Vec<_> =
        (0..24).map(|_| tokio::spawn(slow_unsigned_request("127.0.0.2", process.addr, until))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deliveries = Deliveries::every_quarter_second(process.addr, 12, 11_000).await;
    let mut answers = Vec::new();
    for attacker in attackers {
        answers.push(attacker.await.unwrap());
    }
    deliveries.assert_survived("24 slow unsigned requests from one address, 8 in flight allowed");
    let refused = answers.iter().flatten().filter(|a| a.starts_with("HTTP/1.1 429 ")).count();
    assert_eq!(refused, 16, "{answers:?}");
    assert_eq!(answers.iter().filter(|a| a.is_none()).count(), 8, "the 8 admitted were still being read");
    let first = answers.iter().flatten().next().unwrap().to_ascii_lowercase();
    assert!(first.contains("\r\nretry-after: 1\r\n"), "{first}");
    let received = upstream.received();
    assert_eq!(received.len(), deliveries.succeeded(), "only the store's signed deliveries reached the upstream");
    assert!(received.iter().all(|r| r.headers.contains_key("x-wc-webhook-signature")));
    let metrics = process.metrics().await;
    let series = "hookgate_requests_total{source=\"main\",outcome=\"too_many_requests\"}";
    assert_eq!(metric_sample(&metrics, series), Some(16.0), "{metrics}");
    process.wait_for_log("a 429 logged with its client", |line| {
        line["outcome"] == "too_many_requests" && line["status"] == 429 && line["client"] == "127.0.0.2"
    });
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A signed delivery (id `id`) from `from` with `X-Forwarded-For: forwarded_for`, on its own connection:
/// its status.
async fn forwarded_delivery(from: &'static str, addr: SocketAddr, forwarded_for: String, id: u64) -> u16 {
    let body = format!(r#"{{"id":{id},"status":"processing"}}"#);
    let mut request = signed_request("/hooks/main", "order.created", body.as_bytes());
    let at = request.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    request.splice(at..at, format!("X-Forwarded-For: {forwarded_for}\r\n").into_bytes());
    let mut stream = connect_from(from, addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    read_response(&mut stream).await.status
}

/// `count` deliveries sent at once by `forwarded_delivery`, the n-th forwarding `forwarded_for(n)`.
fn at_once(
    from: &'static str,
    addr: SocketAddr,
    count: u64,
    first_id: u64,
    forwarded_for: impl Fn(u64) -> String,
) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..count).map(|n| tokio::spawn(forwarded_delivery(from, addr, forwarded_for(n), first_id + n))).collect()
}

/// How many of `sends` were answered with each of 200 and 429, in that order (panics on any other).
async fn statuses(sends: Vec<tokio::task::JoinHandle<u16>>) -> (usize, usize) {
    let (mut ok, mut refused) = (0, 0);
    for send in sends {
        match send.await.unwrap() {
            200 => ok += 1,
            429 => refused += 1,
            other => panic!("answered {other}"),
        }
    }
    (ok, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_cap_and_nobody_else_is_believed() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("clients-trusted-proxy");
    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(2000), ..Default::default() }).await;
    let file = dir.join("hookgate.yaml");
    let limits = "  max_requests_per_client: 4\n  max_connections_per_client: 6\n";
    std::fs::write(&file, config_with(&route_to(&upstream), limits, "trusted_proxies: [\"127.0.0.3\"]\n")).unwrap();
    let mut process = HookgateProcess::start(&file);
    let addr = process.addr;
    // Through the proxy on 127.0.0.3 (9 connections at once, past the 6 one address may open: a trusted
    // proxy's are not counted per client): client A sends 6 at once, client B 3.
    let a = at_once("127.0.0.3", addr, 6, 12_000, |_| "203.0.113.7".to_owned());
    let b = at_once("127.0.0.3", addr, 3, 12_100, |_| "198.51.100.9".to_owned());
    // From 127.0.0.4, not trusted: 6 at once, each naming another client, all counted for the peer.
    let untrusted = at_once("127.0.0.4", addr, 6, 12_200, |n| format!("198.51.100.{}", 10 + n));
    eventually(
        Duration::from_secs(5),
        "4 of A's, all 3 of B's and 4 of 127.0.0.4's deliveries to reach the upstream",
        || upstream.received().len() == 4 + 3 + 4,
    )
    .await;
    // While A's four are held by the upstream: the proxy appended A's real address after a spoofed one.
    let spoofed = forwarded_delivery("127.0.0.3", addr, "192.0.2.1, 203.0.113.7".to_owned(), 12_300).await;
    assert_eq!(spoofed, 429, "a spoofed leftmost entry does not make another client of A");
    assert_eq!(statuses(a).await, (4, 2), "client A: 4 in flight, 2 refused");
    assert_eq!(statuses(b).await, (3, 0), "client B is not held back by A");
    assert_eq!(statuses(untrusted).await, (4, 2), "an untrusted peer's X-Forwarded-For is ignored");
    assert_eq!(upstream.received().len(), 11);
    process.wait_for_log("a 429 logged with the forwarded client", |line| {
        line["outcome"] == "too_many_requests" && line["client"] == "203.0.113.7"
    });
    process.wait_for_log("a delivery logged with the forwarded client", |line| {
        line["outcome"] == "accepted" && line["client"] == "198.51.100.9"
    });
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_2_streams_on_one_connection_count_as_requests_of_their_client() {
    let _heavy = one_heavy_test_at_a_time().await;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(1000), ..Default::default() }).await;
    let config = config_with(&route_to(&upstream), "  max_requests_per_client: 4\n", "");
    let gateway = TestGateway::start(&format!("http2: true\n{config}")).await;
    let stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    // 10 signed deliveries as 10 streams of one connection, all at once.
    let sends: Vec<_> = (0..10u64)
        .map(|n| {
            let body = format!(r#"{{"id":{},"status":"processing"}}"#, 13_000 + n);
            let signature = hookgate::verify::sign(
                hookgate::verify::Algorithm::Sha256,
                &hookgate::secret::Secret::new(FIXTURE_SECRET.as_bytes().to_vec()),
                body.as_bytes(),
            );
            let request = http::Request::post(format!("http://{}/hooks/main", gateway.addr))
                .header("x-wc-webhook-topic", "order.created")
                .header("x-wc-webhook-signature", signature)
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let mut sender = sender.clone();
            tokio::spawn(async move { sender.send_request(request).await.unwrap().status().as_u16() })
        })
        .collect();
    assert_eq!(statuses(sends).await, (4, 6), "4 streams in flight, the other 6 refused");
    assert_eq!(upstream.received().len(), 4);
    gateway.stop().await;
}
