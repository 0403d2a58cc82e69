//! What an operator reads of the spool (`hookgate spool stats|list|show`), deliveries and unrouted events
//! alike, and the queue gauges.

use rusqlite::{Connection, OptionalExtension, params};

use super::SpoolError;

/// Counts by route and state, for `spool stats` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStats {
    pub route: String,
    pub pending: i64,
    pub dead: i64,
    pub delivered: i64,
    /// When the oldest pending delivery was queued (unix ms).
    pub oldest_pending_since: Option<i64>,
}

/// Counts per route.
pub fn stats(conn: &Connection) -> Result<Vec<RouteStats>, SpoolError> {
    let mut statement = conn.prepare_cached(
        "SELECT route,
                SUM(state = 'pending'), SUM(state = 'dead'), SUM(state = 'delivered'),
                MIN(CASE WHEN state = 'pending' THEN pending_since END)
         FROM deliveries GROUP BY route ORDER BY route",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(RouteStats {
            route: row.get(0)?,
            pending: row.get(1)?,
            dead: row.get(2)?,
            delivered: row.get(3)?,
            oldest_pending_since: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One delivery, as listed.
#[derive(Debug, Clone)]
pub struct Listed {
    pub public_id: String,
    pub route: String,
    pub state: String,
    pub topic: String,
    pub source: String,
    pub attempts: u32,
    pub received_at: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// Deliveries, oldest first, filtered by route and state; with state `unrouted`, the events no route took
/// (which have no route), and with neither filter, those too, in the order received.
pub fn list(
    conn: &Connection,
    route: Option<&str>,
    state: Option<&str>,
    limit: usize,
) -> Result<Vec<Listed>, SpoolError> {
    if state == Some("unrouted") {
        return if route.is_some() { Ok(Vec::new()) } else { list_unrouted(conn, limit) };
    }
    let mut statement = conn.prepare(&format!(
        "{LISTED_COLUMNS} WHERE (?1 IS NULL OR d.route = ?1) AND (?2 IS NULL OR d.state = ?2) ORDER BY d.id LIMIT ?3"
    ))?;
    let rows = statement.query_map(params![route, state, i64::try_from(limit).unwrap_or(i64::MAX)], listed)?;
    let mut rows: Vec<Listed> = rows.collect::<Result<_, _>>()?;
    if route.is_none() && state.is_none() {
        rows.extend(list_unrouted(conn, limit)?);
        // Stable: each list keeps its own order among equal times.
        rows.sort_by_key(|row| row.received_at);
        rows.truncate(limit);
    }
    Ok(rows)
}

/// The unrouted events kept, for `spool stats` and the `hookgate_unrouted_events` gauge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnroutedStats {
    pub events: i64,
    /// When the oldest was received (unix ms).
    pub oldest_received_at: Option<i64>,
}

/// How many unrouted events the spool keeps, and the oldest one's age.
pub fn unrouted_stats(conn: &Connection) -> Result<UnroutedStats, SpoolError> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*), MIN(received_at) FROM events WHERE unrouted = 1")?
        .query_row([], |row| Ok(UnroutedStats { events: row.get(0)?, oldest_received_at: row.get(1)? }))?)
}

/// Up to `limit` unrouted events, oldest first, as `spool list` shows them (route `-`, state `unrouted`).
fn list_unrouted(conn: &Connection, limit: usize) -> Result<Vec<Listed>, SpoolError> {
    let mut statement = conn.prepare_cached(
        "SELECT public_id, topic, source, received_at FROM events WHERE unrouted = 1 ORDER BY id LIMIT ?1",
    )?;
    let rows = statement.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
        Ok(Listed {
            public_id: row.get(0)?,
            route: "-".to_owned(),
            state: "unrouted".to_owned(),
            topic: row.get(1)?,
            source: row.get(2)?,
            attempts: 0,
            received_at: row.get(3)?,
            next_attempt_at: 0,
            last_status: None,
            last_error: None,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The columns [`listed`] reads, in its order, and the join they come from (the last answer is column 10).
const LISTED_COLUMNS: &str = "SELECT e.public_id, d.route, d.state, e.topic, e.source, d.attempts, e.received_at,
        d.next_attempt_at, d.last_status, d.last_error, d.last_answer
 FROM deliveries d JOIN events e ON e.id = d.event_id";

/// One row of [`LISTED_COLUMNS`].
fn listed(row: &rusqlite::Row<'_>) -> rusqlite::Result<Listed> {
    Ok(Listed {
        public_id: row.get(0)?,
        route: row.get(1)?,
        state: row.get(2)?,
        topic: row.get(3)?,
        source: row.get(4)?,
        attempts: row.get(5)?,
        received_at: row.get(6)?,
        next_attempt_at: row.get(7)?,
        last_status: row.get(8)?,
        last_error: row.get(9)?,
    })
}

/// An event with its headers, body and every route's delivery.
#[derive(Debug, Clone)]
pub struct Shown {
    pub public_id: String,
    pub received_at: i64,
    pub source: String,
    pub topic: String,
    pub resource_key: Option<String>,
    pub headers: Vec<u8>,
    pub body: Vec<u8>,
    /// No route has taken it yet (it has no deliveries).
    pub unrouted: bool,
    pub deliveries: Vec<(Listed, Option<Vec<u8>>)>,
}

/// One event by its public id.
pub fn show(conn: &Connection, public_id: &str) -> Result<Option<Shown>, SpoolError> {
    let event = conn
        .query_row(
            "SELECT id, public_id, received_at, source, topic, resource_key, headers, body, unrouted FROM events WHERE public_id = ?1",
            [public_id],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    Shown {
                        public_id: row.get(1)?,
                        received_at: row.get(2)?,
                        source: row.get(3)?,
                        topic: row.get(4)?,
                        resource_key: row.get(5)?,
                        headers: row.get(6)?,
                        body: row.get(7)?,
                        unrouted: row.get(8)?,
                        deliveries: Vec::new(),
                    },
                ))
            },
        )
        .optional()?;
    let Some((event_id, mut shown)) = event else { return Ok(None) };
    let mut statement = conn.prepare(&format!("{LISTED_COLUMNS} WHERE d.event_id = ?1 ORDER BY d.id"))?;
    let rows = statement.query_map([event_id], |row| Ok((listed(row)?, row.get::<_, Option<Vec<u8>>>(10)?)))?;
    shown.deliveries = rows.collect::<Result<_, _>>()?;
    Ok(Some(shown))
}

/// Whether an event with this public id is in the spool.
pub fn event_exists(conn: &Connection, public_id: &str) -> Result<bool, SpoolError> {
    Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM events WHERE public_id = ?1)", [public_id], |row| row.get(0))?)
}

/// The routes the spool holds deliveries for, by name (a route removed from the config may still have some).
pub fn routes(conn: &Connection) -> Result<Vec<String>, SpoolError> {
    let mut statement = conn.prepare("SELECT DISTINCT route FROM deliveries ORDER BY route")?;
    let rows = statement.query_map([], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
