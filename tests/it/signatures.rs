//! WooCommerce's signatures, checked against deliveries signed by PHP's own `hash_hmac`.

use crate::support::Fixture;
use hookgate::secret::Secret;
use hookgate::verify::{Algorithm, Signature, SignatureError, Verifier, sign, sign_with_key};

fn signed_fixtures() -> Vec<Fixture> {
    Fixture::all().into_iter().filter(|f| f.meta.get("secret").is_some()).collect()
}

fn secret(fixture: &Fixture) -> Secret {
    Secret::new(fixture.field("secret").as_bytes().to_vec())
}

fn algorithm(fixture: &Fixture) -> Algorithm {
    fixture.field("algorithm").parse().unwrap()
}

#[test]
fn sign_reproduces_every_accepted_fixture_signature() {
    let fixtures = signed_fixtures();
    assert_eq!(fixtures.len(), 8);
    for fixture in &fixtures {
        let ours = sign(algorithm(fixture), &secret(fixture), &fixture.body);
        let theirs = fixture.field("signature");
        assert_eq!(theirs, fixture.headers().iter().find(|(n, _)| n == "X-WC-Webhook-Signature").unwrap().1);
        match fixture.field("expect") {
            "accepted" => assert_eq!(ours, theirs, "{}", fixture.name),
            "invalid_signature" => assert_ne!(ours, theirs, "{}", fixture.name),
            other => panic!("{}: unexpected expectation {other}", fixture.name),
        }
    }
}

#[test]
fn the_verifier_accepts_what_woocommerce_signed_and_refuses_the_tampered_body() {
    for fixture in signed_fixtures() {
        let algorithm = algorithm(&fixture);
        // Rotation: the right secret comes second.
        let verifier = Verifier::new(algorithm, &[Secret::new(b"previous-secret".to_vec()), secret(&fixture)]);
        let signature = Signature::from_header(fixture.field("signature").as_bytes(), algorithm).unwrap();
        let accepted = verifier.matches(&fixture.body, &signature);
        assert_eq!(accepted, fixture.field("expect") == "accepted", "{}", fixture.name);
        // With only the wrong secret, nothing verifies.
        let wrong = Verifier::new(algorithm, &[Secret::new(b"previous-secret".to_vec())]);
        assert!(!wrong.matches(&fixture.body, &signature), "{}", fixture.name);
    }
}

#[test]
fn an_entity_encoded_secret_is_signed_with_its_decoded_form() {
    let fixture = Fixture::load("entity-secret");
    let stored = secret(&fixture);
    assert_eq!(stored.expose(), b"abc&amp;def&quot;ghi");
    // Keyed with the secret as stored, the HMAC differs: that is the bug of WooCommerce issues 21693/22500.
    assert_ne!(sign_with_key(Algorithm::Sha256, &stored, &fixture.body), fixture.field("signature"));
    assert_eq!(
        sign_with_key(Algorithm::Sha256, &Secret::new(b"abc&def\"ghi".to_vec()), &fixture.body),
        fixture.field("signature")
    );
    // Configured as stored, it verifies, and so does the decoded form typed by hand.
    let signature = Signature::from_header(fixture.field("signature").as_bytes(), Algorithm::Sha256).unwrap();
    assert!(Verifier::new(Algorithm::Sha256, &[stored]).matches(&fixture.body, &signature));
    assert!(
        Verifier::new(Algorithm::Sha256, &[Secret::new(b"abc&def\"ghi".to_vec())]).matches(&fixture.body, &signature)
    );
}

#[test]
fn every_algorithm_verifies_its_own_signatures_only() {
    let body = Fixture::load("order-created").body;
    let key = Secret::new(b"k".to_vec());
    for algorithm in Algorithm::ALL {
        let header = sign(algorithm, &key, &body);
        assert_eq!(header.len(), algorithm.signature_chars());
        for other in Algorithm::ALL {
            let parsed = Signature::from_header(header.as_bytes(), other);
            if other == algorithm {
                assert!(Verifier::new(other, std::slice::from_ref(&key)).matches(&body, &parsed.unwrap()));
            } else {
                assert_eq!(parsed.unwrap_err(), SignatureError::WrongLength, "{algorithm} header for {other}");
            }
        }
    }
}

#[test]
fn malformed_headers_are_refused() {
    let fixture = Fixture::load("coupon-deleted");
    let good = fixture.field("signature");
    for bad in [
        good.replace('+', "-"),
        format!(" {}", &good[1..]),
        format!("{}\t", &good[..43]),
        good.to_lowercase(),
        "=".repeat(44),
    ] {
        let parsed = Signature::from_header(bad.as_bytes(), Algorithm::Sha256);
        match parsed {
            Err(_) => {}
            // Lower-casing keeps valid base64: it parses, and must then fail to verify.
            Ok(signature) => {
                let verifier = Verifier::new(Algorithm::Sha256, &[secret(&fixture)]);
                assert!(!verifier.matches(&fixture.body, &signature), "{bad}");
            }
        }
    }
    assert_eq!(Signature::from_header(b"", Algorithm::Sha256).unwrap_err(), SignatureError::WrongLength);
    assert_eq!(Signature::from_header(&[0xff; 44], Algorithm::Sha256).unwrap_err(), SignatureError::NotBase64);
}
