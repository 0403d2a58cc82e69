//! What the PostgreSQL writer commits: a delivery stored with its pending deliveries, an attempt's result
//! with the hand-over of its resource's head, each statement inside the writer's batch transaction.
//!
//! Two replicas may store deliveries about one resource at the same moment, or one may store while another
//! ends that resource's head. Each transaction first takes transaction advisory locks on every resource and
//! dedupe key it touches, in ascending order (so two batches never wait on each other in a cycle): whoever
//! comes second sees what the first committed.

use sha2::{Digest, Sha256};
use tokio_postgres::{GenericClient, Statement};

/// The writer's transaction: its statements are prepared once per connection and cached, so each costs
/// one round trip, not two.
pub type BatchTx<'a> = deadpool_postgres::Transaction<'a>;

/// A transaction [`lock_all`] and [`count_usage`] run in: the writer's batch or a prune ([`BatchTx`]),
/// which prepares their statements once per connection and keeps them, or an operator command's or a
/// migration's (a plain `tokio_postgres` transaction, on a connection used once), which prepares them
/// each time, as sending their text does.
pub trait SpoolTransaction: Sync {
    /// `sql` prepared on this transaction's connection.
    fn statement(&self, sql: &str) -> impl Future<Output = Result<Statement, SpoolError>> + Send;
    /// The transaction to run a prepared statement in.
    fn transaction(&self) -> &tokio_postgres::Transaction<'_>;
}

impl SpoolTransaction for BatchTx<'_> {
    async fn statement(&self, sql: &str) -> Result<Statement, SpoolError> {
        cached(self, sql).await
    }

    fn transaction(&self) -> &tokio_postgres::Transaction<'_> {
        self
    }
}

impl SpoolTransaction for tokio_postgres::Transaction<'_> {
    async fn statement(&self, sql: &str) -> Result<Statement, SpoolError> {
        self.prepare(sql).await.map_err(pg_error)
    }

    fn transaction(&self) -> &tokio_postgres::Transaction<'_> {
        self
    }
}

use super::{SpoolError, pg_error};
use crate::spool::Attempted;
use crate::spool::store::{NewEvent, Stored};

/// What a stored event's row counts for `max_spool_bytes`, besides its body, headers and resource key
/// (PostgreSQL's tuple header, the ids and times, its share of the indexes).
pub const EVENT_ROW_BYTES: i64 = 200;
/// What one delivery row counts, indexes included.
pub const DELIVERY_ROW_BYTES: i64 = 200;
/// What one dedupe record counts.
pub const DEDUPE_ROW_BYTES: i64 = 100;

/// The live bytes a stored event adds: measured as it is written (and taken off as it is pruned or
/// dropped), since PostgreSQL's table files keep the size they once reached.
pub fn event_bytes(event: &NewEvent) -> i64 {
    let data = event.body.len() + event.headers.len() + event.resource_key.as_ref().map_or(0, String::len);
    let deliveries = i64::try_from(event.routes.len()).unwrap_or(0) * DELIVERY_ROW_BYTES;
    let dedupe = if event.dedupe.is_some() { DEDUPE_ROW_BYTES } else { 0 };
    i64::try_from(data).unwrap_or(i64::MAX).saturating_add(EVENT_ROW_BYTES + deliveries + dedupe)
}

/// Adds `delta` live bytes to what `owner` has counted (each replica keeps a row of its own, so that
/// replicas never wait on one another's count).
pub async fn count_usage(tx: &impl SpoolTransaction, owner: &str, delta: i64) -> Result<(), SpoolError> {
    if delta != 0 {
        let statement = tx
            .statement(
                "INSERT INTO spool_usage (owner, bytes) VALUES ($1, $2)
                 ON CONFLICT (owner) DO UPDATE SET bytes = spool_usage.bytes + excluded.bytes",
            )
            .await?;
        tx.transaction().execute(&statement, &[&owner, &delta]).await.map_err(pg_error)?;
    }
    Ok(())
}

/// The SQL expression of an event row's live bytes, as [`event_bytes`] counts them without its deliveries.
pub const EVENT_BYTES_SQL: &str =
    "(octet_length(body) + octet_length(headers) + COALESCE(octet_length(resource_key), 0) + 200)::bigint";

/// An attempt's result to record, with what its head hand-over and lease check need.
#[derive(Debug, Clone)]
pub struct Record {
    pub delivery_id: i64,
    pub route: String,
    pub resource_key: Option<String>,
    /// When the attempt ended (unix ms).
    pub now: i64,
    pub result: Attempted,
}

/// The advisory lock key of a string: the first 8 bytes of its SHA-256 (a collision only makes two
/// unrelated writes wait for each other).
fn lock_key(kind: &str, value: &[u8]) -> i64 {
    let hash = Sha256::new().chain_update(kind.as_bytes()).chain_update([0]).chain_update(value).finalize();
    i64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

/// `sql` prepared on the batch's connection, once per connection.
pub async fn cached(tx: &BatchTx<'_>, sql: &str) -> Result<tokio_postgres::Statement, SpoolError> {
    tx.prepare_cached(sql).await.map_err(pg_error)
}

/// The lock keys a stored event needs: one per route for its resource, and its dedupe key.
pub fn event_locks(event: &NewEvent, keys: &mut Vec<i64>) {
    if let Some(resource) = &event.resource_key {
        for route in &event.routes {
            keys.push(resource_lock(route, resource));
        }
    }
    if let Some((key, _)) = &event.dedupe {
        keys.push(lock_key("dedupe", key));
    }
}

/// The lock key of one route's resource.
pub fn resource_lock(route: &str, resource: &str) -> i64 {
    lock_key("resource", format!("{route}\0{resource}").as_bytes())
}

/// Takes every lock in `keys`, in ascending order, until the transaction ends.
pub async fn lock_all(tx: &impl SpoolTransaction, keys: &mut Vec<i64>) -> Result<(), SpoolError> {
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    // unnest keeps the array's order, so the locks are taken in ascending order.
    let statement = tx
        .statement("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, n) ORDER BY n")
        .await?;
    tx.transaction().execute(&statement, &[keys]).await.map_err(pg_error)?;
    Ok(())
}

/// The statement that stores an event and its pending deliveries, unless it repeats one seen within the
/// dedupe window: one statement per event. The dedupe key is unique in the table: of two replicas storing a repeat at once, one
/// inserts and the other finds the row (the batch holds the key's advisory lock, so the second statement
/// starts after the first commit and sees it).
pub async fn insert_statement(tx: &BatchTx<'_>) -> Result<tokio_postgres::Statement, SpoolError> {
    cached(
        tx,
        "WITH d AS (
                 INSERT INTO dedupe (key, event_id, seen_at) SELECT $1, $2, $3 WHERE $1::bytea IS NOT NULL
                 ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, seen_at = excluded.seen_at
                 WHERE dedupe.seen_at < $4
                 RETURNING 1),
             e AS (
                 INSERT INTO events (public_id, received_at, source, topic, resource_key, headers, body, unrouted)
                 SELECT $2, $3, $5, $6, $7, $8, $9, cardinality($10::text[]) = 0
                 WHERE $1::bytea IS NULL OR EXISTS (SELECT 1 FROM d)
                 RETURNING id),
             x AS (
                 INSERT INTO deliveries (event_id, route, resource_key, state, is_head, pending_since, next_attempt_at)
                 SELECT e.id, t.r, $7::text, 'pending',
                        $7::text IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries o
                                                        WHERE o.route = t.r AND o.resource_key = $7::text
                                                          AND o.state = 'pending'),
                        $3, $3
                 FROM e, unnest($10::text[]) WITH ORDINALITY AS t(r, n))
             SELECT (SELECT id FROM e), (SELECT event_id FROM dedupe WHERE key = $1)",
    )
    .await
}

/// Runs [`insert_statement`] for `event`.
pub async fn insert_event(
    tx: &BatchTx<'_>,
    statement: &tokio_postgres::Statement,
    event: &NewEvent,
) -> Result<Stored, SpoolError> {
    let (key, since) = match &event.dedupe {
        Some((key, since)) => (Some(&key[..]), *since),
        None => (None, 0),
    };
    let row = tx
        .query_one(
            statement,
            &[
                &key,
                &event.public_id,
                &event.received_at,
                &since,
                &event.source,
                &event.topic,
                &event.resource_key,
                &event.headers,
                &&event.body[..],
                &event.routes,
            ],
        )
        .await
        .map_err(pg_error)?;
    let public_id = event.public_id.clone();
    match (row.get::<_, Option<i64>>(0), row.get::<_, Option<String>>(1)) {
        (Some(_), _) if event.routes.is_empty() => Ok(Stored::Unrouted { public_id }),
        (Some(_), _) => Ok(Stored::Queued { public_id }),
        (None, Some(earlier)) => Ok(Stored::Duplicate { public_id: earlier }),
        (None, None) => Err(SpoolError::Postgres("a dedupe record that the statement could not read".into())),
    }
}

/// One pending delivery of event `event_id` per route in `routes`, due at `at`; each is its resource's
/// head on its route unless an earlier one is still pending there (the caller holds the resource's lock).
pub async fn insert_deliveries(
    tx: &impl GenericClient,
    event_id: i64,
    resource_key: Option<&str>,
    routes: &[String],
    at: i64,
) -> Result<(), SpoolError> {
    if routes.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO deliveries (event_id, route, resource_key, state, is_head, pending_since, next_attempt_at)
         SELECT $1, r, $3::text, 'pending',
                $3::text IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries o
                                                WHERE o.route = r AND o.resource_key = $3::text AND o.state = 'pending'),
                $4, $4
         FROM unnest($2::text[]) WITH ORDINALITY AS t(r, n) ORDER BY n",
        &[&event_id, &routes, &resource_key, &at],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Records an attempt's result, if this replica still holds the delivery's lease (`owner`); a delivery that
/// leaves the pending state hands its resource's head to the next pending delivery about it. Returns
/// whether it was recorded: not when the lease lapsed and another replica took the delivery over (that
/// replica records its own attempt), or an operator dropped it meanwhile.
pub async fn record_attempt(tx: &BatchTx<'_>, owner: &str, record: &Record) -> Result<bool, SpoolError> {
    let (id, now) = (&record.delivery_id, &record.now);
    let status: Option<i32> = match &record.result {
        Attempted::Delivered { status } => Some(i32::from(*status)),
        Attempted::Retry { status, .. } | Attempted::Dead { status, .. } => status.map(i32::from),
    };
    let updated = match &record.result {
        Attempted::Delivered { .. } => tx.execute(
            &cached(tx, "UPDATE deliveries SET state = 'delivered', is_head = false, attempts = attempts + 1, last_attempt_at = $2,
             last_status = $3, last_error = NULL, last_answer = NULL, finished_at = $2,
             lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND state = 'pending' AND lease_owner = $4").await?,
            &[id, now, &status, &owner],
        ).await,
        Attempted::Retry { next_attempt_at, error, answer, .. } => tx.execute(
            &cached(tx, "UPDATE deliveries SET attempts = attempts + 1, last_attempt_at = $2, next_attempt_at = $3,
             last_status = $4, last_error = $5, last_answer = $6, lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND state = 'pending' AND lease_owner = $7").await?,
            &[id, now, next_attempt_at, &status, error, answer, &owner],
        ).await,
        Attempted::Dead { error, answer, .. } => tx.execute(
            &cached(tx, "UPDATE deliveries SET state = 'dead', is_head = false, attempts = attempts + 1, last_attempt_at = $2,
             last_status = $3, last_error = $4, last_answer = $5, finished_at = $2,
             lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND state = 'pending' AND lease_owner = $6").await?,
            &[id, now, &status, error, answer, &owner],
        ).await,
    }
    .map_err(pg_error)?;
    if updated == 0 {
        return Ok(false);
    }
    if !matches!(record.result, Attempted::Retry { .. })
        && let Some(resource) = &record.resource_key
    {
        promote_next_head(tx, &record.route, resource, record.now).await?;
    }
    Ok(true)
}

/// Makes the oldest pending delivery about `resource` on `route` the head; its give-up clock starts now.
pub async fn promote_next_head(tx: &BatchTx<'_>, route: &str, resource: &str, now: i64) -> Result<(), SpoolError> {
    tx.execute(
        &cached(tx, "UPDATE deliveries SET is_head = true, pending_since = GREATEST(pending_since, $3) WHERE id = (
             SELECT MIN(id) FROM deliveries WHERE route = $1 AND resource_key = $2 AND state = 'pending')
           AND NOT EXISTS (SELECT 1 FROM deliveries WHERE route = $1 AND resource_key = $2 AND state = 'pending' AND is_head)").await?,
        &[&route, &resource, &now],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Sets the head marks of one route's resource from scratch: its oldest pending delivery is the head.
pub async fn recompute_head(tx: &impl GenericClient, route: &str, resource: &str) -> Result<(), SpoolError> {
    tx.execute(
        "UPDATE deliveries SET is_head = (id = (
             SELECT MIN(o.id) FROM deliveries o WHERE o.route = $1 AND o.resource_key = $2 AND o.state = 'pending'))
         WHERE route = $1 AND resource_key = $2 AND state = 'pending'",
        &[&route, &resource],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}
