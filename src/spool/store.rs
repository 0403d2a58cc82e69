//! The spool's SQL: every read and write, as plain functions over a connection (the schema and its
//! migrations in `schema`, what operators read in `inspect`). The writer thread, the dispatcher's reader and the `spool` commands all go through here, so
//! an operator's `sqlite3` sees the same tables the code uses.

use std::collections::HashSet;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use super::SpoolError;

mod inspect;
mod schema;
mod unrouted;

pub use inspect::{Listed, RouteStats, Shown, UnroutedStats, event_exists, list, routes, show, stats, unrouted_stats};
pub use schema::{BUSY_TIMEOUT, SCHEMA_VERSION, migrate, open, schema_version, used_bytes};
pub use unrouted::{Routed, route_unrouted};

/// A verified delivery to be stored, with the routes it goes to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub(crate) public_id: String,
    pub(crate) received_at: i64,
    pub(crate) source: String,
    pub(crate) topic: String,
    pub(crate) resource_key: Option<String>,
    pub(crate) headers: Vec<u8>,
    pub(crate) body: Bytes,
    pub(crate) routes: Vec<String>,
    /// When set: the dedupe key and the oldest time an earlier delivery counts as a repeat.
    pub(crate) dedupe: Option<([u8; 32], i64)>,
}

/// What storing a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored, with one pending delivery per route.
    Queued { public_id: String },
    /// A repeat of an earlier delivery within the dedupe window: nothing stored.
    Duplicate { public_id: String },
    /// Taken by no route: stored as unrouted, with no delivery, until a replay routes it or it is pruned.
    Unrouted { public_id: String },
}

/// Stores an event and its pending deliveries, unless it repeats an earlier one.
pub fn insert_event(conn: &Connection, event: &NewEvent) -> Result<Stored, SpoolError> {
    insert_event_due(conn, event, &mut Vec::new())
}

/// [`insert_event`], adding to `due` each delivery it stored that may be sent at once (its resource's head
/// on its route), as the dispatcher's read would return it.
pub fn insert_event_due(conn: &Connection, event: &NewEvent, due: &mut Vec<Due>) -> Result<Stored, SpoolError> {
    if let Some((key, since)) = &event.dedupe {
        let earlier: Option<String> = conn
            .prepare_cached("SELECT event_id FROM dedupe WHERE key = ?1 AND seen_at >= ?2")?
            .query_row(params![&key[..], since], |row| row.get(0))
            .optional()?;
        if let Some(public_id) = earlier {
            return Ok(Stored::Duplicate { public_id });
        }
    }
    let unrouted = event.routes.is_empty();
    conn.prepare_cached(
        "INSERT INTO events (public_id, received_at, source, topic, resource_key, headers, body, unrouted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        event.public_id,
        event.received_at,
        event.source,
        event.topic,
        event.resource_key,
        event.headers,
        &event.body[..],
        unrouted
    ])?;
    let event_id = conn.last_insert_rowid();
    for (delivery_id, route) in
        insert_deliveries(conn, event_id, event.resource_key.as_deref(), &event.routes, event.received_at)?
    {
        due.push(Due {
            delivery_id,
            route,
            resource_key: event.resource_key.clone(),
            attempts: 0,
            pending_since: event.received_at,
            public_id: event.public_id.clone(),
            source: event.source.clone(),
            headers: event.headers.clone(),
            body: event.body.clone(),
        });
    }
    // An unrouted event is remembered too: its repeat is a duplicate, and a replay delivers it once.
    if let Some((key, _)) = &event.dedupe {
        conn.prepare_cached("INSERT OR REPLACE INTO dedupe (key, event_id, seen_at) VALUES (?1, ?2, ?3)")?
            .execute(params![&key[..], event.public_id, event.received_at])?;
    }
    let public_id = event.public_id.clone();
    Ok(if unrouted { Stored::Unrouted { public_id } } else { Stored::Queued { public_id } })
}

/// One pending delivery of event `event_id` per route in `routes`, due at `at`. A delivery is its
/// resource's head on its route unless an earlier one is still pending there. Returns the id and route of
/// each that is its resource's head.
fn insert_deliveries(
    conn: &Connection,
    event_id: i64,
    resource_key: Option<&str>,
    routes: &[String],
    at: i64,
) -> Result<Vec<(i64, String)>, SpoolError> {
    // Two plain statements, not one INSERT ... RETURNING: SQLite gathers a RETURNING clause's rows in a
    // temporary b-tree, built and torn down for every row (measured with callgrind in bench/ANALYSIS.md).
    let mut earlier = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM deliveries WHERE route = ?1 AND resource_key = ?2 AND state = 'pending')",
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO deliveries (event_id, route, resource_key, state, is_head, pending_since, next_attempt_at)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?5)",
    )?;
    let mut heads = Vec::with_capacity(routes.len());
    for route in routes {
        let head = match resource_key {
            None => true,
            Some(key) => !earlier.query_row(params![route, key], |row| row.get::<_, bool>(0))?,
        };
        insert.execute(params![event_id, route, resource_key, head, at])?;
        if head {
            heads.push((conn.last_insert_rowid(), route.clone()));
        }
    }
    Ok(heads)
}

/// A pending delivery whose turn has come, with what is needed to send it.
#[derive(Debug, Clone)]
pub struct Due {
    pub delivery_id: i64,
    pub route: String,
    /// What orders it; the dispatcher never sends two deliveries with the same key on a route at once.
    pub resource_key: Option<String>,
    pub attempts: u32,
    pub pending_since: i64,
    pub public_id: String,
    pub source: String,
    pub headers: Vec<u8>,
    pub body: Bytes,
}

/// What one read of due deliveries holds at most, in bodies and headers (past it the read ends, with at least
/// one delivery): with bodies up to `max_body_bytes` each, a read of many stays a few MiB.
pub const DUE_READ_BYTES: usize = 4 * 1024 * 1024;

/// Up to `limit` pending deliveries of `route` that are due at `now` (fewer once they hold
/// [`DUE_READ_BYTES`]), earliest due first, leaving out those
/// in `in_flight`. Only a resource's head (its oldest pending delivery on the route) is ever due, so
/// deliveries about one resource go one at a time, in the order received, and the query reads no more
/// rows than it returns plus those in flight, however long the backlog behind a failing resource.
pub fn due(
    conn: &Connection,
    route: &str,
    now: i64,
    limit: usize,
    in_flight: &HashSet<i64>,
) -> Result<Vec<Due>, SpoolError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut statement = conn.prepare_cached(&format!(
        "{DUE_COLUMNS} WHERE d.route = ?1 AND d.state = 'pending' AND d.is_head = 1 AND d.next_attempt_at <= ?2
         ORDER BY d.next_attempt_at, d.id
         LIMIT ?3"
    ))?;
    let fetch = i64::try_from(limit + in_flight.len()).unwrap_or(i64::MAX);
    let rows = statement.query_map(params![route, now, fetch], due_row)?;
    let mut due = Vec::with_capacity(limit);
    let mut bytes = 0;
    for row in rows {
        let row = row?;
        if !in_flight.contains(&row.delivery_id) {
            bytes += row.body.len() + row.headers.len();
            due.push(row);
            if due.len() == limit || bytes >= DUE_READ_BYTES {
                break;
            }
        }
    }
    Ok(due)
}

/// What a [`Due`] is read from, by [`due_row`].
const DUE_COLUMNS: &str =
    "SELECT d.id, d.attempts, d.pending_since, e.public_id, e.source, e.headers, e.body, d.resource_key, d.route
     FROM deliveries d JOIN events e ON e.id = d.event_id";

fn due_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Due> {
    Ok(Due {
        delivery_id: row.get(0)?,
        attempts: row.get(1)?,
        pending_since: row.get(2)?,
        public_id: row.get(3)?,
        source: row.get(4)?,
        headers: row.get(5)?,
        body: Bytes::from(row.get::<_, Vec<u8>>(6)?),
        resource_key: row.get(7)?,
        route: row.get(8)?,
    })
}

/// When the next delivery of `route` that may be sent (a resource's head) becomes due after `now`, if one
/// waits for its time. Those due already are not counted: they are being sent, or ready, or were left out
/// of a read only by its limit (and the dispatcher then reads again as slots free up).
pub fn next_due_at(conn: &Connection, route: &str, now: i64) -> Result<Option<i64>, SpoolError> {
    Ok(conn
        .prepare_cached(
            "SELECT MIN(next_attempt_at) FROM deliveries
             WHERE route = ?1 AND state = 'pending' AND is_head = 1 AND next_attempt_at > ?2",
        )?
        .query_row(params![route, now], |row| row.get(0))?)
}

/// What an attempt came to, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    /// The upstream answered 2xx.
    Delivered { status: u16 },
    /// A failure worth retrying; the next attempt is at `next_attempt_at`.
    Retry { next_attempt_at: i64, status: Option<u16>, error: String, answer: Vec<u8> },
    /// A failure that retrying cannot fix, or retries ran out: kept for an operator.
    Dead { status: Option<u16>, error: String, answer: Vec<u8> },
}

/// Records an attempt's result. A delivery that leaves the pending state hands the head of its resource to
/// the next pending delivery about the same resource.
pub fn record_attempt(conn: &Connection, delivery_id: i64, now: i64, result: &Attempted) -> Result<(), SpoolError> {
    record_attempt_due(conn, delivery_id, now, result, &mut Vec::new())
}

/// [`record_attempt`], adding to `due` the delivery it made its resource's head, when that one may be sent
/// at `now`.
pub fn record_attempt_due(
    conn: &Connection,
    delivery_id: i64,
    now: i64,
    result: &Attempted,
    due: &mut Vec<Due>,
) -> Result<(), SpoolError> {
    // A delivery that leaves the pending state stops being its resource's head in the same statement.
    match result {
        Attempted::Delivered { status } => conn
            .prepare_cached(
                "UPDATE deliveries SET state = 'delivered', is_head = 0, attempts = attempts + 1, last_attempt_at = ?2,
                 last_status = ?3, last_error = NULL, last_answer = NULL, finished_at = ?2 WHERE id = ?1",
            )?
            .execute(params![delivery_id, now, status])?,
        Attempted::Retry { next_attempt_at, status, error, answer } => conn
            .prepare_cached(
                "UPDATE deliveries SET attempts = attempts + 1, last_attempt_at = ?2, next_attempt_at = ?3,
                 last_status = ?4, last_error = ?5, last_answer = ?6 WHERE id = ?1",
            )?
            .execute(params![delivery_id, now, next_attempt_at, status, error, answer])?,
        Attempted::Dead { status, error, answer } => conn
            .prepare_cached(
                "UPDATE deliveries SET state = 'dead', is_head = 0, attempts = attempts + 1, last_attempt_at = ?2,
                 last_status = ?3, last_error = ?4, last_answer = ?5, finished_at = ?2 WHERE id = ?1",
            )?
            .execute(params![delivery_id, now, status, error, answer])?,
    };
    if !matches!(result, Attempted::Retry { .. })
        && let Some(head) = promote_next_head(conn, delivery_id, now)?
    {
        let mut read = conn.prepare_cached(&format!(
            "{DUE_COLUMNS} WHERE d.id = ?1 AND d.state = 'pending' AND d.is_head = 1 AND d.next_attempt_at <= ?2"
        ))?;
        due.extend(read.query_row(params![head, now], due_row).optional()?);
    }
    Ok(())
}

/// Makes the oldest pending delivery about the same route and resource as `finished` the head, and returns
/// its id. Its give-up clock starts now: the time it waited behind a failing delivery does not count
/// against it.
fn promote_next_head(conn: &Connection, finished: i64, now: i64) -> Result<Option<i64>, SpoolError> {
    // A read, then an UPDATE by id only when there is a next one: an UPDATE ... RETURNING would build a
    // temporary b-tree for its row every time, and most resources have no delivery waiting behind.
    let next: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(o.id) FROM deliveries o JOIN deliveries f ON f.id = ?1
             WHERE f.resource_key IS NOT NULL AND o.route = f.route AND o.resource_key = f.resource_key
               AND o.state = 'pending'",
        )?
        .query_row([finished], |row| row.get(0))?;
    if let Some(next) = next {
        conn.prepare_cached("UPDATE deliveries SET is_head = 1, pending_since = MAX(pending_since, ?2) WHERE id = ?1")?
            .execute(params![next, now])?;
    }
    Ok(next)
}

/// Sets the head marks of one route's resource from scratch: its oldest pending delivery is the head.
fn recompute_head(conn: &Connection, route: &str, resource_key: &str) -> Result<(), SpoolError> {
    conn.prepare_cached(
        "UPDATE deliveries SET is_head = (id = (
             SELECT MIN(o.id) FROM deliveries o
             WHERE o.route = ?1 AND o.resource_key = ?2 AND o.state = 'pending'))
         WHERE route = ?1 AND resource_key = ?2 AND state = 'pending'",
    )?
    .execute(params![route, resource_key])?;
    Ok(())
}

/// Checks every pending delivery's head mark and mends those that are wrong (run at start, so a spool
/// changed by an older or interrupted process cannot leave a resource with no head, or two).
pub fn repair_heads(conn: &Connection) -> Result<usize, SpoolError> {
    Ok(conn.execute(
        "UPDATE deliveries SET is_head = NOT is_head
         WHERE state = 'pending' AND is_head != (resource_key IS NULL OR id = (
             SELECT MIN(o.id) FROM deliveries o
             WHERE o.route = deliveries.route AND o.resource_key = deliveries.resource_key AND o.state = 'pending'))",
        [],
    )?)
}

/// The (route, resource) pairs of the deliveries `filter` selects, for a targeted head recompute.
fn resources_of(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(String, String)>, SpoolError> {
    let mut statement = conn.prepare(&format!(
        "SELECT DISTINCT route, resource_key FROM deliveries WHERE resource_key IS NOT NULL AND {filter}"
    ))?;
    let rows = statement.query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deliveries and dedupe records removed in one pruning step: each step is one short write, so answers to
/// WooCommerce never wait behind a large clean-up.
pub const PRUNE_CHUNK: usize = 500;

/// What a pruning pass removes: what is older at `now` than it is kept. Built once per pass from the queue
/// settings and handed, unchanged, to every chunk on either backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneAges {
    /// The moment the ages are counted back from (unix ms).
    pub now: i64,
    /// How long a delivered entry is kept after it finished (`keep_delivered`, in ms).
    pub keep_delivered_ms: i64,
    /// How long an unrouted event is kept after it came (`keep_unrouted`, in ms).
    pub keep_unrouted_ms: i64,
    /// How long a dedupe record is kept after it was seen (the dedupe window, in ms).
    pub dedupe_window_ms: i64,
}

/// Removes up to [`PRUNE_CHUNK`] delivered entries older than `keep_delivered` (and their events once no
/// delivery is left), as many unrouted events received longer than `keep_unrouted` ago, and as many dedupe
/// records older than the window. Dead letters stay until replayed or dropped. Returns how many rows went;
/// call again while it returns [`PRUNE_CHUNK`] or more.
pub fn prune(conn: &Connection, ages: PruneAges) -> Result<usize, SpoolError> {
    let PruneAges { now, keep_delivered_ms, keep_unrouted_ms, dedupe_window_ms } = ages;
    let chunk = PRUNE_CHUNK as i64;
    let events: Vec<i64> = conn
        .prepare_cached(
            "DELETE FROM deliveries WHERE id IN (
                 SELECT id FROM deliveries WHERE state = 'delivered' AND finished_at < ?1 LIMIT ?2)
             RETURNING event_id",
        )?
        .query_map(params![now - keep_delivered_ms, chunk], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut orphaned = conn.prepare_cached(
        "DELETE FROM events WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = ?1)",
    )?;
    for event in &events {
        orphaned.execute([event])?;
    }
    let unrouted = unrouted::prune(conn, now.saturating_sub(keep_unrouted_ms), chunk)?;
    let forgotten = conn
        .prepare_cached("DELETE FROM dedupe WHERE key IN (SELECT key FROM dedupe WHERE seen_at < ?1 LIMIT ?2)")?
        .execute(params![now - dedupe_window_ms, chunk])?;
    Ok(events.len().max(unrouted).max(forgotten))
}

/// Makes dead (or delivered) deliveries pending again, due now, with a fresh give-up clock. With a public
/// id, that event's deliveries not already pending; without, every dead letter (of `route`, when given).
/// One transaction: the state change and the head marks it implies land together or not at all.
pub fn replay(
    conn: &mut Connection,
    public_id: Option<&str>,
    route: Option<&str>,
    now: i64,
) -> Result<usize, SpoolError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (changed, resources) = match public_id {
        Some(id) => {
            let filter = "state != 'pending' AND (?2 IS NULL OR route = ?2)
                          AND event_id = (SELECT id FROM events WHERE public_id = ?1)";
            let resources = resources_of(&tx, filter, params![id, route])?;
            let changed = tx.execute(
                &format!("UPDATE deliveries SET state = 'pending', is_head = (resource_key IS NULL), pending_since = ?3, next_attempt_at = ?3, finished_at = NULL WHERE {filter}"),
                params![id, route, now],
            )?;
            (changed, resources)
        }
        None => {
            let filter = "state = 'dead' AND (?1 IS NULL OR route = ?1)";
            let resources = resources_of(&tx, filter, params![route])?;
            let changed = tx.execute(
                &format!("UPDATE deliveries SET state = 'pending', is_head = (resource_key IS NULL), pending_since = ?2, next_attempt_at = ?2, finished_at = NULL WHERE {filter}"),
                params![route, now],
            )?;
            (changed, resources)
        }
    };
    for (route, resource) in &resources {
        recompute_head(&tx, route, resource)?;
    }
    tx.commit()?;
    Ok(changed)
}

/// Makes the pending deliveries that wait for a retry due at `now`: one event's (by public id), one
/// route's, or every one. Only the wait is cut short: attempts, the give-up clock and the order per
/// resource stay as they are (a resource's later deliveries still wait for its head). One statement, so a
/// running dispatcher sees all of them or none at its next look. Returns how many were waiting.
pub fn retry_now(
    conn: &Connection,
    public_id: Option<&str>,
    route: Option<&str>,
    now: i64,
) -> Result<usize, SpoolError> {
    Ok(conn.execute(
        "UPDATE deliveries SET next_attempt_at = ?3
         WHERE state = 'pending' AND next_attempt_at > ?3
           AND (?1 IS NULL OR event_id = (SELECT id FROM events WHERE public_id = ?1))
           AND (?2 IS NULL OR route = ?2)",
        params![public_id, route, now],
    )?)
}

/// Deletes an event and all its deliveries, in one transaction with the head marks it implies. Returns
/// whether it existed.
pub fn drop_event(conn: &mut Connection, public_id: &str) -> Result<bool, SpoolError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let resources = resources_of(&tx, "event_id = (SELECT id FROM events WHERE public_id = ?1)", [public_id])?;
    let dropped = tx.execute("DELETE FROM events WHERE public_id = ?1", [public_id])? > 0;
    for (route, resource) in &resources {
        recompute_head(&tx, route, resource)?;
    }
    tx.commit()?;
    Ok(dropped)
}

#[cfg(test)]
mod tests;
