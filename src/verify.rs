//! WooCommerce's signature: `base64(HMAC-<algo>(key = decoded secret, message = raw body))`.
//!
//! The only way to get a [`VerifiedDelivery`] is [`Verifier::verify`], so code that routes or forwards a
//! delivery cannot be handed one whose signature was not checked.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use serde::Deserialize;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::route::is_valid_topic;
use crate::secret::Secret;
use crate::woocommerce::{Payload, ResourceId, X_WC_WEBHOOK_TOPIC, single_header};

/// The hash behind the HMAC. WooCommerce uses SHA-256 unless a site changes it with the
/// `woocommerce_webhook_hash_algorithm` filter; no header names it, so each source configures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// HMAC-SHA1 (a site that filters WooCommerce to it).
    Sha1,
    /// HMAC-SHA256, WooCommerce's default.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
    /// HMAC-SHA512.
    Sha512,
}

/// The longest digest of any algorithm (SHA-512), so signatures fit in a fixed buffer with no allocation.
const MAX_DIGEST_BYTES: usize = 64;

impl Algorithm {
    /// Every algorithm WooCommerce can be filtered to use.
    pub const ALL: [Algorithm; 4] = [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512];

    /// The digest's length in bytes.
    pub fn digest_bytes(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    /// The length of the digest in padded standard base64, as WooCommerce sends it (44 for SHA-256).
    pub fn signature_chars(self) -> usize {
        self.digest_bytes().div_ceil(3) * 4
    }

    /// The name used in the configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown algorithm {s:?}: use sha1, sha256, sha384 or sha512"))
    }
}

/// A signature taken from `X-WC-Webhook-Signature`, decoded to its digest bytes.
///
/// It has no `PartialEq` on purpose: the only comparison is the constant-time one inside [`Verifier`]. This
/// does not compile:
///
/// ```compile_fail
/// fn same(a: &hookgate::verify::Signature, b: &hookgate::verify::Signature) -> bool {
///     a == b
/// }
/// ```
pub struct Signature {
    digest: [u8; MAX_DIGEST_BYTES],
    len: usize,
}

/// Why a signature header could not be taken as a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not padded standard base64.
    #[error("the signature is not padded standard base64")]
    NotBase64,
    /// Base64, but not the configured algorithm's digest length.
    #[error("the signature has the wrong length for the configured algorithm")]
    WrongLength,
}

impl Signature {
    /// Decodes a header value: padded standard base64 (`+/`, `=`) of exactly the algorithm's digest length.
    /// Whitespace, the URL-safe alphabet and missing padding are refused rather than guessed at.
    pub fn from_header(value: &[u8], algorithm: Algorithm) -> Result<Signature, SignatureError> {
        if value.len() != algorithm.signature_chars() {
            // Still say "not base64" for garbage, so the two errors are told apart in diagnosis.
            return Err(if value.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')) {
                SignatureError::WrongLength
            } else {
                SignatureError::NotBase64
            });
        }
        // 88 base64 characters (SHA-512) decode to at most 66 bytes.
        let mut buffer = [0u8; MAX_DIGEST_BYTES + 2];
        let len = BASE64.decode_slice(value, &mut buffer).map_err(|_| SignatureError::NotBase64)?;
        if len != algorithm.digest_bytes() {
            return Err(SignatureError::WrongLength);
        }
        let mut digest = [0u8; MAX_DIGEST_BYTES];
        digest[..len].copy_from_slice(&buffer[..len]);
        Ok(Signature { digest, len })
    }

    fn bytes(&self) -> &[u8] {
        &self.digest[..self.len]
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({} bytes)", self.len)
    }
}

/// An HMAC already keyed with one secret. Keying once at load time means a request allocates nothing for
/// its keys: verifying clones this state and feeds it the body.
#[derive(Clone)]
enum KeyedMac {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha384(Hmac<sha2::Sha384>),
    Sha512(Hmac<sha2::Sha512>),
}

impl KeyedMac {
    fn new(algorithm: Algorithm, key: &[u8]) -> KeyedMac {
        // HMAC accepts keys of any length, so these cannot fail.
        const ANY_KEY: &str = "HMAC takes keys of any length";
        match algorithm {
            Algorithm::Sha1 => KeyedMac::Sha1(Hmac::new_from_slice(key).expect(ANY_KEY)),
            Algorithm::Sha256 => KeyedMac::Sha256(Hmac::new_from_slice(key).expect(ANY_KEY)),
            Algorithm::Sha384 => KeyedMac::Sha384(Hmac::new_from_slice(key).expect(ANY_KEY)),
            Algorithm::Sha512 => KeyedMac::Sha512(Hmac::new_from_slice(key).expect(ANY_KEY)),
        }
    }

    /// The digest of `body`, written into `out`; returns its length.
    fn digest_into(&self, body: &[u8], out: &mut [u8; MAX_DIGEST_BYTES]) -> usize {
        fn run<M: Mac + Clone>(mac: &M, body: &[u8], out: &mut [u8]) -> usize {
            let mut mac = mac.clone();
            mac.update(body);
            let digest = mac.finalize().into_bytes();
            out[..digest.len()].copy_from_slice(&digest);
            digest.len()
        }
        match self {
            KeyedMac::Sha1(mac) => run(mac, body, out),
            KeyedMac::Sha256(mac) => run(mac, body, out),
            KeyedMac::Sha384(mac) => run(mac, body, out),
            KeyedMac::Sha512(mac) => run(mac, body, out),
        }
    }
}

/// Checks signatures for one source: every configured secret, each as written and, where it holds HTML
/// entities, as WooCommerce decodes it.
#[derive(Clone)]
pub struct Verifier {
    algorithm: Algorithm,
    keys: Vec<KeyedMac>,
    /// For each key, the position of the secret it comes from in the source's list.
    secret_of_key: Vec<u32>,
}

impl Verifier {
    /// Keys one HMAC per candidate key. `secrets` must not be empty (configuration guarantees it).
    pub fn new(algorithm: Algorithm, secrets: &[Secret]) -> Verifier {
        let mut keys = Vec::with_capacity(secrets.len() * 2);
        let mut secret_of_key = Vec::with_capacity(secrets.len() * 2);
        for (position, secret) in (0u32..).zip(secrets) {
            for key in candidate_keys(std::slice::from_ref(secret)) {
                keys.push(KeyedMac::new(algorithm, key.expose()));
                secret_of_key.push(position);
            }
        }
        Verifier { algorithm, keys, secret_of_key }
    }

    /// The algorithm this source's deliveries are signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// How many keys are tried (secrets, plus their entity-decoded forms where those differ).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// True when `signature` is the HMAC of `body` under any candidate key. Every key is computed and every
    /// comparison runs in constant time, so the time taken says neither which byte differed nor which key
    /// matched.
    pub fn matches(&self, body: &[u8], signature: &Signature) -> bool {
        self.matching_secret(body, signature).is_some()
    }

    /// The position (in the source's list) of the secret whose key `signature` is the HMAC of `body` under,
    /// if any. As [`Verifier::matches`], in constant time: the position is chosen with a constant-time
    /// select, after every key was tried.
    fn matching_secret(&self, body: &[u8], signature: &Signature) -> Option<usize> {
        let mut found = Choice::from(0);
        let mut position = 0u32;
        let mut digest = [0u8; MAX_DIGEST_BYTES];
        for (key, secret) in self.keys.iter().zip(&self.secret_of_key) {
            let len = key.digest_into(body, &mut digest);
            // Lengths are public (fixed by the algorithm); only the bytes are compared in constant time.
            if len == signature.len {
                let equal = digest[..len].ct_eq(signature.bytes());
                // The first key that matches names the secret: later ones do not overwrite it.
                position.conditional_assign(secret, equal & !found);
                found |= equal;
            }
        }
        bool::from(found).then(|| usize::try_from(position).unwrap_or(usize::MAX))
    }

    /// Checks a delivery and, when its signature matches, turns it into a [`VerifiedDelivery`] that says
    /// which of the source's secrets signed it.
    pub fn verify(&self, delivery: UnverifiedDelivery, signature: &Signature) -> Option<VerifiedDelivery> {
        self.matching_secret(&delivery.body, signature).map(|secret| VerifiedDelivery {
            body: delivery.body,
            headers: delivery.headers,
            payload: Payload::default(),
            secret,
        })
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").field("algorithm", &self.algorithm).field("keys", &self.keys.len()).finish()
    }
}

/// The keys to try for a list of secrets: each as written, then its entity-decoded form where that differs.
pub fn candidate_keys(secrets: &[Secret]) -> Vec<Secret> {
    let mut keys = Vec::with_capacity(secrets.len() * 2);
    for secret in secrets {
        keys.push(secret.clone());
        if let Some(decoded) = secret.entity_decoded() {
            keys.push(decoded);
        }
    }
    keys
}

/// The `X-WC-Webhook-Signature` value WooCommerce would send for `body`: the secret is decoded as
/// WooCommerce decodes it before it keys the HMAC.
pub fn sign(algorithm: Algorithm, secret: &Secret, body: &[u8]) -> String {
    let key = secret.entity_decoded().unwrap_or_else(|| secret.clone());
    sign_with_key(algorithm, &key, body)
}

/// The signature of `body` keyed with `key` exactly as given (no entity decoding).
pub fn sign_with_key(algorithm: Algorithm, key: &Secret, body: &[u8]) -> String {
    let mut digest = [0u8; MAX_DIGEST_BYTES];
    let len = KeyedMac::new(algorithm, key.expose()).digest_into(body, &mut digest);
    BASE64.encode(&digest[..len])
}

/// A delivery whose body has been read but whose signature has not been checked yet.
pub struct UnverifiedDelivery {
    /// The exact bytes received: the bytes WooCommerce signed and the bytes forwarded.
    pub body: Bytes,
    /// The headers that are forwarded upstream with the body.
    pub headers: HeaderMap,
}

/// A delivery whose signature matched one of its source's secrets. Only [`Verifier::verify`] makes one,
/// and only a verified delivery can be routed and delivered.
#[derive(Debug)]
pub struct VerifiedDelivery {
    body: Bytes,
    headers: HeaderMap,
    /// What the signed payload says, read once when first asked.
    payload: Payload,
    /// The position of the secret that signed it, in its source's list (0: the first).
    secret: usize,
}

impl VerifiedDelivery {
    /// A resource hookgate fetched itself from its source's store, over the store's REST API with the
    /// source's REST key (the store's backfill): authentic without a signature, since the store answered
    /// an authenticated request. Nothing that arrives over HTTP can become one this way: only
    /// [`crate::store_api::backfill`] calls it.
    pub(crate) fn fetched_from_store(body: Bytes, headers: HeaderMap) -> VerifiedDelivery {
        VerifiedDelivery { body, headers, payload: Payload::default(), secret: usize::MAX }
    }

    /// The delivery's topic, when `X-WC-Webhook-Topic` is present once and is a plausible topic.
    pub fn topic(&self) -> Option<&str> {
        single_header(&self.headers, &X_WC_WEBHOOK_TOPIC)
            .filter(|v| is_valid_topic(v.as_bytes()))
            .and_then(|v| v.to_str().ok())
    }

    /// When the resource was last modified, in unix seconds, from the signed payload (see
    /// [`Payload::modified_at`]).
    pub fn modified_at(&self) -> Option<i64> {
        self.payload.modified_at(&self.body)
    }

    /// The resource's id in the signed payload (see [`Payload::resource_id`]).
    pub fn resource_id(&self) -> Option<ResourceId> {
        self.payload.resource_id(&self.body)
    }

    /// The exact bytes that were signed.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The headers forwarded with the body.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The position of the secret that signed it in its source's `secrets` (0: the first), as the
    /// configuration stood when it was verified.
    pub fn secret_position(&self) -> usize {
        self.secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec())
    }

    #[test]
    fn signature_lengths_follow_the_algorithm() {
        let lengths: Vec<_> = Algorithm::ALL.iter().map(|a| a.signature_chars()).collect();
        assert_eq!(lengths, [28, 44, 64, 88]);
    }

    #[test]
    fn sign_then_verify_round_trips_for_every_algorithm() {
        for algorithm in Algorithm::ALL {
            let verifier = Verifier::new(algorithm, &[secret("s3cret")]);
            let header = sign(algorithm, &secret("s3cret"), b"{\"id\":1}");
            let signature = Signature::from_header(header.as_bytes(), algorithm).unwrap();
            assert!(verifier.matches(b"{\"id\":1}", &signature), "{algorithm}");
            assert!(!verifier.matches(b"{\"id\":2}", &signature), "{algorithm}");
        }
    }

    #[test]
    fn refuses_malformed_headers() {
        let good = sign(Algorithm::Sha256, &secret("k"), b"x");
        assert!(Signature::from_header(good.as_bytes(), Algorithm::Sha256).is_ok());
        let url_safe = good.replace('+', "-").replace('/', "_");
        if url_safe != good {
            assert_eq!(
                Signature::from_header(url_safe.as_bytes(), Algorithm::Sha256).unwrap_err(),
                SignatureError::NotBase64
            );
        }
        let unpadded = good.trim_end_matches('=');
        assert_eq!(
            Signature::from_header(unpadded.as_bytes(), Algorithm::Sha256).unwrap_err(),
            SignatureError::WrongLength
        );
        let spaced = format!(" {}", &good[1..]);
        assert_eq!(
            Signature::from_header(spaced.as_bytes(), Algorithm::Sha256).unwrap_err(),
            SignatureError::NotBase64
        );
        let sha1 = sign(Algorithm::Sha1, &secret("k"), b"x");
        assert_eq!(
            Signature::from_header(sha1.as_bytes(), Algorithm::Sha256).unwrap_err(),
            SignatureError::WrongLength
        );
        // 44 characters of valid alphabet whose padding is not canonical.
        let bad_padding = format!("{}==", &good[..42]);
        assert_eq!(
            Signature::from_header(bad_padding.as_bytes(), Algorithm::Sha256).unwrap_err(),
            SignatureError::NotBase64
        );
    }

    #[test]
    fn tries_every_secret_and_the_entity_decoded_form() {
        let verifier = Verifier::new(Algorithm::Sha256, &[secret("old"), secret("a&amp;b")]);
        assert_eq!(verifier.key_count(), 3);
        for key in ["old", "a&amp;b", "a&b"] {
            let header = sign_with_key(Algorithm::Sha256, &secret(key), b"body");
            let signature = Signature::from_header(header.as_bytes(), Algorithm::Sha256).unwrap();
            assert!(verifier.matches(b"body", &signature), "{key}");
        }
        let header = sign_with_key(Algorithm::Sha256, &secret("other"), b"body");
        let signature = Signature::from_header(header.as_bytes(), Algorithm::Sha256).unwrap();
        assert!(!verifier.matches(b"body", &signature));
    }

    #[test]
    fn a_verified_delivery_says_which_secret_signed_it() {
        let verifier = Verifier::new(Algorithm::Sha256, &[secret("new"), secret("a&amp;b"), secret("new")]);
        for (key, position) in [("new", 0), ("a&amp;b", 1), ("a&b", 1)] {
            let header = sign_with_key(Algorithm::Sha256, &secret(key), b"body");
            let signature = Signature::from_header(header.as_bytes(), Algorithm::Sha256).unwrap();
            let unverified = UnverifiedDelivery { body: Bytes::from_static(b"body"), headers: HeaderMap::new() };
            let verified = verifier.verify(unverified, &signature).expect(key);
            assert_eq!(verified.secret_position(), position, "{key}: the first secret that matches");
        }
    }

    fn delivery(body: &str) -> VerifiedDelivery {
        let secret = Secret::new(b"k".to_vec());
        let verifier = Verifier::new(Algorithm::Sha256, std::slice::from_ref(&secret));
        let signature =
            Signature::from_header(sign(Algorithm::Sha256, &secret, body.as_bytes()).as_bytes(), Algorithm::Sha256)
                .unwrap();
        verifier
            .verify(UnverifiedDelivery { body: Bytes::from(body.to_owned()), headers: HeaderMap::new() }, &signature)
            .unwrap()
    }

    #[test]
    fn the_modification_date_comes_from_the_signed_payload() {
        let at = |body: &str| delivery(body).modified_at();
        assert_eq!(at(r#"{"id":1,"date_modified_gmt":"2026-11-21T13:03:09"}"#), Some(1_795_266_189));
        assert_eq!(at(r#"{"order":{"id":1,"updated_at":"2026-11-21T13:03:09Z"}}"#), Some(1_795_266_189), "legacy_v3");
        assert_eq!(at(r#"{"id":1,"date_modified_gmt":"2100-01-01T00:00:00"}"#), Some(4_102_444_800), "a future date");
        assert_eq!(at(r#"{"id":1,"date_modified_gmt":null}"#), None, "not judged");
        assert_eq!(at(r#"{"id":1}"#), None, "a deleted resource: not judged");
        assert_eq!(at(r#"{"action":"woocommerce_add_to_cart","arg":"x"}"#), None);
        assert_eq!(at(r#"{"id":1,"date_modified_gmt":"2026-11-21T13:03:09.123"}"#), None, "not WooCommerce's form");
        assert_eq!(at(r#"[1,2]"#), None);
        assert_eq!(
            at(r#"{"a":{"updated_at":"2026-11-21T13:03:09Z"},"b":{"updated_at":"2026-11-21T13:03:09Z"}}"#),
            None
        );
    }
}
