//! The spool as the operator's commands see it: the same reads and changes on an SQLite file or a
//! PostgreSQL database (there through a small runtime of its own, the command being synchronous).

use std::path::PathBuf;

use rusqlite::Connection;

use crate::config::SpoolLocation;
use crate::route::{Routes, TopicPattern};
use crate::spool::postgres::{inspect, operate};
use crate::spool::store::{self, Listed, RouteStats, Routed, Shown, UnroutedStats};
use crate::spool::{SpoolError, postgres};

/// An open spool, for one command.
pub enum AdminSpool {
    Sqlite { conn: Connection, path: PathBuf },
    Postgres { client: tokio_postgres::Client, runtime: tokio::runtime::Runtime, url_from: String },
}

impl AdminSpool {
    /// Opens the spool `location` names. An SQLite file must exist (`missing` says what to tell then).
    pub fn open(location: &SpoolLocation) -> Result<AdminSpool, SpoolError> {
        match location {
            SpoolLocation::Sqlite(path) => Ok(AdminSpool::Sqlite { conn: store::open(path)?, path: path.clone() }),
            SpoolLocation::Postgres(settings) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| SpoolError::Open(format!("cannot start a runtime: {e}")))?;
                let client = runtime.block_on(postgres::connect_once(settings))?;
                Ok(AdminSpool::Postgres { client, runtime, url_from: settings.url_from.clone() })
            }
        }
    }

    /// Where the spool is, its schema version and the bytes it takes, for `spool stats`.
    pub fn describe(&self) -> Result<(String, i64, u64), SpoolError> {
        match self {
            AdminSpool::Sqlite { conn, path } => {
                Ok((path.display().to_string(), store::schema_version(conn)?, store::used_bytes(conn)?))
            }
            AdminSpool::Postgres { client, runtime, url_from } => {
                let (version, bytes) = runtime.block_on(operate::describe(client))?;
                Ok((format!("PostgreSQL (url from {url_from})"), i64::from(version), bytes))
            }
        }
    }

    pub fn stats(&self) -> Result<Vec<RouteStats>, SpoolError> {
        match self {
            AdminSpool::Sqlite { conn, .. } => store::stats(conn),
            AdminSpool::Postgres { client, runtime, .. } => runtime.block_on(inspect::stats(client)),
        }
    }

    pub fn unrouted_stats(&self) -> Result<UnroutedStats, SpoolError> {
        match self {
            AdminSpool::Sqlite { conn, .. } => store::unrouted_stats(conn),
            AdminSpool::Postgres { client, runtime, .. } => runtime.block_on(inspect::unrouted_stats(client)),
        }
    }

    pub fn list(&self, route: Option<&str>, state: Option<&str>, limit: usize) -> Result<Vec<Listed>, SpoolError> {
        match self {
            AdminSpool::Sqlite { conn, .. } => store::list(conn, route, state, limit),
            AdminSpool::Postgres { client, runtime, .. } => {
                runtime.block_on(inspect::list(client, route, state, limit))
            }
        }
    }

    pub fn show(&self, public_id: &str) -> Result<Option<Shown>, SpoolError> {
        match self {
            AdminSpool::Sqlite { conn, .. } => store::show(conn, public_id),
            AdminSpool::Postgres { client, runtime, .. } => runtime.block_on(inspect::show(client, public_id)),
        }
    }

    pub fn event_exists(&self, public_id: &str) -> Result<bool, SpoolError> {
        match self {
            AdminSpool::Sqlite { conn, .. } => store::event_exists(conn, public_id),
            AdminSpool::Postgres { client, runtime, .. } => runtime.block_on(inspect::event_exists(client, public_id)),
        }
    }

    pub fn routes(&self) -> Result<Vec<String>, SpoolError> {
        match self {
            AdminSpool::Sqlite { conn, .. } => store::routes(conn),
            AdminSpool::Postgres { client, runtime, .. } => runtime.block_on(inspect::routes(client)),
        }
    }

    pub fn replay(&mut self, public_id: Option<&str>, route: Option<&str>, now: i64) -> Result<usize, SpoolError> {
        match self {
            AdminSpool::Sqlite { conn, .. } => store::replay(conn, public_id, route, now),
            AdminSpool::Postgres { client, runtime, .. } => {
                runtime.block_on(operate::replay(client, public_id, route, now))
            }
        }
    }

    pub fn retry_now(&self, public_id: Option<&str>, route: Option<&str>, now: i64) -> Result<usize, SpoolError> {
        match self {
            AdminSpool::Sqlite { conn, .. } => store::retry_now(conn, public_id, route, now),
            AdminSpool::Postgres { client, runtime, .. } => {
                runtime.block_on(operate::retry_now(client, public_id, route, now))
            }
        }
    }

    pub fn drop_event(&mut self, public_id: &str) -> Result<bool, SpoolError> {
        match self {
            AdminSpool::Sqlite { conn, .. } => store::drop_event(conn, public_id),
            AdminSpool::Postgres { client, runtime, .. } => runtime.block_on(operate::drop_event(client, public_id)),
        }
    }

    pub fn route_unrouted(
        &mut self,
        routes: &Routes,
        public_id: Option<&str>,
        topic: Option<&TopicPattern>,
        now: i64,
    ) -> Result<Routed, SpoolError> {
        match self {
            AdminSpool::Sqlite { conn, .. } => store::route_unrouted(conn, routes, public_id, topic, now),
            AdminSpool::Postgres { client, runtime, .. } => {
                runtime.block_on(operate::route_unrouted(client, routes, public_id, topic, now))
            }
        }
    }
}
