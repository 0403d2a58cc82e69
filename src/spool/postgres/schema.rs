//! The PostgreSQL spool's schema: the SQLite one (`store/schema.rs`) with the same tables and names, plus a
//! lease on each delivery, so that replicas sharing it claim deliveries one at a time. Replicas starting
//! together migrate once: each step runs under a session advisory lock.

use tokio_postgres::Client;

use super::{SpoolError, pg_error};

/// The schema this build writes. An older database is migrated at start; a newer one is refused.
pub const SCHEMA_VERSION: i32 = 1;

/// The advisory lock held while migrating ("hookgate" in ASCII, as a key no other application picks).
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6761_7465;

/// Each migration takes the schema from version N to N + 1 (index N).
const MIGRATIONS: [&str; 1] = [r#"
CREATE TABLE events (
    id           bigserial PRIMARY KEY,           -- order of receipt
    public_id    text NOT NULL UNIQUE,            -- the id answered to WooCommerce and sent as X-Hookgate-Event-Id
    received_at  bigint NOT NULL,                 -- unix milliseconds
    source       text NOT NULL,
    topic        text NOT NULL,
    resource_key text,                            -- source/resource:id, for ordering; NULL when the payload has no id
    headers      bytea NOT NULL,                  -- the forwarded headers, one "name: value" per line
    body         bytea NOT NULL,                  -- the exact bytes WooCommerce signed
    unrouted     boolean NOT NULL DEFAULT false   -- true while no route has taken the event
);
CREATE INDEX events_unrouted ON events (received_at) WHERE unrouted;
CREATE TABLE deliveries (
    id              bigserial PRIMARY KEY,
    event_id        bigint NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    route           text NOT NULL,
    resource_key    text,
    state           text NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    is_head         boolean NOT NULL DEFAULT true, -- the oldest pending delivery of its route and resource
    attempts        integer NOT NULL DEFAULT 0,
    pending_since   bigint NOT NULL,              -- when it was queued or last replayed; give_up_after counts from here
    next_attempt_at bigint NOT NULL,
    last_attempt_at bigint,
    last_status     integer,                      -- the upstream's last status, if it answered
    last_error      text,                         -- why the last attempt failed
    last_answer     bytea,                        -- the start of the upstream's last answer
    finished_at     bigint,                       -- when it was delivered or became a dead letter
    lease_owner     text,                         -- the replica making an attempt now
    lease_until     bigint                        -- when that claim lapses and another replica may take it
);
CREATE INDEX deliveries_due ON deliveries (route, next_attempt_at, id) WHERE state = 'pending' AND is_head;
CREATE INDEX deliveries_pending_resource ON deliveries (route, resource_key, id) WHERE state = 'pending';
-- As small as what is in flight: a resource's head, and the claims held now, found without reading the
-- backlog behind them (one order's thousands of pending updates, say).
CREATE INDEX deliveries_head_resource ON deliveries (route, resource_key) WHERE state = 'pending' AND is_head;
CREATE INDEX deliveries_leased_resource ON deliveries (route, resource_key, lease_until)
    WHERE state = 'pending' AND lease_until IS NOT NULL;
CREATE INDEX deliveries_delivered ON deliveries (finished_at) WHERE state = 'delivered';
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_dead ON deliveries (route) WHERE state = 'dead';
CREATE TABLE dedupe (
    key       bytea PRIMARY KEY,                  -- SHA-256 of source, topic and payload
    event_id  text NOT NULL,                      -- the public id of the delivery it repeats
    seen_at   bigint NOT NULL
);
CREATE INDEX dedupe_seen ON dedupe (seen_at);
CREATE TABLE spool_usage (
    owner  text PRIMARY KEY,                      -- a replica (by its lease name), or 'prune', or 'operator'
    bytes  bigint NOT NULL                        -- the live bytes it stored, less those it removed
);
"#];

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per step, under the migration lock; refuses a
/// schema newer than this build's.
pub async fn migrate(client: &mut Client) -> Result<(), SpoolError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg_error)?;
    let migrated = migrate_locked(client).await;
    // Released however the migration went (a closed connection releases it too).
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    migrated
}

async fn migrate_locked(client: &mut Client) -> Result<(), SpoolError> {
    // Looked for first: a role that may only read and write the tables (migrated once by a privileged one)
    // starts without asking for CREATE.
    let exists: bool =
        client.query_one("SELECT to_regclass('hookgate_schema') IS NOT NULL", &[]).await.map_err(pg_error)?.get(0);
    if !exists {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS hookgate_schema (version integer NOT NULL);
                 INSERT INTO hookgate_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM hookgate_schema);",
            )
            .await
            .map_err(pg_error)?;
    }
    let version = schema_version(client).await?;
    if version > SCHEMA_VERSION {
        return Err(SpoolError::Open(format!(
            "the PostgreSQL spool's schema is version {version}, newer than this hookgate's {SCHEMA_VERSION}: run a newer hookgate (or restore the backup taken before the upgrade)"
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.batch_execute(migration).await.map_err(pg_error)?;
        let next = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE hookgate_schema SET version = $1", &[&next]).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        tracing::info!(version = next, "migrated the PostgreSQL spool's schema");
    }
    Ok(())
}

/// The schema version of the database.
pub async fn schema_version(client: &impl tokio_postgres::GenericClient) -> Result<i32, SpoolError> {
    let row = client.query_one("SELECT version FROM hookgate_schema", &[]).await.map_err(pg_error)?;
    Ok(row.get(0))
}
