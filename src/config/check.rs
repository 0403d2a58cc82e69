//! The checker: turns the raw shapes into runtime values, collecting every problem with its file, line and
//! column, a snippet of the file (secrets redacted) and how to fix it. This file holds the checker, the
//! order of its steps and the single-valued sections; `sources` and `routes` check the lists, `upstream` a
//! route's `tls` and `headers`, and `pem` reads the certificate and key files they all name.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::raw::{RawConfig, RawDedupe, RawDelivery, RawLimits, RawLog, RawTls};
use super::redact::{redact_line, secret_lines};
use super::traps::secret_value_warnings;
use super::*; // the runtime types and their defaults
use crate::route::TopicPattern;
use crate::secret::ResolveError;

mod pem;
mod routes;
mod sources;
mod spool;
mod store;
mod upstream;

use routes::route_warnings;
pub(super) use spool::{postgres_url_origin, resolve_postgres_url};

/// Checks the raw shapes of the file at `path` (whose text is `text`) and builds the configuration: whole,
/// or not at all with every problem found, each rendered with its position.
pub(super) fn check(raw: RawConfig, path: &Path, text: &str) -> Result<Config, Vec<String>> {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut checker = Checker { file: path, text, base_dir, problems: Vec::new(), files: Vec::new() };
    let config = checker.config(raw);
    if checker.problems.is_empty() { Ok(config) } else { Err(checker.problems) }
}

/// Checks only the routes of the file at `path` (whose text is `text`), as [`check`] checks them, without
/// resolving any secret.
pub(super) fn check_routes(raw: &RawConfig, path: &Path, text: &str) -> Result<crate::route::Routes, Vec<String>> {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut checker = Checker { file: path, text, base_dir, problems: Vec::new(), files: Vec::new() };
    let source_names: Vec<&str> = raw.sources.value.iter().map(|s| s.name.value.as_str()).collect();
    let routes = checker.routes(&raw.routes, &source_names);
    if checker.problems.is_empty() {
        Ok(routes.into_iter().map(|(route, _)| route).collect())
    } else {
        Err(checker.problems)
    }
}

/// Collects problems while turning raw shapes into runtime values.
struct Checker<'a> {
    /// The file being checked, for positions.
    file: &'a Path,
    /// Its text, for snippets.
    text: &'a str,
    /// Relative paths in the file start here.
    base_dir: PathBuf,
    /// Every problem found so far, rendered.
    problems: Vec<String>,
    /// The files the configuration reads besides itself.
    files: Vec<PathBuf>,
}

impl Checker<'_> {
    /// Records a problem at a position, rendered with a snippet of the file like serde-saphyr's own errors.
    fn problem<T>(&mut self, at: &Spanned<T>, message: impl fmt::Display) {
        let (line, column) = (at.referenced.line(), at.referenced.column());
        let file = self.file.display();
        let mut rendered = format!("{file}:{line}:{column}: {message}\n --> {file}:{line}:{column}\n  |");
        let line_index = usize::try_from(line).unwrap_or(usize::MAX).saturating_sub(1);
        let first = line_index.saturating_sub(2);
        let hidden = secret_lines(self.text);
        for (index, text) in self.text.lines().enumerate().skip(first).take(line_index + 1 - first) {
            let shown = if hidden.contains(&(index + 1)) { "<redacted>".to_owned() } else { redact_line(text) };
            rendered.push_str(&format!("\n{:>3} | {shown}", index + 1));
        }
        let pad = " ".repeat(usize::try_from(column).unwrap_or(1).saturating_sub(1));
        rendered.push_str(&format!("\n    | {pad}^ here"));
        self.problems.push(rendered);
    }

    /// A duration for `key` longer than zero, or `default` when it is absent (and after a problem is recorded).
    fn duration(&mut self, value: Option<&Spanned<String>>, default: Duration, key: &str) -> Duration {
        self.duration_or_zero(value, default, key, false)
    }

    /// A duration for `key`, zero allowed when `zero_allowed` (it turns something off), or `default` when
    /// it is absent (and after a problem is recorded).
    fn duration_or_zero(
        &mut self,
        value: Option<&Spanned<String>>,
        default: Duration,
        key: &str,
        zero_allowed: bool,
    ) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.value.trim()) {
            Ok(d) if zero_allowed || !d.is_zero() => d,
            Ok(_) => {
                self.problem(value, format!("{key} must be longer than zero: write a duration such as \"10s\""));
                default
            }
            Err(e) => {
                self.problem(
                    value,
                    format!("{key}: {:?} is not a duration ({e}): write a number and a unit, such as \"10s\", \"5m\" or \"1h\"", value.value),
                );
                default
            }
        }
    }

    /// A socket address for `key`, or `default` when it is absent (and after a problem is recorded).
    fn address(&mut self, value: Option<&Spanned<String>>, default: &str, key: &str, example: &str) -> SocketAddr {
        let default = || default.parse().expect("the default address parses");
        let Some(spanned) = value else { return default() };
        spanned.value.parse().unwrap_or_else(|e| {
            self.problem(
                spanned,
                format!("{key}: {:?} is not an address ({e}): write IP:PORT, such as \"{example}\"", spanned.value),
            );
            default()
        })
    }

    /// `admin_listen` may not take the webhook listener's address (or one a wildcard of it covers): the
    /// second listener could not bind, and metrics would sit on the port WooCommerce reaches. Port 0 is a
    /// port the system picks for each, never shared.
    fn listeners_apart(&mut self, raw: &RawConfig, listen: SocketAddr, admin_listen: SocketAddr) {
        let covers =
            |wildcard: IpAddr, other: IpAddr| wildcard.is_unspecified() && (wildcard.is_ipv6() || other.is_ipv4());
        let (a, b) = (listen.ip(), admin_listen.ip());
        let shared =
            listen.port() != 0 && listen.port() == admin_listen.port() && (a == b || covers(a, b) || covers(b, a));
        if !shared {
            return;
        }
        // Where the file wrote the clash: admin_listen, or listen when admin_listen is the default.
        if let Some(at) = &raw.admin_listen {
            self.problem(at, format!("admin_listen {admin_listen} is the webhook listener's address (listen: {listen}): give the admin listener (metrics, health) a port of its own, such as \"127.0.0.1:9090\""));
        } else if let Some(at) = &raw.listen {
            self.problem(at, format!("listen {listen} takes the admin listener's default address ({DEFAULT_ADMIN_LISTEN}): set admin_listen to another port, or listen on another (WooCommerce delivers to 80, 443 and 8080)"));
        }
    }

    /// The whole configuration. Its steps run in a fixed order, which is the order problems are reported in:
    /// listeners, limits, trusted proxies, sources, routes, delivery, dedupe, log.
    fn config(&mut self, raw: RawConfig) -> Config {
        let listen = self.address(raw.listen.as_ref(), DEFAULT_LISTEN, "listen", "0.0.0.0:8080");
        let admin_listen =
            self.address(raw.admin_listen.as_ref(), DEFAULT_ADMIN_LISTEN, "admin_listen", "127.0.0.1:9090");
        self.listeners_apart(&raw, listen, admin_listen);
        let http2 = raw.http2.unwrap_or(false);
        let tls = raw.tls.as_ref().and_then(|tls| self.tls(tls, http2));
        let shutdown_grace =
            self.duration_or_zero(raw.shutdown_grace.as_ref(), DEFAULT_SHUTDOWN_GRACE, "shutdown_grace", true);
        let limits = self.limits(&raw.limits);
        let trusted_proxies = self.trusted_proxies(raw.trusted_proxies.as_deref().unwrap_or_default());
        let (sources, source_by_path) = self.sources(&raw.sources);
        let source_names: Vec<&str> = raw.sources.value.iter().map(|s| s.name.value.as_str()).collect();
        let routes = self.routes(&raw.routes, &source_names);
        let only_source = match source_names.as_slice() {
            [only] => Some(*only),
            _ => None,
        };
        let mode = raw.delivery.mode.unwrap_or(DeliveryMode::Queue);
        let mut warnings = secret_value_warnings(self.file, self.text);
        warnings.extend(route_warnings(self.file, &routes, mode, only_source));
        warnings.extend(self.topic_warnings(&raw.routes));
        warnings.extend(store::store_warnings(self.file, &raw.sources.value, mode));
        let unrouted = self.unrouted(raw.unrouted.as_ref(), mode, &mut warnings);
        let delivery = self.delivery(&raw.delivery, &raw.dedupe);
        let log = self.log(&raw.log);
        Config {
            file: self.file.to_path_buf(),
            listen,
            admin_listen,
            shutdown_grace,
            http2,
            tls,
            limits,
            trusted_proxies,
            sources,
            routes: routes.into_iter().map(|(route, _)| route).collect(),
            unrouted,
            delivery,
            log,
            files: std::mem::take(&mut self.files),
            warnings,
            source_by_path,
        }
    }

    /// `unrouted`, by mode: queue mode keeps an unrouted delivery unless told otherwise (`accept`); proxy
    /// mode has nowhere to keep one, so it rejects it (404) unless told `discard`. An `accept` written in
    /// proxy mode (as configs copied from older examples say) is taken as `reject`, with a warning: a 200
    /// for a delivery that is dropped is never given without the file saying `discard`.
    fn unrouted(&self, raw: Option<&Spanned<Unrouted>>, mode: DeliveryMode, warnings: &mut Vec<String>) -> Unrouted {
        match (mode, raw.map(|r| r.value)) {
            (DeliveryMode::Queue, None) => Unrouted::Accept,
            (DeliveryMode::Proxy, None) => Unrouted::Reject,
            (DeliveryMode::Proxy, Some(Unrouted::Accept)) => {
                let line = raw.map_or(0, |r| r.referenced.line());
                warnings.push(format!(
                    "{}:{line}: unrouted: accept keeps a delivery no route takes in the spool, and proxy mode has none: such deliveries are answered 404 (WooCommerce logs a failed delivery), as unrouted: reject says; write unrouted: reject to say so, or unrouted: discard to answer 200 and drop them",
                    self.file.display()
                ));
                Unrouted::Reject
            }
            (_, Some(unrouted)) => unrouted,
        }
    }

    /// `log.level` (checked as a tracing filter) and `log.format`.
    fn log(&mut self, raw: &RawLog) -> Log {
        let level = match &raw.level {
            None => "info".to_owned(),
            Some(level) => {
                if tracing_subscriber::EnvFilter::try_new(&level.value).is_err() {
                    self.problem(
                        level,
                        format!(
                            "log.level {:?} is not a level or filter: write error, warn, info, debug or trace",
                            level.value
                        ),
                    );
                }
                level.value.clone()
            }
        };
        Log { format: raw.format, level }
    }

    /// The `limits` section, each bound within what memory and the runtime can take.
    fn limits(&mut self, raw: &RawLimits) -> Limits {
        let max_body_bytes = match &raw.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(spanned) if spanned.value == 0 || spanned.value > MAX_MAX_BODY_BYTES => {
                self.problem(spanned, format!("limits.max_body_bytes must be between 1 and {MAX_MAX_BODY_BYTES} (64 MiB); the default, {DEFAULT_MAX_BODY_BYTES}, fits WooCommerce's largest orders"));
                DEFAULT_MAX_BODY_BYTES
            }
            Some(spanned) => spanned.value,
        };
        let max_concurrent =
            self.count(raw.max_concurrent.as_ref(), DEFAULT_MAX_CONCURRENT, 1_000_000, "limits.max_concurrent");
        let max_unverified_bytes = match &raw.max_unverified_bytes {
            None => DEFAULT_MAX_UNVERIFIED_BYTES,
            Some(n) if n.value < max_body_bytes => {
                self.problem(n, format!("limits.max_unverified_bytes must be at least limits.max_body_bytes ({max_body_bytes}), or no large body could ever be read"));
                DEFAULT_MAX_UNVERIFIED_BYTES
            }
            Some(n) => n.value,
        };
        let max_unverified_bytes_per_client = match &raw.max_unverified_bytes_per_client {
            None => DEFAULT_MAX_UNVERIFIED_BYTES_PER_CLIENT.max(max_body_bytes).min(max_unverified_bytes),
            Some(n) if n.value < max_body_bytes || n.value > max_unverified_bytes => {
                self.problem(n, format!("limits.max_unverified_bytes_per_client must be between limits.max_body_bytes ({max_body_bytes}) and limits.max_unverified_bytes ({max_unverified_bytes}): one client must be able to send its largest body, and cannot hold more than all"));
                max_body_bytes
            }
            Some(n) => n.value,
        };
        let max_connections =
            self.count(raw.max_connections.as_ref(), DEFAULT_MAX_CONNECTIONS, 1_000_000, "limits.max_connections");
        let max_connections_per_client = self.count(
            raw.max_connections_per_client.as_ref(),
            DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            1_000_000,
            "limits.max_connections_per_client",
        );
        let max_requests_per_client = self.count(
            raw.max_requests_per_client.as_ref(),
            DEFAULT_MAX_REQUESTS_PER_CLIENT,
            1_000_000,
            "limits.max_requests_per_client",
        );
        Limits {
            max_concurrent,
            max_connections,
            max_connections_per_client,
            max_requests_per_client,
            max_unverified_bytes,
            max_unverified_bytes_per_client,
            body_stall_timeout: self.duration(
                raw.body_stall_timeout.as_ref(),
                DEFAULT_BODY_STALL_TIMEOUT,
                "limits.body_stall_timeout",
            ),
            idle_timeout: self.duration(raw.idle_timeout.as_ref(), DEFAULT_IDLE_TIMEOUT, "limits.idle_timeout"),
            max_body_bytes,
            header_timeout: self.duration(raw.header_timeout.as_ref(), DEFAULT_HEADER_TIMEOUT, "limits.header_timeout"),
            body_timeout: self.duration(raw.body_timeout.as_ref(), DEFAULT_BODY_TIMEOUT, "limits.body_timeout"),
        }
    }

    /// `trusted_proxies`: each entry an address (`10.0.0.1`, `::1`) or a CIDR range (`10.0.0.0/8`). A range
    /// with bits set past its prefix (`10.0.0.1/8`) is refused rather than widened, since it may mean one
    /// address; so is a range of every address, which would let any client name its own in
    /// `X-Forwarded-For`.
    fn trusted_proxies(&mut self, raw: &[Spanned<String>]) -> TrustedProxies {
        let mut ranges = Vec::new();
        for entry in raw {
            let written = entry.value.trim();
            let range = if written.contains('/') {
                written.parse::<ipnet::IpNet>().map_err(|e| e.to_string())
            } else {
                written
                    .parse::<std::net::IpAddr>()
                    .map(|ip| ipnet::IpNet::from(ip.to_canonical()))
                    .map_err(|e| e.to_string())
            };
            let problem = match range {
                Ok(range) if range.prefix_len() == 0 => format!(
                    "trusted_proxies: {written:?} trusts every address, so any client could name its own in X-Forwarded-For and escape the per-client limits: list the proxies' addresses or their subnet, such as \"10.0.0.0/8\""
                ),
                Ok(range) if range != range.trunc() => format!(
                    "trusted_proxies: {written:?} has bits set past its /{} prefix: write \"{}\" for the whole range, or \"{}\" for the one address",
                    range.prefix_len(),
                    range.trunc(),
                    range.addr()
                ),
                Ok(range) => {
                    ranges.push(range);
                    continue;
                }
                Err(e) => format!(
                    "trusted_proxies: {written:?} is not an address or a CIDR range ({e}): write an address such as \"10.0.0.1\" or a range such as \"10.0.0.0/8\" (a host name is not resolved)"
                ),
            };
            self.problem(entry, problem);
        }
        TrustedProxies::new(ranges)
    }

    /// A count between 1 and `max`, or `default` when unset.
    fn count(&mut self, value: Option<&Spanned<usize>>, default: usize, max: usize, key: &str) -> usize {
        match value {
            None => default,
            Some(n) if n.value == 0 || n.value > max => {
                self.problem(n, format!("{key} must be between 1 and {max}"));
                default
            }
            Some(n) => n.value,
        }
    }

    /// Loads the certificate chain and key (PEM) into a server configuration offering HTTP/1.1 by ALPN, and
    /// HTTP/2 first when `http2` is on.
    fn tls(&mut self, raw: &RawTls, http2: bool) -> Option<Arc<rustls::ServerConfig>> {
        let chain = self.pem_certificates(&raw.cert_file, "tls.cert_file", "the certificate chain, leaf first");
        let key = self.pem_private_key(&raw.key_file, "tls.key_file");
        let (chain, key) = (chain?, key?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key));
        match config {
            Ok(mut config) => {
                config.alpn_protocols =
                    if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
                Some(Arc::new(config))
            }
            Err(e) => {
                self.problem(&raw.key_file, format!("the TLS key does not fit the certificate ({e}): give the key of the first certificate in tls.cert_file"));
                None
            }
        }
    }

    /// The delivery mode and, in queue mode, its settings. The queue-only keys (and `dedupe`) are checked in
    /// proxy mode too, so a mistake in them shows before the mode is switched.
    fn delivery(&mut self, raw: &RawDelivery, raw_dedupe: &RawDedupe) -> Delivery {
        let settings = self.queue_settings(raw, raw_dedupe);
        match raw.mode.unwrap_or(DeliveryMode::Queue) {
            DeliveryMode::Proxy => Delivery::Proxy,
            DeliveryMode::Queue => Delivery::Queue(settings),
        }
    }

    /// Queue mode's settings: the `delivery` section's queue keys, then the `dedupe` section.
    fn queue_settings(&mut self, raw: &RawDelivery, raw_dedupe: &RawDedupe) -> QueueSettings {
        let spool = self.spool_location(raw);
        let retry = Retry {
            initial_backoff: self.duration(
                raw.retry.initial_backoff.as_ref(),
                DEFAULT_INITIAL_BACKOFF,
                "delivery.retry.initial_backoff",
            ),
            max_backoff: self.duration(
                raw.retry.max_backoff.as_ref(),
                DEFAULT_MAX_BACKOFF,
                "delivery.retry.max_backoff",
            ),
            give_up_after: self.duration(
                raw.retry.give_up_after.as_ref(),
                DEFAULT_GIVE_UP_AFTER,
                "delivery.retry.give_up_after",
            ),
        };
        if retry.max_backoff < retry.initial_backoff
            && let Some(at) = raw.retry.max_backoff.as_ref()
        {
            self.problem(at, "delivery.retry.max_backoff is shorter than initial_backoff: make it at least as long");
        }
        let max_in_flight =
            self.count(raw.max_in_flight.as_ref(), DEFAULT_MAX_IN_FLIGHT, 1024, "delivery.max_in_flight");
        let max_spool_bytes = match &raw.max_spool_bytes {
            None => DEFAULT_MAX_SPOOL_BYTES,
            Some(n) if n.value < 64 * 1024 => {
                self.problem(
                    n,
                    "delivery.max_spool_bytes must be at least 65536: the empty spool alone takes tens of KiB",
                );
                DEFAULT_MAX_SPOOL_BYTES
            }
            Some(n) => n.value,
        };
        let keep_delivered =
            self.duration_or_zero(raw.keep_delivered.as_ref(), DEFAULT_KEEP_DELIVERED, "delivery.keep_delivered", true);
        // Zero would answer 200 for a delivery and prune it within the minute: `unrouted: discard` says that.
        let keep_unrouted =
            self.duration_or_zero(raw.keep_unrouted.as_ref(), DEFAULT_KEEP_UNROUTED, "delivery.keep_unrouted", false);
        let dedupe = self.dedupe(raw_dedupe);
        QueueSettings { spool, retry, max_in_flight, max_spool_bytes, keep_delivered, keep_unrouted, dedupe }
    }

    /// The `dedupe` section: its window (zero turns suppression off) and its topic patterns.
    fn dedupe(&mut self, raw: &RawDedupe) -> Dedupe {
        let window = self.duration_or_zero(raw.window.as_ref(), DEFAULT_DEDUPE_WINDOW, "dedupe.window", true);
        let topics = match &raw.topics {
            None => DEFAULT_DEDUPE_TOPICS.iter().map(|t| TopicPattern::parse(t).expect("the defaults parse")).collect(),
            Some(topics) => topics
                .iter()
                .filter_map(|t| match TopicPattern::parse(&t.value) {
                    Ok(pattern) => Some(pattern),
                    Err(message) => {
                        self.problem(t, message);
                        None
                    }
                })
                .collect(),
        };
        Dedupe { window, topics }
    }
}

/// Names appear in logs, metric labels and headers, so they are kept plain.
fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The problem told when a secret that belongs to `owner` (`source "main"`, `delivery.postgres`) cannot be
/// read: an unset variable is followed by `otherwise` (how to set it or give it another way), an unreadable
/// file by how to check it, and `empty` is the whole problem for an empty one (what that means differs
/// with what the secret is for). None of them holds the secret.
fn unresolved_secret(error: ResolveError, owner: &str, otherwise: &str, empty: String) -> String {
    match error {
        ResolveError::EnvUnset(var) => {
            format!("environment variable {var} is not set (secret of {owner}): {otherwise}")
        }
        ResolveError::Unreadable { path, error } => format!(
            "cannot read secret file {} ({error}) for {owner}: check the path (relative paths start at the config file's folder) and its permissions",
            path.display()
        ),
        ResolveError::Empty => empty,
    }
}
