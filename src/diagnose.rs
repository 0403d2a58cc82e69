//! `hookgate diagnose`: explains, in plain words, why a signature does not verify. It tries every
//! configured secret as written and entity-decoded, every algorithm, and the body as given, trimmed and
//! without a trailing newline, and says which combination matches. It never prints a secret: secrets are
//! named by their place in the list and where they come from.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::config::Source;
use crate::secret::Secret;
use crate::verify::{Algorithm, sign_with_key};

/// What the diagnosis found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// True when hookgate, as configured, accepts this signature for this body.
    pub verifies: bool,
    /// The explanation, one paragraph per entry.
    pub lines: Vec<String>,
}

/// Gives a form of the body, or `None` when that form does not apply.
type BodyForm = fn(&[u8]) -> Option<&[u8]>;

/// The body as hookgate received it, or as it may have been altered on the way.
const BODY_FORMS: [(&str, BodyForm); 3] = [
    ("the body as given", |b| Some(b)),
    ("the body without its trailing newline", |b| b.strip_suffix(b"\r\n").or_else(|| b.strip_suffix(b"\n"))),
    ("the body with surrounding whitespace trimmed", |b| Some(b.trim_ascii())),
];

/// Explains `signature` (the header value) for `body` against `source`'s secrets and algorithm.
pub fn diagnose(source: &Source, signature: &str, body: &[u8]) -> Diagnosis {
    let signature = signature.trim_end_matches(['\r', '\n']);
    let mut lines = header_shape(source, signature);
    let verifies = match search(source, signature.trim(), body) {
        Some(found) => explain_match(source, &found, &mut lines),
        None => {
            explain_no_match(source, &mut lines);
            false
        }
    };
    Diagnosis { verifies, lines }
}

/// What the header value itself shows: spaces, an alphabet that is not base64, a length of another
/// algorithm or of none.
fn header_shape(source: &Source, signature: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let configured = source.verifier.algorithm();
    if signature != signature.trim() {
        lines.push(
            "The signature has spaces around it: WooCommerce sends none, and hookgate compares the exact header value."
                .to_owned(),
        );
    }
    match BASE64.decode(signature.trim()) {
        Err(_) => lines.push(
            "The signature is not padded standard base64 (A-Z a-z 0-9 + / with = padding), which is what WooCommerce sends: \
             check that it was copied whole from the X-WC-Webhook-Signature header, not URL-encoded or altered."
                .to_owned(),
        ),
        Ok(bytes) => {
            if let Some(algorithm) = Algorithm::ALL.into_iter().find(|a| a.digest_bytes() == bytes.len()) {
                if algorithm != configured {
                    lines.push(format!(
                        "The signature is {} bytes long, the length of {algorithm}; source {:?} is set to {configured}.",
                        bytes.len(),
                        source.name
                    ));
                }
            } else {
                lines.push(format!(
                    "The signature decodes to {} bytes, the length of no algorithm WooCommerce uses (20, 32, 48 or 64).",
                    bytes.len()
                ));
            }
        }
    }
    lines
}

/// The first combination that makes `signature`: which secret (by index), in which form, with which
/// algorithm, over which form of the body.
struct Match {
    index: usize,
    key_form: &'static str,
    algorithm: Algorithm,
    body_form: &'static str,
}

/// Tries every secret (as written, then entity-decoded), every algorithm (the configured one first) and
/// every body form, in that order.
fn search(source: &Source, signature: &str, body: &[u8]) -> Option<Match> {
    let configured = source.verifier.algorithm();
    for (index, secret) in source.secrets.iter().enumerate() {
        let mut keys = vec![(secret.clone(), "as written")];
        if let Some(decoded) = secret.entity_decoded() {
            keys.push((decoded, "with its HTML entities decoded"));
        }
        for (key, key_form) in keys {
            for algorithm in preferred_order(configured) {
                for (body_form, alter) in BODY_FORMS {
                    let Some(altered) = alter(body) else { continue };
                    if body_form != BODY_FORMS[0].0 && altered == body {
                        continue;
                    }
                    if signs(algorithm, &key, altered, signature) {
                        return Some(Match { index, key_form, algorithm, body_form });
                    }
                }
            }
        }
    }
    None
}

/// Says what matched and what to change; true when hookgate, as configured, accepts it.
fn explain_match(source: &Source, found: &Match, lines: &mut Vec<String>) -> bool {
    let Match { index, key_form, algorithm, body_form } = *found;
    let configured = source.verifier.algorithm();
    let which = format!("secret {} ({}) {key_form}", index + 1, source.secret_origins[index]);
    let accepted = algorithm == configured && body_form == BODY_FORMS[0].0;
    if accepted {
        lines.push(format!(
            "The signature verifies: it matches {which} with {algorithm} over {body_form}. hookgate accepts this delivery."
        ));
    } else if algorithm != configured {
        lines.push(format!(
            "It matches {which} with {algorithm}: set algorithm: {algorithm} for source {:?} (the site uses WooCommerce's woocommerce_webhook_hash_algorithm filter).",
            source.name
        ));
    }
    if body_form != BODY_FORMS[0].0 {
        lines.push(format!(
            "It matches {which} with {algorithm} over {body_form}: the body was changed after it was signed. \
             Send the exact bytes WooCommerce sent (a tool or a file added or removed the whitespace)."
        ));
    }
    accepted
}

/// Says that nothing matched, and the usual causes.
fn explain_no_match(source: &Source, lines: &mut Vec<String>) {
    lines.push(format!(
        "No configured secret of source {:?} ({} secret{}, each tried as written and entity-decoded) matches with any \
         algorithm, over the body as given, trimmed or without a trailing newline.",
        source.name,
        source.secrets.len(),
        if source.secrets.len() == 1 { "" } else { "s" }
    ));
    lines.push(
        "Usual causes: the body was re-serialised before the signature was checked (parsed and encoded again, \
         which changes escaped slashes, \\u escapes or spacing: check the raw bytes received); the secret is the REST \
         API consumer secret instead of the webhook's own secret (WooCommerce > Settings > Advanced > Webhooks); \
         or the webhook's secret was changed in WooCommerce and not here."
            .to_owned(),
    );
}

/// The configured algorithm first, then the others.
fn preferred_order(configured: Algorithm) -> impl Iterator<Item = Algorithm> {
    std::iter::once(configured).chain(Algorithm::ALL.into_iter().filter(move |a| *a != configured))
}

fn signs(algorithm: Algorithm, key: &Secret, body: &[u8], signature: &str) -> bool {
    let expected = sign_with_key(algorithm, key, body);
    // A diagnosis tool run by an operator on their own data: a plain comparison leaks nothing to anyone.
    expected.as_bytes() == signature.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Verifier, sign};

    fn source(algorithm: Algorithm, secrets: &[&str]) -> Source {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(s.as_bytes().to_vec())).collect();
        Source {
            name: "shop".into(),
            path: "/hooks/shop".into(),
            verifier: Verifier::new(algorithm, &secrets),
            secret_origins: (1..=secrets.len()).map(|i| format!("env SECRET_{i}")).collect(),
            secrets,
            webhook_ids: None,
            reject_older_than: None,
            store: None,
        }
    }

    fn key(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec())
    }

    #[test]
    fn a_good_signature_verifies() {
        let shop = source(Algorithm::Sha256, &["old", "new"]);
        let found = diagnose(&shop, &sign(Algorithm::Sha256, &key("new"), b"{}"), b"{}");
        assert!(found.verifies);
        assert!(found.lines[0].contains("matches secret 2 (env SECRET_2) as written with sha256"), "{found:?}");
    }

    #[test]
    fn the_wrong_algorithm_is_named_with_its_fix() {
        let shop = source(Algorithm::Sha256, &["k"]);
        let found = diagnose(&shop, &sign(Algorithm::Sha1, &key("k"), b"{}"), b"{}");
        assert!(!found.verifies);
        let all = found.lines.join("\n");
        assert!(all.contains("the length of sha1; source \"shop\" is set to sha256"), "{all}");
        assert!(all.contains("It matches secret 1 (env SECRET_1) as written with sha1: set algorithm: sha1"), "{all}");
    }

    #[test]
    fn a_trailing_newline_added_to_the_body_is_found() {
        let shop = source(Algorithm::Sha256, &["k"]);
        let found = diagnose(&shop, &sign(Algorithm::Sha256, &key("k"), b"{\"id\":1}"), b"{\"id\":1}\n");
        assert!(!found.verifies);
        assert!(
            found.lines.join("\n").contains("without its trailing newline: the body was changed after it was signed")
        );
    }

    #[test]
    fn an_entity_encoded_secret_is_reported_decoded() {
        let shop = source(Algorithm::Sha256, &["a&amp;b"]);
        let found = diagnose(&shop, &sign(Algorithm::Sha256, &key("a&amp;b"), b"x"), b"x");
        assert!(found.verifies, "{found:?}");
        assert!(found.lines[0].contains("with its HTML entities decoded"), "{found:?}");
    }

    #[test]
    fn no_match_lists_the_usual_causes_and_never_the_secret() {
        let shop = source(Algorithm::Sha256, &["hunter2-secret"]);
        let found = diagnose(&shop, &sign(Algorithm::Sha256, &key("consumer-secret"), b"{}"), b"{}");
        assert!(!found.verifies);
        let all = found.lines.join("\n");
        assert!(all.contains("re-serialised") && all.contains("consumer secret"), "{all}");
        assert!(!all.contains("hunter2"), "{all}");
        let garbage = diagnose(&shop, "not base64!", b"{}");
        assert!(garbage.lines[0].contains("not padded standard base64"), "{garbage:?}");
    }
}
