//! Rotating a source's secret as the README says: the new secret put first and the old one second, a
//! reload, `hookgate store sync`, and the old one removed once `hookgate store status` shows deliveries
//! verifying with the new one. The store's deliveries verify before, during and after; none is refused,
//! and neither the webhook secrets nor the REST key show in any log line, metric or command output.

use super::*;

const OLD: &str = "rotation-old-secret-4f1c";
const NEW: &str = "rotation-new-secret-9b2e";

/// Reloads the gateway's config (SIGHUP) and waits until it says so.
fn reload(gateway: &mut HookgateProcess) {
    gateway.signal("HUP");
    gateway.wait_for_log("the reload", |line| line["message"] == "configuration reloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_as_documented_keeps_every_delivery_verifying() {
    let test = "store::rotation::rotation_as_documented_keeps_every_delivery_verifying";
    let Some((site, url)) = WooCommerceSite::served(test).await else { return };
    let setup = StoreSetup::new(&site, &url, "rotation").await;
    let upstream = Upstream::start().await;
    let topics = "[\"order.created\"]";
    let route_to = upstream.url("/fulfillment");
    setup.write_config(&[OLD], topics, &route_to);
    let mut gateway = HookgateProcess::start(&setup.config_file);
    let mut outputs = Vec::new();
    let command = async |args: &[&str], outputs: &mut Vec<String>| {
        let (code, out, err) = setup.store_command(args).await;
        outputs.push(format!("{out}{err}"));
        (code, out)
    };
    let (code, _) = command(&["sync"], &mut outputs).await;
    assert_eq!(code, Some(0), "{outputs:?}");
    let mut orders = Vec::new();
    let mut deliver_an_order = async |what: &str| {
        let order = setup.create_order().await;
        site.run_queue().await;
        eventually(Duration::from_secs(20), what, || received_orders(&upstream).contains(&order)).await;
        orders.push(order);
    };
    deliver_an_order("an order before the rotation").await;

    // The new secret first, the old one second: the store still signs with the old one, which verifies.
    setup.write_config(&[NEW, OLD], topics, &route_to);
    reload(&mut gateway);
    deliver_an_order("an order signed with the old secret, now second").await;
    let (code, status) = command(&["status"], &mut outputs).await;
    assert_eq!(code, Some(1), "the webhook signs with secret 2, not the first: {status}");
    assert!(status.contains("with secret 2") && status.contains("not the first"), "{status}");

    let (code, synced) = command(&["sync"], &mut outputs).await;
    assert_eq!(code, Some(0), "{synced}");
    assert!(synced.contains("secret: its deliveries verify with secret 2"), "{synced}");
    deliver_an_order("an order signed with the new secret").await;
    let (code, status) = command(&["status"], &mut outputs).await;
    assert_eq!(code, Some(0), "{status}");
    assert!(status.contains("with secret 1"), "{status}");

    // The old secret removed: deliveries still verify.
    setup.write_config(&[NEW], topics, &route_to);
    reload(&mut gateway);
    deliver_an_order("an order after the old secret is gone").await;
    let (code, status) = command(&["status"], &mut outputs).await;
    assert_eq!(code, Some(0), "{status}");

    let metrics = gateway.metrics().await;
    let refused = format!("hookgate_requests_total{{source=\"{}\",outcome=\"invalid_signature\"}}", setup.source);
    assert_eq!(metric_sample(&metrics, &refused).unwrap_or(0.0), 0.0, "no delivery was refused");
    setup.remove_webhooks().await;
    gateway.signal("TERM");
    let (_, log) = gateway.wait();
    let shown = [log.join("\n"), metrics, outputs.join("\n")].join("\n");
    for secret in [OLD, NEW, setup.consumer_secret.as_str(), setup.consumer_key.as_str()] {
        assert!(!shown.contains(secret), "a secret is shown in a log line, a metric or an output");
    }
}
