//! The WooCommerce fixtures, requests signed like them, and configurations that accept them.

use std::path::{Path, PathBuf};

use super::{Backend, raw_request};

/// The secret most fixtures are signed with.
pub const FIXTURE_SECRET: &str = "k3Y9pQ2wXr7Lm4Tz8Vb1Nc6Hd0Sf5Gj";

/// A delivery from `tests/fixtures/woocommerce/`.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub body: Vec<u8>,
    pub meta: serde_json::Value,
}

impl Fixture {
    /// The fixture's WooCommerce headers, with some replaced or removed (`None`).
    pub fn headers_with(&self, changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .headers()
            .into_iter()
            .filter(|(n, _)| !changes.iter().any(|(c, _)| c.eq_ignore_ascii_case(n)))
            .collect();
        for (name, value) in changes {
            if let Some(value) = value {
                headers.push((name.to_string(), value.to_string()));
            }
        }
        headers
    }

    /// Loads `NAME.json` and `NAME.body`.
    pub fn load(name: &str) -> Fixture {
        let dir = fixtures_dir();
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
        let body = std::fs::read(dir.join(format!("{name}.body"))).unwrap();
        Fixture { name: name.to_owned(), body, meta }
    }

    /// Every fixture, by name.
    pub fn all() -> Vec<Fixture> {
        let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".json").map(str::to_owned))
            .collect();
        names.sort();
        names.iter().map(|n| Fixture::load(n)).collect()
    }

    /// The headers WooCommerce sent, in its order.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.meta["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    /// A string field of the `.json` file.
    pub fn field(&self, key: &str) -> &str {
        self.meta[key].as_str().unwrap_or_else(|| panic!("{} has no string {key}", self.name))
    }

    /// A raw HTTP/1.0 request exactly as WooCommerce sends it (`Connection: close`), to `path`.
    pub fn request(&self, path: &str) -> Vec<u8> {
        let mut headers: Vec<(String, String)> = vec![("Host".into(), "hooks.example.com".into())];
        headers.extend(self.headers());
        headers.push(("Connection".into(), "close".into()));
        raw_request("POST", path, "HTTP/1.0", &headers, &self.body)
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/woocommerce")
}

/// Signs `body` with the fixtures' secret and builds WooCommerce's HTTP/1.0 request for `topic`.
pub fn signed_request(path: &str, topic: &str, body: &[u8]) -> Vec<u8> {
    let signature = hookgate::verify::sign(
        hookgate::verify::Algorithm::Sha256,
        &hookgate::secret::Secret::new(FIXTURE_SECRET.as_bytes().to_vec()),
        body,
    );
    let (resource, event) = topic.split_once('.').unwrap();
    let headers: Vec<(String, String)> = [
        ("Host", "hooks.example.com"),
        ("User-Agent", "WooCommerce/10.3.4 Hookshot (WordPress/6.8.3)"),
        ("Content-Type", "application/json"),
        ("X-WC-Webhook-Source", "https://shop.example.com/"),
        ("X-WC-Webhook-Topic", topic),
        ("X-WC-Webhook-Resource", resource),
        ("X-WC-Webhook-Event", event),
        ("X-WC-Webhook-Signature", &signature),
        ("X-WC-Webhook-ID", "535"),
        ("X-WC-Webhook-Delivery-ID", "0123456789abcdef0123456789abcdef"),
        ("Connection", "close"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    raw_request("POST", path, "HTTP/1.0", &headers, body)
}

/// A config with two sources over the fixtures' secrets and the routes given, plus `extra` appended at the
/// top level. Proxy mode unless `extra` has a `delivery:` section.
pub fn fixture_config(routes: &str, extra: &str) -> String {
    let extra =
        if extra.contains("delivery:") { extra.to_owned() } else { format!("{extra}\ndelivery:\n  mode: proxy\n") };
    format!(
        r#"listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
limits:
  max_body_bytes: 1048576
  header_timeout: 5s
  body_timeout: 5s
sources:
  - name: main
    path: /hooks/main
    algorithm: sha256
    secrets:
      - value: "an-older-secret-tried-first"
      - value: "{FIXTURE_SECRET}"
      - value: 'abc&amp;def&quot;ghi'
      - value: '<Sr%VVRNC1Ad]1`MAah.ay@)04R7AU^&aV~e&ln]JzmcqTYAiU'
  - name: legacy
    path: /hooks/legacy
    algorithm: sha1
    secrets:
      - value: "{FIXTURE_SECRET}"
    webhook_ids: [537]
routes:
{routes}
{extra}
"#
    )
}

/// A `delivery:` section for queue mode with a spool on `backend` (its files in `dir`) and quick retries.
pub fn queue_delivery(backend: &Backend, dir: &Path, extra: &str) -> String {
    format!(
        "delivery:\n  mode: queue\n{}  retry:\n    initial_backoff: 50ms\n    max_backoff: 200ms\n    give_up_after: 1h\n{extra}",
        backend.delivery_section(dir)
    )
}
