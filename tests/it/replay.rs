//! `reject_older_than`: a verified delivery whose signed `date_modified_gmt` is too old (a replayed
//! capture) is answered 200 `{"status":"stale"}`, counted under outcome `stale`, and goes nowhere, in both
//! delivery modes. Fresh deliveries and payloads without a date pass.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;

/// The `main` source renamed to `name` (metrics are process-wide: each test counts its own source) and
/// given `reject_older_than`.
fn with_max_age(config: String, name: &str, max_age: &str) -> String {
    let config = config.replacen(
        "  - name: main\n    path: /hooks/main\n",
        &format!("  - name: {name}\n    path: /hooks/main\n    reject_older_than: {max_age}\n"),
        1,
    );
    assert!(config.contains("reject_older_than"), "the source took the setting");
    config
}

/// `YYYY-MM-DDTHH:MM:SS` for `seconds_ago` before now, as WooCommerce writes `date_modified_gmt`.
fn gmt(seconds_ago: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - seconds_ago;
    let (days, rest) = (now / 86_400, now % 86_400);
    // civil_from_days (Howard Hinnant), for the test's own clock reading.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

fn order(id: u64, modified: &str) -> Vec<u8> {
    format!(r#"{{"id":{id},"status":"processing","date_modified_gmt":"{modified}"}}"#).into_bytes()
}

async fn stale_count(gateway: &TestGateway, source: &str) -> Option<f64> {
    let metrics = send_raw(gateway.admin_addr, b"GET /metrics HTTP/1.0\r\n\r\n").await.text();
    metric_sample(&metrics, &format!(r#"hookgate_requests_total{{source="{source}",outcome="stale"}}"#))
}

async fn replays_are_refused_quietly(
    gateway: TestGateway,
    source: &str,
    upstream: &Upstream,
    wait_for_forwarding: bool,
) {
    // The fixture was signed on 2026-11-21: older than an hour whenever this runs.
    let captured = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    assert_eq!(captured.status, 200, "200, so WooCommerce counts no failure: {}", captured.text());
    assert_eq!(captured.text(), r#"{"status":"stale"}"#);
    let old = send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order(7, &gmt(7200)))).await;
    assert_eq!(old.text(), r#"{"status":"stale"}"#, "two hours old against a one-hour bound");

    let fresh = send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order(8, &gmt(60)))).await;
    assert_eq!(fresh.status, 200, "{}", fresh.text());
    assert!(!fresh.text().contains("stale"), "a minute old passes: {}", fresh.text());
    let undated = send_raw(gateway.addr, &signed_request("/hooks/main", "order.deleted", br#"{"id":9}"#)).await;
    assert!(!undated.text().contains("stale"), "a payload without a date is not judged: {}", undated.text());
    // A forged date does not help: the date is inside the signed body, so changing it breaks the signature.
    let mut forged = Fixture::load("order-created").request("/hooks/main");
    let at = forged.windows(10).position(|w| w == b"2026-11-21").unwrap();
    forged[at..at + 10].copy_from_slice(&gmt(0).as_bytes()[..10]);
    assert_eq!(send_raw(gateway.addr, &forged).await.status, 401);

    if wait_for_forwarding {
        eventually(Duration::from_secs(20), "the two passing deliveries arrive", || upstream.received().len() == 2)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bodies: Vec<String> =
        upstream.received().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
    assert_eq!(bodies.len(), 2, "only the fresh and the undated deliveries went upstream: {bodies:?}");
    assert!(bodies.iter().all(|b| b.contains(r#""id":8"#) || b.contains(r#""id":9"#)), "{bodies:?}");
    assert_eq!(stale_count(&gateway, source).await, Some(2.0), "counted under outcome stale");
    gateway.stop().await;
}

#[tokio::test]
async fn proxy_mode_answers_stale_and_forwards_nothing() {
    let upstream = Upstream::start().await;
    let routes = format!("  - name: orders\n    topics: [\"order.*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let gateway = TestGateway::start(&with_max_age(fixture_config(&routes, ""), "replay-proxy", "1h")).await;
    replays_are_refused_quietly(gateway, "replay-proxy", &upstream, false).await;
}

#[tokio::test]
async fn queue_mode_answers_stale_and_queues_nothing() {
    let dir = temp_dir("replay-queue");
    let upstream = Upstream::start().await;
    let routes = format!("  - name: orders\n    topics: [\"order.*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let config =
        with_max_age(fixture_config(&routes, &queue_delivery(&Backend::Sqlite, &dir, "")), "replay-queue", "1h");
    let gateway = TestGateway::start(&config).await;
    replays_are_refused_quietly(gateway, "replay-queue", &upstream, true).await;
}

#[test]
fn a_zero_or_malformed_bound_is_a_config_error_with_its_line() {
    for (value, expected) in [("0s", "longer than zero"), ("yesterday", "is not a duration")] {
        let config = with_max_age(
            fixture_config("  - name: r\n    topics: [\"*\"]\n    upstream: \"http://127.0.0.1:1/\"\n", ""),
            "replay-config",
            value,
        );
        let error = hookgate::config::Config::from_yaml(&config, std::path::Path::new("hookgate.yaml")).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("reject_older_than") && text.contains(expected), "{text}");
        assert!(text.contains("hookgate.yaml:"), "names the file and line: {text}");
    }
}
