//! The spool's schema: the migrations that build it, and opening a file with the settings that make each
//! commit durable.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::SpoolError;

/// How long a connection waits for another to let go of the database before it fails.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema this build writes. Older files are migrated on open; a newer one is refused.
pub const SCHEMA_VERSION: i64 = 3;

/// Each migration takes the schema from version N to N + 1 (index N). A file is migrated in place when it
/// is opened; adding a column with a constant default rewrites no row, however large the spool.
pub(super) const MIGRATIONS: [&str; 3] = [
    r#"
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,             -- order of receipt
    public_id    TEXT NOT NULL UNIQUE,            -- the id answered to WooCommerce and sent as X-Hookgate-Event-Id
    received_at  INTEGER NOT NULL,                -- unix milliseconds
    source       TEXT NOT NULL,
    topic        TEXT NOT NULL,
    resource_key TEXT,                            -- source/resource:id, for ordering; NULL when the payload has no id
    headers      BLOB NOT NULL,                   -- the forwarded headers, one "name: value" per line
    body         BLOB NOT NULL                    -- the exact bytes WooCommerce signed
);
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    route           TEXT NOT NULL,
    resource_key    TEXT,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    is_head         INTEGER NOT NULL DEFAULT 1,   -- 1 for the oldest pending delivery of its route and resource
    attempts        INTEGER NOT NULL DEFAULT 0,
    pending_since   INTEGER NOT NULL,             -- when it was queued or last replayed; give_up_after counts from here
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_status     INTEGER,                      -- the upstream's last status, if it answered
    last_error      TEXT,                         -- why the last attempt failed
    last_answer     BLOB,                         -- the start of the upstream's last answer
    finished_at     INTEGER                       -- when it was delivered or became a dead letter
);
-- Partial indexes over pending deliveries only: they stay as small as the backlog, however many delivered
-- entries are kept.
CREATE INDEX deliveries_due ON deliveries (route, next_attempt_at, id) WHERE state = 'pending' AND is_head = 1;
CREATE INDEX deliveries_pending_resource ON deliveries (route, resource_key, id) WHERE state = 'pending';
CREATE INDEX deliveries_delivered ON deliveries (finished_at) WHERE state = 'delivered';
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_dead ON deliveries (route) WHERE state = 'dead';
CREATE TABLE dedupe (
    key       BLOB PRIMARY KEY,                   -- SHA-256 of source, topic and body
    event_id  TEXT NOT NULL,                      -- the public id of the delivery it repeats
    seen_at   INTEGER NOT NULL
);
CREATE INDEX dedupe_seen ON dedupe (seen_at);
"#,
    // 2: deliveries no route took are kept (queue mode, `unrouted: accept`) as events without deliveries,
    // until `hookgate spool replay --unrouted` routes them or `keep_unrouted` has passed.
    r#"
ALTER TABLE events ADD COLUMN unrouted INTEGER NOT NULL DEFAULT 0;  -- 1 while no route has taken the event
CREATE INDEX events_unrouted ON events (received_at) WHERE unrouted = 1;
"#,
    // 3: the deliveries' state check written with OR: SQLite tests `x IN (a, b, c)` against a temporary
    // b-tree it builds and drops for every row written, which was a fifth of the writer's instructions
    // (bench/ANALYSIS.md). The two checks accept the same rows, so the stored rows stay as they are and
    // only the table's definition changes: SQLite's documented way for such a change is to rewrite the
    // text in sqlite_schema, then bump the schema cookie so that every connection reads it again
    // ([`migrate`] does that after this step).
    r#"
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (state IN (''pending'', ''delivered'', ''dead''))',
                          'CHECK (state = ''pending'' OR state = ''delivered'' OR state = ''dead'')')
 WHERE type = 'table' AND name = 'deliveries';
PRAGMA writable_schema = OFF;
"#,
];

/// The migration that rewrites a definition in sqlite_schema (see [`MIGRATIONS`]) and so must bump the
/// schema cookie itself.
const REWRITES_SCHEMA_TEXT: usize = 2;

/// Opens (creating it and its folder if needed) and migrates the spool. `synchronous=FULL` with WAL makes
/// every commit durable before it returns: an answer sent after a commit is a promise kept across crashes.
pub fn open(path: &Path) -> Result<Connection, SpoolError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::Open(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut conn =
        Connection::open(path).map_err(|e| SpoolError::Open(format!("cannot open {}: {e}", path.display())))?;
    configure(&conn).map_err(|e| SpoolError::Open(format!("cannot set up {}: {e}", path.display())))?;
    migrate(&mut conn).map_err(|e| match e {
        SpoolError::Sqlite(e) => SpoolError::Open(format!("cannot migrate {}: {e}", path.display())),
        other => other,
    })?;
    Ok(conn)
}

/// Prepared statements kept per connection (see [`configure`]).
const STATEMENT_CACHE: usize = 64;

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Readers (the dispatcher, `hookgate spool`) and the one writer wait for each other instead of failing.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Sorting and grouping stay in memory: the root filesystem may be read-only (Kubernetes).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 2 MiB of page cache per connection holds the pending deliveries' index pages, the part that is read
    // again and again. Measured under the 64-connection bench: 16 MiB gave a peak resident size of 51 MiB,
    // 4 MiB 42 to 46 MiB and 2 MiB 38 to 39 MiB (2026-12-01), at the same answers per second. The caches
    // are SQLite's, in the C allocator's per-thread arenas: at a peak with 4 MiB, three arenas held 8.6,
    // 4.4 and 4.4 MiB.
    conn.pragma_update(None, "cache_size", -2 * 1024)?;
    // A plan that does not depend on the values bound: without it SQLite compiles a statement again each
    // time a value it looked at while planning changes (a `LIMIT ?`, a parameter compared with a partial
    // index's condition), which was a fifth of the writer's time under load. Every query here names its
    // partial indexes' conditions as literals, so no plan is worse for it.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // Room for every statement the writer and the dispatcher's reader prepare (about 25): rusqlite keeps
    // 16 by default, and a statement pushed out is compiled again at its next use.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction per step.
pub fn migrate(conn: &mut Connection) -> Result<(), SpoolError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(SpoolError::Open(format!(
            "the spool's schema is version {version}, newer than this hookgate's {SCHEMA_VERSION}: run a newer hookgate"
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        if index == REWRITES_SCHEMA_TEXT {
            let cookie: i64 = tx.pragma_query_value(None, "schema_version", |row| row.get(0))?;
            tx.pragma_update(None, "schema_version", cookie + 1)?;
        }
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The schema version of an open spool.
pub fn schema_version(conn: &Connection) -> Result<i64, SpoolError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Bytes the spool's live pages take (free pages left by pruning are reused, so they do not count).
pub fn used_bytes(conn: &Connection) -> Result<u64, SpoolError> {
    // Run after every commit: cached statements, not pragmas parsed anew each time.
    let pages: i64 = conn.prepare_cached("PRAGMA page_count")?.query_row([], |row| row.get(0))?;
    let free: i64 = conn.prepare_cached("PRAGMA freelist_count")?.query_row([], |row| row.get(0))?;
    let size: i64 = conn.prepare_cached("PRAGMA page_size")?.query_row([], |row| row.get(0))?;
    Ok(u64::try_from((pages - free).max(0) * size).unwrap_or(0))
}
