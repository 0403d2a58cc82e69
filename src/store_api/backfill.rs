//! The store's backfill: every order, product, customer and coupon the store modified since a time, fetched
//! through its REST API and queued as a `<resource>.updated` delivery to the routes that take that topic,
//! unless the spool already holds that resource at the same state or a newer one. Queue mode only.
//!
//! A backfilled delivery carries the REST API's representation of the resource (what a `wp_api_v3` webhook
//! sends), `X-Hookgate-Backfill: 1` and no `X-WC-Webhook-Signature`: hookgate fetched it itself, with the
//! source's REST key. It goes through the same spool, with the same order, dedupe and size rules, as a
//! delivery that arrived signed. Pages are queued one at a time, so memory holds one page (100 resources).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use std::sync::{Mutex, PoisonError};

use rusqlite::Connection;
use serde_json::value::RawValue;

use crate::config::{Config, QueueSettings, Source, StoreSettings};
use crate::route::TopicPattern;
use crate::spool::held::{self, HeldStates};
use crate::spool::{NotStored, Queue, SpoolError, Stored, admit};
use crate::verify::VerifiedDelivery;
use crate::woocommerce::RESOURCES;

use super::{StoreClient, StoreError};

/// The header that marks a delivery hookgate fetched itself.
pub const X_HOOKGATE_BACKFILL: HeaderName = HeaderName::from_static("x-hookgate-backfill");
/// How far before the asked time the spool's deliveries are looked at, for resources it already holds:
/// room for the store's clock and hookgate's to differ.
const CLOCK_MARGIN: Duration = Duration::from_secs(10 * 60);

/// What a backfill did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backfilled {
    /// Resources the store listed as modified since the time.
    pub fetched: u64,
    /// Of those, the ones queued.
    pub queued: u64,
    /// Of those, the ones the spool already held at that state or a newer one (or a repeat, by dedupe).
    pub already_held: u64,
}

/// Why a backfill stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The store did not answer as it should.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The spool did not take a delivery (full or unavailable): what was queued before stays queued.
    #[error("the spool did not take a backfilled delivery: {0}")]
    Spool(String),
}

/// Where a backfill queues what it fetched.
pub enum Target<'a> {
    /// A gateway's queue: the watch in `serve`, and `hookgate store backfill` on PostgreSQL (there as one
    /// more replica).
    Queue(&'a Queue),
    /// An SQLite spool opened beside the gateway that delivers from it (`hookgate store backfill`): what
    /// is committed here, that gateway's dispatcher finds at its next poll (within a second).
    Sqlite {
        /// The spool.
        conn: &'a Mutex<Connection>,
        /// The queue settings of the config (size bound, dedupe).
        settings: &'a QueueSettings,
    },
}

impl Target<'_> {
    async fn held_states(&self, source: &str, since: i64) -> Result<HeldStates, SpoolError> {
        match self {
            Target::Queue(queue) => queue.spool().held_states(source, since).await,
            Target::Sqlite { conn, .. } => {
                held::held_states_sqlite(&conn.lock().unwrap_or_else(PoisonError::into_inner), source, since)
            }
        }
    }

    /// The bytes the spool takes, and `max_spool_bytes`.
    fn room(&self, config: &Config) -> (u64, u64) {
        match self {
            Target::Queue(queue) => {
                let max = config.delivery.queue().map_or(u64::MAX, |settings| settings.max_spool_bytes);
                (queue.spool().used_bytes(), max)
            }
            Target::Sqlite { conn, settings } => {
                let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                (crate::spool::store::used_bytes(&conn).unwrap_or(0), settings.max_spool_bytes)
            }
        }
    }

    async fn store(
        &self,
        config: &Config,
        source: &str,
        delivery: &VerifiedDelivery,
        routes: Vec<String>,
    ) -> Result<Stored, NotStored> {
        match self {
            Target::Queue(queue) => queue.store(config, source, delivery, routes).await,
            Target::Sqlite { conn, settings } => {
                let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                let used = crate::spool::store::used_bytes(&conn)?;
                let now = crate::clock::Clock::system().now_ms();
                let event = admit(settings, used, now, source, delivery, routes).ok_or(NotStored::Full)?;
                let tx = rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                    .map_err(SpoolError::from)?;
                let stored = crate::spool::store::insert_event(&tx, &event)?;
                tx.commit().map_err(SpoolError::from)?;
                Ok(stored)
            }
        }
    }
}

/// The share of `max_spool_bytes` a backfill may fill: past it, it stops, and the rest stays for the
/// deliveries the store sends meanwhile (a spool filled by a backfill would answer them 503, and
/// WooCommerce would count failures again).
const BACKFILL_SHARE: (u64, u64) = (4, 5);

/// What one backfill run knows as it goes.
struct Run<'a> {
    client: &'a StoreClient,
    target: &'a Target<'a>,
    config: &'a Config,
    source: &'a Source,
    store: &'a StoreSettings,
    since: i64,
    /// The newest state of each resource the spool holds (updated page by page with what arrived since
    /// the run began, so a newer state delivered meanwhile is not followed by an older one).
    held: HeldStates,
    /// When the run began (unix ms).
    began: i64,
    done: Backfilled,
}

/// Backfills `source` from `store` (through `client`) with what was modified since `since` (unix seconds),
/// for the topics `topics` matches (all, when `None`), into `target` under `config`.
pub async fn backfill(
    client: &StoreClient,
    target: &Target<'_>,
    config: &Config,
    source: &Source,
    store: &StoreSettings,
    since: i64,
    topics: Option<&TopicPattern>,
) -> Result<Backfilled, BackfillError> {
    let margin = i64::try_from(CLOCK_MARGIN.as_millis()).unwrap_or(0);
    let began = crate::clock::Clock::system().now_ms();
    let held = target
        .held_states(&source.name, since.saturating_mul(1000).saturating_sub(margin))
        .await
        .map_err(|e| BackfillError::Spool(e.to_string()))?;
    let mut run = Run { client, target, config, source, store, since, held, began, done: Backfilled::default() };
    for resource in RESOURCES {
        let topic = format!("{resource}.updated");
        let routes: Vec<String> = config.routes.matching(&source.name, &topic).map(|r| r.name.clone()).collect();
        if routes.is_empty() || topics.is_some_and(|pattern| !pattern.matches(&topic)) {
            continue;
        }
        run.resource(resource, &topic, &routes).await?;
    }
    Ok(run.done)
}

impl Run<'_> {
    /// Every page of one resource's listing.
    async fn resource(&mut self, resource: &str, topic: &str, routes: &[String]) -> Result<(), BackfillError> {
        let listing = format!("{resource}s");
        // The customers endpoint cannot filter by modification: all are listed, and filtered here.
        let filter = (resource != "customer").then_some(self.since);
        let mut page = 1;
        loop {
            let (items, pages) = self.client.list_page(&listing, filter, page).await?;
            if pages > super::MAX_PAGES {
                return Err(BackfillError::Spool(format!(
                    "the store lists {pages} pages of {listing} (over {}): give a later --since",
                    super::MAX_PAGES
                )));
            }
            let arrived = self.target.held_states(&self.source.name, self.began).await;
            for (key, modified) in arrived.map_err(|e| BackfillError::Spool(e.to_string()))? {
                let newest = self.held.entry(key).or_insert(modified);
                *newest = (*newest).max(modified);
            }
            for item in items {
                let delivery = fetched(self.store, topic, resource, &item);
                self.queue(delivery, routes, filter.is_none()).await?;
            }
            if page >= pages {
                return Ok(());
            }
            page += 1;
        }
    }

    /// Queues one fetched resource, unless the spool holds it at that state or a newer one (or, with
    /// `check_since`, it was not modified since the run's time).
    async fn queue(
        &mut self,
        delivery: VerifiedDelivery,
        routes: &[String],
        check_since: bool,
    ) -> Result<(), BackfillError> {
        let modified = delivery.modified_at();
        if check_since && modified.is_none_or(|at| at <= self.since) {
            return Ok(());
        }
        self.done.fetched += 1;
        let key = crate::spool::resource_key_of(&self.source.name, &delivery);
        if let (Some(held), Some(modified)) = (key.as_ref().and_then(|key| self.held.get(key)), modified)
            && *held >= modified
        {
            self.done.already_held += 1;
            return Ok(());
        }
        let (used, max) = self.target.room(self.config);
        let (share, of) = BACKFILL_SHARE;
        if used.saturating_add(delivery.body().len() as u64) > max / of * share {
            return Err(BackfillError::Spool(format!(
                "the spool holds {used} bytes, near delivery.max_spool_bytes ({max}): the backfill stops here to leave room for live deliveries"
            )));
        }
        match self.target.store(self.config, &self.source.name, &delivery, routes.to_vec()).await {
            Ok(Stored::Duplicate { .. }) => self.done.already_held += 1,
            Ok(_) => self.done.queued += 1,
            Err(NotStored::Full) => return Err(BackfillError::Spool("the spool is full".to_owned())),
            Err(NotStored::Unavailable(error)) => return Err(BackfillError::Spool(error.to_string())),
        }
        Ok(())
    }
}

/// The delivery a webhook of `topic` would have sent for `item` (its bytes as the store sent them).
fn fetched(store: &StoreSettings, topic: &str, resource: &str, item: &RawValue) -> VerifiedDelivery {
    let body = Bytes::from(item.get().as_bytes().to_vec());
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    put("content-type", "application/json");
    put("x-wc-webhook-source", &format!("{}/", store.url.to_string().trim_end_matches('/')));
    put("x-wc-webhook-topic", topic);
    put("x-wc-webhook-resource", resource);
    put("x-wc-webhook-event", "updated");
    headers.insert(X_HOOKGATE_BACKFILL, HeaderValue::from_static("1"));
    VerifiedDelivery::fetched_from_store(body, headers)
}
