//! Queue mode's half of a gateway: the spool and the dispatcher delivering from it, opened and started
//! together, stopped together. The gateway hands it verified deliveries; what it answers is decided here:
//! stored, a duplicate, or refused for lack of room or of a working spool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::dispatch::Dispatcher;
use super::{Backend, SpoolError, Stored};
use crate::clock::Clock;
use crate::config::{Config, QueueSettings};
use crate::forward::Forwarder;
use crate::verify::VerifiedDelivery;

/// The spool of a running gateway and the dispatcher delivering from it.
pub struct Queue {
    spool: Arc<Backend>,
    dispatcher: Mutex<Option<Dispatcher>>,
    /// The queue settings at start: in force while a reload has switched the file to proxy mode, which
    /// takes effect only at a restart.
    started_with: QueueSettings,
    clock: Clock,
}

/// Why a delivery was not stored. Either way it must be answered 503: never a 200 that promises what was
/// not stored.
#[derive(Debug, thiserror::Error)]
pub enum NotStored {
    /// The spool holds `max_spool_bytes` already.
    #[error("the spool is at max_spool_bytes")]
    Full,
    /// The spool could not commit (a full or failing disk, a stopped writer).
    #[error("the spool cannot store the delivery: {0}")]
    Unavailable(#[from] SpoolError),
}

impl Queue {
    /// Opens (creating or migrating) the spool `settings` names (an SQLite file, whose lock it takes, or
    /// a PostgreSQL database): it stores deliveries from now on, and nothing is delivered from it until
    /// [`Queue::start_delivering`].
    pub async fn open(settings: &QueueSettings, clock: Clock) -> Result<Queue, SpoolError> {
        let spool = Arc::new(Backend::open(&settings.spool).await?);
        Ok(Queue { spool, dispatcher: Mutex::new(None), started_with: settings.clone(), clock })
    }

    /// Starts delivering what the spool holds along the routes of the configuration in force (once; later
    /// calls do nothing). Must run inside a tokio runtime.
    pub fn start_delivering(&self, config: Arc<ArcSwap<Config>>, forwarder: Forwarder) {
        let mut dispatcher = self.dispatcher.lock().unwrap_or_else(|p| p.into_inner());
        if dispatcher.is_none() {
            let started_with = self.started_with.clone();
            *dispatcher = Some(Dispatcher::start(Arc::clone(&self.spool), config, forwarder, started_with, self.clock));
        }
    }

    /// False when the spool's last commit failed: readiness reports it.
    pub fn writable(&self) -> bool {
        self.spool.writable()
    }

    /// The spool, for reads beside the writer (what the store's backfill checks).
    pub fn spool(&self) -> &Backend {
        &self.spool
    }

    /// Why the spool cannot take deliveries, while it cannot (for `/readyz`).
    pub fn unavailable(&self) -> Option<&'static str> {
        (!self.spool.writable()).then(|| self.spool.unavailable_reason())
    }

    /// Stores `delivery` from `source` with one pending entry per route in `routes` (fan-out), under the
    /// queue settings of `config` (or those at start, when a reload switched the file to proxy mode);
    /// returns once the transaction holding it has committed.
    pub async fn store(
        &self,
        config: &Config,
        source: &str,
        delivery: &VerifiedDelivery,
        routes: Vec<String>,
    ) -> Result<Stored, NotStored> {
        let settings = config.delivery.queue().unwrap_or(&self.started_with);
        if !self.spool.accepting() {
            // PostgreSQL is known to be unreachable: 503 at once, not after a connection attempt that
            // would outlast WooCommerce's own timeout.
            return Err(NotStored::Unavailable(SpoolError::Postgres("unreachable".into())));
        }
        let used = self.spool.used_bytes();
        let Some(event) = admit(settings, used, self.clock.now_ms(), source, delivery, routes) else {
            tracing::warn!(
                spool_bytes = used,
                max_spool_bytes = settings.max_spool_bytes,
                "spool full: refusing a delivery with 503"
            );
            return Err(NotStored::Full);
        };
        Ok(self.spool.insert(event).await?)
    }

    /// Stops delivering (attempts in flight get up to `grace` to end) and closes the spool. Everything not
    /// delivered stays pending for the next start.
    pub async fn stop(&self, grace: Duration) {
        let dispatcher = self.dispatcher.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(dispatcher) = dispatcher {
            dispatcher.stop(grace).await;
        }
        self.spool.close().await;
    }
}

/// The event `delivery` from `source` becomes when received at `now` (unix ms) under `settings` (its
/// dedupe window), with a pending entry per route in `routes`; `None` when it would take the spool,
/// holding `used` bytes, past `max_spool_bytes`.
pub(crate) fn admit(
    settings: &QueueSettings,
    used: u64,
    now: i64,
    source: &str,
    delivery: &VerifiedDelivery,
    routes: Vec<String>,
) -> Option<super::NewEvent> {
    if used.saturating_add(delivery.body().len() as u64) > settings.max_spool_bytes {
        return None;
    }
    let topic = delivery.topic().unwrap_or_default();
    let dedupe_window = settings.dedupe.applies_to(topic).then_some(settings.dedupe.window);
    Some(super::new_event(now, source, delivery, routes, dedupe_window))
}
