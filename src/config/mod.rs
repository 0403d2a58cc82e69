//! Configuration: the YAML file is parsed into raw serde shapes, then validated once into runtime values
//! (resolved secrets, keyed verifiers, compiled topic patterns, parsed URLs). Validation either succeeds
//! whole or reports every problem it found, each with its file, line and column and how to fix it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::route::TopicPattern;
use crate::secret::Secret;
use crate::verify::{Algorithm, Verifier};

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
    /// TLS on the webhook listener, when configured: the certificate and key, loaded and checked.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bounds on each request.
    pub limits: Limits,
    /// One per WooCommerce store, in file order.
    pub sources: Vec<Arc<Source>>,
    /// Routes in file order: in proxy mode the first that matches wins.
    pub routes: Vec<Route>,
    /// What happens to a verified delivery that no route matches.
    pub unrouted: Unrouted,
    /// How verified deliveries reach their upstreams.
    pub delivery: Delivery,
    /// Suppression of repeated deliveries (queue mode).
    pub dedupe: Dedupe,
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
}

/// A rule sending deliveries of some topics to one upstream.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's name, used in logs and forwarded headers.
    pub name: String,
    /// When set, only deliveries from this source take the route.
    pub source: Option<String>,
    /// The topics taken, as exact topics or globs.
    pub topics: Vec<TopicPattern>,
    /// Where the delivery is POSTed.
    pub upstream: http::Uri,
    /// How long the upstream has to answer in full.
    pub timeout: Duration,
}

impl Route {
    /// True when a delivery from `source` with `topic` takes this route.
    pub fn matches(&self, source: &str, topic: &str) -> bool {
        self.source.as_deref().is_none_or(|s| s == source) && self.topics.iter().any(|p| p.matches(topic))
    }
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

/// What happens to a verified delivery that no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unrouted {
    /// Answer 200 and forward nothing: WooCommerce keeps the webhook active.
    Accept,
    /// Answer 404, so the mistake shows in WooCommerce's webhook log.
    Reject,
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

/// The `delivery` section.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The delivery mode.
    pub mode: DeliveryMode,
    /// The SQLite file of the queue.
    pub spool_path: PathBuf,
    /// How failed attempts are retried.
    pub retry: Retry,
    /// Attempts in flight at once, per route.
    pub max_in_flight: usize,
    /// Past this many bytes in the spool, new deliveries get 503.
    pub max_spool_bytes: u64,
    /// How long delivered entries are kept before they are pruned.
    pub keep_delivered: Duration,
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
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut check = Checker { file: path, text, base_dir, problems: Vec::new(), files: Vec::new() };
        let config = check.config(raw);
        match config {
            Some(config) if check.problems.is_empty() => Ok(config),
            _ => Err(ConfigError { file: path.to_path_buf(), problems: check.problems }),
        }
    }

    /// Only the spool's path, for `hookgate spool`: read leniently so that an operator can inspect the spool
    /// without the environment the secrets come from.
    pub fn load_spool_path(path: &Path) -> Result<PathBuf, ConfigError> {
        #[derive(Deserialize, Default)]
        struct Lenient {
            #[serde(default)]
            delivery: LenientDelivery,
        }
        #[derive(Deserialize, Default)]
        struct LenientDelivery {
            spool_path: Option<String>,
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
        let lenient: Lenient = serde_saphyr::from_str(&text).map_err(|e| ConfigError::syntax(path, &text, &e))?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(base_dir.join(lenient.delivery.spool_path.as_deref().unwrap_or(DEFAULT_SPOOL_PATH)))
    }

    /// The source whose Delivery URL has this path.
    pub fn source_for_path(&self, path: &str) -> Option<&Arc<Source>> {
        self.source_by_path.get(path).map(|&i| &self.sources[i])
    }

    /// In proxy mode: the first route, in file order, that takes this delivery.
    pub fn first_route(&self, source: &str, topic: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(source, topic))
    }

    /// In queue mode: every route that takes this delivery (fan-out).
    pub fn matching_routes<'a>(&'a self, source: &'a str, topic: &'a str) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes.iter().filter(move |r| r.matches(source, topic))
    }

    /// The route with this name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// What a YAML or type error on a line that may hold a secret says instead of serde's own message.
const SECRET_ENTRY_PROBLEM: &str = "this secrets entry cannot be read (its text is not shown: it may be the secret); each entry is one of env (a variable), file (a path) or value (the secret itself), as in config.example.yaml";

/// Everything wrong with a configuration file.
#[derive(Debug)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// One entry per problem, each already rendered with its position and a fix.
    pub problems: Vec<String>,
}

impl ConfigError {
    fn unreadable(path: &Path, error: &std::io::Error) -> ConfigError {
        ConfigError {
            file: path.to_path_buf(),
            problems: vec![format!(
                "{}: cannot read the configuration file: {error}; check the path given to --config or HOOKGATE_CONFIG",
                path.display()
            )],
        }
    }

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
                // line that may hold a secret, the message is replaced, in the snippet too.
                let on_secret_line = usize::try_from(at.line()).is_ok_and(|line| hidden.contains(&line));
                let original_message = message;
                if on_secret_line {
                    message = SECRET_ENTRY_PROBLEM;
                }
                let original: Vec<&str> = text.lines().collect();
                let snippet: Vec<String> = lines
                    .map(|l| {
                        let l = l.replace("<input>", &file);
                        let l = if on_secret_line { l.replace(original_message, SECRET_ENTRY_PROBLEM) } else { l };
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

// ---- Raw shapes, exactly as written in YAML ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    admin_listen: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
    tls: Option<RawTls>,
    #[serde(default)]
    limits: RawLimits,
    sources: Spanned<Vec<RawSource>>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    unrouted: Option<Unrouted>,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    dedupe: RawDedupe,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Spanned<String>,
    key_file: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<Spanned<u64>>,
    header_timeout: Option<Spanned<String>>,
    body_timeout: Option<Spanned<String>>,
    max_concurrent: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Spanned<String>,
    path: Spanned<String>,
    algorithm: Option<Algorithm>,
    secrets: Spanned<Vec<Spanned<RawSecret>>>,
    webhook_ids: Option<Spanned<Vec<u64>>>,
    reject_older_than: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum RawSecret {
    Env(String),
    File(String),
    Value(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    source: Option<Spanned<String>>,
    topics: Spanned<Vec<Spanned<String>>>,
    upstream: Spanned<String>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    mode: Option<DeliveryMode>,
    spool_path: Option<Spanned<String>>,
    #[serde(default)]
    retry: RawRetry,
    max_in_flight: Option<Spanned<usize>>,
    max_spool_bytes: Option<Spanned<u64>>,
    keep_delivered: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_backoff: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
    give_up_after: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDedupe {
    window: Option<Spanned<String>>,
    topics: Option<Vec<Spanned<String>>>,
}

// ---- Validation ----

/// Collects problems while turning raw shapes into runtime values.
struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    base_dir: PathBuf,
    problems: Vec<String>,
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

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let listen = self.address(raw.listen.as_ref(), DEFAULT_LISTEN, "listen", "0.0.0.0:8080");
        let admin_listen =
            self.address(raw.admin_listen.as_ref(), DEFAULT_ADMIN_LISTEN, "admin_listen", "127.0.0.1:9090");
        let tls = raw.tls.as_ref().and_then(|tls| self.tls(tls));
        let shutdown_grace =
            self.duration_or_zero(raw.shutdown_grace.as_ref(), DEFAULT_SHUTDOWN_GRACE, "shutdown_grace", true);
        let limits = self.limits(&raw.limits);
        if raw.sources.value.is_empty() {
            self.problem(&raw.sources, "sources is empty: add one source per WooCommerce store (name, path, secrets)");
        }
        let mut sources = Vec::new();
        let mut source_by_path = HashMap::new();
        let mut first_name_line: HashMap<String, u64> = HashMap::new();
        let mut first_path_owner: HashMap<String, String> = HashMap::new();
        for raw_source in &raw.sources.value {
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
        let source_names: Vec<&str> = raw.sources.value.iter().map(|s| s.name.value.as_str()).collect();
        let mode = raw.delivery.mode.unwrap_or(DeliveryMode::Queue);
        let only_source = match source_names.as_slice() {
            [only] => Some(*only),
            _ => None,
        };
        let mut routes: Vec<Route> = Vec::new();
        let mut route_lines: HashMap<String, u64> = HashMap::new();
        let mut warnings = Vec::new();
        for raw_route in &raw.routes {
            if let Some(line) = route_lines.get(&raw_route.name.value) {
                self.problem(
                    &raw_route.name,
                    format!(
                        "route name {:?} is already used on line {line}: give each route its own name",
                        raw_route.name.value
                    ),
                );
            } else {
                route_lines.insert(raw_route.name.value.clone(), raw_route.name.referenced.line());
            }
            if let Some(route) = self.route(raw_route, &source_names) {
                if route.timeout > WOOCOMMERCE_TIMEOUT {
                    warnings.push(format!(
                        "{}:{}: route {:?} has a timeout above WooCommerce's own 60 s: in proxy mode WooCommerce gives up first and counts a failure",
                        self.file.display(),
                        raw_route.name.referenced.line(),
                        route.name
                    ));
                }
                if mode == DeliveryMode::Proxy
                    && let Some(earlier) = routes.iter().find(|earlier| hides(earlier, &route, only_source))
                {
                    warnings.push(format!(
                        "{}:{}: route {:?} is never used in proxy mode: route {:?} (line {}) comes first and takes every delivery it would take",
                        self.file.display(),
                        raw_route.name.referenced.line(),
                        route.name,
                        earlier.name,
                        route_lines.get(&earlier.name).copied().unwrap_or_default(),
                    ));
                }
                routes.push(route);
            }
        }
        let delivery = self.delivery(&raw.delivery);
        let dedupe = self.dedupe(&raw.dedupe);
        let level = match &raw.log.level {
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
        let log = Log { format: raw.log.format, level };
        Some(Config {
            file: self.file.to_path_buf(),
            listen,
            admin_listen,
            shutdown_grace,
            tls,
            limits,
            sources,
            routes,
            unrouted: raw.unrouted.unwrap_or(Unrouted::Accept),
            delivery,
            dedupe,
            log,
            files: std::mem::take(&mut self.files),
            warnings,
            source_by_path,
        })
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

    fn delivery(&mut self, raw: &RawDelivery) -> Delivery {
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
        Delivery {
            mode: raw.mode.unwrap_or(DeliveryMode::Queue),
            spool_path,
            retry,
            max_in_flight,
            max_spool_bytes,
            keep_delivered,
        }
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

    fn secret(&mut self, raw: &Spanned<RawSecret>, source: &str) -> Option<(Secret, String)> {
        let (secret, origin) = match &raw.value {
            RawSecret::Env(var) => match std::env::var_os(var) {
                None => {
                    self.problem(raw, format!("environment variable {var} is not set (secret of source {source:?}): export it, or use file: or value:"));
                    return None;
                }
                Some(value) => (Secret::new(value.into_encoded_bytes()), format!("env {var}")),
            },
            RawSecret::File(file) => {
                let path = self.base_dir.join(file);
                self.files.push(path.clone());
                match std::fs::read(&path) {
                    Err(e) => {
                        self.problem(raw, format!("cannot read secret file {} ({e}) for source {source:?}: check the path (relative paths start at the config file's folder) and its permissions", path.display()));
                        return None;
                    }
                    Ok(mut bytes) => {
                        strip_one_newline(&mut bytes);
                        (Secret::new(bytes), format!("file {}", path.display()))
                    }
                }
            }
            RawSecret::Value(value) => {
                (Secret::new(value.as_bytes().to_vec()), "value (literal in the config file)".to_owned())
            }
        };
        if secret.is_empty() {
            self.problem(raw, format!("the {origin} secret of source {source:?} is empty: WooCommerce never signs with an empty secret; set the webhook's secret"));
            return None;
        }
        Some((secret, origin))
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

/// A line of the config file as shown in an error: a literal secret (`value: ...`) and the credentials of a
/// URL (`://user:password@`) are replaced, so no error message shows a secret.
/// The (1-based) numbers of the lines never shown in an error, because they may hold a secret:
/// - every line of a `secrets` block (its entries, however they are written: `- "value": x`, `- {value: x}`,
///   `- "x"`), except a plain `value:` line, which is shown as `value: <redacted>`;
/// - a `value` key written any other way (quoted, `value :`, in a flow mapping), wherever it is;
/// - the lines that continue a secret: a block scalar, a scalar folded over several lines, and a quoted
///   scalar up to its closing quote, whatever its indentation.
fn secret_lines(text: &str) -> std::collections::HashSet<usize> {
    let mut hidden = std::collections::HashSet::new();
    // The column of a `secrets` key whose block is being read, and of a `value` key whose scalar may go on.
    let mut secrets_column: Option<usize> = None;
    let mut value_column: Option<usize> = None;
    let mut open_quote: Option<u8> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(quote) = open_quote {
            hidden.insert(number);
            if closing_quote(line.as_bytes(), quote).is_some() {
                open_quote = None;
            }
            continue;
        }
        let indentation = line.len() - line.trim_start().len();
        let blank = line.trim().is_empty() || line.trim_start().starts_with('#');
        if let Some(column) = value_column {
            // A comment at the key's indentation or less ends a scalar; an empty line does not.
            if line.trim().is_empty() || indentation > column {
                hidden.insert(number);
                continue;
            }
            value_column = None;
        }
        if let Some(column) = secrets_column {
            let inside = blank || indentation > column || (indentation == column && line.trim_start().starts_with('-'));
            if !inside {
                secrets_column = None;
            }
        }
        if let Some((at, rest)) = key_at(line, "secrets") {
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                hidden.insert(number);
            }
            secrets_column = Some(at);
        }
        let plain_value = line.contains("value:");
        if let Some((at, rest)) = key_at(line, "value") {
            value_column = Some(at);
            let rest = rest.trim_start();
            if let Some(&quote @ (b'"' | b'\'')) = rest.as_bytes().first()
                && closing_quote(&rest.as_bytes()[1..], quote).is_none()
            {
                open_quote = Some(quote);
                hidden.insert(number);
                continue;
            }
            if !plain_value {
                hidden.insert(number);
            }
        }
        if secrets_column.is_some() && !plain_value && !blank && key_at(line, "secrets").is_none() {
            hidden.insert(number);
        }
    }
    hidden
}

/// Where `key` stands as a mapping key on `line` (bare or quoted, with or without spaces before the
/// colon, at the start of a line, after `- `, or in a flow mapping): the column where it starts, and what
/// follows the colon.
fn key_at<'a>(line: &'a str, key: &str) -> Option<(usize, &'a str)> {
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(found) = line[from..].find(key).map(|i| from + i) {
        from = found + key.len();
        let (mut start, mut end) = (found, found + key.len());
        if start > 0 && matches!(bytes[start - 1], b'"' | b'\'') {
            start -= 1;
            if bytes.get(end) != Some(&bytes[start]) {
                continue;
            }
            end += 1;
        }
        let before_ok = start == 0 || matches!(bytes[start - 1], b' ' | b'\t' | b'{' | b',' | b'-' | b'[');
        let after = line[end..].trim_start_matches([' ', '\t']);
        if before_ok && let Some(rest) = after.strip_prefix(':') {
            return Some((start, rest));
        }
    }
    None
}

/// Where the quote that closes a quoted scalar is, in what follows its opening quote.
fn closing_quote(bytes: &[u8], quote: u8) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b if b == quote => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// A snippet line as serde-saphyr renders it (`  9 | text`), hidden when it continues a secret. A line of
/// the file that holds a secret or credentials is shown redacted from the file's own text: serde-saphyr
/// crops long lines around the error's column (`…lue: "s3cret"`), and a cropped line may have lost the
/// `value:` or `://` that marks what to hide.
fn redact_snippet_line(line: &str, hidden: &std::collections::HashSet<usize>, original: &[&str]) -> String {
    let (gutter, _) = line.split_once('|').unwrap_or((line, ""));
    let number = gutter.trim().parse::<usize>().ok();
    match number {
        Some(number) if hidden.contains(&number) => format!("{gutter}| <redacted>"),
        Some(number) => match number.checked_sub(1).and_then(|index| original.get(index)) {
            Some(text) if redact_line(text) != *text => format!("{gutter}| {}", redact_line(text)),
            _ => redact_line(line),
        },
        None => redact_line(line),
    }
}

fn redact_line(line: &str) -> String {
    let mut line = match line.find("value:") {
        Some(at) => format!("{} <redacted>", &line[..at + "value:".len()]),
        None => line.to_owned(),
    };
    let mut from = 0;
    while let Some(scheme) = line[from..].find("://").map(|i| from + i + 3) {
        let authority_end = line[scheme..].find(['/', '?', '#', ' ', '"', '\'']).map_or(line.len(), |i| scheme + i);
        if let Some(at) = line[scheme..authority_end].rfind('@') {
            line.replace_range(scheme..scheme + at, "<redacted>");
        }
        from = scheme.min(line.len());
    }
    line
}

/// True when `earlier` takes every delivery `later` would take, so `later` never wins in proxy mode.
fn hides(earlier: &Route, later: &Route, only_source: Option<&str>) -> bool {
    let sources_covered = match (&earlier.source, &later.source) {
        (None, _) => true,
        (Some(a), Some(b)) => a == b,
        // A route for every source takes no more than one for the only source there is.
        (Some(a), None) => only_source == Some(a.as_str()),
    };
    sources_covered && later.topics.iter().all(|t| earlier.topics.iter().any(|e| e.covers(t)))
}

/// Removes one trailing newline (`\n` or `\r\n`) from a secret read from a file: files written by `echo`
/// or an editor end with one, and it is not part of the secret.
pub fn strip_one_newline(bytes: &mut Vec<u8>) {
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
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

#[cfg(test)]
mod tests;
