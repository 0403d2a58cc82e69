//! The admin listener: metric values after a known sequence of requests, health and readiness (also
//! during a graceful stop), and the overload bound.

use std::time::Duration;

use crate::support::*;
use http::StatusCode;

/// A config with one source named `source` (so tests sharing this process's metrics do not mix), one
/// route to `upstream`, and `extra` at the top level.
fn config(source: &str, upstream: &Upstream, extra: &str) -> String {
    let mode = if extra.contains("delivery:") { String::new() } else { "delivery:\n  mode: proxy\n".to_owned() };
    format!(
        r#"listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
sources:
  - name: {source}
    path: /hooks/{source}
    secrets:
      - value: "{FIXTURE_SECRET}"
    webhook_ids: [535]
routes:
  - name: {source}-route
    topics: ["order.*"]
    upstream: "{}"
    timeout: 5s
{mode}{extra}
"#,
        upstream.url("/")
    )
}

async fn get(addr: std::net::SocketAddr, path: &str) -> RawResponse {
    send_raw(addr, format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes()).await
}

#[tokio::test]
async fn request_metrics_count_each_outcome_with_its_source() {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&config("counted", &upstream, "")).await;
    let path = "/hooks/counted";
    let fixture = Fixture::load("order-created");
    assert_eq!(send_raw(gateway.addr, &fixture.request(path)).await.status, 200);
    assert_eq!(send_raw(gateway.addr, &fixture.request(path)).await.status, 200);
    assert_eq!(send_raw(gateway.addr, &Fixture::load("ping").request(path)).await.status, 200);
    assert_eq!(send_raw(gateway.addr, &Fixture::load("tampered-body").request(path)).await.status, 401);
    let unsigned = raw_request("POST", path, "HTTP/1.0", &[], b"{\"id\":1}");
    assert_eq!(send_raw(gateway.addr, &unsigned).await.status, 401);
    let get_hook = raw_request("GET", path, "HTTP/1.0", &[], b"");
    assert_eq!(send_raw(gateway.addr, &get_hook).await.status, 405);
    let sha1 = Fixture::load("customer-created-sha1");
    assert_eq!(send_raw(gateway.addr, &sha1.request(path)).await.status, 401);

    let scrape = get(gateway.admin_addr, "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = scrape.text();
    let requests = |outcome: &str| {
        metric_sample(&text, &format!("hookgate_requests_total{{source=\"counted\",outcome=\"{outcome}\"}}"))
    };
    assert_eq!(requests("accepted"), Some(2.0), "{text}");
    assert_eq!(requests("ping"), Some(1.0));
    assert_eq!(requests("invalid_signature"), Some(2.0));
    assert_eq!(requests("missing_signature"), Some(1.0));
    assert_eq!(requests("method_not_allowed"), Some(1.0));
    assert_eq!(
        metric_sample(&text, "hookgate_upstream_requests_total{route=\"counted-route\",result=\"2xx\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(metric_sample(&text, "hookgate_request_duration_seconds_count{source=\"counted\"}"), Some(7.0));
    assert_eq!(metric_sample(&text, "hookgate_upstream_duration_seconds_count{route=\"counted-route\"}"), Some(2.0));
    assert!(
        text.contains("hookgate_request_body_bytes_bucket{source=\"counted\",le=\"4096\"}"),
        "explicit buckets: {text}"
    );
    assert!(!text.contains("quantile="), "histograms, not summaries");
    assert!(text.contains("hookgate_build_info{version=\""), "{text}");
    assert!(text.contains("hookgate_config_reloads_total{result=\"failure\"} 0"), "exists before any failure: {text}");
    // A path no source has counts under a fixed label, never the path itself.
    send_raw(gateway.addr, &fixture.request("/hooks/made-up-by-a-caller")).await;
    let text = get(gateway.admin_addr, "/metrics").await.text();
    assert!(!text.contains("made-up-by-a-caller"));
    assert!(metric_sample(&text, "hookgate_requests_total{source=\"none\",outcome=\"not_found\"}").is_some(), "{text}");
    gateway.stop().await;
}

on_both_backends!(queue_gauges_show_pending_and_dead_letters);
async fn queue_gauges_show_pending_and_dead_letters(backend: Backend) {
    let dir = backend.temp_dir("admin-queue");
    // A source (and route) of each backend's own: both tests count in this process's metrics at once.
    let source = format!("queued-{}", backend.name());
    let upstream = Upstream::answering(UpstreamAnswer { status: StatusCode::GONE, ..Default::default() }).await;
    let gateway = TestGateway::start(&config(&source, &upstream, &queue_delivery(&backend, &dir, ""))).await;
    let answer = send_raw(gateway.addr, &Fixture::load("order-created").request(&format!("/hooks/{source}"))).await;
    assert_eq!(answer.status, 200);
    // The gauges are set from the spool every few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = get(gateway.admin_addr, "/metrics").await.text();
        if metric_sample(&text, &format!("hookgate_dead_letters{{route=\"{source}-route\"}}")) == Some(1.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter in the gauge: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = get(gateway.admin_addr, "/metrics").await.text();
    assert_eq!(metric_sample(&text, &format!("hookgate_queue_pending{{route=\"{source}-route\"}}")), Some(0.0));
    assert_eq!(
        metric_sample(&text, &format!("hookgate_delivery_attempts_total{{route=\"{source}-route\",result=\"dead\"}}")),
        Some(1.0)
    );
    assert_eq!(
        metric_sample(&text, &format!("hookgate_requests_total{{source=\"{source}\",outcome=\"queued\"}}")),
        Some(1.0),
        "{text}"
    );
    assert!(metric_sample(&text, "hookgate_spool_bytes").unwrap() > 0.0);
    gateway.stop().await;
}

#[tokio::test]
async fn readiness_goes_503_as_soon_as_a_graceful_stop_begins() {
    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(1500), ..Default::default() }).await;
    let gateway = TestGateway::start(&config("ready", &upstream, "")).await;
    assert_eq!(get(gateway.admin_addr, "/healthz").await.status, 200);
    let ready = get(gateway.admin_addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    // A slow delivery in flight keeps the stop going for a while.
    let addr = gateway.addr;
    let in_flight =
        tokio::spawn(async move { send_raw(addr, &Fixture::load("order-created").request("/hooks/ready")).await });
    eventually(Duration::from_secs(5), "the delivery reached the upstream", || upstream.received().len() == 1).await;
    let admin = gateway.admin_addr;
    let stopping = tokio::spawn(gateway.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = get(admin, "/readyz").await;
    assert_eq!(during.status, 503);
    let reason: serde_json::Value = serde_json::from_slice(&during.body).unwrap();
    assert_eq!(reason, serde_json::json!({"status": "not_ready", "reason": "stopping"}));
    assert_eq!(get(admin, "/healthz").await.status, 200, "alive while it stops");
    assert_eq!(in_flight.await.unwrap().status, 200, "the request in flight was answered");
    stopping.await.unwrap();
}

#[tokio::test]
async fn past_max_concurrent_requests_get_503_at_once() {
    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(800), ..Default::default() }).await;
    let config = config("busy", &upstream, "limits:\n  max_concurrent: 1\n");
    let gateway = TestGateway::start(&config).await;
    let addr = gateway.addr;
    let first =
        tokio::spawn(async move { send_raw(addr, &Fixture::load("order-created").request("/hooks/busy")).await });
    eventually(Duration::from_secs(5), "the first request is in flight", || upstream.received().len() == 1).await;
    let started = std::time::Instant::now();
    let second = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/busy")).await;
    assert_eq!(second.status, 503);
    assert_eq!(second.text(), r#"{"error":"overloaded"}"#);
    assert_eq!(second.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_millis(500), "refused at once, not queued");
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(upstream.received().len(), 1, "the refused request reached no one");
    let text = get(gateway.admin_addr, "/metrics").await.text();
    assert_eq!(
        metric_sample(&text, "hookgate_requests_total{source=\"busy\",outcome=\"overloaded\"}"),
        Some(1.0),
        "{text}"
    );
    // Once the first is answered, requests are taken again.
    assert_eq!(send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/busy")).await.status, 200);
    gateway.stop().await;
}

/// CPU time (user + system) the process has used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn out_of_file_descriptors_the_listeners_wait_instead_of_spinning() {
    let dir = temp_dir("admin-out-of-fds");
    // hookgate itself, under a limit of 64 open files.
    let process = HookgateProcess::start_with_ulimit(&config_file(&dir, ROUTE_TO_NOWHERE, ""), "-n 64");
    let admin = process.admin_addr();
    // Connections the admin listener accepts and holds until header_timeout: enough to use up its files.
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(tokio::net::TcpStream::connect(admin).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(process.child.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(process.child.id()) - before;
    // A listener that retries at once burns a whole core: about 200 ticks in 2 s.
    assert!(used < 40, "hookgate used {used} ticks of CPU in 2 s while out of file descriptors");
    drop(held);
    // Once files are free again, the admin listener serves, and its failures were counted (the webhook
    // listener runs the same accept loop, server/listener.rs).
    let mut metrics = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = get(admin, "/metrics").await;
        if answer.status == 200 {
            metrics = answer.text();
            break;
        }
    }
    let failed = metric_sample(&metrics, "hookgate_accept_errors_total{listener=\"admin\"}");
    assert!(failed.is_some_and(|n| n >= 1.0), "{metrics}");
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}
