//! Watching the stores (`sources[].store.watch`): one task per source with a `store`, which checks the
//! store's webhooks every `watch` through its REST API and exports what it finds. With `reactivate`, a
//! webhook delivering to the source that WooCommerce disabled is set active again (a warning names it).
//! With `backfill` (queue mode), what the store modified is then fetched and queued:
//!
//! - after a reactivation, for that webhook's resource, since the newest delivery of its topic the spool
//!   holds (read before the webhook is set active, so that new deliveries do not move it);
//! - at start-up, for every resource, since the newest delivery the spool holds from the store, when that
//!   is older than one watch interval (hookgate itself was down). That time is read before the dispatcher
//!   starts, and so before it prunes.
//!
//! A backfill that fails is tried again at the next check. A store that does not answer is counted and
//! logged, and touches nothing else: receiving deliveries never waits on it. The tasks run with the
//! configuration at start: a change to a `store` block takes effect at a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Gateway;
use crate::config::{Source, StoreSettings};
use crate::metrics::{
    STORE_BACKFILLED_TOTAL, STORE_CHECK_ERRORS_TOTAL, STORE_LAST_CHECK_SUCCESS_TIMESTAMP_SECONDS,
    STORE_REACTIVATIONS_TOTAL, STORE_WEBHOOKS,
};
use crate::route::TopicPattern;
use crate::store_api::plan::status_name;
use crate::store_api::{StoreClient, Webhook, WebhookFields, WebhookStatus, backfill};

/// How long before the newest delivery held from a store an automatic backfill starts: the store's clock
/// and hookgate's may differ, and the store's times are whole seconds. What the spool holds of that margin
/// is not queued again.
const BACKFILL_MARGIN: Duration = Duration::from_secs(5 * 60);

/// A backfill to make (again, after a failure).
struct Due {
    /// From when (unix seconds).
    since: i64,
    /// Only these topics (`order.updated`), or all.
    topics: Option<TopicPattern>,
    /// Why, for the log.
    why: String,
}

/// Starts a watch for each source with a `store` whose `watch` is not 0. Call it before the dispatcher
/// starts: it reads when the newest delivery from each store was received before a prune can remove it.
pub async fn spawn(gateway: &Arc<Gateway>) -> Vec<JoinHandle<()>> {
    let config = gateway.config();
    let mut tasks = Vec::new();
    for source in config.sources.iter().filter(|s| s.store.as_ref().is_some_and(|store| store.watch.is_some())) {
        let name = source.name.clone();
        for counter in [STORE_CHECK_ERRORS_TOTAL, STORE_REACTIVATIONS_TOTAL, STORE_BACKFILLED_TOTAL] {
            metrics::counter!(counter, "source" => name.clone()).increment(0);
        }
        let newest = match gateway.queue() {
            Some(queue) if source.store.as_ref().is_some_and(|store| store.backfill) => {
                queue.spool().newest_received_at(&name, None).await.unwrap_or_else(|error| {
                    tracing::warn!(source = %name, %error, "cannot read the spool: no start-up backfill");
                    None
                })
            }
            _ => None,
        };
        tasks.push(tokio::spawn(watch(Arc::clone(gateway), Arc::clone(source), newest)));
    }
    tasks
}

/// Checks `source`'s store at once, then every `watch`, for ever; `newest_at_start` is when the newest
/// delivery the spool held from it at start was received (unix ms).
async fn watch(gateway: Arc<Gateway>, source: Arc<Source>, newest_at_start: Option<i64>) {
    let Some(store) = source.store.as_ref() else { return };
    let Some(every) = store.watch else { return };
    let client = match StoreClient::new(store) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(source = %source.name, %error, "cannot set up TLS for the store: its webhooks are not watched");
            return;
        }
    };
    let mut due = Vec::new();
    if store.backfill && gateway.queue().is_some() {
        let gap = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        match newest_at_start {
            Some(newest) if gateway.clock().now_ms().saturating_sub(newest) > gap => due.push(Due {
                since: newest / 1000 - margin(),
                topics: None,
                why: "start-up: the newest delivery held from the store is older than one watch interval".to_owned(),
            }),
            Some(_) => {}
            None => tracing::info!(
                source = %source.name,
                "no delivery from this store is in the spool (none yet, or pruned after delivery.keep_delivered): no start-up backfill; `hookgate store backfill --since` fetches what changed while hookgate was down"
            ),
        }
    }
    loop {
        check(&gateway, &client, &source, store, &mut due).await;
        tokio::time::sleep(every).await;
    }
}

fn margin() -> i64 {
    i64::try_from(BACKFILL_MARGIN.as_secs()).unwrap_or(0)
}

/// One check: the webhooks listed, the disabled ones reactivated, the counts exported, and the backfills
/// due made (those that fail stay due).
async fn check(gateway: &Gateway, client: &StoreClient, source: &Source, store: &StoreSettings, due: &mut Vec<Due>) {
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
    let mut mine: Vec<Webhook> = webhooks.into_iter().filter(|w| w.delivery_url == delivery_url).collect();
    if store.reactivate {
        for webhook in mine.iter_mut().filter(|w| w.status == WebhookStatus::Disabled) {
            if let Some(backfill) = reactivate(gateway, client, source, store, webhook).await {
                due.push(backfill);
            }
        }
    }
    for status in [WebhookStatus::Active, WebhookStatus::Paused, WebhookStatus::Disabled] {
        let count = mine.iter().filter(|w| w.status == status).count();
        metrics::gauge!(STORE_WEBHOOKS, "source" => name.clone(), "status" => status_name(status)).set(count as f64);
    }
    let now_s = gateway.clock().now_ms() as f64 / 1000.0;
    metrics::gauge!(STORE_LAST_CHECK_SUCCESS_TIMESTAMP_SECONDS, "source" => name.clone()).set(now_s);
    let Some(queue) = gateway.queue() else { return };
    let config = gateway.config();
    let mut failed = Vec::new();
    for backfill in due.drain(..) {
        let target = backfill::Target::Queue(queue);
        let done =
            backfill::backfill(client, &target, &config, source, store, backfill.since, backfill.topics.as_ref()).await;
        match done {
            Ok(done) => {
                metrics::counter!(STORE_BACKFILLED_TOTAL, "source" => name.clone()).increment(done.queued);
                tracing::info!(
                    source = %name,
                    since = backfill.since,
                    topics = backfill.topics.as_ref().map_or("all", TopicPattern::as_str),
                    why = %backfill.why,
                    fetched = done.fetched,
                    queued = done.queued,
                    already_held = done.already_held,
                    "backfilled what the store modified"
                );
            }
            Err(error) => {
                metrics::counter!(STORE_CHECK_ERRORS_TOTAL, "source" => name.clone()).increment(1);
                tracing::warn!(source = %name, %error, "a backfill stopped: it is tried again at the next check");
                failed.push(backfill);
            }
        }
    }
    *due = failed;
}

/// Sets a webhook WooCommerce disabled active again; with `backfill`, gives the backfill its gap calls for:
/// its resource, since the newest delivery of its topic the spool holds (read first).
async fn reactivate(
    gateway: &Gateway,
    client: &StoreClient,
    source: &Source,
    store: &StoreSettings,
    webhook: &mut Webhook,
) -> Option<Due> {
    let name = &source.name;
    let resource = webhook.topic.split('.').next().filter(|r| *r != "action").map(str::to_owned);
    let newest = match (gateway.queue(), &resource) {
        (Some(queue), Some(_)) if store.backfill => {
            queue.spool().newest_received_at(name, Some(&webhook.topic)).await.unwrap_or_else(|error| {
                tracing::warn!(source = %name, %error, "cannot read the spool: no backfill after this reactivation");
                None
            })
        }
        _ => None,
    };
    let active = WebhookFields { status: Some(WebhookStatus::Active), ..WebhookFields::default() };
    if let Err(error) = client.update_webhook(webhook.id, &active).await {
        metrics::counter!(STORE_CHECK_ERRORS_TOTAL, "source" => name.clone()).increment(1);
        tracing::warn!(source = %name, webhook_id = webhook.id, %error, "cannot set a disabled webhook active again");
        return None;
    }
    webhook.status = WebhookStatus::Active;
    metrics::counter!(STORE_REACTIVATIONS_TOTAL, "source" => name.clone()).increment(1);
    tracing::warn!(
        source = %name,
        webhook_id = webhook.id,
        webhook = %webhook.name,
        topic = %webhook.topic,
        "WooCommerce had disabled this webhook after failed deliveries: set it active again"
    );
    let resource = resource?;
    if !store.backfill || gateway.queue().is_none() {
        return None;
    }
    let Some(newest) = newest else {
        tracing::warn!(
            source = %name,
            topic = %webhook.topic,
            "no delivery of this topic from the store is in the spool, so there is no time to backfill from: run `hookgate store backfill --since` for when the webhook stopped"
        );
        return None;
    };
    Some(Due {
        since: newest / 1000 - margin(),
        topics: TopicPattern::parse(&format!("{resource}.updated")).ok(),
        why: format!("webhook #{} ({}) was reactivated", webhook.id, webhook.topic),
    })
}
