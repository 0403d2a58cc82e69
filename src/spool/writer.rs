//! The spool's writer thread: it owns the write connection and commits every operation waiting for it
//! in one transaction (group commit), then answers each.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{Notify, mpsc, oneshot};

use super::store::{self, NewEvent};
use super::{Attempted, Due, SpoolError, Stored};

/// Operations waiting for the writer are committed together, up to this many in one transaction.
const MAX_BATCH: usize = 512;
/// A write-ahead log larger than this is checkpointed and truncated once the writer is idle, so that the
/// log is back under a MiB whenever the backlog has drained (SQLite's own checkpoints, every 1,000 pages,
/// reuse the file but never shrink it).
const WAL_TRUNCATE_BYTES: u64 = 1024 * 1024;
/// How long that checkpoint waits for a reader to finish before it leaves the log for the next idle
/// moment.
const WAL_TRUNCATE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);
/// Deliveries just stored and due at once, handed to the dispatcher without a read of the spool, up to
/// this many waiting; past it the dispatcher's reads find the rest.
const FRESH_CAPACITY: usize = 1024;
/// The same bound in bodies and headers: bodies may be up to `max_body_bytes` each.
const FRESH_BYTES: usize = 4 * 1024 * 1024;

/// What the writer is asked to do.
pub(super) enum WriteOp {
    Insert(Box<NewEvent>, oneshot::Sender<Result<Stored, SpoolError>>),
    /// A delivery's id, when the attempt ended (unix ms), and its result.
    Record(i64, i64, Attempted, oneshot::Sender<Result<(), SpoolError>>),
    /// What is old enough to go, and when (see [`store::prune`]).
    Prune(store::PruneAges, oneshot::Sender<Result<usize, SpoolError>>),
    /// Commit what came before, then end the writer.
    Stop,
}

/// The writer thread: takes every operation waiting, runs them in one transaction, commits, then answers
/// each. A failed commit fails every operation in it, so nobody is told "stored" for what was not.
pub(super) fn write_loop(mut conn: Connection, mut ops: mpsc::Receiver<WriteOp>, shared: &Shared) {
    let Shared { used_bytes, wake, writable, fresh } = shared;
    let wal = wal_path(conn.path().map(Path::new));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    while let Some(first) = ops.blocking_recv() {
        let mut next = Some(first);
        while let Some(op) = next.take() {
            if matches!(op, WriteOp::Stop) {
                stopping = true;
                break;
            }
            batch.push(op);
            if batch.len() < MAX_BATCH {
                next = ops.try_recv().ok();
            }
        }
        if batch.is_empty() {
            break;
        }
        let mut due = Vec::new();
        let outcome = commit_batch(&mut conn, &batch, &mut due);
        match outcome {
            Ok(results) => {
                writable.store(true, Ordering::Relaxed);
                fresh.lock().unwrap_or_else(|p| p.into_inner()).add(due);
                for (op, result) in batch.drain(..).zip(results) {
                    reply(op, result);
                }
                if let Ok(bytes) = store::used_bytes(&conn) {
                    used_bytes.store(bytes, Ordering::Relaxed);
                }
                wake.notify_one();
                if ops.is_empty() {
                    truncate_wal_when_large(&conn, wal.as_deref());
                }
            }
            Err(error) => {
                writable.store(false, Ordering::Relaxed);
                tracing::error!(%error, operations = batch.len(), "spool commit failed; answering 503");
                let message = error.to_string();
                for op in batch.drain(..) {
                    reply(op, Err(SpoolError::Open(message.clone())));
                }
            }
        }
        if stopping {
            break;
        }
    }
}

/// What the writer thread shares with the spool's handle.
pub(super) struct Shared {
    pub(super) used_bytes: Arc<AtomicU64>,
    pub(super) wake: Arc<Notify>,
    pub(super) writable: Arc<std::sync::atomic::AtomicBool>,
    pub(super) fresh: Arc<Mutex<Fresh>>,
}

/// Deliveries committed and due at once, waiting for the dispatcher to take them.
#[derive(Default)]
pub struct Fresh {
    pub due: VecDeque<Due>,
    /// Some were left out (past [`FRESH_CAPACITY`] or [`FRESH_BYTES`]): only a read of the spool finds
    /// them.
    pub missed: bool,
    /// What the waiting deliveries hold in bodies and headers.
    bytes: usize,
}

impl Fresh {
    fn add(&mut self, due: Vec<Due>) {
        for due in due {
            let size = due.body.len() + due.headers.len();
            if self.due.len() >= FRESH_CAPACITY || self.bytes + size > FRESH_BYTES {
                self.missed = true;
                continue;
            }
            self.bytes += size;
            self.due.push_back(due);
        }
    }
}

/// What one operation of a batch came to, before it is answered.
type OpResult = Result<OpValue, SpoolError>;
enum OpValue {
    Stored(Stored),
    Recorded,
    Pruned(usize),
}

/// The write-ahead log beside the spool file.
fn wal_path(spool: Option<&Path>) -> Option<PathBuf> {
    let mut wal = spool?.as_os_str().to_owned();
    wal.push("-wal");
    Some(PathBuf::from(wal))
}

/// With nothing waiting to be written, a write-ahead log past [`WAL_TRUNCATE_BYTES`] is checkpointed and
/// truncated: SQLite reuses its log from the start but never shrinks the file, so a burst (or a reader
/// that held a checkpoint back) would leave it at its largest for good. A reader in the way makes the
/// attempt give up at once; the next idle moment tries again.
fn truncate_wal_when_large(conn: &Connection, wal: Option<&Path>) {
    let large = wal.and_then(|wal| std::fs::metadata(wal).ok()).is_some_and(|m| m.len() > WAL_TRUNCATE_BYTES);
    if !large {
        return;
    }
    // A reader's transactions are short: wait a little for one, never the full busy timeout (new
    // deliveries may be waiting for the writer by then).
    let _ = conn.busy_timeout(WAL_TRUNCATE_WAIT);
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0)) {
        Ok(0) => tracing::debug!("write-ahead log checkpointed and truncated"),
        Ok(_) => {
            tracing::debug!("write-ahead log not truncated: a reader is in the way; trying at the next idle moment")
        }
        Err(error) => tracing::debug!(%error, "write-ahead log not truncated"),
    }
    let _ = conn.busy_timeout(store::BUSY_TIMEOUT);
}

/// Runs `batch` in one transaction and commits it; adds to `due` the deliveries it stored that may be sent
/// at once. Operations almost never fail alone, so the batch first runs without a savepoint per operation
/// (a savepoint makes SQLite copy each page an operation touches into its statement journal first); if one
/// fails, that transaction is rolled back and the batch runs again with a savepoint around each operation,
/// so that the failing one is undone alone and the rest still commit.
fn commit_batch(conn: &mut Connection, batch: &[WriteOp], due: &mut Vec<Due>) -> Result<Vec<OpResult>, SpoolError> {
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        for op in batch {
            match run_op(&tx, op, due) {
                Ok(value) => results.push(Ok(value)),
                // Some errors (I/O, a full disk) make SQLite roll back the whole transaction itself:
                // what ran before is undone, and what ran after would commit alone. Nothing of the
                // batch is kept then, and every operation in it fails.
                Err(error) if tx.is_autocommit() => return Err(error),
                // Otherwise the transaction is rolled back when it is dropped, and the batch runs again
                // with a savepoint around each operation.
                Err(_) => break,
            }
        }
        if results.len() == batch.len() {
            tx.commit()?;
            return Ok(results);
        }
    }
    due.clear();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    // Its statements are prepared once (rusqlite's `Savepoint` parses them anew each time).
    let mut savepoint = tx.prepare_cached("SAVEPOINT operation")?;
    let mut release = tx.prepare_cached("RELEASE operation")?;
    let mut roll_back = tx.prepare_cached("ROLLBACK TO operation")?;
    for op in batch {
        savepoint.execute([])?;
        let stored_before = due.len();
        let result = run_op(&tx, op, due);
        if result.is_err() {
            roll_back.execute([])?;
            due.truncate(stored_before);
        }
        release.execute([])?;
        results.push(result);
    }
    drop((savepoint, release, roll_back));
    tx.commit()?;
    Ok(results)
}

fn run_op(tx: &Connection, op: &WriteOp, due: &mut Vec<Due>) -> OpResult {
    match op {
        WriteOp::Insert(event, _) => store::insert_event_due(tx, event, due).map(OpValue::Stored),
        WriteOp::Record(id, now, attempted, _) => {
            store::record_attempt_due(tx, *id, *now, attempted, due).map(|()| OpValue::Recorded)
        }
        WriteOp::Prune(ages, _) => store::prune(tx, *ages).map(OpValue::Pruned),
        WriteOp::Stop => Ok(OpValue::Recorded),
    }
}

fn reply(op: WriteOp, result: OpResult) {
    match op {
        WriteOp::Insert(_, reply) => {
            let _ = reply.send(result.map(|v| match v {
                OpValue::Stored(stored) => stored,
                _ => unreachable!("an insert yields Stored"),
            }));
        }
        WriteOp::Record(_, _, _, reply) => {
            let _ = reply.send(result.map(|_| ()));
        }
        WriteOp::Prune(_, reply) => {
            let _ = reply.send(result.map(|v| match v {
                OpValue::Pruned(n) => n,
                _ => 0,
            }));
        }
        WriteOp::Stop => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(public_id: &str, order: u32) -> (WriteOp, oneshot::Receiver<Result<Stored, SpoolError>>) {
        let (reply, answer) = oneshot::channel();
        let event = NewEvent {
            public_id: public_id.to_owned(),
            received_at: 5,
            source: "shop".into(),
            topic: "order.created".into(),
            resource_key: Some(format!("shop/order:{order}")),
            headers: Vec::new(),
            body: bytes::Bytes::from(format!("{{\"id\":{order}}}")),
            routes: vec!["r".into()],
            dedupe: None,
        };
        (WriteOp::Insert(Box::new(event), reply), answer)
    }

    #[test]
    fn an_operation_that_fails_is_undone_alone_and_the_rest_of_its_batch_commits_once() {
        let dir = std::env::temp_dir().join(format!("hookgate-writer-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut conn = store::open(&dir.join("spool.db")).unwrap();
        // The second repeats the first's public id, which the spool refuses (UNIQUE): only it fails.
        let (first, _a) = insert("a", 1);
        let (repeat, _b) = insert("a", 2);
        let (third, _c) = insert("c", 3);
        let batch = vec![first, repeat, third];
        let mut due = Vec::new();
        let results = commit_batch(&mut conn, &batch, &mut due).unwrap();
        assert!(matches!(results[0], Ok(OpValue::Stored(Stored::Queued { .. }))));
        assert!(results[1].is_err(), "the repeated id is refused");
        assert!(matches!(results[2], Ok(OpValue::Stored(Stored::Queued { .. }))));
        // Each stored delivery is handed over once, though the batch ran twice.
        let handed: Vec<&str> = due.iter().map(|d| d.public_id.as_str()).collect();
        assert_eq!(handed, ["a", "c"]);
        let stored: i64 = conn.query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, 2, "the failed operation's delivery is not kept, the others are, once each");
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
