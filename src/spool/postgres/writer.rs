//! A replica's writer: every operation waiting, committed in one transaction (group commit), then
//! answered; a batch PostgreSQL fails is answered 503 whole, unless the fault is one operation's data.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use super::{CHANNEL, Op, Shared, SpoolError, pg_error, pool_error, write};
use crate::spool::Attempted;
use crate::spool::store::{NewEvent, Stored};

/// Operations waiting for the writer are committed together, up to this many in one transaction.
const MAX_BATCH: usize = 512;
/// A batch that has not committed in this long is answered 503 (PostgreSQL stuck, or unreachable).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The writer: takes every operation waiting, commits them in one transaction, then answers each. A batch
/// that fails is answered 503 whole: nobody is told "stored" for what was not.
pub(super) async fn write_loop(pool: Pool, owner: String, mut ops: mpsc::Receiver<Op>, shared: Arc<Shared>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    while let Some(first) = ops.recv().await {
        let mut next = Some(first);
        while let Some(op) = next.take() {
            if matches!(op, Op::Stop) {
                stopping = true;
                break;
            }
            batch.push(op);
            if batch.len() < MAX_BATCH {
                next = ops.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let outcome = commit_timed(&pool, &owner, &batch).await;
            match outcome {
                Ok(results) => {
                    shared.committed(None);
                    for (op, result) in batch.drain(..).zip(results) {
                        reply(op, Ok(result));
                    }
                    shared.wake.notify_one();
                }
                // Data PostgreSQL refuses (SQLSTATE class 22 or 23) fails one operation, not its batch:
                // each is committed alone, and only the one at fault is answered 503.
                Err(SpoolError::Postgres(message)) if batch.len() > 1 && refused_data(&message) => {
                    tracing::warn!(%message, operations = batch.len(), "a spool batch failed on one operation's data; committing each alone");
                    for op in batch.drain(..) {
                        let outcome = commit_timed(&pool, &owner, std::slice::from_ref(&op)).await;
                        shared.committed(outcome.as_ref().err());
                        reply(op, outcome.map(|mut done| done.remove(0)));
                    }
                    shared.wake.notify_one();
                }
                Err(error) => {
                    shared.committed(Some(&error));
                    tracing::error!(%error, operations = batch.len(), "PostgreSQL spool commit failed; answering 503");
                    let message = error.to_string();
                    for op in batch.drain(..) {
                        reply(op, Err(SpoolError::Postgres(message.clone())));
                    }
                }
            }
        }
        if stopping {
            break;
        }
    }
}

/// A batch committed within [`COMMIT_TIMEOUT`], or an error.
async fn commit_timed(pool: &Pool, owner: &str, batch: &[Op]) -> Result<Vec<Done>, SpoolError> {
    match tokio::time::timeout(COMMIT_TIMEOUT, commit(pool, owner, batch)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(SpoolError::Postgres(format!("no commit within {COMMIT_TIMEOUT:?}"))),
    }
}

/// Whether PostgreSQL refused an operation's data (SQLSTATE class 22, data exception, or 23, integrity
/// constraint violation): what retrying the same data cannot mend. [`pg_error`] puts the code first.
fn refused_data(message: &str) -> bool {
    message.starts_with("22") || message.starts_with("23")
}

/// What one operation of a committed batch came to.
enum Done {
    Stored(Stored),
    Recorded,
}

fn reply(op: Op, result: Result<Done, SpoolError>) {
    match op {
        Op::Insert(_, reply) => {
            let _ = reply.send(result.map(|done| match done {
                Done::Stored(stored) => stored,
                Done::Recorded => unreachable!("an insert yields Stored"),
            }));
        }
        Op::Record(_, reply) => {
            let _ = reply.send(result.map(|_| ()));
        }
        Op::Stop => {}
    }
}

/// Runs a batch in one transaction: its locks first (ascending), then each operation, then one NOTIFY
/// when it stored or freed something to deliver. A deadlock PostgreSQL broke (two batches crossing on a
/// dedupe row) is retried.
async fn commit(pool: &Pool, owner: &str, batch: &[Op]) -> Result<Vec<Done>, SpoolError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match commit_once(pool, owner, batch).await {
            Err(SpoolError::Postgres(message)) if attempt < 3 && message.starts_with("40") => {
                tracing::debug!(%message, "spool batch retried");
            }
            outcome => return outcome,
        }
    }
}

async fn commit_once(pool: &Pool, owner: &str, batch: &[Op]) -> Result<Vec<Done>, SpoolError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let mut keys = Vec::new();
    for op in batch {
        match op {
            Op::Insert(event, _) => write::event_locks(event, &mut keys),
            Op::Record(record, _) => {
                if let Some(resource) = &record.resource_key {
                    keys.push(write::resource_lock(&record.route, resource));
                }
            }
            Op::Stop => {}
        }
    }
    write::lock_all(&tx, &mut keys).await?;
    let mut announce = false;
    // The attempts' results first, one after another (each may hand its resource's head on) ...
    for record in batch.iter().filter_map(|op| if let Op::Record(record, _) = op { Some(record) } else { None }) {
        if !write::record_attempt(&tx, owner, record).await? {
            tracing::warn!(
                delivery = record.delivery_id,
                "an attempt's result was not recorded: its lease lapsed and another replica took it over, or it was dropped"
            );
        }
        // A finished head hands its resource to the next delivery, which any replica may now send.
        announce |= record.resource_key.is_some() && !matches!(record.result, Attempted::Retry { .. });
    }
    // ... then the new deliveries, one statement each, sent together (pipelined): PostgreSQL runs them in the
    // order sent, each seeing the ones before, so two about one resource get their order marks right.
    let events: Vec<&NewEvent> =
        batch.iter().filter_map(|op| if let Op::Insert(event, _) = op { Some(&**event) } else { None }).collect();
    let insert = write::insert_statement(&tx).await?;
    let stored =
        futures_util::future::try_join_all(events.iter().map(|event| write::insert_event(&tx, &insert, event))).await?;
    let mut stored_bytes = 0;
    for (event, stored) in events.iter().zip(&stored) {
        announce |= matches!(stored, Stored::Queued { .. });
        if !matches!(stored, Stored::Duplicate { .. }) {
            stored_bytes += write::event_bytes(event);
        }
    }
    let mut stored = stored.into_iter();
    let done = batch
        .iter()
        .filter_map(|op| match op {
            Op::Insert(..) => stored.next().map(Done::Stored),
            Op::Record(..) => Some(Done::Recorded),
            Op::Stop => None,
        })
        .collect();
    write::count_usage(&tx, owner, stored_bytes).await?;
    if announce {
        // pg_notify, not NOTIFY: a utility statement cannot be prepared. Inside the transaction it is the
        // same, sent at commit.
        let notify = write::cached(&tx, "SELECT pg_notify($1, '')").await?;
        tx.execute(&notify, &[&CHANNEL]).await.map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(done)
}
