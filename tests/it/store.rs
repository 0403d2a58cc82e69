//! `hookgate store sync` and `hookgate store status` against the real store (`start.sh DIR serve PORT`,
//! started by `.ci/run`), with the real binary serving: sync creates the webhooks the routes need, the
//! store's ping and then its deliveries reach the upstream through hookgate, a second sync changes
//! nothing; status names a paused webhook and one whose deliveries fail verification.

use std::path::PathBuf;
use std::time::Duration;

use hookgate::secret::Secret;
use hookgate::store_api::{StoreClient, Webhook, WebhookFields, WebhookStatus};

use crate::support::*;

mod backfill;
mod outage;
mod rotation;
mod unreachable;

/// A port nothing listens on now, for a config that must name its ports before the gateway starts (the
/// store's `delivery_url` holds the gateway's).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A gateway serving source `source` (one secret) in proxy mode, its `store` block naming the served
/// store with a REST key, and the config file `hookgate store` reads.
struct StoreSetup {
    dir: PathBuf,
    config_file: PathBuf,
    source: String,
    store: StoreClient,
    store_url: String,
    delivery_url: String,
    consumer_key: String,
    consumer_secret: String,
}

impl StoreSetup {
    async fn new(site: &WooCommerceSite, store_url: &str, name: &str) -> StoreSetup {
        let dir = temp_dir(&format!("store-{name}"));
        let (consumer_key, consumer_secret) = site.rest_key().await;
        let source = format!("{name}-{}", std::process::id());
        let port = free_port();
        let delivery_url = format!("http://127.0.0.1:{port}/hooks/{source}");
        let settings = store_settings(store_url, &consumer_key, &consumer_secret, &delivery_url);
        let store = StoreClient::new(&settings).unwrap();
        std::fs::write(dir.join("consumer-secret"), &consumer_secret).unwrap();
        let config_file = dir.join("hookgate.yaml");
        StoreSetup {
            dir,
            config_file,
            source,
            store,
            store_url: store_url.to_owned(),
            delivery_url,
            consumer_key,
            consumer_secret,
        }
    }

    /// Writes the config: `secrets` for the source, routes for `topics` to `upstream`, in proxy mode with
    /// no watch.
    fn write_config(&self, secrets: &[&str], topics: &str, upstream: &str) {
        self.write_config_with(secrets, topics, upstream, "      watch: 0\n", "delivery:\n  mode: proxy\n");
    }

    /// [`StoreSetup::write_config`] with more lines for the `store` block and a `delivery` section.
    fn write_config_with(&self, secrets: &[&str], topics: &str, upstream: &str, store_lines: &str, delivery: &str) {
        let port = self.delivery_url.split(':').nth(2).unwrap().split('/').next().unwrap();
        let secrets: String = secrets.iter().map(|s| format!("      - value: \"{s}\"\n")).collect();
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\nadmin_listen: \"127.0.0.1:{admin}\"\nsources:\n  - name: {source}\n    path: /hooks/{source}\n    secrets:\n{secrets}    store:\n      url: \"{url}\"\n      consumer_key: {{ value: \"{key}\" }}\n      consumer_secret: {{ file: {secret_file} }}\n      delivery_url: \"{delivery_url}\"\n{store_lines}routes:\n  - name: fulfillment\n    source: {source}\n    topics: {topics}\n    upstream: \"{upstream}\"\n{delivery}",
            admin = self.admin_port(),
            source = self.source,
            url = self.store_url,
            key = self.consumer_key,
            secret_file = self.dir.join("consumer-secret").display(),
            delivery_url = self.delivery_url,
        );
        std::fs::write(&self.config_file, config).unwrap();
    }

    /// A `delivery` section for queue mode with an SQLite spool in the setup's folder and quick retries.
    fn queue_delivery(&self) -> String {
        format!(
            "delivery:\n  mode: queue\n  spool_path: {}\n  retry:\n    initial_backoff: 100ms\n    max_backoff: 1s\n",
            self.dir.join("spool.db").display()
        )
    }

    /// The admin port, chosen once and kept in the folder.
    fn admin_port(&self) -> u16 {
        let file = self.dir.join("admin-port");
        if let Ok(port) = std::fs::read_to_string(&file) {
            return port.parse().unwrap();
        }
        let port = free_port();
        std::fs::write(&file, port.to_string()).unwrap();
        port
    }

    /// Runs the real binary's `hookgate store ARGS --config FILE`: exit code, standard output, standard
    /// error.
    async fn store_command(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"));
        command.arg("store").args(args).arg("--config").arg(&self.config_file).env_remove("HOOKGATE_CONFIG");
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        );
        for shown in [&stdout, &stderr] {
            assert!(!shown.contains(&self.consumer_secret), "the consumer secret is shown: {shown}");
        }
        (output.status.code(), stdout, stderr)
    }

    /// This source's webhooks in the store.
    async fn webhooks(&self) -> Vec<Webhook> {
        let all = self.store.list_webhooks().await.unwrap_or_else(|e| panic!("{e}"));
        all.into_iter().filter(|w| w.delivery_url == self.delivery_url).collect()
    }

    /// Deletes this source's webhooks, so that they do not fail against later tests' orders.
    async fn remove_webhooks(&self) {
        for webhook in self.webhooks().await {
            let _ = self.store.delete_webhook(webhook.id).await;
        }
    }

    /// Creates an order through the REST API and returns its id.
    async fn create_order(&self) -> u64 {
        let body = serde_json::json!({ "status": "processing", "billing": { "email": "buyer@example.com" } });
        let order = self.store.post_json("/wp-json/wc/v3/orders", &body).await.unwrap_or_else(|e| panic!("{e}"));
        order["id"].as_u64().expect("the order's id")
    }
}

/// The order ids the upstream received, in order.
fn received_orders(upstream: &Upstream) -> Vec<u64> {
    let bodies = upstream.received().into_iter().filter(|r| r.body.starts_with(b"{"));
    bodies.filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok()?["id"].as_u64()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_creates_the_webhooks_routes_need_and_a_second_sync_changes_nothing() {
    let test = "store::sync_creates_the_webhooks_routes_need_and_a_second_sync_changes_nothing";
    let Some((site, url)) = WooCommerceSite::served(test).await else { return };
    let setup = StoreSetup::new(&site, &url, "sync").await;
    let upstream = Upstream::start().await;
    setup.write_config(
        &["first-secret-of-sync"],
        "[\"order.created\", \"order.updated\"]",
        &upstream.url("/fulfillment"),
    );
    let gateway = HookgateProcess::start(&setup.config_file);

    let (code, dry, _) = setup.store_command(&["sync", "--dry-run"]).await;
    assert_eq!(code, Some(0), "{dry}");
    assert!(
        dry.contains("would create webhook") && setup.webhooks().await.is_empty(),
        "a dry run changes nothing: {dry}"
    );

    let (code, out, err) = setup.store_command(&["sync"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let webhooks = setup.webhooks().await;
    let mut topics: Vec<_> = webhooks.iter().map(|w| (w.topic.as_str(), w.status)).collect();
    topics.sort_by_key(|(topic, _)| *topic);
    assert_eq!(topics, [("order.created", WebhookStatus::Active), ("order.updated", WebhookStatus::Active)], "{out}");
    for webhook in &webhooks {
        assert_eq!(webhook.name, format!("hookgate: {} {}", setup.source, webhook.topic));
    }
    // WooCommerce pinged each new webhook, unsigned, and hookgate answered the pings 200.
    let pings = format!("hookgate_requests_total{{source=\"{}\",outcome=\"ping\"}}", setup.source);
    assert_eq!(metric_sample(&gateway.metrics().await, &pings), Some(2.0));

    let order = setup.create_order().await;
    site.run_queue().await;
    eventually(Duration::from_secs(20), "the new order reaches the upstream", || {
        received_orders(&upstream).contains(&order)
    })
    .await;
    let forwarded = upstream.received().into_iter().find(|r| r.body.starts_with(b"{")).unwrap();
    let signature = forwarded.headers.get("x-wc-webhook-signature").expect("the store's signature is forwarded");
    let expected = hookgate::verify::sign(
        hookgate::verify::Algorithm::Sha256,
        &Secret::new(b"first-secret-of-sync".to_vec()),
        &forwarded.body,
    );
    assert_eq!(signature.to_str().unwrap(), expected, "signed with the source's first secret");

    let (code, out, err) = setup.store_command(&["sync"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("nothing to change"), "a second sync changes nothing: {out}");
    let (code, status, _) = setup.store_command(&["status"]).await;
    assert_eq!(code, Some(0), "nothing needs attention: {status}");
    assert!(status.contains("order.created active") && status.contains("with secret 1"), "{status}");
    setup.remove_webhooks().await;
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_a_paused_webhook_and_one_whose_deliveries_fail_verification() {
    let test = "store::status_names_a_paused_webhook_and_one_whose_deliveries_fail_verification";
    let Some((site, url)) = WooCommerceSite::served(test).await else { return };
    let setup = StoreSetup::new(&site, &url, "status").await;
    let upstream = Upstream::start().await;
    setup.write_config(
        &["the-secret-of-status"],
        "[\"order.created\", \"order.updated\", \"order.deleted\"]",
        &upstream.url("/fulfillment"),
    );
    let gateway = HookgateProcess::start(&setup.config_file);
    let (code, out, err) = setup.store_command(&["sync"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let webhooks = setup.webhooks().await;
    let by_topic = |topic: &str| webhooks.iter().find(|w| w.topic == topic).unwrap().id;
    let (created, updated, deleted) = (by_topic("order.created"), by_topic("order.updated"), by_topic("order.deleted"));
    let wrong =
        WebhookFields { secret: Some(Secret::new(b"not-the-sources-secret".to_vec())), ..WebhookFields::default() };
    setup.store.update_webhook(created, &wrong).await.unwrap();
    let paused = WebhookFields { status: Some(WebhookStatus::Paused), ..WebhookFields::default() };
    setup.store.update_webhook(updated, &paused).await.unwrap();
    setup.store.delete_webhook(deleted).await.unwrap();

    let order = setup.create_order().await;
    site.run_queue().await;
    let refused = format!("hookgate_requests_total{{source=\"{}\",outcome=\"invalid_signature\"}}", setup.source);
    for _ in 0..100 {
        if metric_sample(&gateway.metrics().await, &refused).is_some_and(|n| n >= 1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!received_orders(&upstream).contains(&order), "a wrongly signed delivery reaches no upstream");

    let (code, status, _) = setup.store_command(&["status"]).await;
    assert_eq!(code, Some(1), "something needs attention: {status}");
    let block = |id: u64| {
        status
            .split("\n  #")
            .find(|b| b.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("#{id}: {status}"))
            .to_owned()
    };
    assert!(block(created).contains("failed verification"), "{status}");
    assert!(block(updated).contains("paused"), "{status}");
    assert!(status.contains("missing: order.deleted"), "{status}");
    assert!(!status.contains("not-the-sources-secret") && !status.contains("the-secret-of-status"), "{status}");

    // Sync mends all three; status is then clean once a delivery verifies.
    let (code, out, err) = setup.store_command(&["sync"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let order = setup.create_order().await;
    site.run_queue().await;
    eventually(Duration::from_secs(20), "the order reaches the upstream", || {
        received_orders(&upstream).contains(&order)
    })
    .await;
    let (code, status, _) = setup.store_command(&["status"]).await;
    assert_eq!(code, Some(0), "{status}");
    setup.remove_webhooks().await;
    drop(gateway);
}
