//! The spool: dedupe, max_spool_bytes, stops and restarts, its lock, pruning, the write-ahead log, and a
//! reload to proxy mode.

use super::*;

on_both_backends!(a_repeated_delivery_is_answered_duplicate_and_queued_once_even_across_a_restart);
async fn a_repeated_delivery_is_answered_duplicate_and_queued_once_even_across_a_restart(backend: Backend) {
    let dir = backend.temp_dir("queue-dedupe");
    let upstream = Upstream::start().await;
    let config = fixture_config(
        &route("all", "\"*\"", &upstream.url("/")),
        &queue_delivery(&backend, &dir, "  max_in_flight: 1\n"),
    );
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

on_both_backends!(past_max_spool_bytes_deliveries_get_503_with_retry_after);
async fn past_max_spool_bytes_deliveries_get_503_with_retry_after(backend: Backend) {
    let dir = backend.temp_dir("queue-full");
    let upstream = Upstream::start().await;
    let config = fixture_config(
        &route("all", "\"*\"", &upstream.url("/")),
        &queue_delivery(&backend, &dir, "  max_spool_bytes: 200000\n"),
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

on_both_backends!(a_spool_filled_to_max_spool_bytes_takes_deliveries_again_once_pruned);
/// `max_spool_bytes` counts live data: once what filled the spool is delivered and pruned, deliveries are
/// taken again (PostgreSQL's table files keep the size they reached: that size must not count).
async fn a_spool_filled_to_max_spool_bytes_takes_deliveries_again_once_pruned(backend: Backend) {
    let dir = backend.temp_dir("queue-full-then-pruned");
    let upstream = Upstream::start().await;
    let delivery = queue_delivery(&backend, &dir, "  max_spool_bytes: 400000\n  keep_delivered: 10m\n");
    let gateway = TestGateway::start(&fixture_config(&route("all", "\"*\"", &upstream.url("/")), &delivery)).await;
    let padded =
        |id: u64| format!(r#"{{"id":{id},"status":"processing","note":"{}"}}"#, "x".repeat(20_000)).into_bytes();
    let mut stored = 0;
    let full = loop {
        let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.created", &padded(stored))).await;
        if answer.status != 200 {
            break answer;
        }
        stored += 1;
        assert!(stored < 100, "400 kB never filled");
    };
    assert_eq!(full.text(), r#"{"error":"spool_full"}"#);
    eventually(WAIT, "everything stored is delivered", || upstream.received().len() as u64 == stored).await;
    skip_time(Duration::from_secs(11 * 60)).await;
    // Pruned at the dispatcher's next pass; the size it frees is read at the next commit (SQLite) or the next
    // health check (PostgreSQL, each second).
    let mut answer = full;
    for attempt in 0.. {
        answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.created", &padded(1000 + attempt))).await;
        if answer.status == 200 || attempt == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer.status, 200, "{}", answer.text());
    gateway.stop().await;
}

on_both_backends!(a_graceful_stop_keeps_pending_deliveries_for_the_next_start);
async fn a_graceful_stop_keeps_pending_deliveries_for_the_next_start(backend: Backend) {
    let dir = backend.temp_dir("queue-restart");
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = fixture_config(
        &route("orders", "\"order.*\"", &format!("http://{addr}/")),
        &queue_delivery(&backend, &dir, "  max_in_flight: 1\n"),
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

on_both_backends!(a_graceful_stop_lets_an_attempt_in_flight_finish_and_records_it);
async fn a_graceful_stop_lets_an_attempt_in_flight_finish_and_records_it(backend: Backend) {
    let dir = backend.temp_dir("queue-stop-in-flight");
    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(700), ..Default::default() }).await;
    let config = fixture_config(
        &route("orders", "\"order.*\"", &upstream.url("/")),
        &queue_delivery(&backend, &dir, "  max_in_flight: 1\n"),
    );
    let gateway = TestGateway::start(&config).await;
    send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    eventually(WAIT, "the attempt is in flight", || upstream.received().len() == 1).await;
    let stopping = std::time::Instant::now();
    gateway.stop().await;
    assert!(stopping.elapsed() >= Duration::from_millis(400), "the stop waited for the attempt");
    let state = backend.query(&dir, "SELECT state FROM deliveries");
    assert_eq!(state, [[Some("delivered".to_owned())]], "the attempt ended and was recorded before the spool closed");
    // Started again, nothing is sent twice.
    let gateway = TestGateway::start(&config).await;
    assert_eq!(received_before_a_new_delivery(&gateway, &upstream, 9001).await.len(), 1);
    gateway.stop().await;
}

// SQLite only: its file is locked to one gateway; on PostgreSQL a second gateway is a replica (`replicas`).
#[tokio::test]
async fn a_second_gateway_cannot_deliver_from_the_same_spool() {
    let dir = temp_dir("queue-lock");
    let upstream = Upstream::start().await;
    let config = fixture_config(
        &route("orders", "\"order.*\"", &upstream.url("/")),
        &queue_delivery(&Backend::Sqlite, &dir, ""),
    );
    let gateway = TestGateway::start(&config).await;
    let parsed = hookgate::config::Config::from_yaml(&config, std::path::Path::new("second.yaml")).unwrap();
    let error = hookgate::server::Gateway::new(parsed).await.err().expect("the spool is taken").to_string();
    assert!(error.contains("another hookgate is delivering from"), "{error}");
    gateway.stop().await;
    // Once the first has stopped, the spool is free.
    let parsed = hookgate::config::Config::from_yaml(&config, std::path::Path::new("second.yaml")).unwrap();
    let second = hookgate::server::Gateway::new(parsed).await.expect("free again");
    second.shutdown(Duration::from_secs(1)).await;
}

on_both_backends!(a_zero_dedupe_window_queues_every_repeat);
async fn a_zero_dedupe_window_queues_every_repeat(backend: Backend) {
    let dir = backend.temp_dir("queue-no-dedupe");
    let upstream = Upstream::start().await;
    let config = fixture_config(
        &route("all", "\"*\"", &upstream.url("/")),
        &format!("{}dedupe:\n  window: 0s\n", queue_delivery(&backend, &dir, "")),
    );
    let gateway = TestGateway::start(&config).await;
    let fixture = Fixture::load("order-created");
    for _ in 0..2 {
        assert_eq!(json(&send_raw(gateway.addr, &fixture.request("/hooks/main")).await)["status"], "queued");
    }
    eventually(WAIT, "both arrive", || upstream.received().len() == 2).await;
    gateway.stop().await;
}

on_both_backends!(delivered_entries_are_pruned_after_keep_delivered);
async fn delivered_entries_are_pruned_after_keep_delivered(backend: Backend) {
    let dir = backend.temp_dir("queue-prune-at-start");
    let upstream = Upstream::start().await;
    let config = fixture_config(
        &route("all", "\"*\"", &upstream.url("/")),
        &queue_delivery(&backend, &dir, "  keep_delivered: 0s\n"),
    );
    let gateway = TestGateway::start(&config).await;
    let answer = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    let id = json(&answer)["id"].as_str().unwrap().to_owned();
    recorded(&backend, &dir, &id, "delivered", 1).await;
    gateway.stop().await;
    // Pruning runs at start and every minute after.
    let gateway = TestGateway::start(&config).await;
    eventually(WAIT, "the delivered entry and its event are pruned", || {
        backend.count(&dir, "SELECT COUNT(*) FROM deliveries") == 0
            && backend.count(&dir, "SELECT COUNT(*) FROM events") == 0
    })
    .await;
    gateway.stop().await;
}

on_both_backends!(pruning_runs_every_minute_and_keeps_what_keep_delivered_keeps);
/// Pruning runs at start and every minute after; minutes pass on the gateway's clock, not the test's. Each
/// prune also forgets the dedupe records older than the window (5 minutes here) in the same transaction,
/// which shows when one has run.
async fn pruning_runs_every_minute_and_keeps_what_keep_delivered_keeps(backend: Backend) {
    let dir = backend.temp_dir("queue-prune");
    let upstream = Upstream::start().await;
    let delivery = format!("{}dedupe:\n  window: 5m\n", queue_delivery(&backend, &dir, "  keep_delivered: 10m\n"));
    let gateway = TestGateway::start(&fixture_config(&route("all", "\"*\"", &upstream.url("/")), &delivery)).await;
    let count = |table: &str, event_id: &str| -> i64 {
        let column = if table == "events" { "public_id" } else { "event_id" };
        backend.count(&dir, &format!("SELECT COUNT(*) FROM {table} WHERE {column} = {}", quoted(event_id)))
    };
    let send = |id| signed_request("/hooks/main", "order.created", &order_body(id, 0));
    let old = json(&send_raw(gateway.addr, &send(1)).await)["id"].as_str().unwrap().to_owned();
    recorded(&backend, &dir, &old, "delivered", 1).await;
    assert_eq!(count("dedupe", &old), 1, "a dedupe record whose pruning shows that a prune ran");
    skip_time(Duration::from_secs(6 * 60)).await;
    eventually(WAIT, "a prune after 6 minutes", || count("dedupe", &old) == 0).await;
    assert_eq!(count("events", &old), 1, "delivered 6 minutes ago: kept");
    let recent = json(&send_raw(gateway.addr, &send(2)).await)["id"].as_str().unwrap().to_owned();
    recorded(&backend, &dir, &recent, "delivered", 1).await;
    skip_time(Duration::from_secs(5 * 60 + 30)).await;
    eventually(WAIT, "the entry delivered 11.5 minutes ago and its event are pruned", || count("events", &old) == 0)
        .await;
    // The prune that took it forgot the recent one's dedupe record and kept its entry, 5.5 minutes old.
    assert_eq!(count("dedupe", &recent), 0);
    assert_eq!(count("events", &recent), 1);
    assert_eq!(delivery_of(&backend, &dir, &recent).0, "delivered");
    let deliveries = backend.count(&dir, "SELECT COUNT(*) FROM deliveries");
    assert_eq!(deliveries, 1, "the old entry's delivery went with its event");
    gateway.stop().await;
}

on_both_backends!(a_reload_to_proxy_mode_needs_a_restart_and_the_queue_keeps_delivering);
/// A reload that switches the file to proxy mode takes effect only at a restart: until then deliveries are
/// still queued and delivered, with the queue settings the gateway started with.
async fn a_reload_to_proxy_mode_needs_a_restart_and_the_queue_keeps_delivering(backend: Backend) {
    let dir = backend.temp_dir("queue-reload-to-proxy");
    let upstream = Upstream::start().await;
    let routes = route("orders", "\"order.*\"", &upstream.url("/in"));
    let gateway = TestGateway::start(&fixture_config(&routes, &queue_delivery(&backend, &dir, ""))).await;
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, fixture_config(&routes, "delivery:\n  mode: proxy\n")).unwrap();
    let restart = gateway.gateway.reload(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(restart, ["delivery.mode and the spool (delivery.spool_path or delivery.postgres)"]);
    let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.updated", &order_body(7, 0))).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(json(&answer)["status"], "queued");
    eventually(WAIT, "the queued delivery arrives", || upstream.received().len() == 1).await;
    gateway.stop().await;
}

// SQLite only: the write-ahead log is SQLite's own file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_is_truncated_once_a_burst_has_drained() {
    let dir = temp_dir("queue-wal-truncate");
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&fixture_config(
        &route("orders", "\"order.*\"", &upstream.url("/")),
        &queue_delivery(&Backend::Sqlite, &dir, ""),
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
    // 10 MB through SQLite with a sync per commit and on to the upstream: on a machine busy with other
    // tests this has taken over 20 s, so it gets a minute, and says how far it got.
    let mut received = 0;
    let arrived = tokio::time::timeout(Duration::from_secs(60), async {
        while received < 24 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            received = upstream.received().len();
        }
    });
    assert!(arrived.await.is_ok(), "{received} of 24 deliveries arrived in 60 s");
    // SQLite's own checkpoints leave the file at 4 MB or more for good; drained, it is back under 1 MiB.
    eventually(WAIT, "the log is truncated once the writer is idle", || wal_size() <= 1024 * 1024).await;
    gateway.stop().await;
}
