//! Queue mode end to end: a real hookgate with its SQLite spool and real upstreams on loopback sockets.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use http::StatusCode;

const WAIT: Duration = Duration::from_secs(20);

fn route(name: &str, topics: &str, upstream: &str) -> String {
    format!("  - name: {name}\n    topics: [{topics}]\n    upstream: \"{upstream}\"\n    timeout: 2s\n")
}

fn order_body(id: u64, sequence: u64) -> Vec<u8> {
    format!(r#"{{"id":{id},"status":"processing","sequence":{sequence}}}"#).into_bytes()
}

fn json(answer: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&answer.body).unwrap_or_else(|_| panic!("not JSON: {}", answer.text()))
}

fn sequence_of(received: &Received) -> (u64, u64) {
    let body: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
    (body["id"].as_u64().unwrap(), body["sequence"].as_u64().unwrap())
}

/// A queue-mode `delivery:` section like [`queue_delivery`]'s with the retry settings given, and
/// `max_in_flight: 1` (for [`received_before_a_new_delivery`]).
fn queue_delivery_retrying(dir: &Path, initial_backoff: &str, max_backoff: &str, give_up_after: &str) -> String {
    format!(
        "delivery:\n  mode: queue\n  spool_path: {}\n  max_in_flight: 1\n  retry:\n    initial_backoff: {initial_backoff}\n    max_backoff: {max_backoff}\n    give_up_after: {give_up_after}\n",
        dir.join("spool.db").display()
    )
}

/// The state, recorded attempts and last error of event `event_id`'s delivery (on its one route).
fn delivery_of(dir: &Path, event_id: &str) -> (String, u32, Option<String>) {
    let conn = rusqlite::Connection::open(dir.join("spool.db")).unwrap();
    conn.query_row(
        "SELECT d.state, d.attempts, d.last_error FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE e.public_id = ?1",
        [event_id],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .unwrap()
}

/// Waits until the spool has recorded `attempts` attempts of `event_id`'s delivery, leaving it in `state`;
/// fails at once if more were made.
async fn recorded(dir: &Path, event_id: &str, state: &str, attempts: u32) {
    let what = format!("{state} after {attempts} attempts");
    eventually(WAIT, &what, || {
        let (now, tried, _) = delivery_of(dir, event_id);
        assert!(tried <= attempts, "waiting for {what}, found {now} after {tried} attempts");
        now == state && tried == attempts
    })
    .await;
}

/// Sends order `id` and returns what the upstream received before it. On a route with `max_in_flight: 1`
/// the dispatcher sends the delivery due earliest first and one at a time, so anything that was due by
/// then (a retry, a repeat, a duplicate stored by mistake) reached the upstream before it: this shows
/// what was sent without waiting for a while in the hope of seeing it.
async fn received_before_a_new_delivery(gateway: &TestGateway, upstream: &Upstream, id: u64) -> Vec<Received> {
    let body = order_body(id, 0);
    let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.created", &body)).await;
    assert_eq!(json(&answer)["status"], "queued", "{}", answer.text());
    let mut received = Vec::new();
    eventually(WAIT, "the new delivery arrives", || {
        received = upstream.received();
        received.iter().any(|r| r.body == body)
    })
    .await;
    let position = received.iter().position(|r| r.body == body).unwrap();
    received.truncate(position);
    received
}

#[tokio::test]
async fn a_delivery_is_answered_queued_and_reaches_its_upstream_with_event_id_and_attempt() {
    let dir = temp_dir("queue-basic");
    let upstream = Upstream::start().await;
    let config = fixture_config(&route("orders", "\"order.*\"", &upstream.url("/in")), &queue_delivery(&dir, ""));
    let gateway = TestGateway::start(&config).await;
    let fixture = Fixture::load("order-created");
    let answer = send_raw(gateway.addr, &fixture.request("/hooks/main")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = json(&answer);
    assert_eq!(body["status"], "queued");
    let event_id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(event_id.len(), 36, "a UUID: {event_id}");
    eventually(WAIT, "the delivery arrives", || upstream.received().len() == 1).await;
    let got = &upstream.received()[0];
    assert_eq!(got.body, fixture.body, "the exact bytes");
    assert_eq!(got.headers["x-hookgate-event-id"], event_id.as_str());
    assert_eq!(got.headers["x-hookgate-attempt"], "1");
    assert_eq!(got.headers["x-hookgate-route"], "orders");
    assert_eq!(got.headers["x-wc-webhook-signature"], fixture.field("signature"));
    assert_eq!(got.headers["x-forwarded-host"], "hooks.example.com");
    gateway.stop().await;
}

#[tokio::test]
async fn nothing_is_lost_while_the_upstream_is_down_and_order_per_resource_holds() {
    let dir = temp_dir("queue-down");
    // Reserve a port, then free it: the upstream is "down" until something listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config =
        fixture_config(&route("orders", "\"order.*\"", &format!("http://{addr}/orders")), &queue_delivery(&dir, ""));
    let gateway = TestGateway::start(&config).await;
    // Three orders, four updates each, interleaved.
    let mut sent = Vec::new();
    for sequence in 0..4 {
        for id in [101, 102, 103] {
            let answer =
                send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(id, sequence)))
                    .await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_eq!(json(&answer)["status"], "queued");
            sent.push((id, sequence));
        }
    }
    // The first update of each order meets the closed port (the later ones wait behind it).
    let conn = rusqlite::Connection::open(dir.join("spool.db")).unwrap();
    eventually(WAIT, "an attempt of each order has failed", || {
        let failed: i64 =
            conn.query_row("SELECT COUNT(*) FROM deliveries WHERE attempts > 0", [], |r| r.get(0)).unwrap();
        failed >= 3
    })
    .await;
    let upstream = Upstream::start_on(addr).await;
    eventually(WAIT, "every delivery arrives", || upstream.received().len() >= sent.len()).await;
    let received = upstream.received();
    assert_eq!(received.len(), sent.len(), "each delivered exactly once once the upstream is up");
    let mut per_order: HashMap<u64, Vec<u64>> = HashMap::new();
    for got in &received {
        let (id, sequence) = sequence_of(got);
        per_order.entry(id).or_default().push(sequence);
        let attempt: u32 = got.headers["x-hookgate-attempt"].to_str().unwrap().parse().unwrap();
        if sequence == 0 {
            // The first update of each order met the closed port; later ones waited behind it unattempted.
            assert!(attempt >= 2, "order {id}: attempt {attempt}");
        } else {
            assert_eq!(attempt, 1, "order {id} update {sequence} was not tried while an earlier one was pending");
        }
    }
    for (id, sequences) in per_order {
        assert_eq!(sequences, [0, 1, 2, 3], "order {id} arrived out of order");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn deliveries_about_one_resource_are_never_in_flight_together() {
    let dir = temp_dir("queue-serial");
    let delay = Duration::from_millis(150);
    let upstream = Upstream::answering(UpstreamAnswer { delay, ..Default::default() }).await;
    let config = fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &queue_delivery(&dir, ""));
    let gateway = TestGateway::start(&config).await;
    for sequence in 0..3 {
        for id in [1, 2, 3, 4] {
            send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(id, sequence))).await;
        }
    }
    eventually(WAIT, "all twelve arrive", || upstream.received().len() == 12).await;
    let received = upstream.received();
    let mut last: HashMap<u64, (u64, std::time::Instant)> = HashMap::new();
    for got in &received {
        let (id, sequence) = sequence_of(got);
        if let Some((previous, at)) = last.get(&id) {
            assert_eq!(sequence, previous + 1, "order {id} out of order");
            assert!(
                got.at.duration_since(*at) >= delay,
                "order {id}: the next update came before the previous was answered"
            );
        }
        last.insert(id, (sequence, got.at));
    }
    // Different orders do go in parallel: the first update of each arrived before any was answered.
    let firsts: Vec<_> = received.iter().take(4).map(|r| r.at).collect();
    assert!(firsts[3].duration_since(firsts[0]) < delay, "different resources are delivered in parallel");
    gateway.stop().await;
}

#[tokio::test]
async fn an_upstream_answering_503_then_200_gets_the_delivery_on_a_retry() {
    let dir = temp_dir("queue-503");
    let unavailable = UpstreamAnswer { status: StatusCode::SERVICE_UNAVAILABLE, body: "busy", ..Default::default() };
    let upstream = Upstream::scripted(vec![unavailable.clone(), unavailable, UpstreamAnswer::default()]).await;
    // Backoffs of up to two minutes, skipped on the gateway's clock rather than waited for.
    let delivery = queue_delivery_retrying(&dir, "1m", "2m", "1h");
    let config = fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &delivery);
    let gateway = TestGateway::start(&config).await;
    let fixture = Fixture::load("order-created");
    let answer = send_raw(gateway.addr, &fixture.request("/hooks/main")).await;
    let event_id = json(&answer)["id"].as_str().unwrap().to_owned();
    for failed in 1..=2 {
        recorded(&dir, &event_id, "pending", failed).await;
        skip_time(Duration::from_secs(121)).await;
    }
    recorded(&dir, &event_id, "delivered", 3).await;
    let received = upstream.received();
    let attempts: Vec<_> =
        received.iter().map(|r| r.headers["x-hookgate-attempt"].to_str().unwrap().to_owned()).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(
        received.iter().all(|r| r.headers["x-hookgate-event-id"] == event_id.as_str()),
        "the same event id every time"
    );
    assert!(received.iter().all(|r| r.body == fixture.body));
    // Long past any retry's time, a new delivery is the next thing the upstream gets.
    skip_time(Duration::from_secs(3600)).await;
    assert_eq!(received_before_a_new_delivery(&gateway, &upstream, 9001).await.len(), 3, "no attempt after the 200");
    gateway.stop().await;
}

/// Retry-After makes the wait exact (backoff is jittered): ten minutes, checked on either side of it.
#[tokio::test]
async fn a_retry_waits_for_its_backoff() {
    let dir = temp_dir("queue-backoff");
    let later = UpstreamAnswer {
        status: StatusCode::SERVICE_UNAVAILABLE,
        headers: vec![("retry-after", "600")],
        ..Default::default()
    };
    let upstream = Upstream::scripted(vec![later, UpstreamAnswer::default()]).await;
    let delivery = queue_delivery_retrying(&dir, "1s", "1h", "1d");
    let gateway =
        TestGateway::start(&fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &delivery)).await;
    let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(7, 0))).await;
    let event_id = json(&answer)["id"].as_str().unwrap().to_owned();
    recorded(&dir, &event_id, "pending", 1).await;
    skip_time(Duration::from_secs(9 * 60)).await;
    assert_eq!(received_before_a_new_delivery(&gateway, &upstream, 9001).await.len(), 1, "not retried before its time");
    skip_time(Duration::from_secs(2 * 60)).await;
    recorded(&dir, &event_id, "delivered", 2).await;
    let received = upstream.received();
    assert_eq!(received.len(), 3);
    assert_eq!(sequence_of(&received[2]), (7, 0));
    assert_eq!(received[2].headers["x-hookgate-attempt"], "2");
    gateway.stop().await;
}

/// Each retry comes ten minutes after the last (Retry-After); with `give_up_after: 25m` the third attempt,
/// whose retry would fall at 32 minutes, makes a dead letter instead.
#[tokio::test]
async fn retries_end_in_a_dead_letter_after_give_up_after() {
    let dir = temp_dir("queue-give-up");
    let upstream = Upstream::answering(UpstreamAnswer {
        status: StatusCode::SERVICE_UNAVAILABLE,
        headers: vec![("retry-after", "600")],
        ..Default::default()
    })
    .await;
    let delivery = queue_delivery_retrying(&dir, "1s", "1h", "25m");
    let gateway =
        TestGateway::start(&fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &delivery)).await;
    let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(7, 0))).await;
    let event_id = json(&answer)["id"].as_str().unwrap().to_owned();
    for failed in 1..=2 {
        recorded(&dir, &event_id, "pending", failed).await;
        skip_time(Duration::from_secs(11 * 60)).await;
    }
    recorded(&dir, &event_id, "dead", 3).await;
    let error = delivery_of(&dir, &event_id).2.unwrap_or_default();
    assert!(error.starts_with("gave up after 3 attempts (give_up_after 25m)"), "{error}");
    skip_time(Duration::from_secs(3600)).await;
    assert_eq!(received_before_a_new_delivery(&gateway, &upstream, 9001).await.len(), 3, "no attempt after it");
    gateway.stop().await;
}

#[tokio::test]
async fn a_400_makes_a_dead_letter_that_spool_replay_delivers() {
    let dir = temp_dir("queue-dead");
    let refused = UpstreamAnswer { status: StatusCode::BAD_REQUEST, body: "missing field sku", ..Default::default() };
    let upstream = Upstream::scripted(vec![refused, UpstreamAnswer::default()]).await;
    let config = fixture_config(
        &route("orders", "\"order.*\"", &upstream.url("/")),
        &queue_delivery(&dir, "  max_in_flight: 1\n"),
    );
    let config_file = dir.join("hookgate.yaml");
    std::fs::write(&config_file, &config).unwrap();
    let gateway = TestGateway::start(&config).await;
    let answer = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    let event_id = json(&answer)["id"].as_str().unwrap().to_owned();
    eventually(WAIT, "the first attempt", || upstream.received().len() == 1).await;

    let spool = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .arg("spool")
            .args(args)
            .arg("--config")
            .arg(&config_file)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let mut dead = String::new();
    eventually(WAIT, "the dead letter is recorded", || {
        dead = spool(&["list", "--state", "dead"]).1;
        dead.contains(&event_id)
    })
    .await;
    assert!(dead.contains("orders  dead  order.created from main") && dead.contains("last status 400"), "{dead}");
    let (code, shown, _) = spool(&["show", &event_id]);
    assert_eq!(code, Some(0));
    assert!(shown.contains("route orders: dead, attempts 1, last status 400"), "{shown}");
    assert!(shown.contains("answer: missing field sku"), "{shown}");
    assert!(shown.contains("x-wc-webhook-topic: order.created"), "{shown}");
    let (_, stats, _) = spool(&["stats"]);
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("orders") && l.split_whitespace().collect::<Vec<_>>()[1..4] == ["0", "1", "0"]),
        "{stats}"
    );

    // Dead is dead: no retry on its own, however long after (past every backoff and give_up_after).
    skip_time(Duration::from_secs(2 * 3600)).await;
    assert_eq!(received_before_a_new_delivery(&gateway, &upstream, 9001).await.len(), 1);
    let (code, replayed, _) = spool(&["replay", &event_id]);
    assert_eq!(code, Some(0));
    assert_eq!(replayed.trim(), "replayed 1 delivery");
    assert_eq!(spool(&["replay", "--dead"]).1.trim(), "replayed 0 deliveries", "nothing else is dead");
    eventually(WAIT, "the replayed delivery arrives", || upstream.received().len() == 3).await;
    assert_eq!(upstream.received()[2].headers["x-hookgate-event-id"], event_id.as_str());
    assert_eq!(upstream.received()[2].headers["x-hookgate-attempt"], "2");
    let mut delivered = String::new();
    eventually(WAIT, "it is recorded as delivered", || {
        delivered = spool(&["list", "--state", "delivered"]).1;
        delivered.contains(&event_id)
    })
    .await;
    let (code, _, error) = spool(&["show", "no-such-event"]);
    assert_eq!(code, Some(1));
    assert!(error.contains("no event no-such-event"), "{error}");
    let (code, dropped, _) = spool(&["drop", &event_id]);
    assert_eq!(code, Some(0), "{dropped}");
    assert_eq!(spool(&["show", &event_id]).0, Some(1), "dropped");
    gateway.stop().await;
}

#[tokio::test]
async fn fan_out_sends_one_delivery_to_every_matching_route() {
    let dir = temp_dir("queue-fanout");
    let fulfillment = Upstream::start().await;
    let crm = Upstream::start().await;
    let routes = format!(
        "{}{}",
        route("fulfillment", "\"order.*\"", &fulfillment.url("/f")),
        route("crm", "\"order.created\", \"customer.*\"", &crm.url("/c"))
    );
    let gateway = TestGateway::start(&fixture_config(&routes, &queue_delivery(&dir, ""))).await;
    let created = Fixture::load("order-created");
    let answer = send_raw(gateway.addr, &created.request("/hooks/main")).await;
    let event_id = json(&answer)["id"].as_str().unwrap().to_owned();
    send_raw(gateway.addr, &Fixture::load("order-updated-large").request("/hooks/main")).await;
    eventually(WAIT, "both routes got theirs", || fulfillment.received().len() == 2 && crm.received().len() == 1).await;
    assert_eq!(crm.received()[0].body, created.body);
    assert_eq!(crm.received()[0].headers["x-hookgate-route"], "crm");
    assert_eq!(crm.received()[0].headers["x-hookgate-event-id"], event_id.as_str());
    assert_eq!(fulfillment.received()[0].headers["x-hookgate-event-id"], event_id.as_str());
    gateway.stop().await;
}

#[tokio::test]
async fn a_repeated_delivery_is_answered_duplicate_and_queued_once_even_across_a_restart() {
    let dir = temp_dir("queue-dedupe");
    let upstream = Upstream::start().await;
    let config =
        fixture_config(&route("all", "\"*\"", &upstream.url("/")), &queue_delivery(&dir, "  max_in_flight: 1\n"));
    let gateway = TestGateway::start(&config).await;
    let fixture = Fixture::load("order-created");
    let first = json(&send_raw(gateway.addr, &fixture.request("/hooks/main")).await);
    let second = json(&send_raw(gateway.addr, &fixture.request("/hooks/main")).await);
    assert_eq!(first["status"], "queued");
    assert_eq!(second["status"], "duplicate");
    assert_eq!(second["id"], first["id"], "the duplicate names the event it repeats");
    // Action topics repeat legitimately: not deduplicated by default.
    let action = Fixture::load("action-add-to-cart");
    assert_eq!(json(&send_raw(gateway.addr, &action.request("/hooks/main")).await)["status"], "queued");
    assert_eq!(json(&send_raw(gateway.addr, &action.request("/hooks/main")).await)["status"], "queued");
    // The same body under another topic is not a repeat.
    let mut headers = fixture.headers();
    for (name, value) in headers.iter_mut() {
        if name == "X-WC-Webhook-Topic" {
            *value = "order.updated".into();
        }
    }
    let other_topic = raw_request("POST", "/hooks/main", "HTTP/1.0", &headers, &fixture.body);
    assert_eq!(json(&send_raw(gateway.addr, &other_topic).await)["status"], "queued");
    gateway.stop().await;

    // The record survives a restart.
    let gateway = TestGateway::start(&config).await;
    assert_eq!(json(&send_raw(gateway.addr, &fixture.request("/hooks/main")).await)["status"], "duplicate");
    let received = received_before_a_new_delivery(&gateway, &upstream, 9001).await;
    assert_eq!(received.len(), 4, "four deliveries: the duplicates reached no one");
    gateway.stop().await;
}

#[tokio::test]
async fn past_max_spool_bytes_deliveries_get_503_with_retry_after() {
    let dir = temp_dir("queue-full");
    let upstream = Upstream::start().await;
    let config = fixture_config(
        &route("all", "\"*\"", &upstream.url("/")),
        &queue_delivery(&dir, "  max_spool_bytes: 200000\n"),
    );
    let gateway = TestGateway::start(&config).await;
    let large = Fixture::load("order-updated-large");
    let answer = send_raw(gateway.addr, &large.request("/hooks/main")).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.text(), r#"{"error":"spool_full"}"#);
    assert_eq!(answer.header("retry-after"), Some("60"));
    // A small delivery still fits.
    let small = send_raw(gateway.addr, &Fixture::load("coupon-deleted").request("/hooks/main")).await;
    assert_eq!(small.status, 200);
    eventually(WAIT, "the small one arrives", || upstream.received().len() == 1).await;
    assert_eq!(
        upstream.received()[0].body,
        Fixture::load("coupon-deleted").body,
        "the refused delivery reached no one"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_keeps_pending_deliveries_for_the_next_start() {
    let dir = temp_dir("queue-restart");
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = fixture_config(
        &route("orders", "\"order.*\"", &format!("http://{addr}/")),
        &queue_delivery(&dir, "  max_in_flight: 1\n"),
    );
    let gateway = TestGateway::start(&config).await;
    for id in 1..=5 {
        let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.created", &order_body(id, 0))).await;
        assert_eq!(json(&answer)["status"], "queued");
    }
    gateway.stop().await;
    let upstream = Upstream::start_on(addr).await;
    // What the stopped gateway had scheduled (a retry, its next poll) would all be due now.
    skip_time(Duration::from_secs(600)).await;
    // Real time: a stray attempt needs some to reach the socket.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(upstream.received().is_empty(), "nothing is sent while hookgate is stopped");
    let gateway = TestGateway::start(&config).await;
    let received = received_before_a_new_delivery(&gateway, &upstream, 9001).await;
    assert_eq!(received.len(), 5, "the pending deliveries are resumed, each sent once");
    gateway.stop().await;
}

#[tokio::test]
async fn unrouted_and_rejected_deliveries_are_not_queued() {
    let dir = temp_dir("queue-rejected");
    let upstream = Upstream::start().await;
    let config = fixture_config(
        &route("orders", "\"order.*\"", &upstream.url("/")),
        &queue_delivery(&dir, "  max_in_flight: 1\n"),
    );
    let gateway = TestGateway::start(&config).await;
    assert_eq!(send_raw(gateway.addr, &Fixture::load("tampered-body").request("/hooks/main")).await.status, 401);
    assert_eq!(send_raw(gateway.addr, &Fixture::load("ping").request("/hooks/main")).await.status, 200);
    let unrouted = send_raw(gateway.addr, &Fixture::load("coupon-deleted").request("/hooks/main")).await;
    assert_eq!(unrouted.text(), r#"{"status":"unrouted"}"#);
    // Each was answered after the spool committed what it stored.
    let conn = rusqlite::Connection::open(dir.join("spool.db")).unwrap();
    let events: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
    assert_eq!(events, 0, "nothing was stored");
    assert!(received_before_a_new_delivery(&gateway, &upstream, 9001).await.is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn max_in_flight_bounds_the_attempts_per_route() {
    let dir = temp_dir("queue-max-in-flight");
    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(150), ..Default::default() }).await;
    let config = fixture_config(
        &route("orders", "\"order.*\"", &upstream.url("/")),
        &queue_delivery(&dir, "  max_in_flight: 2\n"),
    );
    let gateway = TestGateway::start(&config).await;
    for id in 1..=8 {
        send_raw(gateway.addr, &signed_request("/hooks/main", "order.created", &order_body(id, 0))).await;
    }
    eventually(WAIT, "all eight arrive", || upstream.received().len() == 8).await;
    assert_eq!(upstream.max_concurrency(), 2, "eight resources, but at most two attempts at once");
    gateway.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_lets_an_attempt_in_flight_finish_and_records_it() {
    let dir = temp_dir("queue-stop-in-flight");
    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(700), ..Default::default() }).await;
    let config = fixture_config(
        &route("orders", "\"order.*\"", &upstream.url("/")),
        &queue_delivery(&dir, "  max_in_flight: 1\n"),
    );
    let gateway = TestGateway::start(&config).await;
    send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    eventually(WAIT, "the attempt is in flight", || upstream.received().len() == 1).await;
    let stopping = std::time::Instant::now();
    gateway.stop().await;
    assert!(stopping.elapsed() >= Duration::from_millis(400), "the stop waited for the attempt");
    let conn = rusqlite::Connection::open(dir.join("spool.db")).unwrap();
    let state: String = conn.query_row("SELECT state FROM deliveries", [], |r| r.get(0)).unwrap();
    assert_eq!(state, "delivered", "the attempt ended and was recorded before the spool closed");
    // Started again, nothing is sent twice.
    let gateway = TestGateway::start(&config).await;
    assert_eq!(received_before_a_new_delivery(&gateway, &upstream, 9001).await.len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_second_gateway_cannot_deliver_from_the_same_spool() {
    let dir = temp_dir("queue-lock");
    let upstream = Upstream::start().await;
    let config = fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &queue_delivery(&dir, ""));
    let gateway = TestGateway::start(&config).await;
    let parsed = hookgate::config::Config::from_yaml(&config, std::path::Path::new("second.yaml")).unwrap();
    let error = hookgate::server::Gateway::new(parsed).err().expect("the spool is taken").to_string();
    assert!(error.contains("another hookgate is delivering from"), "{error}");
    gateway.stop().await;
    // Once the first has stopped, the spool is free.
    let parsed = hookgate::config::Config::from_yaml(&config, std::path::Path::new("second.yaml")).unwrap();
    let second = hookgate::server::Gateway::new(parsed).expect("free again");
    second.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_zero_dedupe_window_queues_every_repeat() {
    let dir = temp_dir("queue-no-dedupe");
    let upstream = Upstream::start().await;
    let config = fixture_config(
        &route("all", "\"*\"", &upstream.url("/")),
        &format!("{}dedupe:\n  window: 0s\n", queue_delivery(&dir, "")),
    );
    let gateway = TestGateway::start(&config).await;
    let fixture = Fixture::load("order-created");
    for _ in 0..2 {
        assert_eq!(json(&send_raw(gateway.addr, &fixture.request("/hooks/main")).await)["status"], "queued");
    }
    eventually(WAIT, "both arrive", || upstream.received().len() == 2).await;
    gateway.stop().await;
}

#[tokio::test]
async fn delivered_entries_are_pruned_after_keep_delivered() {
    let dir = temp_dir("queue-prune-at-start");
    let upstream = Upstream::start().await;
    let config =
        fixture_config(&route("all", "\"*\"", &upstream.url("/")), &queue_delivery(&dir, "  keep_delivered: 0s\n"));
    let gateway = TestGateway::start(&config).await;
    let answer = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    let id = json(&answer)["id"].as_str().unwrap().to_owned();
    recorded(&dir, &id, "delivered", 1).await;
    gateway.stop().await;
    // Pruning runs at start and every minute after.
    let gateway = TestGateway::start(&config).await;
    let conn = rusqlite::Connection::open(dir.join("spool.db")).unwrap();
    eventually(WAIT, "the delivered entry and its event are pruned", || {
        let deliveries: i64 = conn.query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0)).unwrap();
        let events: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
        deliveries == 0 && events == 0
    })
    .await;
    gateway.stop().await;
}

/// Pruning runs at start and every minute after; minutes pass on the gateway's clock, not the test's. Each
/// prune also forgets the dedupe records older than the window (5 minutes here) in the same transaction,
/// which shows when one has run.
#[tokio::test]
async fn pruning_runs_every_minute_and_keeps_what_keep_delivered_keeps() {
    let dir = temp_dir("queue-prune");
    let upstream = Upstream::start().await;
    let delivery = format!("{}dedupe:\n  window: 5m\n", queue_delivery(&dir, "  keep_delivered: 10m\n"));
    let gateway = TestGateway::start(&fixture_config(&route("all", "\"*\"", &upstream.url("/")), &delivery)).await;
    let conn = rusqlite::Connection::open(dir.join("spool.db")).unwrap();
    let count = |table: &str, event_id: &str| -> i64 {
        let column = if table == "events" { "public_id" } else { "event_id" };
        conn.query_row(&format!("SELECT COUNT(*) FROM {table} WHERE {column} = ?1"), [event_id], |r| r.get(0)).unwrap()
    };
    let send = |id| signed_request("/hooks/main", "order.created", &order_body(id, 0));
    let old = json(&send_raw(gateway.addr, &send(1)).await)["id"].as_str().unwrap().to_owned();
    recorded(&dir, &old, "delivered", 1).await;
    assert_eq!(count("dedupe", &old), 1, "a dedupe record whose pruning shows that a prune ran");
    skip_time(Duration::from_secs(6 * 60)).await;
    eventually(WAIT, "a prune after 6 minutes", || count("dedupe", &old) == 0).await;
    assert_eq!(count("events", &old), 1, "delivered 6 minutes ago: kept");
    let recent = json(&send_raw(gateway.addr, &send(2)).await)["id"].as_str().unwrap().to_owned();
    recorded(&dir, &recent, "delivered", 1).await;
    skip_time(Duration::from_secs(5 * 60 + 30)).await;
    eventually(WAIT, "the entry delivered 11.5 minutes ago and its event are pruned", || count("events", &old) == 0)
        .await;
    // The prune that took it forgot the recent one's dedupe record and kept its entry, 5.5 minutes old.
    assert_eq!(count("dedupe", &recent), 0);
    assert_eq!(count("events", &recent), 1);
    assert_eq!(delivery_of(&dir, &recent).0, "delivered");
    let deliveries: i64 = conn.query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0)).unwrap();
    assert_eq!(deliveries, 1, "the old entry's delivery went with its event");
    gateway.stop().await;
}

#[tokio::test]
async fn a_replay_while_the_resource_is_in_flight_waits_for_it() {
    let dir = temp_dir("queue-replay-in-flight");
    let refused = UpstreamAnswer { status: StatusCode::UNPROCESSABLE_ENTITY, ..Default::default() };
    // Longer than the dispatcher's 1 s poll (so the replayed head is seen while B is in flight), shorter
    // than the route's 2 s timeout.
    let slow = UpstreamAnswer { delay: Duration::from_millis(1500), ..Default::default() };
    let upstream = Upstream::scripted(vec![refused, slow]).await;
    let config = fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &queue_delivery(&dir, ""));
    let config_file = dir.join("hookgate.yaml");
    std::fs::write(&config_file, &config).unwrap();
    let gateway = TestGateway::start(&config).await;
    // A: order 7, refused (dead letter). B: order 7 again, slow to answer.
    let a = json(&send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(7, 0))).await);
    // A is a dead letter before B comes, so B is its resource's head at once.
    recorded(&dir, a["id"].as_str().unwrap(), "dead", 1).await;
    send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(7, 1))).await;
    eventually(WAIT, "B in flight", || upstream.received().len() == 2).await;
    // Replaying A makes it the resource's head again while B is still in flight.
    let output = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["spool", "replay", a["id"].as_str().unwrap(), "--config"])
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    eventually(WAIT, "A sent again", || upstream.received().len() == 3).await;
    let received = upstream.received();
    assert_eq!(sequence_of(&received[2]), (7, 0));
    assert!(
        received[2].at.duration_since(received[1].at) >= Duration::from_millis(1400),
        "A waited until B was answered"
    );
    assert_eq!(upstream.max_concurrency(), 1);
    gateway.stop().await;
}

/// A reload that switches the file to proxy mode takes effect only at a restart: until then deliveries are
/// still queued and delivered, with the queue settings the gateway started with.
#[tokio::test]
async fn a_reload_to_proxy_mode_needs_a_restart_and_the_queue_keeps_delivering() {
    let dir = temp_dir("queue-reload-to-proxy");
    let upstream = Upstream::start().await;
    let routes = route("orders", "\"order.*\"", &upstream.url("/in"));
    let gateway = TestGateway::start(&fixture_config(&routes, &queue_delivery(&dir, ""))).await;
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, fixture_config(&routes, "delivery:\n  mode: proxy\n")).unwrap();
    let restart = gateway.gateway.reload(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(restart, ["delivery.mode and delivery.spool_path"]);
    let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(7, 0))).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(json(&answer)["status"], "queued");
    eventually(WAIT, "the queued delivery arrives", || upstream.received().len() == 1).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_is_truncated_once_a_burst_has_drained() {
    let dir = temp_dir("queue-wal-truncate");
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&fixture_config(
        &route("orders", "\"order.*\"", &upstream.url("/")),
        &queue_delivery(&dir, ""),
    ))
    .await;
    // A burst of 24 deliveries of 400 KB: the log grows past SQLite's 1,000-page checkpoint size.
    let padding = "x".repeat(400 * 1024);
    let sends = (0..24u64).map(|id| {
        let addr = gateway.addr;
        let body = format!(r#"{{"id":{id},"status":"processing","note":"{padding}"}}"#);
        tokio::spawn(
            async move { send_raw(addr, &signed_request("/hooks/main", "order.created", body.as_bytes())).await },
        )
    });
    for send in sends.collect::<Vec<_>>() {
        assert_eq!(send.await.unwrap().status, 200);
    }
    let wal = dir.join("spool.db-wal");
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    eventually(WAIT, "every delivery arrives", || upstream.received().len() == 24).await;
    // SQLite's own checkpoints leave the file at 4 MB or more for good; drained, it is back under 1 MiB.
    eventually(WAIT, "the log is truncated once the writer is idle", || wal_size() <= 1024 * 1024).await;
    gateway.stop().await;
}
