//! The durable queue behind `delivery.mode: queue`: an SQLite file in WAL mode with `synchronous=FULL`.
//!
//! One writer thread owns the write connection and commits every operation waiting for it in a single
//! transaction (group commit), so many concurrent deliveries share one fsync; a delivery is answered 200 only
//! after the transaction holding it has committed. [`dispatch`] delivers what is pending.
//!
//! The spool reads no clock: every time it stores (received, attempted, next due) and every "now" it prunes
//! by is given by its caller, which reads the gateway's [`crate::clock::Clock`]. (The writer is an OS
//! thread, where a test's paused tokio clock cannot be read.)

pub mod admin;
mod backend;
pub mod dispatch;
pub mod held;
pub mod postgres;
mod queue;
pub mod store;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::verify::VerifiedDelivery;
use crate::woocommerce::ResourceId;

pub use backend::Backend;
pub(crate) use queue::admit;
pub use queue::{NotStored, Queue};
use store::NewEvent;
pub use store::{Attempted, Due, Stored};
pub use writer::Fresh;
use writer::{Shared, WriteOp, write_loop};

/// Requests queue for the writer up to this depth; past it they wait (backpressure, not unbounded memory).
const WRITER_QUEUE_DEPTH: usize = 4096;

/// Why the spool could not do what was asked. Any of these makes a delivery answer 503: never a 200 that
/// promises what was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{0}")]
    Open(String),
    #[error("spool database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the spool writer has stopped")]
    WriterGone,
    /// PostgreSQL refused, failed or could not be reached: what it said (never the URL).
    #[error("PostgreSQL spool: {0}")]
    Postgres(String),
}

/// Fields WooCommerce fills anew each time it builds a payload, so that two deliveries of one event differ
/// in them: a product's `related_ids` come out shuffled (`wc_get_related_products`).
const REBUILT_FIELDS: &[&str] = &["related_ids"];

/// The dedupe key of a verified delivery from `source`: SHA-256 over the source, the topic and the
/// payload, less the fields WooCommerce fills anew for each build of it ([`REBUILT_FIELDS`], also inside a
/// `legacy_v3` wrapper). WooCommerce builds the payload again for each delivery of an event, so the bytes of
/// two deliveries of one product update differ; what the store says happened (the resource's id, its signed
/// `date_modified_gmt`, every other field) is the same. Two saves in the same second with different
/// contents stay two events. A body that is not a JSON object is taken as its bytes. Each field is hashed
/// with its length, so no two keys differ only in where one field ends.
pub fn dedupe_key(source: &str, delivery: &VerifiedDelivery) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut field = |part: &[u8]| {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    };
    field(source.as_bytes());
    field(delivery.topic().unwrap_or_default().as_bytes());
    match serde_json::from_slice::<serde_json::Value>(delivery.body()) {
        Ok(serde_json::Value::Object(mut payload)) => {
            strip_rebuilt(&mut payload);
            // A legacy_v3 wrapper: `{"product":{...}}`.
            for inner in payload.values_mut() {
                if let serde_json::Value::Object(inner) = inner {
                    strip_rebuilt(inner);
                }
            }
            field(b"payload");
            field(&serde_json::to_vec(&payload).unwrap_or_default());
        }
        _ => {
            field(b"body");
            field(delivery.body());
        }
    }
    hash.finalize().into()
}

fn strip_rebuilt(object: &mut serde_json::Map<String, serde_json::Value>) {
    for name in REBUILT_FIELDS {
        object.remove(*name);
    }
}

/// What orders deliveries: the source, the topic's resource and the payload's `id` (`main/order:727`).
/// `None` when the payload has no id (action topics, error payloads): such deliveries are not ordered.
/// The id is asked for only when the topic names a resource.
/// The key a delivery from `source` is ordered by: its resource (`source/order:727`), when it has one.
pub(crate) fn resource_key_of(source: &str, delivery: &VerifiedDelivery) -> Option<String> {
    resource_key(source, delivery.topic().unwrap_or_default(), || delivery.resource_id())
}

fn resource_key(source: &str, topic: &str, id: impl FnOnce() -> Option<ResourceId>) -> Option<String> {
    let resource = topic.split('.').next().filter(|r| !r.is_empty() && *r != "action")?;
    // A NUL cannot be stored in PostgreSQL's text: an id holding one is kept with it escaped.
    Some(format!("{source}/{resource}:{}", id()?).replace('\0', "\\u0000"))
}

/// A handle on an open spool, shared by the request handlers and the dispatcher.
pub struct Spool {
    path: PathBuf,
    ops: mpsc::Sender<WriteOp>,
    reader: Arc<Mutex<Connection>>,
    used_bytes: Arc<AtomicU64>,
    /// False after a commit failed, true again after one succeeds.
    writable: Arc<std::sync::atomic::AtomicBool>,
    /// Woken when something may have become due: a new delivery, a finished attempt.
    pub(crate) wake: Arc<Notify>,
    /// The deliveries committed since the dispatcher last looked that may be sent at once (see
    /// [`Spool::take_fresh`]).
    fresh: Arc<Mutex<Fresh>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held while the spool is open: a second gateway on the same file would send every delivery twice.
    _lock: std::fs::File,
}

impl Spool {
    /// Opens (creating and migrating) the spool at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Spool, SpoolError> {
        // SQLite checkpoints the WAL from the writer's own commits every 1000 pages: measured against a
        // checkpoint thread of its own, this answered single deliveries faster (0.7 ms against 1 ms).
        let writer_conn = store::open(path)?;
        let lock = lock(path)?;
        let repaired = store::repair_heads(&writer_conn)?;
        if repaired > 0 {
            tracing::warn!(repaired, "mended the order marks of pending deliveries");
        }
        let reader = store::open(path)?;
        let used_bytes = Arc::new(AtomicU64::new(store::used_bytes(&writer_conn)?));
        let (ops, receiver) = mpsc::channel(WRITER_QUEUE_DEPTH);
        let wake = Arc::new(Notify::new());
        let writable = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let fresh = Arc::new(Mutex::new(Fresh::default()));
        let writer = {
            let shared = Shared {
                used_bytes: Arc::clone(&used_bytes),
                wake: Arc::clone(&wake),
                writable: Arc::clone(&writable),
                fresh: Arc::clone(&fresh),
            };
            std::thread::Builder::new()
                .name("hookgate-spool-writer".into())
                .spawn(move || write_loop(writer_conn, receiver, &shared))
                .map_err(|e| SpoolError::Open(format!("cannot start the spool writer: {e}")))?
        };
        Ok(Spool {
            path: path.to_path_buf(),
            ops,
            reader: Arc::new(Mutex::new(reader)),
            used_bytes,
            writable,
            wake,
            fresh,
            writer: Mutex::new(Some(writer)),
            _lock: lock,
        })
    }

    /// False when the last commit failed (a full or failing disk): readiness reports it.
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the spool's live data takes, as of the last commit.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    /// Stores a verified delivery from `source`, received at `received_at` (unix ms), with one pending entry
    /// per route in `routes`, due at once (none, and marked unrouted, when `routes` is empty), unless it
    /// repeats one stored within `dedupe_window` before it;
    /// returns once the transaction holding it has committed (durable on disk). A verified delivery is the
    /// only way in.
    pub async fn enqueue(
        &self,
        received_at: i64,
        source: &str,
        delivery: &VerifiedDelivery,
        routes: Vec<String>,
        dedupe_window: Option<std::time::Duration>,
    ) -> Result<Stored, SpoolError> {
        self.insert(new_event(received_at, source, delivery, routes, dedupe_window)).await
    }

    pub(crate) async fn insert(&self, event: NewEvent) -> Result<Stored, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.ops.send(WriteOp::Insert(Box::new(event), reply)).await.map_err(|_| SpoolError::WriterGone)?;
        answer.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Records the result of an attempt that ended at `now` (unix ms); returns once committed.
    pub async fn record(&self, delivery_id: i64, now: i64, result: Attempted) -> Result<(), SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.ops.send(WriteOp::Record(delivery_id, now, result, reply)).await.map_err(|_| SpoolError::WriterGone)?;
        answer.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Prunes what is older at `ages.now` (unix ms) than it is kept: delivered entries, unrouted events and
    /// dedupe records (see [`store::prune`]).
    pub async fn prune(&self, ages: store::PruneAges) -> Result<usize, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.ops.send(WriteOp::Prune(ages, reply)).await.map_err(|_| SpoolError::WriterGone)?;
        answer.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Takes the deliveries committed since the last call that may be sent at once (each its resource's
    /// head, due now), as a read of the spool would have returned them. Each is handed over once, and
    /// before any operation after its commit is answered (the writer adds them before it answers the
    /// batch, and before it takes the next): so a dispatcher that takes them before it lets go of a
    /// delivery it held can never be handed that delivery again afterwards. Some may be missing (past
    /// [`FRESH_CAPACITY`]); a read finds those.
    pub fn take_fresh(&self) -> Fresh {
        std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs a read on the reader connection, off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            read(&conn)
        })
        .await
        .map_err(|_| SpoolError::WriterGone)?
    }

    /// Stops the writer once it has committed everything sent before, and waits for it.
    pub async fn close(&self) {
        let _ = self.ops.send(WriteOp::Stop).await;
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}

/// A verified delivery from `source`, received at `received_at` (unix ms), as it is stored: with one
/// pending entry per route in `routes` (none, and marked unrouted, when `routes` is empty), and its dedupe
/// key when repeats within `dedupe_window` are suppressed.
pub(crate) fn new_event(
    received_at: i64,
    source: &str,
    delivery: &VerifiedDelivery,
    routes: Vec<String>,
    dedupe_window: Option<std::time::Duration>,
) -> NewEvent {
    let topic = delivery.topic().unwrap_or_default();
    let dedupe = dedupe_window.map(|window| {
        let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        (dedupe_key(source, delivery), received_at.saturating_sub(window))
    });
    NewEvent {
        public_id: uuid::Uuid::now_v7().to_string(),
        received_at,
        source: source.to_owned(),
        topic: topic.to_owned(),
        resource_key: resource_key(source, topic, || delivery.resource_id()),
        headers: encode_headers(delivery.headers()),
        body: delivery.body().clone(),
        routes,
        dedupe,
    }
}

/// Takes the spool's lock file (`<spool>.lock`), so that two gateways never deliver from one spool. The
/// lock is the operating system's: it goes with the process, also when it is killed.
fn lock(path: &Path) -> Result<std::fs::File, SpoolError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| SpoolError::Open(format!("cannot open {}: {e}", Path::new(&lock_path).display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SpoolError::Open(format!(
            "another hookgate is delivering from {}: give each gateway its own delivery.spool_path",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(SpoolError::Open(format!("cannot lock {}: {e}", Path::new(&lock_path).display())))
        }
    }
}

/// Encodes forwarded headers for storage: one `name: value` line each, as on the wire, readable in `sqlite3`.
pub fn encode_headers(headers: &http::HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Decodes what [`encode_headers`] stored. A header value cannot hold a newline, so lines split cleanly.
pub fn decode_headers(encoded: &[u8]) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for line in encoded.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]));
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery of `topic` with `body`, verified by signing it.
    fn verified(topic: &str, body: &str) -> VerifiedDelivery {
        use crate::verify::{Algorithm, Signature, UnverifiedDelivery, Verifier, sign};
        let secret = crate::secret::Secret::new(b"s3cret".to_vec());
        let signature = sign(Algorithm::Sha256, &secret, body.as_bytes());
        let signature = Signature::from_header(signature.as_bytes(), Algorithm::Sha256).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("x-wc-webhook-topic", http::HeaderValue::from_str(topic).unwrap());
        let body = bytes::Bytes::from(body.to_owned());
        Verifier::new(Algorithm::Sha256, &[secret]).verify(UnverifiedDelivery { body, headers }, &signature).unwrap()
    }

    #[test]
    fn repeats_of_one_update_share_a_key_and_different_contents_never_do() {
        let key = |topic: &str, body: &str| dedupe_key("main", &verified(topic, body));
        let update = r#"{"id":16,"date_modified_gmt":"2026-11-30T20:25:45","stock":3,"related_ids":[10,12,14]}"#;
        let shuffled = r#"{"id":16,"date_modified_gmt":"2026-11-30T20:25:45","stock":3,"related_ids":[12,14,10]}"#;
        assert_eq!(key("product.updated", update), key("product.updated", shuffled), "WooCommerce's repeat");
        let same_second = r#"{"id":16,"date_modified_gmt":"2026-11-30T20:25:45","stock":2,"related_ids":[10,12,14]}"#;
        assert_ne!(key("product.updated", update), key("product.updated", same_second), "two saves in one second");
        let later = r#"{"id":16,"date_modified_gmt":"2026-11-30T20:25:46","stock":3,"related_ids":[10,12,14]}"#;
        assert_ne!(key("product.updated", update), key("product.updated", later), "a later update");
        assert_ne!(key("product.updated", update), key("product.created", update), "another topic");
        let other = r#"{"id":17,"date_modified_gmt":"2026-11-30T20:25:45","stock":3,"related_ids":[10,12,14]}"#;
        assert_ne!(key("product.updated", update), key("product.updated", other), "another product");
        assert_ne!(key("product.updated", update), dedupe_key("other", &verified("product.updated", update)));
        let legacy = r#"{"product":{"id":16,"updated_at":"2026-11-30T20:25:45Z","related_ids":[1,2]}}"#;
        let legacy_repeat = r#"{"product":{"id":16,"updated_at":"2026-11-30T20:25:45Z","related_ids":[2,1]}}"#;
        assert_eq!(key("product.updated", legacy), key("product.updated", legacy_repeat), "inside legacy_v3");
        // A deleted resource's payload, an action's: equal when their contents are.
        assert_eq!(key("order.deleted", r#"{"id":5}"#), key("order.deleted", r#"{"id":5}"#));
        assert_ne!(key("order.deleted", r#"{"id":5}"#), key("order.deleted", r#"{"id":6}"#));
        assert_ne!(key("action.a", r#"{"action":"a","arg":1}"#), key("action.a", r#"{"action":"a","arg":2}"#));
        let numeric = r#"{"id":16,"date_modified_gmt":"2026-11-30T20:25:45"}"#;
        let text = r#"{"id":"16","date_modified_gmt":"2026-11-30T20:25:45"}"#;
        assert_ne!(key("product.updated", numeric), key("product.updated", text), "16 and \"16\" differ");
        // Not a JSON object: the bytes.
        assert_ne!(key("action.a", "[1]"), key("action.a", "[1] "));
    }

    #[test]
    fn resource_keys() {
        let resource_key = |source: &str, topic: &str, body: &[u8]| {
            resource_key(source, topic, || crate::woocommerce::Payload::default().resource_id(body))
        };
        assert_eq!(resource_key("s", "order.created", br#"{"id":727,"x":1}"#).as_deref(), Some("s/order:727"));
        assert_eq!(resource_key("s", "coupon.deleted", br#"{"id":9}"#).as_deref(), Some("s/coupon:9"));
        assert_eq!(resource_key("s", "order.created", br#"{"x":1,"id":"a-1"}"#).as_deref(), Some("s/order:a-1"));
        assert_eq!(
            resource_key("s", "order.created", br#"{"order":{"id":5,"total":"1.00"}}"#).as_deref(),
            Some("s/order:5")
        );
        assert_eq!(resource_key("s", "order.created", br#"{"id":72x}"#), None, "not JSON");
        assert_eq!(resource_key("s", "order.created", br#"{"code":"woocommerce_rest_cannot_view"}"#), None);
        assert_eq!(resource_key("s", "action.woocommerce_add_to_cart", br#"{"id":1}"#), None);
        assert_eq!(resource_key("s", "order.created", b"[]"), None);
    }
}
