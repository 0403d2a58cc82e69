//! Micro-benchmarks: signature verification against a bare HMAC-SHA256 of the same bytes (the physical
//! limit), and topic routing. `cargo bench --bench verify`; `-- --test` runs each once (CI).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use hookgate::route::TopicPattern;
use hookgate::secret::Secret;
use hookgate::verify::{Algorithm, Signature, Verifier, sign};

const SECRET: &[u8] = b"k3Y9pQ2wXr7Lm4Tz8Vb1Nc6Hd0Sf5Gj";

fn verification(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    let verifier = Verifier::new(Algorithm::Sha256, &[Secret::new(SECRET.to_vec())]);
    for size in [1024usize, 64 * 1024, 1024 * 1024] {
        let body = vec![b'x'; size];
        let header = sign(Algorithm::Sha256, &Secret::new(SECRET.to_vec()), &body);
        let signature = Signature::from_header(header.as_bytes(), Algorithm::Sha256).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("bare_hmac_sha256", size), &body, |b, body| {
            b.iter(|| {
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
                mac.update(black_box(body));
                black_box(mac.finalize().into_bytes())
            })
        });
        group.bench_with_input(BenchmarkId::new("hookgate_verifier", size), &body, |b, body| {
            b.iter(|| assert!(verifier.matches(black_box(body), &signature)))
        });
    }
    group.finish();
}

fn routing(c: &mut Criterion) {
    let patterns: Vec<TopicPattern> = ["order.created", "order.*", "*.deleted", "action.*", "product.updated", "*"]
        .iter()
        .map(|p| TopicPattern::parse(p).unwrap())
        .collect();
    c.bench_function("route/first_match_of_6_patterns", |b| {
        b.iter(|| patterns.iter().position(|p| p.matches(black_box("coupon.deleted"))))
    });
}

criterion_group!(benches, verification, routing);
criterion_main!(benches);
