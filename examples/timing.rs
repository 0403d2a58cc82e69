//! A statistical timing check in the style of dudect ("dude, is my code constant time?", Reparaz, Balasch
//! and Verbauwhede, 2017): does verifying a wrong signature take a different time when the signature is
//! wrong in its first byte than when it is wrong in its last byte? An early-exit comparison would answer
//! the first faster, and that difference is what lets an attacker find a valid signature byte by byte.
//!
//!     cargo run --release --example timing [-- MEASUREMENTS]
//!
//! Both classes are measured interleaved in random order; the slowest measurements are cropped at several
//! percentiles (as dudect does) and Welch's t statistic is computed for each crop. |t| above 4.5 is taken as
//! evidence of a timing difference. Two controls: an A/A run (both classes the same signature) shows what
//! |t| the machine's own noise reaches, and a deliberately leaky byte-by-byte comparison shows the test
//! sees a difference of the kind it looks for.
//! It is not a CI gate: shared machines are noisy. The README records a run.

use std::hint::black_box;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hookgate::secret::Secret;
use hookgate::verify::{Algorithm, Signature, Verifier, sign};

/// Running mean and variance (Welford), one per class.
#[derive(Default, Clone, Copy)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn push(&mut self, x: f64) {
        self.n += 1.0;
        let delta = x - self.mean;
        self.mean += delta / self.n;
        self.m2 += delta * (x - self.mean);
    }
    fn variance(&self) -> f64 {
        if self.n < 2.0 { 0.0 } else { self.m2 / (self.n - 1.0) }
    }
}

fn welch_t(a: &Moments, b: &Moments) -> f64 {
    let se = (a.variance() / a.n + b.variance() / b.n).sqrt();
    if se == 0.0 { 0.0 } else { (a.mean - b.mean) / se }
}

/// Measures `run(class)` `count` times with the classes in random order, and returns the largest |t| over
/// the crops, with the crop it came from and the two classes' means in nanoseconds.
fn largest_t(count: usize, mut run: impl FnMut(usize)) -> (f64, f64, f64, f64) {
    let mut samples: Vec<(usize, f64)> = Vec::with_capacity(count);
    for _ in 0..count {
        let class = fastrand::usize(..2);
        let started = Instant::now();
        run(class);
        samples.push((class, started.elapsed().as_nanos() as f64));
    }
    let mut sorted: Vec<f64> = samples.iter().map(|s| s.1).collect();
    sorted.sort_by(f64::total_cmp);
    let mut best = (0.0, 1.0, 0.0, 0.0);
    for crop in [1.0, 0.99, 0.9, 0.75, 0.5] {
        let limit = sorted[((sorted.len() as f64 * crop) as usize).min(sorted.len() - 1)];
        let mut classes = [Moments::default(); 2];
        for &(class, t) in samples.iter().filter(|s| s.1 <= limit) {
            classes[class].push(t);
        }
        let t = welch_t(&classes[0], &classes[1]);
        if t.abs() > f64::abs(best.0) {
            best = (t, crop, classes[0].mean, classes[1].mean);
        }
    }
    best
}

/// The comparison hookgate must not make: stops at the first differing byte.
fn leaky_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return false;
        }
        // Work per matching byte, as an unoptimised comparison does.
        black_box(x);
    }
    true
}

fn main() {
    let count: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2_000_000);
    let secret = Secret::new(b"k3Y9pQ2wXr7Lm4Tz8Vb1Nc6Hd0Sf5Gj".to_vec());
    let verifier = Verifier::new(Algorithm::Sha256, std::slice::from_ref(&secret));
    let body = br#"{"id":727,"status":"processing","total":"61.90"}"#;
    let good = STANDARD.decode(sign(Algorithm::Sha256, &secret, body)).unwrap();
    let wrong_at = |index: usize| {
        let mut bytes = good.clone();
        bytes[index] ^= 0x01;
        bytes
    };
    let (first, last) = (wrong_at(0), wrong_at(good.len() - 1));
    let signatures = [first.clone(), last.clone()]
        .map(|bytes| Signature::from_header(STANDARD.encode(bytes).as_bytes(), Algorithm::Sha256).unwrap());

    println!(
        "hookgate timing check: {count} verifications of a {} byte body, wrong in the first or the last byte",
        body.len()
    );
    let (t, crop, first_ns, last_ns) = largest_t(count, |class| {
        assert!(!verifier.matches(black_box(body), black_box(&signatures[class])));
    });
    println!(
        "hookgate verifier:  max |t| = {:.2} (crop {:.0} %), mean {first_ns:.2} ns wrong-first, {last_ns:.2} ns wrong-last: {}",
        t.abs(),
        crop * 100.0,
        if t.abs() > 4.5 { "TIMING DIFFERENCE" } else { "no evidence of a timing difference" }
    );
    // Calibration (A/A): both classes verify the very same signature, so any |t| here is the machine's.
    let (t, crop, first_ns, last_ns) = largest_t(count, |_| {
        assert!(!verifier.matches(black_box(body), black_box(&signatures[0])));
    });
    println!(
        "A/A calibration:    max |t| = {:.2} (crop {:.0} %), mean {first_ns:.2} ns and {last_ns:.2} ns for one and the same signature",
        t.abs(),
        crop * 100.0
    );
    let pair = [first, last];
    let (t, crop, first_ns, last_ns) = largest_t(count, |class| {
        assert!(!leaky_equal(black_box(&good), black_box(&pair[class])));
    });
    println!(
        "leaky control:      max |t| = {:.2} (crop {:.0} %), mean {first_ns:.1} ns wrong-first, {last_ns:.1} ns wrong-last: {}",
        t.abs(),
        crop * 100.0,
        if t.abs() > 4.5 { "timing difference found (as expected)" } else { "not detected" }
    );
}
