//! Retries: backoff and Retry-After on the gateway's clock, give_up_after, dead letters and replays.

use super::*;

on_both_backends!(an_upstream_answering_503_then_200_gets_the_delivery_on_a_retry);
async fn an_upstream_answering_503_then_200_gets_the_delivery_on_a_retry(backend: Backend) {
    let dir = backend.temp_dir("queue-503");
    let unavailable = UpstreamAnswer { status: StatusCode::SERVICE_UNAVAILABLE, body: "busy", ..Default::default() };
    let upstream = Upstream::scripted(vec![unavailable.clone(), unavailable, UpstreamAnswer::default()]).await;
    // Backoffs of up to two minutes, skipped on the gateway's clock rather than waited for.
    let delivery = queue_delivery_retrying(&backend, &dir, "1m", "2m", "1h");
    let config = fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &delivery);
    let gateway = TestGateway::start(&config).await;
    let fixture = Fixture::load("order-created");
    let answer = send_raw(gateway.addr, &fixture.request("/hooks/main")).await;
    let event_id = json(&answer)["id"].as_str().unwrap().to_owned();
    for failed in 1..=2 {
        recorded(&backend, &dir, &event_id, "pending", failed).await;
        skip_time(Duration::from_secs(121)).await;
    }
    recorded(&backend, &dir, &event_id, "delivered", 3).await;
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

on_both_backends!(a_retry_waits_for_its_backoff);
/// Retry-After makes the wait exact (backoff is jittered): ten minutes, checked on either side of it.
async fn a_retry_waits_for_its_backoff(backend: Backend) {
    let dir = backend.temp_dir("queue-backoff");
    let upstream = Upstream::scripted(vec![unavailable_for_ten_minutes(), UpstreamAnswer::default()]).await;
    let delivery = queue_delivery_retrying(&backend, &dir, "1s", "1h", "1d");
    let gateway =
        TestGateway::start(&fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &delivery)).await;
    let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(7, 0))).await;
    let event_id = json(&answer)["id"].as_str().unwrap().to_owned();
    recorded(&backend, &dir, &event_id, "pending", 1).await;
    skip_time(Duration::from_secs(9 * 60)).await;
    assert_eq!(received_before_a_new_delivery(&gateway, &upstream, 9001).await.len(), 1, "not retried before its time");
    skip_time(Duration::from_secs(2 * 60)).await;
    recorded(&backend, &dir, &event_id, "delivered", 2).await;
    let received = upstream.received();
    assert_eq!(received.len(), 3);
    assert_eq!(sequence_of(&received[2]), (7, 0));
    assert_eq!(received[2].headers["x-hookgate-attempt"], "2");
    gateway.stop().await;
}

on_both_backends!(retries_end_in_a_dead_letter_after_give_up_after);
/// Each retry comes ten minutes after the last (Retry-After); with `give_up_after: 25m` the third attempt,
/// whose retry would fall at 32 minutes, makes a dead letter instead.
async fn retries_end_in_a_dead_letter_after_give_up_after(backend: Backend) {
    let dir = backend.temp_dir("queue-give-up");
    let upstream = Upstream::answering(unavailable_for_ten_minutes()).await;
    let delivery = queue_delivery_retrying(&backend, &dir, "1s", "1h", "25m");
    let gateway =
        TestGateway::start(&fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &delivery)).await;
    let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(7, 0))).await;
    let event_id = json(&answer)["id"].as_str().unwrap().to_owned();
    for failed in 1..=2 {
        recorded(&backend, &dir, &event_id, "pending", failed).await;
        skip_time(Duration::from_secs(11 * 60)).await;
    }
    recorded(&backend, &dir, &event_id, "dead", 3).await;
    let error = delivery_of(&backend, &dir, &event_id).2.unwrap_or_default();
    assert!(error.starts_with("gave up after 3 attempts (give_up_after 25m)"), "{error}");
    skip_time(Duration::from_secs(3600)).await;
    assert_eq!(received_before_a_new_delivery(&gateway, &upstream, 9001).await.len(), 3, "no attempt after it");
    gateway.stop().await;
}

on_both_backends!(a_400_makes_a_dead_letter_that_spool_replay_delivers);
async fn a_400_makes_a_dead_letter_that_spool_replay_delivers(backend: Backend) {
    let dir = backend.temp_dir("queue-dead");
    let refused = UpstreamAnswer { status: StatusCode::BAD_REQUEST, body: "missing field sku", ..Default::default() };
    let upstream = Upstream::scripted(vec![refused, UpstreamAnswer::default()]).await;
    let config = fixture_config(
        &route("orders", "\"order.*\"", &upstream.url("/")),
        &queue_delivery(&backend, &dir, "  max_in_flight: 1\n"),
    );
    let config_file = dir.join("hookgate.yaml");
    std::fs::write(&config_file, &config).unwrap();
    let gateway = TestGateway::start(&config).await;
    let answer = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    let event_id = json(&answer)["id"].as_str().unwrap().to_owned();
    eventually(WAIT, "the first attempt", || upstream.received().len() == 1).await;

    let spool = |args: &[&str]| super::spool(&config_file, args);
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

on_both_backends!(a_replay_while_the_resource_is_in_flight_waits_for_it);
async fn a_replay_while_the_resource_is_in_flight_waits_for_it(backend: Backend) {
    let dir = backend.temp_dir("queue-replay-in-flight");
    let refused = UpstreamAnswer { status: StatusCode::UNPROCESSABLE_ENTITY, ..Default::default() };
    // Longer than the dispatcher's 1 s poll (so the replayed head is seen while B is in flight), shorter
    // than the route's 2 s timeout.
    let slow = UpstreamAnswer { delay: Duration::from_millis(1500), ..Default::default() };
    let upstream = Upstream::scripted(vec![refused, slow]).await;
    let config =
        fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &queue_delivery(&backend, &dir, ""));
    let config_file = dir.join("hookgate.yaml");
    std::fs::write(&config_file, &config).unwrap();
    let gateway = TestGateway::start(&config).await;
    // A: order 7, refused (dead letter). B: order 7 again, slow to answer.
    let a = json(&send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(7, 0))).await);
    // A is a dead letter before B comes, so B is its resource's head at once.
    recorded(&backend, &dir, a["id"].as_str().unwrap(), "dead", 1).await;
    send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(7, 1))).await;
    eventually(WAIT, "B in flight", || upstream.received().len() == 2).await;
    // Replaying A makes it the resource's head again while B is still in flight.
    let (code, _, error) = spool(&config_file, &["replay", a["id"].as_str().unwrap()]);
    assert_eq!(code, Some(0), "{error}");
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
