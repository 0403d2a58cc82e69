//! Configuration: the YAML file is parsed into raw serde shapes, then validated once into runtime values
//! (resolved secrets, keyed verifiers, compiled topic patterns, parsed URLs). Validation either succeeds
//! whole or reports every problem it found, each with its file, line and column and how to fix it.
//!
//! This module holds the runtime types, their defaults and `Config::load`; `raw` holds the serde shapes as
//! written in YAML, `check` the checker that turns them into runtime values (with `check/sources.rs` and
//! `check/routes.rs` for the two lists), and `redact` keeps secrets out of the snippets its errors show.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::route::{Routes, TopicPattern};
use crate::secret::Secret;
use crate::verify::Verifier;

mod spool;
pub use spool::{PostgresSettings, SpoolLocation};
mod store;
pub use store::{DEFAULT_STORE_WATCH, StoreSettings};
mod check;
mod lenient;
mod raw;
mod redact;
mod traps;

use raw::RawConfig;
use redact::{SECRET_ENTRY_PROBLEM, redact_snippet_line, secret_lines};
use traps::{UNQUOTED_VALUE_PROBLEM, is_unquoted_value_line};

/// WooCommerce delivers only to ports 80, 443 and 8080 unless the site adds a filter.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// 1 MiB holds the largest orders seen in practice (hundreds of line items take about 400 KB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// The bound on `max_body_bytes`: memory per request must stay small whatever the configuration says.
pub const MAX_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Time allowed for a client to send its request line and headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a client to send its whole body once its headers arrived.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// WooCommerce's own delivery timeout is 60 s; an upstream must answer well inside it.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(10);
/// WooCommerce waits 60 s for an answer; a longer upstream timeout only means WooCommerce gives up first.
pub const WOOCOMMERCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for requests and delivery attempts in flight to finish at a stop: below Kubernetes' default 30 s
/// termination grace period, so hookgate ends on its own before it is killed.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// The admin listener (metrics, health) stays on loopback unless configured otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Requests answered at once; past it, 503 at once rather than an unbounded queue of waiting requests.
pub const DEFAULT_MAX_CONCURRENT: usize = 1024;
/// Bytes of bodies being read before their signature is checked, all requests together: room for 64 of
/// the largest default bodies at once, and a bound on what unauthenticated clients can make hookgate hold.
pub const DEFAULT_MAX_UNVERIFIED_BYTES: u64 = 64 * 1024 * 1024;
/// One client's share of `max_unverified_bytes` unless set (and never below `max_body_bytes`): a quarter,
/// so that one address cannot hold the memory every other client's bodies need, while a store sending two
/// dozen large orders at once (24 of 400 KB, read together on a fast link) stays under it.
pub const DEFAULT_MAX_UNVERIFIED_BYTES_PER_CLIENT: u64 = 16 * 1024 * 1024;
/// A body that sends nothing for this long is dropped (408), long before `body_timeout`: WooCommerce sends
/// its body at once, and a client dribbling a byte now and then must not hold a connection for 30 s.
pub const DEFAULT_BODY_STALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a connection with no request in flight stays open (nginx keeps one 75 s, hyper's client pools
/// one 90 s; a store's next delivery rarely comes sooner than that, so keeping it longer only holds a socket).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections open at once on the webhook listener: well below the file descriptors a process gets (a
/// container's usual limit is 65,536; hookgate also needs some for its spool, upstreams and admin).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections from one client address: a store sends a few deliveries at a time, a proxy in front or a
/// load test of 64 connections stays far below; an attacker from one address is capped here.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;
/// Requests in flight at once from one client address (HTTP/1 requests and HTTP/2 streams alike): a
/// store sends a few deliveries at a time (20 at once is tested), a load test 64 over as many connections;
/// what one address can hold is capped here, whatever the connections it spreads them over.
pub const DEFAULT_MAX_REQUESTS_PER_CLIENT: usize = 256;
/// Where the spool lives unless configured (relative to the config file's folder).
pub const DEFAULT_SPOOL_PATH: &str = "./data/hookgate.db";
/// The first retry waits up to this long (full jitter).
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Retries never wait longer than this, so a recovered upstream is found within minutes.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// Three days covers a weekend outage; after that the delivery becomes a dead letter for an operator.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(72 * 3600);
/// Attempts in flight at once per route: enough to drain a backlog, few enough not to flood a recovering service.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
/// The spool may use this much disk before new deliveries are answered 503.
pub const DEFAULT_MAX_SPOOL_BYTES: u64 = 1024 * 1024 * 1024;
/// Delivered entries are kept this long for `hookgate spool show` and replays, then pruned.
pub const DEFAULT_KEEP_DELIVERED: Duration = Duration::from_secs(24 * 3600);
/// Unrouted deliveries are kept this long for `hookgate spool replay --unrouted`: a week gives a typo in a
/// route time to be noticed (an alert, a weekly report) and fixed before anything is pruned.
pub const DEFAULT_KEEP_UNROUTED: Duration = Duration::from_secs(7 * 24 * 3600);
/// WooCommerce's duplicate deliveries arrive within seconds; ten minutes catches them with room to spare.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Resource topics repeat only by accident; `action.*` topics repeat legitimately, so they are left out.
pub const DEFAULT_DEDUPE_TOPICS: [&str; 4] = ["order.*", "product.*", "customer.*", "coupon.*"];

/// A validated configuration: everything in it has been checked, so the code that uses it never re-checks.
#[derive(Debug)]
pub struct Config {
    /// The file it was loaded from, for messages.
    pub file: PathBuf,
    /// Where the webhook listener binds.
    pub listen: SocketAddr,
    /// Where the admin listener (`/metrics`, `/healthz`, `/readyz`) binds.
    pub admin_listen: SocketAddr,
    /// Time for requests and delivery attempts in flight to finish once a stop begins.
    pub shutdown_grace: Duration,
    /// Whether the webhook listener speaks HTTP/2 (by prior knowledge, or by ALPN over TLS). Off unless
    /// configured: WooCommerce speaks HTTP/1.x, and HTTP/2 brings an attack surface of its own.
    pub http2: bool,
    /// TLS on the webhook listener, when configured: the certificate and key, loaded and checked.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bounds on each request.
    pub limits: Limits,
    /// The proxies whose `X-Forwarded-For` names the client of a request (`trusted_proxies`); from any
    /// other peer the header is ignored.
    pub trusted_proxies: TrustedProxies,
    /// One per WooCommerce store, in file order.
    pub sources: Vec<Arc<Source>>,
    /// Routes in file order: in proxy mode the first that matches wins.
    pub routes: Routes,
    /// What happens to a verified delivery that no route matches (in proxy mode, never `Accept`).
    pub unrouted: Unrouted,
    /// How verified deliveries reach their upstreams: proxy mode, or queue mode with its settings (the
    /// `delivery` section and the top-level `dedupe` section).
    pub delivery: Delivery,
    /// How logs are written.
    pub log: Log,
    /// The files the configuration reads besides itself (secret files, TLS certificate and key), watched
    /// for changes so that a rotated secret or a renewed certificate is picked up.
    pub files: Vec<PathBuf>,
    /// Things that are allowed but probably not meant (a route that can never match, say).
    pub warnings: Vec<String>,
    source_by_path: HashMap<String, usize>,
}

/// Bounds on each request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A larger body is answered 413.
    pub max_body_bytes: u64,
    /// Time to receive the request line and headers.
    pub header_timeout: Duration,
    /// Time to receive the body.
    pub body_timeout: Duration,
    /// Requests answered at once; past it, 503.
    pub max_concurrent: usize,
    /// Bytes of bodies not yet verified, all requests together; past it, 503 before the body is read.
    pub max_unverified_bytes: u64,
    /// Of those, the bytes one client's bodies may hold; past it, 429.
    pub max_unverified_bytes_per_client: u64,
    /// The longest wait for the next bytes of a body; past it, 408.
    pub body_stall_timeout: Duration,
    /// A connection with no request in flight is closed after this long (an HTTP/1 keep-alive connection
    /// also has `header_timeout` to send its next request head, so the shorter of the two applies there).
    pub idle_timeout: Duration,
    /// Connections open at once; past it, new ones are closed at accept.
    pub max_connections: usize,
    /// Connections open at once from one client address; past it, its new ones are closed at accept. A
    /// trusted proxy's connections are not counted per client.
    pub max_connections_per_client: usize,
    /// Requests in flight at once from one client address (see [`Config::trusted_proxies`]); past it, 429.
    pub max_requests_per_client: usize,
}

/// The proxies in front of the listener (an Ingress, a load balancer) whose `X-Forwarded-For` is believed:
/// addresses and CIDR ranges, each checked to name what was meant (no host bits set past the prefix, never
/// every address).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    ranges: Vec<ipnet::IpNet>,
}

impl TrustedProxies {
    /// Trusts the addresses in `ranges`.
    pub fn new(ranges: Vec<ipnet::IpNet>) -> TrustedProxies {
        TrustedProxies { ranges }
    }

    /// Whether `address` is a trusted proxy. An IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`, as a
    /// listener on `[::]` sees IPv4 peers) is taken as the IPv4 address it is.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.ranges.iter().any(|range| range.contains(&address))
    }

    /// Whether no proxy is trusted (the default): every request's client is its peer.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// One WooCommerce store: the path it delivers to and the secrets it signs with.
#[derive(Debug)]
pub struct Source {
    /// The source's name, used in routes, logs and forwarded headers.
    pub name: String,
    /// The path of the Delivery URL.
    pub path: String,
    /// Checks signatures against every configured secret.
    pub verifier: Verifier,
    /// Where each secret came from, for summaries (never the secret itself).
    pub secret_origins: Vec<String>,
    /// The resolved secrets, in the order configured (for `diagnose`).
    pub secrets: Vec<Secret>,
    /// When set, only these `X-WC-Webhook-ID` values are accepted.
    pub webhook_ids: Option<BTreeSet<u64>>,
    /// When set, a verified delivery whose signed `date_modified_gmt` is older than this is answered
    /// 200 `{"status":"stale"}` and goes nowhere (a replayed capture).
    pub reject_older_than: Option<Duration>,
    /// The store's REST API, when the source has a `store` section (a source without one behaves as if
    /// hookgate knew nothing of the store's side).
    pub store: Option<StoreSettings>,
}

/// How logs are written (`RUST_LOG`, when set, overrides the level).
#[derive(Debug, Clone)]
pub struct Log {
    /// `None`: text on a terminal, JSON otherwise.
    pub format: Option<LogFormat>,
    /// A level (`info`) or a full filter (`info,hookgate::spool=debug`).
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines.
    Text,
}

/// What happens to a verified delivery that no route matches. Never a 200 for a delivery that is dropped
/// unless the file says `discard`: proxy mode, which has nowhere to keep one, rejects unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unrouted {
    /// Queue mode (its default): stored in the spool as unrouted and answered 200 once committed, kept for
    /// `delivery.keep_unrouted` for `hookgate spool replay --unrouted`. Never in force in proxy mode, where
    /// the word stands for `Discard` (with a warning).
    Accept,
    /// Answer 200 and keep nothing: the delivery is gone, and WooCommerce counts it delivered.
    Discard,
    /// Answer 404, so the delivery shows as failed in WooCommerce's webhook log (proxy mode's default).
    Reject,
}

impl Unrouted {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Unrouted::Accept => "accept",
            Unrouted::Discard => "discard",
            Unrouted::Reject => "reject",
        }
    }
}

/// How verified deliveries reach their upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Store the delivery durably, answer 200, then deliver it to every matching route with retries.
    Queue,
    /// Forward synchronously to the first matching route and relay its answer to WooCommerce.
    Proxy,
}

impl DeliveryMode {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Queue => "queue",
            DeliveryMode::Proxy => "proxy",
        }
    }
}

/// How verified deliveries reach their upstreams: the `delivery` section's mode with the settings only that
/// mode uses. The YAML keeps its flat shape (`delivery.mode`, `delivery.spool_path`, ..., and `dedupe` at the
/// top level); queue-only keys are checked in proxy mode too, and then not kept.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Forward synchronously to the first matching route and relay its answer to WooCommerce.
    Proxy,
    /// Store each delivery durably, answer 200, then deliver it to every matching route with retries.
    Queue(QueueSettings),
}

impl Delivery {
    /// The delivery mode, for logs and to tell that a reload changed it.
    pub fn mode(&self) -> DeliveryMode {
        match self {
            Delivery::Proxy => DeliveryMode::Proxy,
            Delivery::Queue(_) => DeliveryMode::Queue,
        }
    }

    /// Queue mode's settings; `None` in proxy mode.
    pub fn queue(&self) -> Option<&QueueSettings> {
        match self {
            Delivery::Proxy => None,
            Delivery::Queue(settings) => Some(settings),
        }
    }
}

/// Queue mode's settings: where the spool is, how deliveries from it are retried and pruned, and which
/// repeated deliveries are suppressed.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Where the spool is: an SQLite file, or a PostgreSQL database shared by replicas.
    pub spool: SpoolLocation,
    /// How failed attempts are retried.
    pub retry: Retry,
    /// Attempts in flight at once, per route.
    pub max_in_flight: usize,
    /// Past this many bytes in the spool, new deliveries get 503.
    pub max_spool_bytes: u64,
    /// How long delivered entries are kept before they are pruned.
    pub keep_delivered: Duration,
    /// How long deliveries no route took are kept (for `hookgate spool replay --unrouted`) before they are
    /// pruned.
    pub keep_unrouted: Duration,
    /// Suppression of repeated deliveries (the top-level `dedupe` section).
    pub dedupe: Dedupe,
}

/// Backoff between attempts: exponential with full jitter, bounded, and a time after which to give up.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// The bound of the first wait.
    pub initial_backoff: Duration,
    /// The bound no wait exceeds.
    pub max_backoff: Duration,
    /// After this long pending, a delivery becomes a dead letter.
    pub give_up_after: Duration,
}

/// Suppression of deliveries that repeat an earlier one (same source, topic and body bytes).
#[derive(Debug, Clone)]
pub struct Dedupe {
    /// How long a delivery is remembered; zero turns suppression off.
    pub window: Duration,
    /// The topics it applies to.
    pub topics: Vec<TopicPattern>,
}

impl Dedupe {
    /// True when deliveries of this topic are checked for repeats.
    pub fn applies_to(&self, topic: &str) -> bool {
        !self.window.is_zero() && self.topics.iter().any(|p| p.matches(topic))
    }
}

impl Config {
    /// Reads and validates a configuration file. Relative paths inside it are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
        Config::from_yaml(&text, path)
    }

    /// Validates configuration text as if read from `path`.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| ConfigError::syntax(path, text, &e))?;
        check::check(raw, path, text).map_err(|problems| ConfigError { file: path.to_path_buf(), problems })
    }

    /// Only the routes, checked as [`Config::load`] checks them, for `hookgate spool replay --unrouted`:
    /// it routes deliveries as the file routes them now, from an operator's shell that may not have the
    /// secrets' environment, so no secret is resolved.
    pub fn load_routes(path: &Path) -> Result<Routes, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
        let raw: RawConfig = serde_saphyr::from_str(&text).map_err(|e| ConfigError::syntax(path, &text, &e))?;
        check::check_routes(&raw, path, &text).map_err(|problems| ConfigError { file: path.to_path_buf(), problems })
    }

    /// The source whose Delivery URL has this path.
    pub fn source_for_path(&self, path: &str) -> Option<&Arc<Source>> {
        self.source_by_path.get(path).map(|&i| &self.sources[i])
    }
}

/// Everything wrong with a configuration file.
#[derive(Debug)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// One entry per problem, each already rendered with its position and a fix.
    pub problems: Vec<String>,
}

impl ConfigError {
    /// The configuration file itself cannot be read.
    fn unreadable(path: &Path, error: &std::io::Error) -> ConfigError {
        ConfigError {
            file: path.to_path_buf(),
            problems: vec![format!(
                "{}: cannot read the configuration file: {error}; check the path given to --config or HOOKGATE_CONFIG",
                path.display()
            )],
        }
    }

    /// A YAML or type error from serde-saphyr, with its snippet; on a line that may hold a secret, the
    /// message is hookgate's own and the snippet is redacted.
    fn syntax(path: &Path, text: &str, error: &serde_saphyr::Error) -> ConfigError {
        let hidden = secret_lines(text);
        let rendered = error.to_string();
        let file = path.display().to_string();
        let problem = match error.location() {
            Some(at) => {
                // serde-saphyr renders "error: line L column C: message" and then a snippet of the file.
                let mut lines = rendered.lines();
                let first = lines.next().unwrap_or_default();
                let mut message =
                    first.split_once(": ").and_then(|(_, rest)| rest.split_once(": ")).map_or(first, |(_, m)| m);
                // serde's messages quote the value they could not use ("unknown variant `s3cret`"): on a
                // line that may hold a secret, the message is replaced, in the snippet too. On a plain
                // `value:` line the fault is how the secret is written (`&pss` is an anchor): say to quote it.
                let original: Vec<&str> = text.lines().collect();
                let line = usize::try_from(at.line()).unwrap_or(usize::MAX);
                let replacement = if hidden.contains(&line) {
                    Some(SECRET_ENTRY_PROBLEM)
                } else if line.checked_sub(1).and_then(|i| original.get(i)).is_some_and(|l| is_unquoted_value_line(l)) {
                    Some(UNQUOTED_VALUE_PROBLEM)
                } else {
                    None
                };
                let original_message = message;
                if let Some(replacement) = replacement {
                    message = replacement;
                }
                let snippet: Vec<String> = lines
                    .map(|l| {
                        let l = l.replace("<input>", &file);
                        let l = match replacement {
                            Some(replacement) => l.replace(original_message, replacement),
                            None => l,
                        };
                        redact_snippet_line(&l, &hidden, &original)
                    })
                    .collect();
                format!("{file}:{}:{}: {message}\n{}", at.line(), at.column(), snippet.join("\n"))
            }
            None => format!("{file}: {rendered}"),
        };
        ConfigError { file: path.to_path_buf(), problems: vec![problem] }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        writeln!(f, "{} has {count} problem{}:", self.file.display(), if count == 1 { "" } else { "s" })?;
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests;
