//! What comes back from the upstream: its answer relayed, or proxy mode's own 502/504.

use super::*;

// 7. The upstream's status, headers (hop-by-hop stripped) and body are relayed back.
#[tokio::test]
async fn the_upstream_answer_is_relayed_without_hop_by_hop_headers() {
    let upstream = Upstream::answering(UpstreamAnswer {
        status: StatusCode::ACCEPTED,
        headers: vec![
            ("x-receipt", "r-42"),
            ("keep-alive", "timeout=9"),
            ("connection", "x-internal"),
            ("x-internal", "1"),
        ],
        body: "queued by fulfillment",
        delay: Duration::ZERO,
    })
    .await;
    let gateway = gateway_with(&upstream).await;
    let answer = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.text(), "queued by fulfillment");
    assert_eq!(answer.header("x-receipt"), Some("r-42"));
    assert_eq!(answer.header("keep-alive"), None);
    assert_eq!(answer.header("x-internal"), None);
    gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_gets_502_and_a_slow_one_504() {
    // A port that was just free: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let slow = Upstream::answering(UpstreamAnswer { delay: Duration::from_secs(5), ..Default::default() }).await;
    let routes = format!(
        "  - name: down\n    topics: [\"order.created\"]\n    upstream: \"http://{closed}/\"\n  - name: slow\n    topics: [\"*\"]\n    upstream: \"{}\"\n    timeout: 300ms\n",
        slow.url("/")
    );
    let gateway = TestGateway::start(&fixture_config(&routes, "")).await;
    let answer = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.text(), r#"{"error":"upstream_unreachable"}"#);
    let answer = send_raw(gateway.addr, &Fixture::load("coupon-deleted").request("/hooks/main")).await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.text(), r#"{"error":"upstream_timeout"}"#);
    gateway.stop().await;
}

#[tokio::test]
async fn an_upstream_answer_too_large_is_counted_as_such_and_logged_as_an_upstream_failure() {
    // A body past the 1 MiB bound on relayed answers.
    let body: &'static str = Box::leak("x".repeat(hookgate::forward::MAX_UPSTREAM_ANSWER_BYTES + 1).into_boxed_str());
    let upstream = Upstream::answering(UpstreamAnswer { body, ..UpstreamAnswer::default() }).await;
    let dir = temp_dir("proxy-answer-too-large");
    let route = format!("  - name: oversized\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let mut process = HookgateProcess::start(&config_file(&dir, &route, ""));
    let answer = send_raw(process.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(upstream.received().len(), 1);
    let line = process.wait_for_log("the request line", |line| line["message"] == "request");
    assert_eq!(line["outcome"], "upstream_failed", "{line}");
    assert_eq!(line["status"], 502, "{line}");
    assert!(line["error"].as_str().is_some_and(|e| e.contains("larger than")), "{line}");
    let metrics = process.metrics().await;
    let result = |label: &str| {
        metric_sample(&metrics, &format!("hookgate_upstream_requests_total{{route=\"oversized\",result=\"{label}\"}}"))
    };
    assert_eq!(result("answer_too_large"), Some(1.0), "{metrics}");
    assert_eq!(result("connect_error"), None, "{metrics}");
    assert_eq!(
        metric_sample(&metrics, "hookgate_requests_total{source=\"main\",outcome=\"upstream_failed\"}"),
        Some(1.0),
        "{metrics}"
    );
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}
