//! The outage the store's side is for: hookgate stopped, orders made in the store fail to be delivered until
//! WooCommerce disables the webhook; hookgate started again, its watch sets the webhook active and
//! backfills, and every order made during the outage reaches the upstream.

use super::*;

/// Orders are made and the store's queue run until WooCommerce has disabled every webhook of the source
/// (7 failures in a row each), at most this many.
const MAX_OUTAGE_ORDERS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_watch_reactivates_the_disabled_webhook_and_backfills_every_order() {
    let test = "store::outage::after_an_outage_the_watch_reactivates_the_disabled_webhook_and_backfills_every_order";
    let Some((site, url)) = WooCommerceSite::served(test).await else { return };
    let setup = StoreSetup::new(&site, &url, "outage").await;
    let upstream = Upstream::start().await;
    let delivery = setup.queue_delivery();
    let store_lines = "      watch: 1s\n      reactivate: true\n      backfill: true\n";
    let topics = "[\"order.created\", \"order.updated\"]";
    setup.write_config_with(&["the-secret-of-outage"], topics, &upstream.url("/fulfillment"), store_lines, &delivery);
    let gateway = HookgateProcess::start(&setup.config_file);
    let (code, out, err) = setup.store_command(&["sync"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    // One order delivered before the outage: the spool then holds a delivery from the store to backfill from.
    let before = setup.create_order().await;
    site.run_queue().await;
    eventually(Duration::from_secs(20), "the first order arrives", || received_orders(&upstream).contains(&before))
        .await;
    gateway.signal("TERM");
    let (status, _) = gateway.wait();
    assert!(status.success(), "{status}");

    let mut during = Vec::new();
    while setup.webhooks().await.iter().any(|w| w.status != WebhookStatus::Disabled) {
        assert!(
            during.len() < MAX_OUTAGE_ORDERS,
            "WooCommerce did not disable the webhooks: {:?}",
            setup.webhooks().await
        );
        during.push(setup.create_order().await);
        site.run_queue().await;
    }

    eprintln!("{} orders made while hookgate was down before WooCommerce disabled every webhook", during.len());
    let mut gateway = HookgateProcess::start(&setup.config_file);
    let reactivated = gateway.wait_for_log("a reactivation", |line| {
        line["message"].as_str().is_some_and(|m| m.contains("set it active again"))
    });
    assert_eq!(reactivated["source"], setup.source.as_str(), "{reactivated}");
    eventually(Duration::from_secs(30), "every order made during the outage arrives", || {
        let received = received_orders(&upstream);
        during.iter().all(|order| received.contains(order))
    })
    .await;
    for webhook in setup.webhooks().await {
        assert_eq!(webhook.status, WebhookStatus::Active, "{webhook:?}");
    }
    let backfilled = upstream.received().into_iter().filter(|r| r.headers.contains_key("x-hookgate-backfill"));
    for received in backfilled {
        assert!(!received.headers.contains_key("x-wc-webhook-signature"), "a backfilled delivery is not signed");
        assert_eq!(received.headers["x-wc-webhook-topic"], "order.updated");
    }
    let metrics = gateway.metrics().await;
    let series = |name: &str| format!("{name}{{source=\"{}\"}}", setup.source);
    assert!(
        metric_sample(&metrics, &series("hookgate_store_reactivations_total")).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let backfilled = metric_sample(&metrics, &series("hookgate_store_backfilled_total")).unwrap_or(0.0);
    assert!(backfilled >= during.len() as f64, "{backfilled} backfilled for {} orders", during.len());
    eprintln!("backfilled {backfilled} deliveries after the outage");
    let (code, status, _) = setup.store_command(&["status"]).await;
    assert_eq!(code, Some(0), "{status}");
    setup.remove_webhooks().await;
    gateway.signal("TERM");
    let (_, log) = gateway.wait();
    let shown = [log.join("\n"), metrics, status].join("\n");
    for secret in ["the-secret-of-outage", setup.consumer_secret.as_str(), setup.consumer_key.as_str()] {
        assert!(!shown.contains(secret), "a secret is shown in the log, the metrics or the status");
    }
}
