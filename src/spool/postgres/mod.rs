//! Queue mode's spool in PostgreSQL, shared by any number of replicas (`delivery.postgres`).
//!
//! Each replica stores deliveries through one writer task that commits every operation waiting for it in
//! one transaction (group commit, as on SQLite); a delivery is answered 2xx only after that commit. Any
//! replica delivers: a pending delivery is claimed with a lease (`FOR UPDATE SKIP LOCKED`, then
//! `lease_owner` and `lease_until`), so one replica at a time makes its attempt, and a replica that dies
//! mid-attempt has its claims taken over by the others once they lapse. New deliveries wake every replica
//! by `NOTIFY hookgate_pending`. Times are the callers' (unix ms), as on SQLite.

mod claim;
mod connect;
pub mod inspect;
pub mod migrate;
pub mod operate;
mod schema;
mod write;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, mpsc, oneshot};

use super::SpoolError;
use super::store::{NewEvent, PruneAges, Stored};
use crate::config::PostgresSettings;
pub use claim::Wanted;
pub use schema::{SCHEMA_VERSION, schema_version};
pub use write::Record;

/// Requests queue for the writer up to this depth; past it they wait.
const WRITER_QUEUE_DEPTH: usize = 4096;
/// How often the spool checks that PostgreSQL answers and takes writes, and reads its size.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// A claim, a read or a prune that has not finished in this long is given up (a connection hung by the
/// network, not closed): the dispatcher goes on, and tries again at its next pass.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed commit, the spool counts as unwritable this long, whatever a health check says (a
/// failure that only writes meet: a read-only standby, a full disk, a lost privilege); then one batch
/// may try again.
const WRITE_FAILURE_HOLD: Duration = Duration::from_secs(5);
/// The channel new deliveries are announced on.
const CHANNEL: &str = "hookgate_pending";

/// Turns a driver error into the spool's, keeping what the server said (never the URL: the driver's
/// messages hold no password).
pub(super) fn pg_error(error: tokio_postgres::Error) -> SpoolError {
    match error.as_db_error() {
        Some(db) => SpoolError::Postgres(format!("{}: {}", db.code().code(), db.message())),
        None => {
            // The causes too: "error performing TLS handshake" alone does not say that the certificate's
            // issuer is unknown. They name no part of the URL (its parse errors never reach here).
            let mut text = error.to_string();
            let mut cause = std::error::Error::source(&error);
            while let Some(inner) = cause {
                text = format!("{text}: {inner}");
                cause = inner.source();
            }
            SpoolError::Postgres(text)
        }
    }
}

fn pool_error(error: deadpool_postgres::PoolError) -> SpoolError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => pg_error(error),
        deadpool_postgres::PoolError::Timeout(_) => SpoolError::Postgres("no connection to PostgreSQL in time".into()),
        other => SpoolError::Postgres(format!("no connection to PostgreSQL: {other}")),
    }
}

pub(super) enum Op {
    Insert(Box<NewEvent>, oneshot::Sender<Result<Stored, SpoolError>>),
    Record(Box<Record>, oneshot::Sender<Result<(), SpoolError>>),
    /// Commit what came before, then end the writer.
    Stop,
}

/// What a replica shares between its writer, its health check and its handlers.
pub(super) struct Shared {
    /// False while PostgreSQL cannot be reached or written.
    available: AtomicBool,
    /// The spool's live bytes, as of the last health check.
    used_bytes: AtomicU64,
    /// When a commit last failed, until one succeeds.
    write_failed_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// Woken when something may have become due: a delivery stored here or by another replica.
    pub(super) wake: Arc<Notify>,
}

impl Shared {
    /// Whether deliveries may be stored now: PostgreSQL answers, and no commit failed within
    /// [`WRITE_FAILURE_HOLD`].
    fn writable(&self) -> bool {
        let failed = *self.write_failed_at.lock().unwrap_or_else(|p| p.into_inner());
        self.available.load(Ordering::SeqCst) && failed.is_none_or(|at| at.elapsed() >= WRITE_FAILURE_HOLD)
    }

    /// Records how a commit went.
    pub(super) fn committed(&self, error: Option<&SpoolError>) {
        *self.write_failed_at.lock().unwrap_or_else(|p| p.into_inner()) = error.map(|_| std::time::Instant::now());
        self.set_available(error.is_none(), error);
    }

    /// Records whether PostgreSQL answers; a change is logged once and shown in the metrics.
    fn set_available(&self, available: bool, error: Option<&SpoolError>) {
        if let Some(error) = error {
            metrics::counter!(crate::metrics::SPOOL_ERRORS_TOTAL, "backend" => "postgres").increment(1);
            if self.available.swap(false, Ordering::SeqCst) {
                tracing::error!(%error, "the PostgreSQL spool cannot be reached or written: answering 503 until it can");
            }
        } else if available && !self.available.swap(true, Ordering::SeqCst) {
            tracing::info!("the PostgreSQL spool is reachable again");
        }
        let up = if self.available.load(Ordering::SeqCst) { 1.0 } else { 0.0 };
        metrics::gauge!(crate::metrics::SPOOL_AVAILABLE, "backend" => "postgres").set(up);
    }
}

/// A replica's handle on the PostgreSQL spool.
pub struct PgSpool {
    pool: Pool,
    /// This replica's name in `lease_owner`.
    owner: String,
    ops: mpsc::Sender<Op>,
    shared: Arc<Shared>,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The LISTEN connection and the health check.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl PgSpool {
    /// Connects (waiting a little for a server that is starting), migrates the schema under its advisory
    /// lock, and starts the writer, the LISTEN connection and the health check.
    pub async fn open(settings: &PostgresSettings) -> Result<PgSpool, SpoolError> {
        let (pg_config, tls) = connect::config(settings)?;
        let pool = connect::pool(&pg_config, &tls, settings.max_connections)?;
        let mut client = connect::first(&pg_config, &tls).await?;
        schema::migrate(&mut client).await?;
        drop(client);
        let owner = format!("{}-{}", hostname(), uuid::Uuid::now_v7().simple());
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            available: AtomicBool::new(true),
            used_bytes: AtomicU64::new(0),
            write_failed_at: std::sync::Mutex::new(None),
            wake: Arc::clone(&wake),
        });
        shared.set_available(true, None);
        if let Ok(bytes) = inspect::used_bytes(&**pool.get().await.map_err(pool_error)?).await {
            shared.used_bytes.store(bytes, Ordering::Relaxed);
        }
        let (ops, receiver) = mpsc::channel(WRITER_QUEUE_DEPTH);
        let writer = tokio::spawn(writer::write_loop(pool.clone(), owner.clone(), receiver, Arc::clone(&shared)));
        let background = vec![
            tokio::spawn(connect::listen(pg_config, tls, CHANNEL, wake)),
            tokio::spawn(health_loop(pool.clone(), Arc::clone(&shared))),
        ];
        tracing::info!(replica = %owner, "the spool is in PostgreSQL");
        Ok(PgSpool { pool, owner, ops, shared, writer: std::sync::Mutex::new(Some(writer)), background })
    }

    /// False while PostgreSQL cannot be reached or written: readiness reports it.
    pub fn writable(&self) -> bool {
        self.shared.writable()
    }

    /// Bytes the spool's tables take, as of the last health check (a second at most).
    pub fn used_bytes(&self) -> u64 {
        self.shared.used_bytes.load(Ordering::Relaxed)
    }

    /// Woken when a delivery may have become due.
    pub fn wake(&self) -> &Arc<Notify> {
        &self.shared.wake
    }

    /// Stores `event`; returns once its transaction has committed.
    pub async fn insert(&self, event: NewEvent) -> Result<Stored, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.ops.send(Op::Insert(Box::new(event), reply)).await.map_err(|_| SpoolError::WriterGone)?;
        answer.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Records an attempt's result; returns once committed.
    pub async fn record(&self, record: Record) -> Result<(), SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.ops.send(Op::Record(Box::new(record), reply)).await.map_err(|_| SpoolError::WriterGone)?;
        answer.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Claims, for each route in `wanted`, the deliveries due at `now` up to its free slots; and says when
    /// the next one becomes due (or its lease lapses).
    pub async fn claim(
        &self,
        wanted: Vec<Wanted>,
        now: i64,
    ) -> Result<(Vec<Vec<super::Due>>, Option<i64>), SpoolError> {
        timed(async {
            let client = self.pool.get().await.map_err(pool_error)?;
            claim::claim(&client, &self.owner, wanted, now).await
        })
        .await
    }

    /// Prunes what is older than it is kept (see `store::prune`), on one replica at a time.
    pub async fn prune(&self, ages: PruneAges) -> Result<usize, SpoolError> {
        timed(async {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            inspect::prune(&mut client, ages).await
        })
        .await
    }

    /// Counts per route, and the unrouted events kept.
    pub async fn stats(&self) -> Result<(Vec<super::store::RouteStats>, super::store::UnroutedStats), SpoolError> {
        timed(async {
            let client = self.pool.get().await.map_err(pool_error)?;
            Ok((inspect::stats(&**client).await?, inspect::unrouted_stats(&**client).await?))
        })
        .await
    }

    /// A pooled connection, for reads beside the writer (what the store's backfill checks).
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, SpoolError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Stops the writer once it has committed everything sent before, hands back the claims of attempts
    /// the stop abandoned (so that another replica sends them at once, not when their leases lapse), and
    /// closes the connections.
    pub async fn close(&self) {
        let _ = self.ops.send(Op::Stop).await;
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        let release = async {
            let client = self.pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 AND state = 'pending'",
                    &[&self.owner],
                )
                .await
                .map_err(pg_error)?;
            client.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await.map_err(pg_error)
        };
        match tokio::time::timeout(Duration::from_secs(5), release).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the claims of abandoned attempts lapse with their leases"),
            Err(_) => tracing::warn!("the claims of abandoned attempts lapse with their leases"),
        }
        for task in &self.background {
            task.abort();
        }
        self.pool.close();
    }
}

impl Drop for PgSpool {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

/// One connection, for an operator's command: the schema must be there already (a gateway migrates it)
/// and no newer than this build's.
pub async fn connect_once(settings: &PostgresSettings) -> Result<tokio_postgres::Client, SpoolError> {
    let (pg_config, tls) = connect::config(settings)?;
    let (client, connection) = pg_config
        .connect(tls)
        .await
        .map_err(|e| SpoolError::Open(format!("cannot connect to PostgreSQL (delivery.postgres): {}", pg_error(e))))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let exists: bool =
        client.query_one("SELECT to_regclass('hookgate_schema') IS NOT NULL", &[]).await.map_err(pg_error)?.get(0);
    if !exists {
        return Err(SpoolError::Open(
            "the PostgreSQL database holds no hookgate spool yet: has hookgate run in queue mode with this config?"
                .into(),
        ));
    }
    let version = schema_version(&client).await?;
    if version > SCHEMA_VERSION {
        return Err(SpoolError::Open(format!(
            "the PostgreSQL spool's schema is version {version}, newer than this hookgate's {SCHEMA_VERSION}: use a newer hookgate"
        )));
    }
    Ok(client)
}

/// One connection whose schema is migrated first (for `spool migrate`, which may run before any gateway).
pub async fn connect_migrated(settings: &PostgresSettings) -> Result<tokio_postgres::Client, SpoolError> {
    let (pg_config, tls) = connect::config(settings)?;
    let mut client = connect::first(&pg_config, &tls).await?;
    schema::migrate(&mut client).await?;
    Ok(client)
}

/// `work`, given up after [`QUERY_TIMEOUT`].
async fn timed<T>(work: impl Future<Output = Result<T, SpoolError>>) -> Result<T, SpoolError> {
    tokio::time::timeout(QUERY_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(SpoolError::Postgres(format!("no answer from PostgreSQL within {QUERY_TIMEOUT:?}"))))
}

/// The host's name, for `lease_owner` (an operator reads which replica holds a delivery).
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "hookgate".to_owned())
}

/// Checks every [`HEALTH_INTERVAL`] that PostgreSQL answers (readiness follows it, also when no delivery
/// comes) and reads the spool's size for `max_spool_bytes`.
async fn health_loop(pool: Pool, shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        let check = async {
            let mut client = pool.get().await.map_err(pool_error)?;
            // A write, rolled back: a read-only standby or a lost privilege fails it, where a SELECT passes.
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.execute("UPDATE hookgate_schema SET version = version", &[]).await.map_err(pg_error)?;
            tx.rollback().await.map_err(pg_error)?;
            inspect::used_bytes(&**client).await
        };
        match tokio::time::timeout(HEALTH_INTERVAL * 3, check).await {
            Ok(Ok(bytes)) => {
                shared.used_bytes.store(bytes, Ordering::Relaxed);
                shared.set_available(true, None);
            }
            Ok(Err(error)) => shared.set_available(false, Some(&error)),
            Err(_) => shared.set_available(false, Some(&SpoolError::Postgres("no answer from PostgreSQL".into()))),
        }
    }
}
