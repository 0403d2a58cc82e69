//! What WooCommerce itself sends, from the real store (`../shared/woocommerce-site`, started by `.ci/run`):
//! its own webhook code signs and delivers to the real binary.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_store_pings_and_delivers_through_hookgate_and_an_unsigned_delivery_counts_as_its_failure() {
    let Some(site) = WooCommerceSite::started(
        "the_real_store_pings_and_delivers_through_hookgate_and_an_unsigned_delivery_counts_as_its_failure",
    )
    .await
    else {
        return;
    };
    let dir = temp_dir("woocommerce-deliver");
    let upstream = Upstream::start().await;
    let route = format!("  - name: orders\n    topics: [\"order.*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let process = HookgateProcess::start(&config_file(&dir, &route, ""));
    let url = format!("http://{}/hooks/main", process.addr);

    // The webhook is pinged when it is saved, then an order is created and delivered.
    let attempts = site.send(&["deliver", &url, FIXTURE_SECRET, "order.created"]).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let attempt = &attempts[0];
    assert_eq!(attempt["creation_ping"]["http_code"], 200, "{attempt}");
    assert_eq!(attempt["http_code"], 200, "{attempt}");
    assert_eq!(attempt["wc_logged"], "success", "{attempt}");
    let received = upstream.received();
    assert_eq!(received.len(), 1, "the delivery, not the ping, reached the upstream");
    assert_eq!(received[0].headers["x-wc-webhook-topic"], "order.created");
    assert_eq!(received[0].headers["x-wc-webhook-signature"], attempt["signature"].as_str().unwrap());

    // Signed with another secret: refused, forwarded nowhere, and WooCommerce counts a failure.
    let attempts = site.send(&["deliver", &url, "not-the-stores-secret", "order.created"]).await;
    assert_eq!(attempts[0]["http_code"], 401, "{:?}", attempts[0]);
    assert_eq!(attempts[0]["state_after"]["failure_count"], 1, "{:?}", attempts[0]);
    assert_eq!(upstream.received().len(), 1);
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

on_both_backends!(
    the_same_product_update_sent_three_times_by_the_real_store_is_forwarded_once,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn the_same_product_update_sent_three_times_by_the_real_store_is_forwarded_once(backend: Backend) {
    let test = "the_same_product_update_sent_three_times_by_the_real_store_is_forwarded_once";
    let Some(site) = WooCommerceSite::started(test).await else { return };
    let dir = backend.temp_dir("woocommerce-dedupe");
    let upstream = Upstream::start().await;
    let route = format!("  - name: catalog\n    topics: [\"product.*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let process = HookgateProcess::start(&config_file(&dir, &route, &queue_delivery(&backend, &dir, "")));
    let url = format!("http://{}/hooks/main", process.addr);

    // A few products first (each send.php run makes one; their deliveries go nowhere), so that the updated
    // product has related products: WooCommerce lists them in related_ids, shuffled for each payload.
    for _ in 0..3 {
        site.send(&["deliver", "http://127.0.0.1:9/", "no-secret", "product.created"]).await;
    }
    // One product update, delivered three times by WooCommerce's own code: each time it builds the payload
    // again, and the product's related_ids come out in another order.
    let attempts = site.send(&["deliver", &url, FIXTURE_SECRET, "product.updated", "--repeat=3"]).await;
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(attempts.iter().all(|a| a["http_code"] == 200 && a["wc_logged"] == "success"), "{attempts:?}");
    let bodies: std::collections::HashSet<&str> =
        attempts.iter().map(|a| a["request"]["body_sha256"].as_str().unwrap()).collect();
    assert!(bodies.len() > 1, "WooCommerce sent the same bytes each time, so this shows nothing: {attempts:?}");
    eventually(std::time::Duration::from_secs(10), "the first delivery arrives", || !upstream.received().is_empty())
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let received = upstream.received();
    assert_eq!(received.len(), 1, "forwarded once");
    let first: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert!(first["date_modified_gmt"].is_string(), "{first}");
    let metrics = process.metrics().await;
    assert_eq!(
        metric_sample(&metrics, "hookgate_requests_total{source=\"main\",outcome=\"duplicate\"}"),
        Some(2.0),
        "the other two were answered duplicate"
    );
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The lost order, with WooCommerce's own code: a queue-mode hookgate whose only route has a typo
/// (`orders.created`) keeps the store's `order.created` as unrouted, while WooCommerce logs a success; once
/// the file's route is fixed (a hot reload), `spool replay --unrouted` delivers it, once, as the store signed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_stores_order_sent_to_a_mistyped_route_is_kept_and_delivered_once_the_route_is_fixed() {
    let test = "the_real_stores_order_sent_to_a_mistyped_route_is_kept_and_delivered_once_the_route_is_fixed";
    let Some(site) = WooCommerceSite::started(test).await else {
        return;
    };
    let dir = temp_dir("woocommerce-unrouted");
    let upstream = Upstream::start().await;
    let route = |topic: &str| {
        format!("  - name: orders\n    topics: [\"{topic}\"]\n    upstream: \"{}\"\n", upstream.url("/in"))
    };
    let delivery = queue_delivery(&Backend::Sqlite, &dir.join("spool"), "");
    let file = config_file(&dir, &route("orders.created"), &delivery);
    let mut process = HookgateProcess::start(&file);
    let url = format!("http://{}/hooks/main", process.addr);

    let attempts = site.send(&["deliver", &url, FIXTURE_SECRET, "order.created"]).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let attempt = &attempts[0];
    assert_eq!(attempt["http_code"], 200, "{attempt}");
    assert_eq!(attempt["wc_logged"], "success", "WooCommerce counts it delivered: {attempt}");
    let answer: serde_json::Value =
        serde_json::from_str(attempt["request"]["response_body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["status"], "unrouted", "{attempt}");
    let id = answer["id"].as_str().expect("the answer names the event it is kept under").to_owned();
    let spool = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .arg("spool")
            .args(args)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (_, listed) = spool(&["list", "--state", "unrouted"]);
    assert!(listed.starts_with(&format!("{id}  -  unrouted  order.created from main")), "{listed}");
    assert!(upstream.received().is_empty(), "kept, not sent");

    std::fs::write(&file, fixture_config(&route("order.created"), &delivery)).unwrap();
    process.wait_for_log("the reload", |line| line["message"] == "configuration reloaded");
    assert_eq!(spool(&["replay", "--unrouted"]).1.trim(), "routed 1 unrouted event: 1 delivery pending");
    assert_eq!(spool(&["replay", "--unrouted"]).1.trim(), "routed 0 unrouted events: 0 deliveries pending");
    eventually(std::time::Duration::from_secs(20), "the order arrives", || !upstream.received().is_empty()).await;
    let received = &upstream.received()[0];
    assert_eq!(received.headers["x-wc-webhook-topic"], "order.created");
    assert_eq!(received.headers["x-wc-webhook-signature"], attempt["signature"].as_str().unwrap());
    assert_eq!(received.headers["x-hookgate-event-id"], id.as_str());
    let mut delivered = String::new();
    eventually(std::time::Duration::from_secs(20), "the delivery is recorded", || {
        delivered = spool(&["list", "--state", "delivered"]).1;
        delivered.contains(&id)
    })
    .await;
    assert_eq!(delivered.lines().count(), 1, "{delivered}");
    assert_eq!(upstream.received().len(), 1, "once");
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}
