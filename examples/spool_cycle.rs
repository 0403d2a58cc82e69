//! The SQLite spool's writer alone, for profiles: what storing a delivery and then recording it delivered
//! costs, K deliveries at a time (each round's inserts share the writer's batches with the records of the
//! round before, as under load), with distinct order ids so that each delivery is its resource's head.
//! Prints the process's CPU time per delivery (user + system, /proc/self/stat); under
//! `valgrind --tool=callgrind --separate-threads=yes` the writer thread's instruction count is the steady
//! figure (bench/ANALYSIS.md).
//!
//! `cargo build --release --example spool_cycle && K=64 ROUNDS=300 target/release/examples/spool_cycle`

use std::sync::Arc;

use bytes::Bytes;
use hookgate::secret::Secret;
use hookgate::spool::{Attempted, Spool};
use hookgate::verify::{Algorithm, Signature, UnverifiedDelivery, VerifiedDelivery, Verifier, sign};

fn main() {
    let together = setting("K", 64);
    let rounds = setting("ROUNDS", 300);
    let deliveries = orders(together * rounds);
    let dir = std::env::temp_dir().join(format!("hookgate-spool-cycle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let spool = Arc::new(runtime.block_on(async { Spool::open(&dir.join("spool.db")) }).unwrap());
    let (cpu_before, started) = (cpu_us(), std::time::Instant::now());
    runtime.block_on(async {
        let mut stored: Vec<i64> = Vec::new();
        for round in deliveries.chunks(together) {
            let mut tasks = Vec::new();
            for delivery in round {
                let (spool, delivery) = (Arc::clone(&spool), Arc::clone(delivery));
                tasks.push(tokio::spawn(async move {
                    spool.enqueue(1_800_000_000_000, "main", &delivery, vec!["orders".into()], None).await.unwrap();
                }));
            }
            for id in stored.drain(..) {
                let spool = Arc::clone(&spool);
                tasks.push(tokio::spawn(async move { delivered(&spool, id).await }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            stored = spool.take_fresh().due.into_iter().map(|due| due.delivery_id).collect();
            assert_eq!(stored.len(), round.len(), "each delivery is due at once");
        }
        for id in stored {
            delivered(&spool, id).await;
        }
    });
    let count = deliveries.len() as f64;
    println!(
        "K={together} deliveries={count} cpu_us_per_delivery={:.1} wall_us_per_delivery={:.1}",
        (cpu_us() - cpu_before) / count,
        started.elapsed().as_micros() as f64 / count
    );
    runtime.block_on(spool.close());
    let _ = std::fs::remove_dir_all(&dir);
}

async fn delivered(spool: &Spool, id: i64) {
    spool.record(id, 1_800_000_000_001, Attempted::Delivered { status: 200 }).await.unwrap();
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The order-created fixture with ids 100000, 100001, ..., each verified.
fn orders(count: usize) -> Vec<Arc<VerifiedDelivery>> {
    let body = std::fs::read("tests/fixtures/woocommerce/order-created.body").expect("run from the repository");
    let rest = &body[body.iter().position(|&b| b == b',').unwrap()..];
    let secret = Secret::new(b"bench-secret".to_vec());
    let verifier = Verifier::new(Algorithm::Sha256, std::slice::from_ref(&secret));
    (0..count)
        .map(|i| {
            let mut order = format!("{{\"id\":{}", 100_000 + i).into_bytes();
            order.extend_from_slice(rest);
            let body = Bytes::from(order);
            let signed = sign(Algorithm::Sha256, &secret, &body);
            let signature = Signature::from_header(signed.as_bytes(), Algorithm::Sha256).unwrap();
            let mut headers = http::HeaderMap::new();
            headers.insert("content-type", http::HeaderValue::from_static("application/json"));
            headers.insert("x-wc-webhook-topic", http::HeaderValue::from_static("order.created"));
            Arc::new(verifier.verify(UnverifiedDelivery { body, headers }, &signature).unwrap())
        })
        .collect()
}

/// This process's CPU time so far, user + system, in µs.
fn cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks * 10_000.0
}
