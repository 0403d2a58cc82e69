//! Delivering: the queued answer, order per resource, fan-out, what is not queued, max_in_flight.

use super::*;

on_both_backends!(a_delivery_is_answered_queued_and_reaches_its_upstream_with_event_id_and_attempt);
async fn a_delivery_is_answered_queued_and_reaches_its_upstream_with_event_id_and_attempt(backend: Backend) {
    let dir = backend.temp_dir("queue-basic");
    let upstream = Upstream::start().await;
    let config =
        fixture_config(&route("orders", "\"order.*\"", &upstream.url("/in")), &queue_delivery(&backend, &dir, ""));
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

on_both_backends!(nothing_is_lost_while_the_upstream_is_down_and_order_per_resource_holds);
async fn nothing_is_lost_while_the_upstream_is_down_and_order_per_resource_holds(backend: Backend) {
    let dir = backend.temp_dir("queue-down");
    // Reserve a port, then free it: the upstream is "down" until something listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = fixture_config(
        &route("orders", "\"order.*\"", &format!("http://{addr}/orders")),
        &queue_delivery(&backend, &dir, ""),
    );
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
    eventually(WAIT, "an attempt of each order has failed", || {
        backend.count(&dir, "SELECT COUNT(*) FROM deliveries WHERE attempts > 0") >= 3
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

on_both_backends!(deliveries_about_one_resource_are_never_in_flight_together);
async fn deliveries_about_one_resource_are_never_in_flight_together(backend: Backend) {
    let dir = backend.temp_dir("queue-serial");
    let delay = Duration::from_millis(150);
    let upstream = Upstream::answering(UpstreamAnswer { delay, ..Default::default() }).await;
    let config =
        fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &queue_delivery(&backend, &dir, ""));
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
    assert!(
        firsts[3].duration_since(firsts[0]) < delay,
        "different resources are delivered in parallel: {:?}",
        received.iter().map(|r| (sequence_of(r), r.at.duration_since(firsts[0]))).collect::<Vec<_>>()
    );
    gateway.stop().await;
}

on_both_backends!(fan_out_sends_one_delivery_to_every_matching_route);
async fn fan_out_sends_one_delivery_to_every_matching_route(backend: Backend) {
    let dir = backend.temp_dir("queue-fanout");
    let fulfillment = Upstream::start().await;
    let crm = Upstream::start().await;
    let routes = format!(
        "{}{}",
        route("fulfillment", "\"order.*\"", &fulfillment.url("/f")),
        route("crm", "\"order.created\", \"customer.*\"", &crm.url("/c"))
    );
    let gateway = TestGateway::start(&fixture_config(&routes, &queue_delivery(&backend, &dir, ""))).await;
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

on_both_backends!(discarded_and_rejected_deliveries_are_not_queued);
/// A rejected delivery, a ping, and with `unrouted: discard` a delivery no route takes: nothing stored.
async fn discarded_and_rejected_deliveries_are_not_queued(backend: Backend) {
    let dir = backend.temp_dir("queue-rejected");
    let upstream = Upstream::start().await;
    let config = fixture_config(
        &route("orders", "\"order.*\"", &upstream.url("/")),
        &format!("unrouted: discard\n{}", queue_delivery(&backend, &dir, "  max_in_flight: 1\n")),
    );
    let gateway = TestGateway::start(&config).await;
    assert_eq!(send_raw(gateway.addr, &Fixture::load("tampered-body").request("/hooks/main")).await.status, 401);
    assert_eq!(send_raw(gateway.addr, &Fixture::load("ping").request("/hooks/main")).await.status, 200);
    let unrouted = send_raw(gateway.addr, &Fixture::load("coupon-deleted").request("/hooks/main")).await;
    assert_eq!(unrouted.text(), r#"{"status":"unrouted"}"#, "no id: nothing is kept");
    // Each was answered after the spool committed what it stored.
    assert_eq!(backend.count(&dir, "SELECT COUNT(*) FROM events"), 0, "nothing was stored");
    assert!(received_before_a_new_delivery(&gateway, &upstream, 9001).await.is_empty());
    gateway.stop().await;
}

on_both_backends!(max_in_flight_bounds_the_attempts_per_route);
async fn max_in_flight_bounds_the_attempts_per_route(backend: Backend) {
    let dir = backend.temp_dir("queue-max-in-flight");
    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(150), ..Default::default() }).await;
    let config = fixture_config(
        &route("orders", "\"order.*\"", &upstream.url("/")),
        &queue_delivery(&backend, &dir, "  max_in_flight: 2\n"),
    );
    let gateway = TestGateway::start(&config).await;
    for id in 1..=8 {
        send_raw(gateway.addr, &signed_request("/hooks/main", "order.created", &order_body(id, 0))).await;
    }
    eventually(WAIT, "all eight arrive", || upstream.received().len() == 8).await;
    assert_eq!(upstream.max_concurrency(), 2, "eight resources, but at most two attempts at once");
    gateway.stop().await;
}

on_both_backends!(many_resources_at_once_each_update_arrives_exactly_once_and_in_order);
/// Many orders updated at once, each several times: every update arrives once, each order's in the order
/// sent, and nothing more arrives in the second and a half after the last (the other tests stop looking
/// once the count is reached, so a late second copy would go unseen there).
async fn many_resources_at_once_each_update_arrives_exactly_once_and_in_order(backend: Backend) {
    const ORDERS: u64 = 40;
    const UPDATES: u64 = 5;
    let dir = backend.temp_dir("queue-exactly-once");
    let upstream = Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(5), ..Default::default() }).await;
    let config =
        fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &queue_delivery(&backend, &dir, ""));
    let gateway = TestGateway::start(&config).await;
    let mut senders = tokio::task::JoinSet::new();
    for id in 1..=ORDERS {
        let addr = gateway.addr;
        senders.spawn(async move {
            for sequence in 0..UPDATES {
                let answer =
                    send_raw(addr, &signed_request("/hooks/main", "order.updated", &order_body(id, sequence))).await;
                assert_eq!(answer.status, 200, "{}", answer.text());
            }
        });
    }
    while let Some(sent) = senders.join_next().await {
        sent.unwrap();
    }
    let total = usize::try_from(ORDERS * UPDATES).unwrap();
    eventually(WAIT, "every update arrives", || upstream.received().len() >= total).await;
    // Longer than the dispatcher keeps what it read ahead (1 s): a second copy would have come by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = upstream.received();
    let mut seen = std::collections::HashSet::new();
    let mut last: HashMap<u64, u64> = HashMap::new();
    for got in &received {
        let (id, sequence) = sequence_of(got);
        assert!(seen.insert((id, sequence)), "order {id} update {sequence} arrived twice");
        if let Some(previous) = last.insert(id, sequence) {
            assert_eq!(sequence, previous + 1, "order {id} out of order");
        }
    }
    assert_eq!(received.len(), total, "each update once, nothing more");
    gateway.stop().await;
}
