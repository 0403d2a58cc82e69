//! The two places a spool can be, behind one face: an SQLite file for one gateway, or PostgreSQL shared by
//! replicas. The queue, the dispatcher and the gauges talk to this, never to either directly.

use std::sync::Arc;

use tokio::sync::Notify;

use super::postgres::{PgSpool, Record, Wanted};
use super::store::{self, NewEvent, PruneAges, RouteStats, UnroutedStats};
use super::{Attempted, Due, Spool, SpoolError, Stored};
use crate::config::SpoolLocation;

/// See [`Backend::read_ahead`]: enough for a few dozen attempts, few enough that a read copies little
/// (each row holds its delivery's body).
const SQLITE_READ_AHEAD: usize = 64;

/// An open spool.
pub enum Backend {
    Sqlite(Spool),
    Postgres(PgSpool),
}

impl Backend {
    /// Opens the spool `location` names: the SQLite file (created and migrated, its lock taken), or the
    /// PostgreSQL database (connected, migrated under its advisory lock).
    pub async fn open(location: &SpoolLocation) -> Result<Backend, SpoolError> {
        Ok(match location {
            SpoolLocation::Sqlite(path) => Backend::Sqlite(Spool::open(path)?),
            SpoolLocation::Postgres(settings) => Backend::Postgres(PgSpool::open(settings).await?),
        })
    }

    /// The backend's name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// False while the spool cannot be written: readiness reports it.
    pub fn writable(&self) -> bool {
        match self {
            Backend::Sqlite(spool) => spool.writable(),
            Backend::Postgres(spool) => spool.writable(),
        }
    }

    /// False when a delivery is sure to fail now: PostgreSQL's health check fails. (An SQLite spool is
    /// always tried: only its next commit can tell that a full disk has room again.)
    pub fn accepting(&self) -> bool {
        match self {
            Backend::Sqlite(_) => true,
            Backend::Postgres(spool) => spool.writable(),
        }
    }

    /// Why the spool cannot take deliveries now, for `/readyz`.
    pub fn unavailable_reason(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "the spool cannot be written",
            Backend::Postgres(_) => "the PostgreSQL spool cannot be reached or written",
        }
    }

    /// Bytes the spool takes, for `max_spool_bytes` and the gauge.
    pub fn used_bytes(&self) -> u64 {
        match self {
            Backend::Sqlite(spool) => spool.used_bytes(),
            Backend::Postgres(spool) => spool.used_bytes(),
        }
    }

    /// Woken when something may have become due.
    pub fn wake(&self) -> &Arc<Notify> {
        match self {
            Backend::Sqlite(spool) => &spool.wake,
            Backend::Postgres(spool) => spool.wake(),
        }
    }

    /// How many due deliveries a read takes beyond the free slots, per route, to start without reading
    /// again as slots free up. An SQLite spool belongs to this gateway alone: reading ahead holds nothing
    /// back from anyone. On PostgreSQL a read claims with a lease, which would keep deliveries from the
    /// other replicas while they wait here: none.
    pub fn read_ahead(&self) -> usize {
        match self {
            Backend::Sqlite(_) => SQLITE_READ_AHEAD,
            Backend::Postgres(_) => 0,
        }
    }

    /// The deliveries stored since the last call that may be sent at once, without a read (see
    /// [`Spool::take_fresh`]). Only an SQLite spool hands them over: on PostgreSQL every replica stores, and
    /// only a claim may take a delivery.
    pub fn take_fresh(&self) -> super::Fresh {
        match self {
            Backend::Sqlite(spool) => spool.take_fresh(),
            Backend::Postgres(_) => Default::default(),
        }
    }

    /// Whether [`Backend::take_fresh`] hands over every delivery that becomes due at once (unless it says
    /// it missed some): then a read that found all that was due need not be repeated for them.
    pub fn hands_over_fresh(&self) -> bool {
        matches!(self, Backend::Sqlite(_))
    }

    /// Stores an event; returns once committed.
    pub async fn insert(&self, event: NewEvent) -> Result<Stored, SpoolError> {
        match self {
            Backend::Sqlite(spool) => spool.insert(event).await,
            Backend::Postgres(spool) => spool.insert(event).await,
        }
    }

    /// Per route in `wanted`, the deliveries due at `now` that this gateway may send (on PostgreSQL,
    /// claimed with a lease); and when the next one becomes due.
    pub async fn due(&self, wanted: Vec<Wanted>, now: i64) -> Result<(Vec<Vec<Due>>, Option<i64>), SpoolError> {
        match self {
            Backend::Sqlite(spool) => spool.read(move |conn| read_due(conn, wanted, now)).await,
            Backend::Postgres(spool) => spool.claim(wanted, now).await,
        }
    }

    /// Records the result of an attempt at `due` that ended at `now`; returns once committed.
    pub async fn record(&self, due: &Due, now: i64, result: Attempted) -> Result<(), SpoolError> {
        match self {
            Backend::Sqlite(spool) => spool.record(due.delivery_id, now, result).await,
            Backend::Postgres(spool) => {
                let record = Record {
                    delivery_id: due.delivery_id,
                    route: due.route.clone(),
                    resource_key: due.resource_key.clone(),
                    now,
                    result,
                };
                spool.record(record).await
            }
        }
    }

    /// Prunes what is older at `ages.now` than it is kept (see [`store::prune`]); one chunk.
    pub async fn prune(&self, ages: PruneAges) -> Result<usize, SpoolError> {
        match self {
            Backend::Sqlite(spool) => spool.prune(ages).await,
            Backend::Postgres(spool) => spool.prune(ages).await,
        }
    }

    /// Counts per route, and the unrouted events kept.
    pub async fn stats(&self) -> Result<(Vec<RouteStats>, UnroutedStats), SpoolError> {
        match self {
            Backend::Sqlite(spool) => spool.read(|conn| Ok((store::stats(conn)?, store::unrouted_stats(conn)?))).await,
            Backend::Postgres(spool) => spool.stats().await,
        }
    }

    /// Commits what was sent before, then closes.
    pub async fn close(&self) {
        match self {
            Backend::Sqlite(spool) => spool.close().await,
            Backend::Postgres(spool) => spool.close().await,
        }
    }
}

/// For each route in `wanted`, in order, the deliveries due at `now` (leaving out those in flight); and
/// when the next resource head becomes due on any of them.
fn read_due(
    conn: &rusqlite::Connection,
    wanted: Vec<Wanted>,
    now: i64,
) -> Result<(Vec<Vec<Due>>, Option<i64>), SpoolError> {
    let mut next_due: Option<i64> = None;
    let mut due = Vec::with_capacity(wanted.len());
    for Wanted { route, free, in_flight, .. } in wanted {
        due.push(store::due(conn, &route, now, free, &in_flight)?);
        if let Some(at) = store::next_due_at(conn, &route, now)? {
            next_due = Some(next_due.map_or(at, |n| n.min(at)));
        }
    }
    Ok((due, next_due))
}
