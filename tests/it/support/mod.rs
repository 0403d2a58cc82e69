//! What the integration tests share, by area: `gateway` (a real hookgate on a real port in this process,
//! and a recording upstream, over HTTP or HTTPS), `certificates` (private CAs for HTTPS upstreams),
//! `process` (the real binary, with its log lines), `fixtures` (the WooCommerce deliveries, requests signed
//! like them, configs that accept them), `raw_http` (a raw HTTP/1.x client that shows exactly what went over
//! the wire), `attack` (the store's deliveries during an attack), `woocommerce` (the real WooCommerce
//! store, when `.ci/run` started it), `backend` (the queue tests' two spools, SQLite and PostgreSQL, and
//! the macro that runs one test body on each), `postgres` (a database of a test's own, when
//! `HOOKGATE_POSTGRES_URL` names a server) and `nginx` (the real nginx as a reverse proxy, such as one
//! terminating TLS in front of the store). Everything is re-exported here, so a test module needs only
//! `use crate::support::*`; what is left in this file serves every area.

mod attack;
mod backend;
mod certificates;
mod fixtures;
mod gateway;
mod nginx;
mod postgres;
mod process;
mod raw_http;
mod woocommerce;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use attack::*;
pub use backend::*;
pub use certificates::*;
pub use fixtures::*;
pub use gateway::*;
pub use nginx::*;
pub use postgres::*;
pub use process::*;
pub use raw_http::*;
pub use woocommerce::*;

/// The load and attack tests each take both cores and thousands of sockets for a few seconds: they run one
/// at a time (the rest of the suite beside them), so that one test's load is not read as another's failure.
/// `.config/nextest.toml` does the same for nextest, which runs each test in a process of its own.
pub async fn one_heavy_test_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// Waits until `check` holds, polling every 20 ms, for at most `limit`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Moves tokio's clock forward by `by` at once, and with it the clock of every gateway the test started
/// (it follows tokio's): the timers due within `by` fire, and what a gateway schedules by (backoff,
/// give-up, pruning) reads a time `by` later. Then the clock runs in real time again: a paused clock that
/// tokio moves on whenever the runtime is idle would fire timeouts (the route's, `eventually`'s) while a
/// real socket or the spool's writer thread is still at work. Call it while the gateway waits for nothing
/// but time: no attempt in flight.
pub async fn skip_time(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// A route to a closed port, for tests in which no delivery is meant to arrive anywhere.
pub const ROUTE_TO_NOWHERE: &str = "  - name: nowhere\n    topics: [\"*\"]\n    upstream: \"http://127.0.0.1:9/\"\n";

/// Writes `fixture_config(routes, extra)` to `dir/hookgate.yaml` for the real binary, and returns its path.
pub fn config_file(dir: &Path, routes: &str, extra: &str) -> PathBuf {
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, fixture_config(routes, extra)).unwrap();
    file
}

/// A fresh folder for a test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hookgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The value of the one sample in a Prometheus scrape whose line starts with `series` (name and labels
/// as rendered).
pub fn metric_sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}
