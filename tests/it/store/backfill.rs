//! `hookgate store backfill` against the real store, with the gateway running on its SQLite spool: orders
//! the store made while no webhook sent them are fetched, queued beside the gateway and delivered, marked
//! as backfilled and unsigned; a second backfill queues nothing again; `--topics` narrows it.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_queues_what_the_store_modified_and_a_second_run_queues_nothing_again() {
    let test = "store::backfill::backfill_queues_what_the_store_modified_and_a_second_run_queues_nothing_again";
    let Some((site, url)) = WooCommerceSite::served(test).await else { return };
    let setup = StoreSetup::new(&site, &url, "backfill").await;
    let upstream = Upstream::start().await;
    let delivery = setup.queue_delivery();
    let topics = "[\"order.created\", \"order.updated\"]";
    setup.write_config_with(
        &["the-secret-of-backfill"],
        topics,
        &upstream.url("/fulfillment"),
        "      watch: 0\n",
        &delivery,
    );
    let gateway = HookgateProcess::start(&setup.config_file);
    // No webhook sends this source anything: these orders reach hookgate only by the backfill.
    let orders = [setup.create_order().await, setup.create_order().await];

    let (code, out, err) =
        setup.store_command(&["backfill", "--source", &setup.source, "--since", "10m", "--topics", "product.*"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("0 queued"), "no route of this source takes products: {out}");

    let (code, out, err) = setup.store_command(&["backfill", "--source", &setup.source, "--since", "10m"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    eventually(Duration::from_secs(20), "both orders arrive", || {
        let received = received_orders(&upstream);
        orders.iter().all(|order| received.contains(order))
    })
    .await;
    for received in upstream.received() {
        assert_eq!(received.headers["x-hookgate-backfill"], "1");
        assert_eq!(received.headers["x-wc-webhook-topic"], "order.updated");
        assert!(!received.headers.contains_key("x-wc-webhook-signature"), "hookgate fetched it: no signature");
        assert!(received.headers.contains_key("x-hookgate-event-id"));
    }

    let delivered = upstream.received().len();
    let (code, again, err) = setup.store_command(&["backfill", "--source", &setup.source, "--since", "10m"]).await;
    assert_eq!(code, Some(0), "{again}{err}");
    assert!(again.contains(" 0 queued"), "the spool holds every order at its state: {again} (first run: {out})");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(upstream.received().len(), delivered, "nothing is delivered twice");

    let (code, _, err) = setup.store_command(&["backfill", "--source", &setup.source, "--since", "yesterday"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("RFC 3339"), "{err}");
    drop(gateway);
}
