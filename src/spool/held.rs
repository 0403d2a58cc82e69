//! What the spool holds of one source, for the store's backfill: when the newest delivery from it was
//! received, and the newest payload it holds of each resource received since a time (so that a resource
//! the spool already has at that state or a newer one is not queued again). On either backend, and on an
//! SQLite spool opened beside the gateway that delivers from it (`hookgate store backfill`).

use std::collections::HashMap;

use bytes::Bytes;
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
    /// When the newest event from `source` still in the spool was received (unix ms).
    pub async fn newest_received_at(&self, source: &str) -> Result<Option<i64>, SpoolError> {
        let source = source.to_owned();
        match self {
            Backend::Sqlite(spool) => spool.read(move |conn| newest_received_at(conn, &source)).await,
            Backend::Postgres(spool) => {
                let client = spool.client().await?;
                let sql = "SELECT MAX(received_at) FROM events WHERE source = $1";
                let row = client.query_one(sql, &[&source]).await.map_err(postgres::pg_error)?;
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
                let rows = client.query(HELD_POSTGRES, &[&source, &since]).await.map_err(postgres::pg_error)?;
                Ok(held_states(rows.iter().map(|row| (row.get(0), row.get(1)))))
            }
        }
    }
}

/// When the newest event from `source` in the SQLite spool `conn` was received (unix ms).
pub fn newest_received_at(conn: &Connection, source: &str) -> Result<Option<i64>, SpoolError> {
    let sql = "SELECT MAX(received_at) FROM events WHERE source = ?1";
    Ok(conn.prepare_cached(sql)?.query_row([source], |row| row.get(0))?)
}

/// [`Backend::held_states`] on the SQLite spool `conn`.
pub fn held_states_sqlite(conn: &Connection, source: &str, since: i64) -> Result<HeldStates, SpoolError> {
    let mut statement = conn.prepare_cached(HELD_SQLITE)?;
    let rows = statement.query_map(rusqlite::params![source, since], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(held_states(rows.collect::<Result<Vec<_>, _>>()?))
}

/// The newest modification time of each resource among `rows` (its key and a payload).
fn held_states(rows: impl IntoIterator<Item = (String, Vec<u8>)>) -> HeldStates {
    let mut held = HeldStates::new();
    for (resource_key, body) in rows {
        if let Some(modified) = Payload::default().modified_at(&Bytes::from(body)) {
            let newest = held.entry(resource_key).or_insert(modified);
            *newest = (*newest).max(modified);
        }
    }
    held
}
