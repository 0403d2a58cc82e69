//! `hookgate spool migrate --from SQLITE`: moves what an SQLite spool still owes (events with pending or
//! dead deliveries, and unrouted events) into the PostgreSQL spool, for a single-node user who outgrows it.
//! Events are matched by their public id, so running it twice copies each once; delivered entries and
//! dedupe records are not copied (they are history, and the dedupe window is short).

use rusqlite::Connection;
use tokio_postgres::Client;

use super::write::{DELIVERY_ROW_BYTES, EVENT_ROW_BYTES, count_usage, lock_all, recompute_head, resource_lock};
use super::{SpoolError, pg_error};

/// Events copied in one PostgreSQL transaction.
const CHUNK: i64 = 200;

/// What a migration did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Events copied, and their deliveries.
    pub events: usize,
    pub deliveries: usize,
    /// Events already in PostgreSQL (an earlier run copied them): left as they are.
    pub already_there: usize,
}

struct Event {
    id: i64,
    public_id: String,
    received_at: i64,
    source: String,
    topic: String,
    resource_key: Option<String>,
    headers: Vec<u8>,
    body: Vec<u8>,
    unrouted: bool,
}

struct Delivery {
    route: String,
    state: String,
    attempts: i32,
    pending_since: i64,
    next_attempt_at: i64,
    last_attempt_at: Option<i64>,
    last_status: Option<i32>,
    last_error: Option<String>,
    last_answer: Option<Vec<u8>>,
    finished_at: Option<i64>,
}

/// Copies, in chunks, every event of `sqlite` that is unrouted or has a pending or dead delivery.
pub async fn from_sqlite(sqlite: &Connection, client: &mut Client) -> Result<Migrated, SpoolError> {
    let mut migrated = Migrated::default();
    let mut after = 0;
    loop {
        let events = read_events(sqlite, after)?;
        let Some(last) = events.last() else { break };
        after = last.id;
        let mut chunk = Vec::with_capacity(events.len());
        for event in events {
            let deliveries = read_deliveries(sqlite, event.id)?;
            chunk.push((event, deliveries));
        }
        copy_chunk(client, &chunk, &mut migrated).await?;
    }
    Ok(migrated)
}

fn read_events(sqlite: &Connection, after: i64) -> Result<Vec<Event>, SpoolError> {
    let mut statement = sqlite.prepare(
        "SELECT id, public_id, received_at, source, topic, resource_key, headers, body, unrouted FROM events
         WHERE id > ?1 AND (unrouted = 1 OR EXISTS (SELECT 1 FROM deliveries d
                                                    WHERE d.event_id = events.id AND d.state IN ('pending', 'dead')))
         ORDER BY id LIMIT ?2",
    )?;
    let rows = statement.query_map([after, CHUNK], |row| {
        Ok(Event {
            id: row.get(0)?,
            public_id: row.get(1)?,
            received_at: row.get(2)?,
            source: row.get(3)?,
            topic: row.get(4)?,
            resource_key: row.get(5)?,
            headers: row.get(6)?,
            body: row.get(7)?,
            unrouted: row.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn read_deliveries(sqlite: &Connection, event_id: i64) -> Result<Vec<Delivery>, SpoolError> {
    let mut statement = sqlite.prepare_cached(
        "SELECT route, state, attempts, pending_since, next_attempt_at, last_attempt_at, last_status, last_error,
                last_answer, finished_at
         FROM deliveries WHERE event_id = ?1 AND state IN ('pending', 'dead') ORDER BY id",
    )?;
    let rows = statement.query_map([event_id], |row| {
        Ok(Delivery {
            route: row.get(0)?,
            state: row.get(1)?,
            attempts: row.get(2)?,
            pending_since: row.get(3)?,
            next_attempt_at: row.get(4)?,
            last_attempt_at: row.get(5)?,
            last_status: row.get(6)?,
            last_error: row.get(7)?,
            last_answer: row.get(8)?,
            finished_at: row.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One transaction: the chunk's events (those not there yet) and their deliveries, then the head marks of
/// every resource they touch, under those resources' locks (replicas may be delivering meanwhile).
async fn copy_chunk(
    client: &mut Client,
    chunk: &[(Event, Vec<Delivery>)],
    migrated: &mut Migrated,
) -> Result<(), SpoolError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let mut resources: Vec<(String, String)> = chunk
        .iter()
        .flat_map(|(event, deliveries)| {
            deliveries.iter().filter_map(|d| event.resource_key.clone().map(|r| (d.route.clone(), r)))
        })
        .collect();
    resources.sort();
    resources.dedup();
    let mut keys: Vec<i64> = resources.iter().map(|(route, resource)| resource_lock(route, resource)).collect();
    lock_all(&tx, &mut keys).await?;
    let mut bytes = 0;
    for (event, deliveries) in chunk {
        let inserted = tx
            .query_opt(
                "INSERT INTO events (public_id, received_at, source, topic, resource_key, headers, body, unrouted)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (public_id) DO NOTHING RETURNING id",
                &[
                    &event.public_id,
                    &event.received_at,
                    &event.source,
                    &event.topic,
                    &event.resource_key,
                    &event.headers,
                    &event.body,
                    &event.unrouted,
                ],
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = inserted else {
            migrated.already_there += 1;
            continue;
        };
        let id: i64 = row.get(0);
        let data = event.body.len() + event.headers.len() + event.resource_key.as_ref().map_or(0, String::len);
        bytes += i64::try_from(data).unwrap_or(0) + EVENT_ROW_BYTES;
        for d in deliveries {
            tx.execute(
                "INSERT INTO deliveries (event_id, route, resource_key, state, is_head, attempts, pending_since,
                     next_attempt_at, last_attempt_at, last_status, last_error, last_answer, finished_at)
                 VALUES ($1, $2, $3, $4, $3::text IS NULL AND $4 = 'pending', $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &id,
                    &d.route,
                    &event.resource_key,
                    &d.state,
                    &d.attempts,
                    &d.pending_since,
                    &d.next_attempt_at,
                    &d.last_attempt_at,
                    &d.last_status,
                    &d.last_error,
                    &d.last_answer,
                    &d.finished_at,
                ],
            )
            .await
            .map_err(pg_error)?;
            migrated.deliveries += 1;
            bytes += DELIVERY_ROW_BYTES;
        }
        migrated.events += 1;
    }
    for (route, resource) in &resources {
        recompute_head(&tx, route, resource).await?;
    }
    count_usage(&tx, "migrate", bytes).await?;
    tx.execute("SELECT pg_notify('hookgate_pending', '')", &[]).await.map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(())
}
