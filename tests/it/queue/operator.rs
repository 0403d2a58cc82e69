//! What an operator does to the queue from the command line while the real binary delivers from it:
//! `spool retry` once an upstream is fixed, and `--route` naming a route that does not exist.

use super::*;

on_both_backends!(
    spool_retry_sends_a_waiting_delivery_now_to_a_running_gateway,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn spool_retry_sends_a_waiting_delivery_now_to_a_running_gateway(backend: Backend) {
    let dir = backend.temp_dir("queue-operator-retry");
    let upstream = Upstream::scripted(vec![
        unavailable_for_ten_minutes(),
        unavailable_for_ten_minutes(),
        UpstreamAnswer::default(),
    ])
    .await;
    let config_file = dir.join("hookgate.yaml");
    let delivery = queue_delivery_retrying(&backend, &dir, "10m", "10m", "72h");
    std::fs::write(&config_file, fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &delivery))
        .unwrap();
    let process = HookgateProcess::start(&config_file);
    let mut ids = Vec::new();
    for order in [1, 2] {
        let answer =
            send_raw(process.addr, &signed_request("/hooks/main", "order.created", &order_body(order, 0))).await;
        ids.push(json(&answer)["id"].as_str().unwrap().to_owned());
    }
    eventually(WAIT, "both first attempts were refused", || upstream.received().len() == 2).await;
    let mut pending = String::new();
    eventually(WAIT, "both wait for their retry", || {
        pending = spool(&config_file, &["list", "--state", "pending"]).1;
        pending.matches("attempts 1  last status 503").count() == 2
    })
    .await;

    // Unknown names are said to be unknown, and change nothing.
    let (code, _, error) = spool(&config_file, &["retry", "--route", "ordres"]);
    assert_eq!(code, Some(2), "{error}");
    assert!(error.contains("there is no route \"ordres\"") && error.contains("[\"orders\"]"), "{error}");
    let (code, _, error) = spool(&config_file, &["retry", "no-such-event"]);
    assert_eq!(code, Some(2), "{error}");
    assert!(error.contains("no event no-such-event in the spool"), "{error}");

    // One event: only its delivery goes now, ten minutes early.
    let (code, made_due, error) = spool(&config_file, &["retry", &ids[0]]);
    assert_eq!((code, made_due.trim()), (Some(0), "made 1 delivery due now"), "{error}");
    eventually(WAIT, "the retried delivery arrives", || upstream.received().len() == 3).await;
    let third = &upstream.received()[2];
    assert_eq!(third.headers["x-hookgate-event-id"], ids[0].as_str());
    assert_eq!(third.headers["x-hookgate-attempt"], "2");
    // The other still waits: a route's retry finds it, and nothing after that.
    let (code, made_due, _) = spool(&config_file, &["retry", "--route", "orders"]);
    assert_eq!((code, made_due.trim()), (Some(0), "made 1 delivery due now"));
    eventually(WAIT, "the route's waiting delivery arrives", || upstream.received().len() == 4).await;
    assert_eq!(upstream.received()[3].headers["x-hookgate-event-id"], ids[1].as_str());
    let (code, made_due, note) = spool(&config_file, &["retry", "--all"]);
    assert_eq!((code, made_due.trim()), (Some(0), "made 0 deliveries due now"));
    assert!(note.contains("nothing was waiting for a retry"), "{note}");
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

on_both_backends!(spool_list_says_a_route_does_not_exist_and_lists_one_that_has_nothing);
async fn spool_list_says_a_route_does_not_exist_and_lists_one_that_has_nothing(backend: Backend) {
    let dir = backend.temp_dir("queue-operator-list");
    let config_file = dir.join("hookgate.yaml");
    let config =
        fixture_config(&route("orders", "\"order.*\"", "http://127.0.0.1:9/"), &queue_delivery(&backend, &dir, ""));
    std::fs::write(&config_file, &config).unwrap();
    // The spool exists once a gateway has opened it.
    TestGateway::start(&config).await.stop().await;
    let (code, listed, error) = spool(&config_file, &["list", "--route", "ordres"]);
    assert_eq!(code, Some(2), "{listed}{error}");
    assert!(error.contains("there is no route \"ordres\"") && error.contains("names [\"orders\"]"), "{error}");
    let (code, listed, error) = spool(&config_file, &["list", "--route", "orders"]);
    assert_eq!((code, listed.as_str()), (Some(0), ""), "a configured route with nothing spooled: {error}");
    std::fs::remove_dir_all(dir).unwrap();
}
