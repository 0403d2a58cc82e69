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
