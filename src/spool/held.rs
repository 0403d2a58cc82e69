//! What the spool holds of one source, for the store's backfill: when the newest delivery from it (of one
//! topic, or of any) was received, and the newest state it holds of each resource received since a time (so
//! that a resource the spool already has at that state or a newer one is not queued again). On either
//! backend, and on an SQLite spool opened beside the gateway that delivers from it (`hookgate store
//! backfill`). Payloads are read one row at a time: only the resource keys and times are kept.

use std::collections::HashMap;

use futures_util::{StreamExt, pin_mut};
use rusqlite::Connection;

use super::{Backend, SpoolError, postgres};
use crate::woocommerce::Payload;

/// The newest `date_modified_gmt` (unix seconds) of each resource (`resource_key`) the spool holds of a
/// source among events received since a time.
pub type HeldStates = HashMap<String, i64>;

/// Events of `source` received since `since` (unix ms) that concern a resource.
const HELD_SQLITE: &str = "SELECT resource_key, body FROM events
                           WHERE source = ?1 AND received_at >= ?2 AND resource_key IS NOT NULL";
const HELD_POSTGRES: &str = "SELECT resource_key, body FROM events
                             WHERE source = $1 AND received_at >= $2 AND resource_key IS NOT NULL";

impl Backend {
    /// When the newest event from `source` (of `topic`, when given) still in the spool was received (unix
    /// ms).
    pub async fn newest_received_at(&self, source: &str, topic: Option<&str>) -> Result<Option<i64>, SpoolError> {
        let (source, topic) = (source.to_owned(), topic.map(str::to_owned));
        match self {
            Backend::Sqlite(spool) => spool.read(move |conn| newest_received_at(conn, &source, topic.as_deref())).await,
            Backend::Postgres(spool) => {
                let client = spool.client().await?;
                let sql = "SELECT MAX(received_at) FROM events WHERE source = $1 AND ($2::text IS NULL OR topic = $2)";
                let row = client.query_one(sql, &[&source, &topic]).await.map_err(postgres::pg_error)?;
                Ok(row.get(0))
            }
        }
    }

    /// The newest state of each resource of `source` among the events received since `since` (unix ms).
    pub async fn held_states(&self, source: &str, since: i64) -> Result<HeldStates, SpoolError> {
        let source = source.to_owned();
        match self {
            Backend::Sqlite(spool) => spool.read(move |conn| held_states_sqlite(conn, &source, since)).await,
            Backend::Postgres(spool) => {
                let client = spool.client().await?;
                let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&source, &since];
                let rows = client.query_raw(HELD_POSTGRES, parameters).await.map_err(postgres::pg_error)?;
                pin_mut!(rows);
                let mut held = HeldStates::new();
                while let Some(row) = rows.next().await {
                    let row = row.map_err(postgres::pg_error)?;
                    note(&mut held, row.get(0), row.get(1));
                }
                Ok(held)
            }
        }
    }
}

/// When the newest event from `source` (of `topic`, when given) in the SQLite spool `conn` was received.
pub fn newest_received_at(conn: &Connection, source: &str, topic: Option<&str>) -> Result<Option<i64>, SpoolError> {
    let sql = "SELECT MAX(received_at) FROM events WHERE source = ?1 AND (?2 IS NULL OR topic = ?2)";
    Ok(conn.prepare_cached(sql)?.query_row(rusqlite::params![source, topic], |row| row.get(0))?)
}

/// [`Backend::held_states`] on the SQLite spool `conn`.
pub fn held_states_sqlite(conn: &Connection, source: &str, since: i64) -> Result<HeldStates, SpoolError> {
    let mut statement = conn.prepare_cached(HELD_SQLITE)?;
    let mut rows = statement.query(rusqlite::params![source, since])?;
    let mut held = HeldStates::new();
    while let Some(row) = rows.next()? {
        let body: Vec<u8> = row.get(1)?;
        note(&mut held, row.get(0)?, &body);
    }
    Ok(held)
}

/// Notes a held payload of `resource_key`: its modification time, when it is the newest seen.
fn note(held: &mut HeldStates, resource_key: String, body: &[u8]) {
    if let Some(modified) = Payload::default().modified_at(body) {
        let newest = held.entry(resource_key).or_insert(modified);
        *newest = (*newest).max(modified);
    }
}
