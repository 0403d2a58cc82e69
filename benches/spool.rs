//! Micro-benchmark of the spool's group commit: K deliveries stored at once through the real writer thread
//! (WAL, `synchronous=FULL`, one fsync per transaction) on a file in the temp folder. The time per element
//! is what one durable delivery costs when K arrive together: K = 1 pays a whole fsync alone, larger K
//! share it. `cargo bench --bench spool`; `-- --test` runs each once (CI).

use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hookgate::clock::Clock;
use hookgate::secret::Secret;
use hookgate::spool::{Spool, Stored};
use hookgate::verify::{Algorithm, Signature, UnverifiedDelivery, VerifiedDelivery, Verifier, sign};

fn group_commit(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let body = Bytes::from(std::fs::read(root.join("tests/fixtures/woocommerce/order-created.body")).unwrap());
    let dir = std::env::temp_dir().join(format!("hookgate-spool-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let spool = Arc::new(runtime.block_on(async { Spool::open(&dir.join("spool.db")) }).unwrap());
    let delivery = Arc::new(verified(body));

    let mut group = c.benchmark_group("spool_group_commit");
    for together in [1usize, 16, 64] {
        group.throughput(Throughput::Elements(together as u64));
        group.bench_with_input(BenchmarkId::new("order_created", together), &together, |b, &together| {
            b.iter(|| {
                runtime.block_on(async {
                    let inserts = (0..together).map(|_| {
                        let (spool, delivery) = (Arc::clone(&spool), Arc::clone(&delivery));
                        tokio::spawn(async move {
                            spool
                                .enqueue(Clock::system().now_ms(), "main", &delivery, vec!["orders".into()], None)
                                .await
                        })
                    });
                    for insert in inserts.collect::<Vec<_>>() {
                        assert!(matches!(insert.await.unwrap(), Ok(Stored::Queued { .. })));
                    }
                })
            })
        });
    }
    group.finish();
    runtime.block_on(spool.close());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The fixture as a verified delivery: the spool takes nothing else.
fn verified(body: Bytes) -> VerifiedDelivery {
    let secret = Secret::new(b"bench-secret".to_vec());
    let verifier = Verifier::new(Algorithm::Sha256, std::slice::from_ref(&secret));
    let signature =
        Signature::from_header(sign(Algorithm::Sha256, &secret, &body).as_bytes(), Algorithm::Sha256).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", http::HeaderValue::from_static("application/json"));
    headers.insert("x-wc-webhook-topic", http::HeaderValue::from_static("order.created"));
    verifier.verify(UnverifiedDelivery { body, headers }, &signature).expect("signed with its own secret")
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
