//! The checker: turns the raw shapes into runtime values, collecting every problem with its file, line and
//! column, a snippet of the file (secrets redacted) and how to fix it.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::raw::{RawConfig, RawDedupe, RawDelivery, RawLimits, RawLog, RawRoute, RawSecret, RawSource, RawTls};
use super::redact::{redact_line, secret_lines};
// The runtime types and their defaults.
use super::*;
use crate::route::{Route, TopicPattern};
use crate::secret::{self, ResolveError, Secret, SecretOrigin};
use crate::verify::{Algorithm, Verifier};

/// Checks the raw shapes of the file at `path` (whose text is `text`) and builds the configuration: whole,
/// or not at all with every problem found, each rendered with its position.
pub(super) fn check(raw: RawConfig, path: &Path, text: &str) -> Result<Config, Vec<String>> {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut checker = Checker { file: path, text, base_dir, problems: Vec::new(), files: Vec::new() };
    let config = checker.config(raw);
    if checker.problems.is_empty() { Ok(config) } else { Err(checker.problems) }
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

    fn duration(&mut self, value: Option<&Spanned<String>>, default: Duration, key: &str) -> Duration {
        self.duration_or_zero(value, default, key, false)
    }

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

    /// The whole configuration. Its steps run in a fixed order, which is the order problems are reported in:
    /// listeners, limits, sources, routes, delivery, dedupe, log.
    fn config(&mut self, raw: RawConfig) -> Config {
        let listen = self.address(raw.listen.as_ref(), DEFAULT_LISTEN, "listen", "0.0.0.0:8080");
        let admin_listen =
            self.address(raw.admin_listen.as_ref(), DEFAULT_ADMIN_LISTEN, "admin_listen", "127.0.0.1:9090");
        let tls = raw.tls.as_ref().and_then(|tls| self.tls(tls));
        let shutdown_grace =
            self.duration_or_zero(raw.shutdown_grace.as_ref(), DEFAULT_SHUTDOWN_GRACE, "shutdown_grace", true);
        let limits = self.limits(&raw.limits);
        let (sources, source_by_path) = self.sources(&raw.sources);
        let source_names: Vec<&str> = raw.sources.value.iter().map(|s| s.name.value.as_str()).collect();
        let routes = self.routes(&raw.routes, &source_names);
        let only_source = match source_names.as_slice() {
            [only] => Some(*only),
            _ => None,
        };
        let mode = raw.delivery.mode.unwrap_or(DeliveryMode::Queue);
        let warnings = route_warnings(self.file, &routes, mode, only_source);
        let delivery = self.delivery(&raw.delivery, &raw.dedupe);
        let log = self.log(&raw.log);
        Config {
            file: self.file.to_path_buf(),
            listen,
            admin_listen,
            shutdown_grace,
            tls,
            limits,
            sources,
            routes: routes.into_iter().map(|(route, _)| route).collect(),
            unrouted: raw.unrouted.unwrap_or(Unrouted::Accept),
            delivery,
            log,
            files: std::mem::take(&mut self.files),
            warnings,
            source_by_path,
        }
    }

    /// The sources in file order, each with a name and a Delivery URL path of its own, and which source
    /// each path belongs to.
    fn sources(&mut self, raw: &Spanned<Vec<RawSource>>) -> (Vec<Arc<Source>>, HashMap<String, usize>) {
        if raw.value.is_empty() {
            self.problem(raw, "sources is empty: add one source per WooCommerce store (name, path, secrets)");
        }
        let mut sources = Vec::new();
        let mut source_by_path = HashMap::new();
        let mut first_name_line: HashMap<String, u64> = HashMap::new();
        let mut first_path_owner: HashMap<String, String> = HashMap::new();
        for raw_source in &raw.value {
            if let Some(line) = first_name_line.get(&raw_source.name.value) {
                self.problem(
                    &raw_source.name,
                    format!(
                        "source name {:?} is already used on line {line}: give each source its own name",
                        raw_source.name.value
                    ),
                );
            } else {
                first_name_line.insert(raw_source.name.value.clone(), raw_source.name.referenced.line());
            }
            if let Some(other) = first_path_owner.get(&raw_source.path.value) {
                self.problem(
                    &raw_source.path,
                    format!(
                        "path {:?} is already the path of source {other:?}: each store needs its own Delivery URL path",
                        raw_source.path.value
                    ),
                );
            } else {
                first_path_owner.insert(raw_source.path.value.clone(), raw_source.name.value.clone());
            }
            if let Some(source) = self.source(raw_source) {
                source_by_path.entry(source.path.clone()).or_insert(sources.len());
                sources.push(Arc::new(source));
            }
        }
        (sources, source_by_path)
    }

    /// The routes that check out, in file order, each with the line of its name; each name used once.
    fn routes(&mut self, raw: &[RawRoute], source_names: &[&str]) -> Vec<(Route, u64)> {
        let mut routes = Vec::new();
        let mut route_lines: HashMap<String, u64> = HashMap::new();
        for raw_route in raw {
            let line = raw_route.name.referenced.line();
            if let Some(first) = route_lines.get(&raw_route.name.value) {
                self.problem(
                    &raw_route.name,
                    format!(
                        "route name {:?} is already used on line {first}: give each route its own name",
                        raw_route.name.value
                    ),
                );
            } else {
                route_lines.insert(raw_route.name.value.clone(), line);
            }
            if let Some(route) = self.route(raw_route, source_names) {
                routes.push((route, line));
            }
        }
        routes
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

    fn limits(&mut self, raw: &RawLimits) -> Limits {
        let max_body_bytes = match &raw.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(spanned) if spanned.value == 0 || spanned.value > MAX_MAX_BODY_BYTES => {
                self.problem(spanned, format!("limits.max_body_bytes must be between 1 and {MAX_MAX_BODY_BYTES} (64 MiB); the default, {DEFAULT_MAX_BODY_BYTES}, fits WooCommerce's largest orders"));
                DEFAULT_MAX_BODY_BYTES
            }
            Some(spanned) => spanned.value,
        };
        let max_concurrent = match &raw.max_concurrent {
            None => DEFAULT_MAX_CONCURRENT,
            Some(n) if n.value == 0 || n.value > 1_000_000 => {
                self.problem(n, "limits.max_concurrent must be between 1 and 1000000");
                DEFAULT_MAX_CONCURRENT
            }
            Some(n) => n.value,
        };
        Limits {
            max_concurrent,
            max_body_bytes,
            header_timeout: self.duration(raw.header_timeout.as_ref(), DEFAULT_HEADER_TIMEOUT, "limits.header_timeout"),
            body_timeout: self.duration(raw.body_timeout.as_ref(), DEFAULT_BODY_TIMEOUT, "limits.body_timeout"),
        }
    }

    /// Loads the certificate chain and key (PEM) into a server configuration offering HTTP/2 and HTTP/1.1.
    fn tls(&mut self, raw: &RawTls) -> Option<Arc<rustls::ServerConfig>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert_path = self.base_dir.join(&raw.cert_file.value);
        let key_path = self.base_dir.join(&raw.key_file.value);
        self.files.extend([cert_path.clone(), key_path.clone()]);
        let chain: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_file_iter(&cert_path).and_then(|certs| certs.collect());
        let chain = match chain {
            Ok(chain) if !chain.is_empty() => chain,
            Ok(_) => {
                self.problem(
                    &raw.cert_file,
                    format!(
                        "tls.cert_file {} holds no certificate: give a PEM file with the certificate chain",
                        cert_path.display()
                    ),
                );
                return None;
            }
            Err(e) => {
                self.problem(
                    &raw.cert_file,
                    format!(
                        "cannot read tls.cert_file {} ({e}): give a readable PEM certificate chain",
                        cert_path.display()
                    ),
                );
                return None;
            }
        };
        let key = match PrivateKeyDer::from_pem_file(&key_path) {
            Ok(key) => key,
            Err(e) => {
                // The key's bytes are never shown, only the file and the kind of error.
                self.problem(
                    &raw.key_file,
                    format!("cannot read tls.key_file {} ({e}): give a readable PEM private key", key_path.display()),
                );
                return None;
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key));
        match config {
            Ok(mut config) => {
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Some(Arc::new(config))
            }
            Err(e) => {
                self.problem(&raw.key_file, format!("the TLS key does not fit the certificate ({e}): give the key of the first certificate in tls.cert_file"));
                None
            }
        }
    }

    /// The delivery mode and, in queue mode, its settings. The queue-only keys (and `dedupe`) are checked in
    /// proxy mode too, as they always were, so a mistake in them shows before the mode is switched.
    fn delivery(&mut self, raw: &RawDelivery, raw_dedupe: &RawDedupe) -> Delivery {
        let settings = self.queue_settings(raw, raw_dedupe);
        match raw.mode.unwrap_or(DeliveryMode::Queue) {
            DeliveryMode::Proxy => Delivery::Proxy,
            DeliveryMode::Queue => Delivery::Queue(settings),
        }
    }

    /// Queue mode's settings: the `delivery` section's queue keys, then the `dedupe` section.
    fn queue_settings(&mut self, raw: &RawDelivery, raw_dedupe: &RawDedupe) -> QueueSettings {
        let spool_path = match &raw.spool_path {
            Some(path) if path.value.trim().is_empty() => {
                self.problem(path, "delivery.spool_path is empty: write a file path such as ./data/hookgate.db");
                PathBuf::from(DEFAULT_SPOOL_PATH)
            }
            Some(path) => self.base_dir.join(&path.value),
            None => self.base_dir.join(DEFAULT_SPOOL_PATH),
        };
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
        let max_in_flight = match &raw.max_in_flight {
            None => DEFAULT_MAX_IN_FLIGHT,
            Some(n) if n.value == 0 || n.value > 1024 => {
                self.problem(n, "delivery.max_in_flight must be between 1 and 1024");
                DEFAULT_MAX_IN_FLIGHT
            }
            Some(n) => n.value,
        };
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
        let dedupe = self.dedupe(raw_dedupe);
        QueueSettings { spool_path, retry, max_in_flight, max_spool_bytes, keep_delivered, dedupe }
    }

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

    fn source(&mut self, raw: &RawSource) -> Option<Source> {
        let before = self.problems.len();
        let name = raw.name.value.clone();
        if !is_plain_name(&name) {
            self.problem(&raw.name, format!("source name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.': it appears in logs, metrics and headers"));
        }
        let path = raw.path.value.clone();
        if !path.starts_with('/')
            || path.contains(['?', '#'])
            || path.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            self.problem(&raw.path, format!("path {path:?} must start with '/' and hold no query, fragment or space: write the path part of the Delivery URL, such as /webhooks/main-store"));
        }
        if raw.secrets.value.is_empty() {
            self.problem(&raw.secrets, format!("source {name:?} has no secrets: add at least one (env:, file: or value:), the webhook's secret from WooCommerce"));
        }
        let mut secrets = Vec::new();
        let mut secret_origins = Vec::new();
        for raw_secret in &raw.secrets.value {
            if let Some((secret, origin)) = self.secret(raw_secret, &name) {
                secrets.push(secret);
                secret_origins.push(origin);
            }
        }
        let webhook_ids = raw.webhook_ids.as_ref().map(|ids| {
            if ids.value.is_empty() {
                self.problem(ids, "webhook_ids is empty, which would refuse every delivery: list the allowed X-WC-Webhook-ID values, or remove the key");
            }
            ids.value.iter().copied().collect()
        });
        let reject_older_than = raw
            .reject_older_than
            .as_ref()
            .map(|value| self.duration(Some(value), Duration::ZERO, &format!("sources[{name}].reject_older_than")));
        if self.problems.len() > before {
            return None;
        }
        let algorithm = raw.algorithm.unwrap_or(Algorithm::Sha256);
        Some(Source {
            verifier: Verifier::new(algorithm, &secrets),
            name,
            path,
            secret_origins,
            secrets,
            webhook_ids,
            reject_older_than,
        })
    }

    /// One secret of `source`, resolved, and where it came from (for summaries); the resolver's errors are
    /// told with the source's name and how to fix them.
    fn secret(&mut self, raw: &Spanned<RawSecret>, source: &str) -> Option<(Secret, String)> {
        let (origin, label) = match &raw.value {
            RawSecret::Env(var) => (SecretOrigin::Env(var.clone()), format!("env {var}")),
            RawSecret::File(file) => {
                let path = self.base_dir.join(file);
                self.files.push(path.clone());
                let label = format!("file {}", path.display());
                (SecretOrigin::File(path), label)
            }
            RawSecret::Value(value) => (
                SecretOrigin::Value(Secret::new(value.as_bytes().to_vec())),
                "value (literal in the config file)".to_owned(),
            ),
        };
        match secret::resolve(&origin) {
            Ok(secret) => Some((secret, label)),
            Err(error) => {
                let message = match error {
                    ResolveError::EnvUnset(var) => format!(
                        "environment variable {var} is not set (secret of source {source:?}): export it, or use file: or value:"
                    ),
                    ResolveError::Unreadable { path, error } => format!(
                        "cannot read secret file {} ({error}) for source {source:?}: check the path (relative paths start at the config file's folder) and its permissions",
                        path.display()
                    ),
                    ResolveError::Empty => format!(
                        "the {label} secret of source {source:?} is empty: WooCommerce never signs with an empty secret; set the webhook's secret"
                    ),
                };
                self.problem(raw, message);
                None
            }
        }
    }

    fn route(&mut self, raw: &RawRoute, sources: &[&str]) -> Option<Route> {
        let before = self.problems.len();
        let name = raw.name.value.clone();
        if !is_plain_name(&name) {
            self.problem(&raw.name, format!("route name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.': it appears in logs, metrics and headers"));
        }
        if let Some(source) = &raw.source
            && !sources.contains(&source.value.as_str())
        {
            self.problem(source, format!("route {name:?} names source {:?}, which is not defined: use one of {sources:?}, or remove source: to take every source", source.value));
        }
        if raw.topics.value.is_empty() {
            self.problem(
                &raw.topics,
                format!(
                    "route {name:?} has no topics: list topics such as \"order.created\" or globs such as \"order.*\""
                ),
            );
        }
        let mut topics = Vec::new();
        for topic in &raw.topics.value {
            match TopicPattern::parse(&topic.value) {
                Ok(pattern) => topics.push(pattern),
                Err(message) => self.problem(topic, message),
            }
        }
        let upstream = match parse_upstream(&raw.upstream.value) {
            Ok(uri) => Some(uri),
            Err(message) => {
                self.problem(&raw.upstream, message);
                None
            }
        };
        let timeout = self.duration(raw.timeout.as_ref(), DEFAULT_ROUTE_TIMEOUT, "timeout");
        if self.problems.len() > before {
            return None;
        }
        Some(Route { name, source: raw.source.as_ref().map(|s| s.value.clone()), topics, upstream: upstream?, timeout })
    }
}

/// Warnings about routes that check out, each with the line of its name: a timeout WooCommerce does not
/// wait for, and, in proxy mode, a route that an earlier one hides (it would never be used). Only a
/// configuration without problems is ever used, so its route names are unique and each line is its own.
fn route_warnings(file: &Path, routes: &[(Route, u64)], mode: DeliveryMode, only_source: Option<&str>) -> Vec<String> {
    let mut warnings = Vec::new();
    for (index, (route, line)) in routes.iter().enumerate() {
        if route.timeout > WOOCOMMERCE_TIMEOUT {
            warnings.push(format!(
                "{}:{line}: route {:?} has a timeout above WooCommerce's own 60 s: in proxy mode WooCommerce gives up first and counts a failure",
                file.display(),
                route.name
            ));
        }
        if mode == DeliveryMode::Proxy
            && let Some((earlier, earlier_line)) =
                routes[..index].iter().find(|(earlier, _)| earlier.hides(route, only_source))
        {
            warnings.push(format!(
                "{}:{line}: route {:?} is never used in proxy mode: route {:?} (line {earlier_line}) comes first and takes every delivery it would take",
                file.display(),
                route.name,
                earlier.name,
            ));
        }
    }
    warnings
}

/// Names appear in logs, metric labels and headers, so they are kept plain.
fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// An upstream URL: absolute, http or https, with a host, and no credentials in it.
fn parse_upstream(text: &str) -> Result<http::Uri, String> {
    let authority = text.split_once("://").map_or(text, |(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""));
    if authority.contains('@') {
        // Never echo the URL here: what stands before '@' is a password.
        return Err(
            "upstream holds credentials (user:password@): hookgate does not send them; protect the service another way"
                .into(),
        );
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("upstream {text:?} is not a URL ({e}): write it in full, such as \"http://127.0.0.1:3000/woocommerce/orders\""))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("upstream {text:?} must start with http:// or https://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!(
            "upstream {text:?} has no host: write it in full, such as \"http://127.0.0.1:3000/woocommerce/orders\""
        ));
    };
    if authority.host().is_empty() {
        return Err(format!("upstream {text:?} has no host"));
    }
    Ok(uri)
}
