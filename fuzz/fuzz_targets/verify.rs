//! Signature parsing and verification: any header bytes and body. A correct signature verifies; the same
//! signature over a body one byte longer, or with one bit flipped, does not; parsing never panics; the
//! accessors of a verified delivery (topic, date, resource key) take any body.
#![no_main]

use bytes::Bytes;
use hookgate::secret::Secret;
use hookgate::verify::{Algorithm, Signature, UnverifiedDelivery, Verifier, sign};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (header, body) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
    let algorithm = [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512][usize::from(selector % 4)];
    let secret = Secret::new(b"k3Y9pQ2wXr7Lm4Tz8Vb1Nc6Hd0Sf5Gj".to_vec());
    let verifier = Verifier::new(algorithm, &[secret.clone(), Secret::new(b"a&amp;b".to_vec())]);

    // Arbitrary header bytes: parse, and a parsed one must not verify unless it is the real signature.
    if let Ok(signature) = Signature::from_header(header, algorithm) {
        let real = sign(algorithm, &secret, body);
        let entity = sign(algorithm, &Secret::new(b"a&b".to_vec()), body);
        let entity_raw = sign(algorithm, &Secret::new(b"a&amp;b".to_vec()), body);
        let expected = header == real.as_bytes() || header == entity.as_bytes() || header == entity_raw.as_bytes();
        assert_eq!(verifier.matches(body, &signature), expected);
    }

    // The real signature verifies, and stops verifying when the body changes.
    let real = sign(algorithm, &secret, body);
    let signature = Signature::from_header(real.as_bytes(), algorithm).expect("our own signature parses");
    assert!(verifier.matches(body, &signature));
    let mut longer = body.to_vec();
    longer.push(b' ');
    assert!(!verifier.matches(&longer, &signature));
    if !body.is_empty() {
        let mut flipped = body.to_vec();
        let at = usize::from(selector) % flipped.len();
        flipped[at] ^= 1 << (selector % 8);
        assert!(!verifier.matches(&flipped, &signature));
    }

    let mut headers = http::HeaderMap::new();
    if let Ok(topic) = http::HeaderValue::from_bytes(header) {
        headers.insert("x-wc-webhook-topic", topic);
    }
    let delivery = verifier
        .verify(UnverifiedDelivery { body: Bytes::copy_from_slice(body), headers }, &signature)
        .expect("verifies");
    let _ = delivery.modified_at();
    let _ = delivery.resource_id();
    let _ = hookgate::spool::dedupe_key("main", &delivery);
});
