//! Deliveries no route takes, in queue mode: kept as unrouted (answered 200 with their id), never sent,
//! shown by `spool list` and `spool stats`, counted, routed once by `spool replay --unrouted` after a
//! reload adds their route, and pruned after `keep_unrouted`.

use super::*;

on_both_backends!(
    an_unrouted_delivery_is_kept_and_a_replay_after_a_reload_delivers_it_once,
    flavor = "multi_thread",
    worker_threads = 2
);
/// The real binary in queue mode with one route for coupons: an order is kept as unrouted and sent nowhere;
/// once the file has a route for orders (a hot reload), a replay sends it there, once however often it runs.
async fn an_unrouted_delivery_is_kept_and_a_replay_after_a_reload_delivers_it_once(backend: Backend) {
    let dir = backend.temp_dir("queue-unrouted-replay");
    let (coupons, orders) = (Upstream::start().await, Upstream::start().await);
    let delivery = queue_delivery(&backend, &dir.join("spool"), "  max_in_flight: 1\n");
    let coupons_route = route("coupons", "\"coupon.*\"", &coupons.url("/"));
    let file = config_file(&dir, &coupons_route, &delivery);
    let mut process = HookgateProcess::start(&file);
    let order = signed_request("/hooks/main", "order.created", &order_body(727, 1));
    let answer = send_raw(process.addr, &order).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let kept = json(&answer);
    assert_eq!(kept["status"], "unrouted");
    let id = kept["id"].as_str().expect("kept under an event id").to_owned();
    let repeat = json(&send_raw(process.addr, &order).await);
    assert_eq!((repeat["status"].as_str(), repeat["id"].as_str()), (Some("duplicate"), Some(id.as_str())));

    let (code, listed, _) = spool(&file, &["list", "--state", "unrouted"]);
    assert_eq!(code, Some(0));
    assert!(listed.starts_with(&format!("{id}  -  unrouted  order.created from main  received ")), "{listed}");
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let (_, stats, _) = spool(&file, &["stats"]);
    assert!(stats.contains("unrouted: 1 event no route took, oldest received "), "{stats}");
    let (code, shown, _) = spool(&file, &["show", &id]);
    assert_eq!(code, Some(0));
    assert!(shown.contains("unrouted: no route took it"), "{shown}");
    // Replaying it now does nothing: no route takes it yet.
    let (code, _, error) = spool(&file, &["replay", &id]);
    assert_eq!(code, Some(1));
    assert!(error.contains("still taken by no route") && error.contains("order.created (1)"), "{error}");
    let mut metrics = String::new();
    for _ in 0..40 {
        metrics = process.metrics().await;
        if metric_sample(&metrics, "hookgate_unrouted_events") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(metric_sample(&metrics, "hookgate_unrouted_events"), Some(1.0), "{metrics}");
    assert_eq!(metric_sample(&metrics, "hookgate_requests_total{source=\"main\",outcome=\"unrouted\"}"), Some(1.0));
    // Sent nowhere: a coupon, due after it, reaches its route, and the order reached no one.
    let coupon = send_raw(process.addr, &Fixture::load("coupon-deleted").request("/hooks/main")).await;
    assert_eq!(json(&coupon)["status"], "queued");
    eventually(WAIT, "the coupon arrives", || coupons.received().len() == 1).await;
    assert!(orders.received().is_empty());

    // The file gets a route for orders; the running gateway reloads it.
    std::fs::write(
        &file,
        fixture_config(&format!("{coupons_route}{}", route("orders", "\"order.*\"", &orders.url("/"))), &delivery),
    )
    .unwrap();
    process.wait_for_log("the reload", |line| line["message"] == "configuration reloaded");
    let (code, routed, _) = spool(&file, &["replay", "--unrouted", "--topic", "order.*"]);
    assert_eq!((code, routed.trim()), (Some(0), "routed 1 unrouted event: 1 delivery pending"));
    let (code, again, _) = spool(&file, &["replay", "--unrouted", "--topic", "order.*"]);
    assert_eq!((code, again.trim()), (Some(0), "routed 0 unrouted events: 0 deliveries pending"), "once");
    eventually(WAIT, "the replayed order arrives", || orders.received().len() == 1).await;
    assert_eq!(orders.received()[0].headers["x-hookgate-event-id"], id.as_str());
    assert_eq!(orders.received()[0].body, order_body(727, 1));
    // A later order on the same route (max_in_flight: 1) comes after anything a second replay had made due.
    let later = json(&send_raw(process.addr, &signed_request("/hooks/main", "order.created", &order_body(8, 0))).await);
    assert_eq!(later["status"], "queued");
    eventually(WAIT, "the later order arrives", || orders.received().len() == 2).await;
    assert_eq!(orders.received()[1].body, order_body(8, 0), "the replay was sent once");
    assert_eq!(coupons.received().len(), 1);
    assert!(spool(&file, &["list", "--state", "unrouted"]).1.is_empty());
    process.signal("TERM");
    let (status, _) = tokio::task::spawn_blocking(move || process.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}

on_both_backends!(unrouted_reject_answers_404_in_queue_mode_and_keeps_nothing);
/// `unrouted: reject` in queue mode stays a 404, and stores nothing.
async fn unrouted_reject_answers_404_in_queue_mode_and_keeps_nothing(backend: Backend) {
    let dir = backend.temp_dir("queue-unrouted-reject");
    let routes = ROUTE_TO_NOWHERE.replace("\"*\"", "\"order.*\"");
    let config = fixture_config(&routes, &format!("unrouted: reject\n{}", queue_delivery(&backend, &dir, "")));
    let gateway = TestGateway::start(&config).await;
    let answer = send_raw(gateway.addr, &Fixture::load("coupon-deleted").request("/hooks/main")).await;
    assert_eq!((answer.status, answer.text()), (404, r#"{"error":"unrouted"}"#.to_owned()));
    assert_eq!(backend.count(&dir, "SELECT COUNT(*) FROM events"), 0);
    gateway.stop().await;
}

on_both_backends!(unrouted_events_are_pruned_after_keep_unrouted);
/// Pruning (every minute, on the gateway's clock) removes an unrouted event once `keep_unrouted` has passed
/// since it was received, and keeps a younger one.
async fn unrouted_events_are_pruned_after_keep_unrouted(backend: Backend) {
    let dir = backend.temp_dir("queue-unrouted-prune");
    let routes = ROUTE_TO_NOWHERE.replace("\"*\"", "\"product.*\"");
    let config = fixture_config(&routes, &queue_delivery(&backend, &dir, "  keep_unrouted: 10m\n"));
    let gateway = TestGateway::start(&config).await;
    let kept = |id: &str| -> bool {
        let unrouted =
            format!("SELECT COUNT(*) FROM events WHERE public_id = {} AND CAST(unrouted AS INTEGER) = 1", quoted(id));
        backend.count(&dir, &unrouted) == 1
    };
    let send = |id| signed_request("/hooks/main", "order.created", &order_body(id, 0));
    let old = json(&send_raw(gateway.addr, &send(1)).await)["id"].as_str().unwrap().to_owned();
    assert!(kept(&old));
    skip_time(Duration::from_secs(6 * 60)).await;
    let young = json(&send_raw(gateway.addr, &send(2)).await)["id"].as_str().unwrap().to_owned();
    skip_time(Duration::from_secs(5 * 60)).await;
    eventually(WAIT, "the event received 11 minutes ago is pruned", || !kept(&old)).await;
    assert!(kept(&young), "received 5 minutes ago: kept");
    gateway.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}
