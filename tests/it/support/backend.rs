//! The queue mode's two spools, SQLite (a file) and PostgreSQL (a database shared by replicas), for tests
//! that run one body against each: `on_both_backends!(name)` makes `name::sqlite` and `name::postgres` of
//! `async fn name(backend: Backend)`. A test reads the spool with [`Backend::query`], one SQL text for both
//! (the PostgreSQL schema has SQLite's table and column names).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::PostgresDatabase;

/// Where a test's gateway keeps its spool.
#[derive(Clone)]
pub enum Backend {
    /// `spool.db` in the test's folder.
    Sqlite,
    /// A database of the test's own on the server `HOOKGATE_POSTGRES_URL` names.
    Postgres(Arc<PostgresDatabase>),
}

impl Backend {
    /// The PostgreSQL backend for `test`, or `None` after saying how to start a server (see
    /// [`PostgresDatabase::created`]).
    pub async fn postgres(test: &str) -> Option<Backend> {
        Some(Backend::Postgres(Arc::new(PostgresDatabase::created(test).await?)))
    }

    /// `sqlite` or `postgres`: for names that two tests run at once must not share (folders, metric labels).
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// A fresh folder for a test's files, of this backend's own (both run at once under `cargo test`).
    pub fn temp_dir(&self, name: &str) -> PathBuf {
        super::temp_dir(&format!("{name}-{}", self.name()))
    }

    /// The lines of a `delivery:` section that name the spool in `dir`. PostgreSQL's URL goes through
    /// `url_file`, the secret's path a deployment takes.
    pub fn delivery_section(&self, dir: &Path) -> String {
        match self {
            Backend::Sqlite => format!("  spool_path: {}\n", dir.join("spool.db").display()),
            Backend::Postgres(database) => {
                std::fs::create_dir_all(dir).unwrap();
                let url_file = dir.join("pg-url");
                std::fs::write(&url_file, format!("{}\n", database.url)).unwrap();
                format!("  postgres:\n    url_file: {}\n    max_connections: 4\n", url_file.display())
            }
        }
    }

    /// Runs one read-only query on the spool in `dir` and gives back its rows, each value as text (`NULL`
    /// as `None`). Write SQL that both read alike: no booleans (SQLite keeps them as 0 and 1), literals
    /// through [`quoted`].
    pub fn query(&self, dir: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Backend::Sqlite => sqlite_rows(&dir.join("spool.db"), sql),
            Backend::Postgres(database) => database.query(sql),
        }
    }

    /// The number a `SELECT COUNT(*) ...` query gives.
    pub fn count(&self, dir: &Path, sql: &str) -> i64 {
        let rows = self.query(dir, sql);
        let value = rows.first().and_then(|row| row.first().cloned().flatten());
        value.unwrap_or_else(|| panic!("{sql}: no count")).parse().unwrap()
    }
}

/// `value` as an SQL string literal.
pub fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn sqlite_rows(file: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    use rusqlite::types::ValueRef;
    let conn = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut statement = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let columns = statement.column_count();
    let rows = statement.query_map([], |row| {
        (0..columns)
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    ValueRef::Null => None,
                    ValueRef::Integer(n) => Some(n.to_string()),
                    ValueRef::Real(x) => Some(x.to_string()),
                    ValueRef::Text(text) | ValueRef::Blob(text) => Some(String::from_utf8_lossy(text).into_owned()),
                })
            })
            .collect()
    });
    rows.and_then(|rows| rows.collect()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Makes two tests of `async fn $name(backend: Backend)`, in a module named like it: `$name::sqlite` and
/// `$name::postgres`, each a `#[tokio::test]` with the arguments given after the name (`flavor = ...`).
/// The PostgreSQL one gets a database of its own, or says how to start a server and passes over its body
/// when run by hand without one (see [`PostgresDatabase::created`]).
macro_rules! on_both_backends {
    ($name:ident $(, $($test_argument:tt)+)?) => {
        mod $name {
            #[tokio::test$(($($test_argument)+))?]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await;
            }

            #[tokio::test$(($($test_argument)+))?]
            async fn postgres() {
                let test = concat!(module_path!(), "::postgres");
                if let Some(backend) = $crate::support::Backend::postgres(test).await {
                    super::$name(backend).await;
                }
            }
        }
    };
}
pub(crate) use on_both_backends;
