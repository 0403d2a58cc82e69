//! Load an unauthenticated client can put on the real binary, and what every connection is bounded by
//! (issue 11): bursts of connects, floods of refused requests, slow bodies, idle connections from one
//! address, the open-file limit, a store's own concurrency, and the memory a surge leaves behind.

use std::time::Duration;

use crate::support::*;

/// A listening socket's queue as the kernel reports it (`ss`): the connections waiting to be accepted
/// (Recv-Q) and the backlog it was given (Send-Q).
fn listen_queue(addr: std::net::SocketAddr) -> (u32, u32) {
    let output = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .expect("ss (Debian's iproute2) reads the listen backlog: apt-get install iproute2");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or_else(|| panic!("no listener on {addr}: {text}"));
    let field = |n: usize| line.split_whitespace().nth(n).and_then(|q| q.parse().ok());
    (
        field(1).unwrap_or_else(|| panic!("no Recv-Q in {line}")),
        field(2).unwrap_or_else(|| panic!("no Send-Q in {line}")),
    )
}

fn listen_backlog(addr: std::net::SocketAddr) -> u32 {
    listen_queue(addr).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_a_thousand_connects_all_connect_within_a_second() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("load-connect-bursts");
    let file = config_file(&dir, ROUTE_TO_NOWHERE, "");
    let process = HookgateProcess::start(&file);
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    let expected = 1024.min(somaxconn);
    assert_eq!(listen_backlog(process.addr), expected, "the webhook listener's backlog");
    assert_eq!(listen_backlog(process.admin_addr()), expected, "the admin listener's backlog");
    for burst in 1..=5 {
        let connects = (0..1000).map(|_| {
            let addr = process.addr;
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
            })
        });
        let mut held = Vec::new();
        let mut missed = 0;
        for connect in connects.collect::<Vec<_>>() {
            match connect.await.unwrap() {
                Ok(Ok(stream)) => held.push(stream),
                _ => missed += 1,
            }
        }
        assert_eq!(missed, 0, "burst {burst}: {missed} of 1,000 connects missed their 1 s deadline");
        drop(held);
        // The next burst comes once the gateway has taken this one off the queue (on a busy machine it may
        // still be accepting it): bursts, not one burst of 2,000.
        eventually(Duration::from_secs(10), "the gateway accepts the burst", || listen_queue(process.addr).0 == 0)
            .await;
    }
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Sends `count` copies of `request` (an HTTP/1.1 request whose head starts `POST /... HTTP/1.1\r\n`) on
/// one kept-alive connection, writing while it reads, the last with `Connection: close`; returns how many
/// answers had `status`, read until the gateway closed the connection after the last.
async fn flood(addr: std::net::SocketAddr, request: &'static [u8], count: usize, status: &'static str) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let at = request.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let mut last = request.to_vec();
    last.splice(at..at, b"Connection: close\r\n".iter().copied());
    let writer = tokio::spawn(async move {
        for _ in 1..count {
            write.write_all(request).await.unwrap();
        }
        write.write_all(&last).await.unwrap();
        write
    });
    let mut answers = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), read.read_to_end(&mut answers)).await.unwrap().unwrap();
    drop(writer.await.unwrap());
    String::from_utf8_lossy(&answers).matches(&format!("HTTP/1.1 {status} ")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_refused_requests_write_a_few_hundred_log_lines_and_are_all_counted() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("load-log-flood");
    let file = config_file(&dir, ROUTE_TO_NOWHERE, "");
    let process = HookgateProcess::start(&file);
    // A well-formed signature that matches no secret: 401 invalid_signature, after the body is read.
    let request: &'static [u8] = Box::leak(
        format!(
            "POST /hooks/main HTTP/1.1\r\nHost: h\r\nX-WC-Webhook-Signature: {FORGED_SIGNATURE}\r\nContent-Length: 2\r\n\r\n{{}}"
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let started = std::time::Instant::now();
    let floods: Vec<_> = (0..8).map(|_| tokio::spawn(flood(process.addr, request, 6_250, "401"))).collect();
    let mut refused = 0;
    for flood in floods {
        refused += flood.await.unwrap();
    }
    assert_eq!(refused, 50_000, "every request was answered 401");
    let seconds = started.elapsed().as_secs_f64();
    // What the gateway wrote meanwhile, and for a moment after.
    let mut lines = Vec::new();
    while let Ok(line) = process.lines.recv_timeout(Duration::from_millis(500)) {
        lines.push(line);
    }
    let request_lines = lines.iter().filter(|l| l.contains(r#""message":"request""#)).count();
    assert!(lines.len() < 300, "{} lines for 50,000 refused requests in {seconds:.1} s", lines.len());
    assert!(request_lines >= 10, "some refused requests are still logged: {request_lines}");
    let metrics = process.metrics().await;
    assert_eq!(
        metric_sample(&metrics, "hookgate_requests_total{source=\"main\",outcome=\"invalid_signature\"}"),
        Some(50_000.0),
        "the metrics count every one"
    );
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

/// How a slow unsigned body announces itself: `Content-Length: 1000`, or the largest `Content-Length` the
/// default `max_body_bytes` allows, or chunked (which may be as large); the last two send 400 KB at once
/// before they slow down, as an attacker filling memory would.
#[derive(Clone, Copy)]
enum Promise {
    Small,
    Largest,
    Chunked,
}

/// Headers with a well-formed signature that matches nothing and a body as `promise` says, then one body
/// byte every `every`, from 127.0.0.2, reconnecting when the gateway gives up on it, until `until`.
async fn slow_body_client(addr: std::net::SocketAddr, promise: Promise, every: Duration, until: std::time::Instant) {
    use tokio::io::AsyncWriteExt;
    let burst = "x".repeat(400 * 1024);
    let (framing, first, byte): (&str, String, &[u8]) = match promise {
        Promise::Small => ("Content-Length: 1000", String::new(), b"x"),
        Promise::Largest => ("Content-Length: 1048576", burst, b"x"),
        Promise::Chunked => ("Transfer-Encoding: chunked", format!("{:x}\r\n{burst}\r\n", burst.len()), b"1\r\nx\r\n"),
    };
    let head = format!(
        "POST /hooks/main HTTP/1.1\r\nHost: h\r\nX-WC-Webhook-Topic: order.created\r\nX-WC-Webhook-Signature: {FORGED_SIGNATURE}\r\n{framing}\r\n\r\n{first}"
    );
    while std::time::Instant::now() < until {
        let Ok(mut stream) = connect_from("127.0.0.2", addr).await else { continue };
        if stream.write_all(head.as_bytes()).await.is_err() {
            // Refused (429 past the address's share): try again a second later.
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        while std::time::Instant::now() < until {
            tokio::time::sleep(every).await;
            if stream.write_all(byte).await.is_err() {
                break;
            }
        }
    }
}

/// `count` slow unsigned bodies, as `promise` says, against a gateway while the store delivers from another
/// address: what the store's deliveries got.
async fn store_under_slow_bodies(process: &HookgateProcess, promise: Promise, count: usize) -> Deliveries {
    let until = std::time::Instant::now() + Duration::from_secs(6);
    let attackers: Vec<_> = (0..count)
        .map(|_| tokio::spawn(slow_body_client(process.addr, promise, Duration::from_millis(500), until)))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deliveries = Deliveries::every_quarter_second(process.addr, 16, 5000).await;
    for attacker in attackers {
        attacker.await.unwrap();
    }
    deliveries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_unsigned_bodies_take_no_capacity_from_signed_deliveries() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("load-slow-bodies");
    let upstream = Upstream::start().await;
    let file = dir.join("hookgate.yaml");
    let route = format!("  - name: orders\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    std::fs::write(&file, probe_limits(fixture_config(&route, ""))).unwrap();
    let process = HookgateProcess::start(&file);
    let deliveries = store_under_slow_bodies(&process, Promise::Small, 200).await;
    deliveries.assert_survived("200 slow unsigned bodies, proxy mode");
    deliveries.assert_only_these_reached(&upstream.received(), true);
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_unsigned_bodies_take_no_capacity_from_signed_deliveries_in_queue_mode() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("load-slow-bodies-queue");
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, probe_limits(fixture_config(ROUTE_TO_NOWHERE, &queue_delivery(&Backend::Sqlite, &dir, ""))))
        .unwrap();
    let process = HookgateProcess::start(&file);
    let deliveries = store_under_slow_bodies(&process, Promise::Small, 200).await;
    deliveries.assert_survived("200 slow unsigned bodies, queue mode");
    drop(process);
    deliveries.assert_only_these_spooled(&file);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_promising_the_largest_body_take_no_memory_from_signed_deliveries() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("load-slow-large-bodies");
    let upstream = Upstream::start().await;
    let route = format!("  - name: orders\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    // The default body limit (1 MiB), a pool of 16 MiB and 4 MiB for one address: 64 bodies promising 1 MiB
    // each would hold it all if memory were taken for what a body promises rather than for what it has
    // sent, and 64 that sent 400 KB each would if one address could take more than its share.
    let config = probe_limits(fixture_config(&route, "")).replace("  max_body_bytes: 1048576\n", "").replace(
        "  max_concurrent: 64\n",
        "  max_concurrent: 64\n  max_unverified_bytes: 16777216\n  max_unverified_bytes_per_client: 4194304\n",
    );
    assert!(config.contains("max_unverified_bytes_per_client"));
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, config).unwrap();
    let process = HookgateProcess::start(&file);
    for promise in [Promise::Largest, Promise::Chunked] {
        let deliveries = store_under_slow_bodies(&process, promise, 64).await;
        deliveries.assert_survived("64 slow unsigned bodies promising 1 MiB each, or chunked, 400 KB sent");
        deliveries.assert_only_these_reached(&upstream.received(), false);
    }
    let metrics = process.metrics().await;
    let capped = metric_sample(&metrics, "hookgate_requests_total{source=\"main\",outcome=\"too_many_requests\"}")
        .unwrap_or(0.0);
    assert!(capped > 0.0, "the attacker's address was held to its share: {metrics}");
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_from_one_address_leave_room_for_the_store() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("load-idle-from-one-address");
    let upstream = Upstream::start().await;
    let route = format!("  - name: orders\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let file = config_file(&dir, &route, "");
    let process = HookgateProcess::start(&file);
    // 10,000 connections from 127.0.0.2 (loopback too), each sending nothing.
    let attacker: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..10_000 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(attacker).unwrap();
        if let Ok(stream) = socket.connect(process.addr).await {
            idle.push(stream);
        }
    }
    // The store, from 127.0.0.1: a signed delivery every 250 ms while they are held.
    let deliveries = Deliveries::every_quarter_second(process.addr, 16, 7000).await;
    deliveries.assert_survived("10,000 idle connections from one address");
    assert_eq!(upstream.received().len(), deliveries.succeeded());
    let metrics = process.metrics().await;
    let refused = metric_sample(&metrics, "hookgate_connections_refused_total{reason=\"per_client\"}").unwrap_or(0.0);
    // All but the default 256 from that address were closed at accept.
    assert!(refused >= (10_000 - 256) as f64 - 100.0, "refused {refused}: {metrics}");
    drop(idle);
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    let dir = temp_dir("load-open-files");
    let file = config_file(&dir, ROUTE_TO_NOWHERE, "");
    // Started with a soft limit of 1,024 under whatever hard limit this machine gives.
    let process = HookgateProcess::start_with_ulimit(&file, "-Sn 1024");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", process.child.id())).unwrap();
    let open_files: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().skip(3).take(2).collect();
    assert_eq!(open_files[0], open_files[1], "soft limit raised to the hard limit: {limits}");
    assert_ne!(open_files[0], "1024", "{limits}");
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_sending_twenty_deliveries_at_once_is_never_throttled_by_the_defaults() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("load-store-concurrency");
    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(200), ..Default::default() }).await;
    let route = format!("  - name: orders\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let file = config_file(&dir, &route, "");
    let process = HookgateProcess::start(&file);
    for round in 0..3u64 {
        // 20 at once from one address, each held 200 ms by the upstream (proxy mode): all in flight together.
        let sends: Vec<_> = (0..20u64)
            .map(|n| {
                let (addr, body) =
                    (process.addr, format!(r#"{{"id":{},"status":"processing"}}"#, 9000 + round * 20 + n));
                tokio::spawn(async move {
                    send_raw(addr, &signed_request("/hooks/main", "order.created", body.as_bytes())).await
                })
            })
            .collect();
        for send in sends {
            let answer = send.await.unwrap();
            assert_eq!(answer.status, 200, "round {round}: {}", answer.text());
        }
    }
    assert_eq!(upstream.received().len(), 60);
    assert!(upstream.max_concurrency() >= 10, "the deliveries were in flight together: {}", upstream.max_concurrency());
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_test_of_sixty_four_kept_alive_connections_from_one_address_is_never_throttled_by_the_defaults() {
    let _heavy = one_heavy_test_at_a_time().await;
    let dir = temp_dir("load-sixty-four-connections");
    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(500), ..Default::default() }).await;
    let route = format!("  - name: orders\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let file = config_file(&dir, &route, "");
    let process = HookgateProcess::start(&file);
    // As a benchmark does it: 64 kept-alive HTTP/1.1 connections from 127.0.0.1, each sending signed
    // deliveries one after another, every one held 500 ms by the upstream (proxy mode).
    let connections: Vec<_> = (0..64u64)
        .map(|connection| {
            let addr = process.addr;
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                for round in 0..3u64 {
                    let body = format!(r#"{{"id":{},"status":"processing"}}"#, 20_000 + connection * 10 + round);
                    let request = signed_request("/hooks/main", "order.created", body.as_bytes());
                    let kept_alive = String::from_utf8(request).unwrap().replacen(" HTTP/1.0\r\n", " HTTP/1.1\r\n", 1);
                    let kept_alive = kept_alive.replacen("Connection: close\r\n", "", 1);
                    tokio::io::AsyncWriteExt::write_all(&mut stream, kept_alive.as_bytes()).await.unwrap();
                    let answer = read_response(&mut stream).await;
                    assert_eq!(answer.status, 200, "connection {connection}, round {round}: {}", answer.text());
                }
            })
        })
        .collect();
    for connection in connections {
        connection.await.unwrap();
    }
    assert_eq!(upstream.received().len(), 64 * 3);
    assert_eq!(upstream.max_concurrency(), 64, "all 64 connections had a delivery in flight at once");
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_taken_by_a_surge_of_connections_is_given_back() {
    let _heavy = one_heavy_test_at_a_time().await;
    use tokio::io::AsyncWriteExt;
    let dir = temp_dir("load-memory-after-surge");
    let file = config_file(&dir, ROUTE_TO_NOWHERE, "");
    let process = HookgateProcess::start(&file);
    let pid = process.child.id();
    let before = rss_mib(pid);
    // 2,000 connections from eight addresses (under the per-client cap), each with half a request head.
    let mut surge = Vec::new();
    for n in 0..2000 {
        let mut stream = connect_from(&format!("127.0.0.{}", 2 + n % 8), process.addr).await.unwrap();
        stream
            .write_all(b"POST /hooks/main HTTP/1.1\r\nHost: h\r\nX-WC-Webhook-Topic: order.created\r\n")
            .await
            .unwrap();
        surge.push(stream);
    }
    let metrics = process.metrics().await;
    // The connection workers take up the connections handed to them over a moment: the peak is the
    // largest reading over two seconds.
    let mut peak = rss_mib(pid);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_mib(pid));
    }
    assert!(peak > before + 30.0, "the surge is large enough to tell: {before:.0} MiB before, {peak:.0} MiB during");
    assert_eq!(metric_sample(&metrics, "hookgate_connections_refused_total{reason=\"per_client\"}"), None);
    drop(surge);
    // The allocator hands freed pages back over a few seconds (glibc's kept 75 of 80 MiB for good).
    let given_back = std::time::Instant::now() + Duration::from_secs(40);
    let mut after = peak;
    while after >= before + (peak - before) * 0.25 {
        assert!(
            std::time::Instant::now() < given_back,
            "{before:.0} MiB before the surge, {peak:.0} MiB during, still {after:.0} MiB 40 s after"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = rss_mib(pid);
    }
    eprintln!("RSS: {before:.0} MiB before the surge, {peak:.0} MiB during, {after:.0} MiB after");
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}
