//! Watching the stores (`sources[].store.watch`): one task per source with a `store`, which checks the
//! store's webhooks every `watch` through its REST API and exports what it finds. With `reactivate`, a
//! webhook delivering to the source that WooCommerce disabled is set active again (a warning names it);
//! with `backfill` (queue mode), what the store modified since the last delivery the spool holds from it is
//! then fetched and queued, and so it is at start-up when that delivery is older than one watch interval
//! (hookgate itself was down).
//!
//! A store that does not answer is counted and logged, and touches nothing else: receiving deliveries never
//! waits on it. The tasks run with the configuration at start: a change to a `store` block takes effect at
//! a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Gateway;
use crate::config::{Source, StoreSettings};
use crate::metrics::{
    STORE_BACKFILLED_TOTAL, STORE_CHECK_ERRORS_TOTAL, STORE_LAST_CHECK_SUCCESS_TIMESTAMP_SECONDS,
    STORE_REACTIVATIONS_TOTAL, STORE_WEBHOOKS,
};
use crate::store_api::plan::status_name;
use crate::store_api::{StoreClient, WebhookFields, WebhookStatus, backfill};

/// How long before the newest delivery the spool holds from a store an automatic backfill starts.
const BACKFILL_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Starts a watch for each source with a `store` whose `watch` is not 0.
pub fn spawn(gateway: &Arc<Gateway>) -> Vec<JoinHandle<()>> {
    let config = gateway.config();
    let watched = config.sources.iter().filter(|s| s.store.as_ref().is_some_and(|store| store.watch.is_some()));
    watched.map(|source| tokio::spawn(watch(Arc::clone(gateway), Arc::clone(source)))).collect()
}

/// Checks `source`'s store at once, then every `watch`, for ever.
async fn watch(gateway: Arc<Gateway>, source: Arc<Source>) {
    let Some(store) = source.store.as_ref() else { return };
    let Some(every) = store.watch else { return };
    let client = match StoreClient::new(store) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(source = %source.name, %error, "cannot set up TLS for the store: its webhooks are not watched");
            return;
        }
    };
    let mut first = true;
    loop {
        check(&gateway, &client, &source, store, every, first).await;
        first = false;
        tokio::time::sleep(every).await;
    }
}

/// One check: the webhooks listed and exported, the disabled ones reactivated, and a backfill when one is
/// due.
async fn check(
    gateway: &Gateway,
    client: &StoreClient,
    source: &Source,
    store: &StoreSettings,
    every: Duration,
    first: bool,
) {
    let name = source.name.clone();
    let webhooks = match client.list_webhooks().await {
        Ok(webhooks) => webhooks,
        Err(error) => {
            metrics::counter!(STORE_CHECK_ERRORS_TOTAL, "source" => name.clone()).increment(1);
            tracing::warn!(source = %name, %error, "cannot check the store's webhooks");
            return;
        }
    };
    let delivery_url = store.delivery_url.to_string();
    let mine: Vec<_> = webhooks.into_iter().filter(|w| w.delivery_url == delivery_url).collect();
    for status in [WebhookStatus::Active, WebhookStatus::Paused, WebhookStatus::Disabled] {
        let count = mine.iter().filter(|w| w.status == status).count();
        metrics::gauge!(STORE_WEBHOOKS, "source" => name.clone(), "status" => status_name(status)).set(count as f64);
    }
    let now_ms = gateway.clock().now_ms();
    metrics::gauge!(STORE_LAST_CHECK_SUCCESS_TIMESTAMP_SECONDS, "source" => name.clone()).set(now_ms as f64 / 1000.0);

    let mut reactivated = false;
    for webhook in mine.iter().filter(|w| w.status == WebhookStatus::Disabled && store.reactivate) {
        let active = WebhookFields { status: Some(WebhookStatus::Active), ..WebhookFields::default() };
        match client.update_webhook(webhook.id, &active).await {
            Ok(_) => {
                reactivated = true;
                metrics::counter!(STORE_REACTIVATIONS_TOTAL, "source" => name.clone()).increment(1);
                tracing::warn!(
                    source = %name,
                    webhook_id = webhook.id,
                    webhook = %webhook.name,
                    topic = %webhook.topic,
                    "WooCommerce had disabled this webhook after failed deliveries: set it active again"
                );
            }
            Err(error) => {
                metrics::counter!(STORE_CHECK_ERRORS_TOTAL, "source" => name.clone()).increment(1);
                tracing::warn!(source = %name, webhook_id = webhook.id, %error, "cannot set a disabled webhook active again");
            }
        }
    }
    if store.backfill {
        backfill_when_due(gateway, client, source, store, every, first, reactivated).await;
    }
}

/// Backfills from the newest delivery the spool holds from `source`, after a reactivation, or at start-up
/// when that delivery is older than one watch interval.
async fn backfill_when_due(
    gateway: &Gateway,
    client: &StoreClient,
    source: &Source,
    store: &StoreSettings,
    every: Duration,
    first: bool,
    reactivated: bool,
) {
    let Some(queue) = gateway.queue() else { return };
    if !reactivated && !first {
        return;
    }
    let name = &source.name;
    let newest = match queue.spool().newest_received_at(name).await {
        Ok(newest) => newest,
        Err(error) => {
            tracing::warn!(source = %name, %error, "cannot read the spool for a backfill: none made");
            return;
        }
    };
    let Some(newest) = newest else {
        if reactivated {
            tracing::warn!(
                source = %name,
                "no delivery from this store is in the spool, so there is no time to backfill from: run `hookgate store backfill --since` for the time the webhook stopped"
            );
        }
        return;
    };
    let now = gateway.clock().now_ms();
    let gap = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    if !reactivated && now.saturating_sub(newest) <= gap {
        return;
    }
    // From a little before: the store's clock and hookgate's may differ, and the store's times are in
    // whole seconds. What the spool holds of that margin is not queued again.
    let since = newest / 1000 - i64::try_from(BACKFILL_MARGIN.as_secs()).unwrap_or(0);
    let config = gateway.config();
    match backfill::backfill(client, &backfill::Target::Queue(queue), &config, source, store, since, None).await {
        Ok(done) => {
            metrics::counter!(STORE_BACKFILLED_TOTAL, "source" => name.clone()).increment(done.queued);
            tracing::info!(
                source = %name,
                since = since,
                fetched = done.fetched,
                queued = done.queued,
                already_held = done.already_held,
                "backfilled what the store modified since the last delivery the spool holds from it"
            );
        }
        Err(error) => {
            metrics::counter!(STORE_CHECK_ERRORS_TOTAL, "source" => name.clone()).increment(1);
            tracing::warn!(source = %name, %error, "the backfill stopped: the next reactivation or start tries again");
        }
    }
}
