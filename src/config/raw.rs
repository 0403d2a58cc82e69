//! The configuration file's shapes exactly as written in YAML: serde structs with positions kept
//! (`Spanned`) so the checker can say where each problem is. Nothing here is validated; `check` turns these
//! into the runtime types of the parent module.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{DeliveryMode, LogFormat, Unrouted};
use crate::verify::Algorithm;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) admin_listen: Option<Spanned<String>>,
    pub(super) shutdown_grace: Option<Spanned<String>>,
    pub(super) tls: Option<RawTls>,
    pub(super) http2: Option<bool>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    /// Addresses and CIDR ranges, each as written.
    pub(super) trusted_proxies: Option<Vec<Spanned<String>>>,
    pub(super) sources: Spanned<Vec<RawSource>>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    pub(super) unrouted: Option<Spanned<Unrouted>>,
    #[serde(default)]
    pub(super) delivery: RawDelivery,
    #[serde(default)]
    pub(super) dedupe: RawDedupe,
    #[serde(default)]
    pub(super) log: RawLog,
}

/// The `log` section.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<LogFormat>,
    pub(super) level: Option<Spanned<String>>,
}

/// The `tls` section: PEM files, relative to the config file's folder.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert_file: Spanned<String>,
    pub(super) key_file: Spanned<String>,
}

/// The `limits` section.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_body_bytes: Option<Spanned<u64>>,
    pub(super) header_timeout: Option<Spanned<String>>,
    pub(super) body_timeout: Option<Spanned<String>>,
    pub(super) max_concurrent: Option<Spanned<usize>>,
    pub(super) max_unverified_bytes: Option<Spanned<u64>>,
    pub(super) max_unverified_bytes_per_client: Option<Spanned<u64>>,
    pub(super) body_stall_timeout: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) max_connections_per_client: Option<Spanned<usize>>,
    pub(super) max_requests_per_client: Option<Spanned<usize>>,
}

/// One entry of `sources`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) name: Spanned<String>,
    pub(super) path: Spanned<String>,
    pub(super) algorithm: Option<Algorithm>,
    pub(super) secrets: Spanned<Vec<Spanned<RawSecret>>>,
    pub(super) webhook_ids: Option<Spanned<Vec<u64>>>,
    pub(super) reject_older_than: Option<Spanned<String>>,
    pub(super) store: Option<Spanned<RawStore>>,
}

/// A source's `store` section: the store's REST API, reached with a key whose two parts are secrets.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: Spanned<String>,
    pub(super) consumer_key: Spanned<RawSecret>,
    pub(super) consumer_secret: Spanned<RawSecret>,
    pub(super) delivery_url: Spanned<String>,
    pub(super) watch: Option<Spanned<String>>,
    pub(super) reactivate: Option<bool>,
    pub(super) backfill: Option<bool>,
    pub(super) ca_file: Option<Spanned<String>>,
}

/// One entry of a source's `secrets`: where the secret comes from.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawSecret {
    /// An environment variable holding the secret.
    Env(String),
    /// A file holding the secret (one trailing newline removed).
    File(String),
    /// The secret itself, written in the file.
    Value(String),
}

/// One entry of `routes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Spanned<String>,
    pub(super) source: Option<Spanned<String>>,
    pub(super) topics: Spanned<Vec<Spanned<String>>>,
    pub(super) upstream: Spanned<String>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<RawUpstreamTls>>,
    pub(super) headers: Option<Spanned<RawHeaders>>,
}

/// A route's `tls` section: PEM files, relative to the config file's folder.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) only_ca_file: Option<Spanned<bool>>,
    pub(super) client_cert_file: Option<Spanned<String>>,
    pub(super) client_key_file: Option<Spanned<String>>,
}

/// A route's `headers`: each name, as written, with where its value comes from (like a secret), in file
/// order.
pub(super) struct RawHeaders(pub(super) Vec<(Spanned<String>, Spanned<RawSecret>)>);

impl<'de> Deserialize<'de> for RawHeaders {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RawHeaders, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = RawHeaders;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of header names to { env: VAR }, { file: PATH } or { value: TEXT }")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawHeaders, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(RawHeaders(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// The `delivery` section (its queue-only keys are read in proxy mode too, and checked).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub(super) mode: Option<DeliveryMode>,
    pub(super) spool_path: Option<Spanned<String>>,
    pub(super) postgres: Option<Spanned<RawPostgres>>,
    #[serde(default)]
    pub(super) retry: RawRetry,
    pub(super) max_in_flight: Option<Spanned<usize>>,
    pub(super) max_spool_bytes: Option<Spanned<u64>>,
    pub(super) keep_delivered: Option<Spanned<String>>,
    pub(super) keep_unrouted: Option<Spanned<String>>,
}

/// The `delivery.postgres` section: the spool in PostgreSQL, shared by replicas. The URL is a secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPostgres {
    pub(super) url_env: Option<Spanned<String>>,
    pub(super) url_file: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) ca_file: Option<Spanned<String>>,
}

/// The `delivery.retry` section.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) initial_backoff: Option<Spanned<String>>,
    pub(super) max_backoff: Option<Spanned<String>>,
    pub(super) give_up_after: Option<Spanned<String>>,
}

/// The top-level `dedupe` section (queue mode only, but checked in either mode).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDedupe {
    pub(super) window: Option<Spanned<String>>,
    pub(super) topics: Option<Vec<Spanned<String>>>,
}
