//! What an operator reads of the PostgreSQL spool and the clean-up that keeps it small: the same results
//! as `store::inspect` and `store::prune` give on SQLite.

use tokio_postgres::GenericClient;
use tokio_postgres::Row;

use super::write::{DEDUPE_ROW_BYTES, DELIVERY_ROW_BYTES, EVENT_BYTES_SQL, count_usage};
use super::{SpoolError, pg_error};
use crate::spool::store::{Listed, PRUNE_CHUNK, PruneAges, RouteStats, Shown, UnroutedStats};

/// The lock held by the replica pruning, so that one prunes at a time ("hookgate" + 1).
const PRUNE_LOCK: i64 = 0x686f_6f6b_6761_7466;

/// The spool's live bytes, as counted when rows are written and removed (see `write::event_bytes`).
pub async fn used_bytes(client: &impl GenericClient) -> Result<u64, SpoolError> {
    let row =
        client.query_one("SELECT COALESCE(SUM(bytes), 0)::bigint FROM spool_usage", &[]).await.map_err(pg_error)?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Counts per route.
pub async fn stats(client: &impl GenericClient) -> Result<Vec<RouteStats>, SpoolError> {
    let rows = client
        .query(
            "SELECT route, COUNT(*) FILTER (WHERE state = 'pending'), COUNT(*) FILTER (WHERE state = 'dead'),
                    COUNT(*) FILTER (WHERE state = 'delivered'), MIN(pending_since) FILTER (WHERE state = 'pending')
             FROM deliveries GROUP BY route ORDER BY route",
            &[],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|row| RouteStats {
            route: row.get(0),
            pending: row.get(1),
            dead: row.get(2),
            delivered: row.get(3),
            oldest_pending_since: row.get(4),
        })
        .collect())
}

/// How many unrouted events the spool keeps, and when the oldest came.
pub async fn unrouted_stats(client: &impl GenericClient) -> Result<UnroutedStats, SpoolError> {
    let row = client
        .query_one("SELECT COUNT(*), MIN(received_at) FROM events WHERE unrouted", &[])
        .await
        .map_err(pg_error)?;
    Ok(UnroutedStats { events: row.get(0), oldest_received_at: row.get(1) })
}

/// Removes up to [`PRUNE_CHUNK`] delivered entries older than `keep_delivered` (and their events once no
/// delivery is left), as many unrouted events and as many old dedupe records, in one transaction, when no
/// other replica is pruning. Returns how many rows went (0 when another replica holds the lock).
pub async fn prune(client: &mut deadpool_postgres::Client, ages: PruneAges) -> Result<usize, SpoolError> {
    let PruneAges { now, keep_delivered_ms, keep_unrouted_ms, dedupe_window_ms } = ages;
    let chunk = PRUNE_CHUNK as i64;
    let tx = client.transaction().await.map_err(pg_error)?;
    let locked: bool =
        tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK]).await.map_err(pg_error)?.get(0);
    if !locked {
        return Ok(0);
    }
    let events: Vec<i64> = tx
        .query(
            "DELETE FROM deliveries WHERE id IN (
                 SELECT id FROM deliveries WHERE state = 'delivered' AND finished_at < $1 LIMIT $2)
             RETURNING event_id",
            &[&(now - keep_delivered_ms), &chunk],
        )
        .await
        .map_err(pg_error)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let orphans: i64 = tx
        .query_one(
            &format!(
                "WITH gone AS (DELETE FROM events e WHERE e.id = ANY($1)
                               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                               RETURNING {EVENT_BYTES_SQL} AS bytes)
                 SELECT COALESCE(SUM(bytes), 0)::bigint FROM gone"
            ),
            &[&events],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let unrouted = tx
        .query_one(
            &format!(
                "WITH gone AS (DELETE FROM events WHERE id IN (
                                   SELECT id FROM events WHERE unrouted AND received_at < $1 LIMIT $2)
                               RETURNING {EVENT_BYTES_SQL} AS bytes)
                 SELECT COUNT(*), COALESCE(SUM(bytes), 0)::bigint FROM gone"
            ),
            &[&now.saturating_sub(keep_unrouted_ms), &chunk],
        )
        .await
        .map_err(pg_error)?;
    let (unrouted, unrouted_bytes): (i64, i64) = (unrouted.get(0), unrouted.get(1));
    let forgotten = tx
        .execute(
            "DELETE FROM dedupe WHERE key IN (SELECT key FROM dedupe WHERE seen_at < $1 LIMIT $2)",
            &[&(now - dedupe_window_ms), &chunk],
        )
        .await
        .map_err(pg_error)?;
    let deliveries = i64::try_from(events.len()).unwrap_or(0);
    let removed = deliveries * DELIVERY_ROW_BYTES
        + orphans
        + unrouted_bytes
        + i64::try_from(forgotten).unwrap_or(0) * DEDUPE_ROW_BYTES;
    count_usage(&tx, "prune", -removed).await?;
    tx.commit().await.map_err(pg_error)?;
    let unrouted = u64::try_from(unrouted).unwrap_or(0);
    let most = u64::try_from(events.len()).unwrap_or(0).max(unrouted).max(forgotten);
    Ok(usize::try_from(most).unwrap_or(usize::MAX))
}

/// The columns [`listed`] reads, in its order (the last answer is column 10).
const LISTED_COLUMNS: &str = "SELECT e.public_id, d.route, d.state, e.topic, e.source, d.attempts, e.received_at,
        d.next_attempt_at, d.last_status, d.last_error, d.last_answer
 FROM deliveries d JOIN events e ON e.id = d.event_id";

fn listed(row: &Row) -> Listed {
    Listed {
        public_id: row.get(0),
        route: row.get(1),
        state: row.get(2),
        topic: row.get(3),
        source: row.get(4),
        attempts: u32::try_from(row.get::<_, i32>(5)).unwrap_or(0),
        received_at: row.get(6),
        next_attempt_at: row.get(7),
        last_status: row.get::<_, Option<i32>>(8).and_then(|s| u16::try_from(s).ok()),
        last_error: row.get(9),
    }
}

/// Deliveries, oldest first, filtered by route and state, as `store::list` gives them.
pub async fn list(
    client: &impl GenericClient,
    route: Option<&str>,
    state: Option<&str>,
    limit: usize,
) -> Result<Vec<Listed>, SpoolError> {
    let limit_i64 = i64::try_from(limit).unwrap_or(i64::MAX);
    if state == Some("unrouted") {
        return if route.is_some() { Ok(Vec::new()) } else { list_unrouted(client, limit_i64).await };
    }
    let rows = client
        .query(
            &format!(
                "{LISTED_COLUMNS} WHERE ($1::text IS NULL OR d.route = $1) AND ($2::text IS NULL OR d.state = $2) ORDER BY d.id LIMIT $3"
            ),
            &[&route, &state, &limit_i64],
        )
        .await
        .map_err(pg_error)?;
    let mut listed: Vec<Listed> = rows.iter().map(listed).collect();
    if route.is_none() && state.is_none() {
        listed.extend(list_unrouted(client, limit_i64).await?);
        listed.sort_by_key(|row| row.received_at);
        listed.truncate(limit);
    }
    Ok(listed)
}

async fn list_unrouted(client: &impl GenericClient, limit: i64) -> Result<Vec<Listed>, SpoolError> {
    let rows = client
        .query(
            "SELECT public_id, topic, source, received_at FROM events WHERE unrouted ORDER BY id LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|row| Listed {
            public_id: row.get(0),
            route: "-".to_owned(),
            state: "unrouted".to_owned(),
            topic: row.get(1),
            source: row.get(2),
            attempts: 0,
            received_at: row.get(3),
            next_attempt_at: 0,
            last_status: None,
            last_error: None,
        })
        .collect())
}

/// One event by its public id, with every route's delivery.
pub async fn show(client: &impl GenericClient, public_id: &str) -> Result<Option<Shown>, SpoolError> {
    let Some(row) = client
        .query_opt(
            "SELECT id, public_id, received_at, source, topic, resource_key, headers, body, unrouted FROM events WHERE public_id = $1",
            &[&public_id],
        )
        .await
        .map_err(pg_error)?
    else {
        return Ok(None);
    };
    let event_id: i64 = row.get(0);
    let rows = client
        .query(&format!("{LISTED_COLUMNS} WHERE d.event_id = $1 ORDER BY d.id"), &[&event_id])
        .await
        .map_err(pg_error)?;
    Ok(Some(Shown {
        public_id: row.get(1),
        received_at: row.get(2),
        source: row.get(3),
        topic: row.get(4),
        resource_key: row.get(5),
        headers: row.get(6),
        body: row.get(7),
        unrouted: row.get(8),
        deliveries: rows.iter().map(|row| (listed(row), row.get::<_, Option<Vec<u8>>>(10))).collect(),
    }))
}

/// Whether an event with this public id is in the spool.
pub async fn event_exists(client: &impl GenericClient, public_id: &str) -> Result<bool, SpoolError> {
    let row = client
        .query_one("SELECT EXISTS (SELECT 1 FROM events WHERE public_id = $1)", &[&public_id])
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

/// The routes the spool holds deliveries for.
pub async fn routes(client: &impl GenericClient) -> Result<Vec<String>, SpoolError> {
    let rows = client.query("SELECT DISTINCT route FROM deliveries ORDER BY route", &[]).await.map_err(pg_error)?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
