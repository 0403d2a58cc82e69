//! Where queue mode keeps its spool: an SQLite file, or PostgreSQL shared by replicas.

use std::path::{Path, PathBuf};

/// Where queue mode keeps its spool.
#[derive(Debug, Clone)]
pub enum SpoolLocation {
    /// `delivery.spool_path`: an SQLite file on a local disk (the default), for one gateway.
    Sqlite(PathBuf),
    /// `delivery.postgres`: one spool in PostgreSQL, shared by every replica.
    Postgres(Box<PostgresSettings>),
}

impl SpoolLocation {
    /// The SQLite file, when the spool is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            SpoolLocation::Sqlite(path) => Some(path),
            SpoolLocation::Postgres(_) => None,
        }
    }

    /// Where the spool is, for logs and summaries: the file, or where the PostgreSQL URL comes from (never
    /// the URL, which holds a password).
    pub fn describe(&self) -> String {
        match self {
            SpoolLocation::Sqlite(path) => path.display().to_string(),
            SpoolLocation::Postgres(postgres) => format!("PostgreSQL (url from {})", postgres.url_from),
        }
    }

    /// Whether two configurations name the same spool (a change needs a restart).
    pub fn same_as(&self, other: &SpoolLocation) -> bool {
        match (self, other) {
            (SpoolLocation::Sqlite(a), SpoolLocation::Sqlite(b)) => a == b,
            (SpoolLocation::Postgres(a), SpoolLocation::Postgres(b)) => {
                a.url.expose() == b.url.expose() && a.max_connections == b.max_connections && a.ca == b.ca
            }
            _ => false,
        }
    }
}

/// `delivery.postgres`: how to reach the PostgreSQL spool.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// The connection URL (`postgres://user:password@host:port/db?sslmode=...`): a secret, never logged.
    pub url: crate::secret::Secret,
    /// Where the URL came from, for messages: `env HOOKGATE_POSTGRES_URL`, `file /run/...`, `url`.
    pub url_from: String,
    /// Connections in the pool (the LISTEN connection comes on top).
    pub max_connections: usize,
    /// The certificates `ca_file` holds, trusted for the server's certificate instead of the bundled roots.
    pub ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}
