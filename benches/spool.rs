//! Micro-benchmark of the spool's group commit: K deliveries stored at once through the real writer thread
//! (WAL, `synchronous=FULL`, one fsync per transaction) on a file in the temp folder. The time per element
//! is what one durable delivery costs when K arrive together: K = 1 pays a whole fsync alone, larger K
//! share it. `cargo bench --bench spool`; `-- --test` runs each once (CI).

use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hookgate::spool::{NewEvent, Spool, Stored, now_ms, resource_key};

fn group_commit(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let body = Bytes::from(std::fs::read(root.join("tests/fixtures/woocommerce/order-created.body")).unwrap());
    let dir = std::env::temp_dir().join(format!("hookgate-spool-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let spool = Arc::new(runtime.block_on(async { Spool::open(&dir.join("spool.db")) }).unwrap());
    let headers = b"content-type: application/json\nx-wc-webhook-topic: order.created\n".to_vec();

    let mut group = c.benchmark_group("spool_group_commit");
    for together in [1usize, 16, 64] {
        group.throughput(Throughput::Elements(together as u64));
        group.bench_with_input(BenchmarkId::new("order_created", together), &together, |b, &together| {
            b.iter(|| {
                runtime.block_on(async {
                    let inserts = (0..together).map(|_| {
                        let spool = Arc::clone(&spool);
                        let event = NewEvent {
                            public_id: uuid::Uuid::now_v7().to_string(),
                            received_at: now_ms(),
                            source: "main".into(),
                            topic: "order.created".into(),
                            resource_key: resource_key("main", "order.created", &body),
                            headers: headers.clone(),
                            body: body.clone(),
                            routes: vec!["orders".into()],
                            dedupe: None,
                        };
                        tokio::spawn(async move { spool.insert(event).await })
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

criterion_group!(benches, group_commit);
criterion_main!(benches);
