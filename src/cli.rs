//! The command line: `serve`, `check`, `sign`, `diagnose`, `spool`, `store` and `health`. What the commands print
//! goes through [`crate::output`], so a reader that stops early (`| head`) ends them quietly.

mod summary;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::secret::{ResolveError, Secret, SecretOrigin};
use crate::server::{Reloads, Server};
use crate::verify::{Algorithm, sign};

/// A gateway that verifies WooCommerce webhook deliveries and forwards them to the services that act on them.
#[derive(Parser, Debug)]
#[command(name = "hookgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway.
    Serve(ConfigArg),
    /// Validate a configuration file and resolve its secrets (never printing one), then summarise it.
    Check(ConfigArg),
    /// Print the X-WC-Webhook-Signature WooCommerce would send for the body read on standard input.
    Sign(SignArgs),
    /// Inspect and act on the queue mode's spool (also while the gateway runs).
    Spool(SpoolArgs),
    /// Explain why a signature does not verify (never printing a secret).
    Diagnose(DiagnoseArgs),
    /// Check and set up the store's webhooks through its REST API (sources with a `store` block).
    Store(StoreArgs),
    /// Exit 0 when the admin listener's /readyz answers 200 (a HEALTHCHECK or exec probe); otherwise say
    /// why on one line and exit 1.
    Health(HealthArgs),
}

#[derive(Args, Debug)]
struct HealthArgs {
    /// The URL to ask [default: /readyz on the admin_listen of --config, else http://127.0.0.1:9090/readyz].
    #[arg(long)]
    url: Option<String>,
    /// The configuration file whose admin_listen is asked (read for that key alone: no secret is needed).
    #[arg(long, short, env = "HOOKGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DiagnoseArgs {
    /// The configuration file.
    #[arg(long, short, env = "HOOKGATE_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// The source the delivery was sent to.
    #[arg(long)]
    source: String,
    /// The X-WC-Webhook-Signature value received.
    #[arg(long)]
    signature: String,
    /// The body received (standard input when not given).
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct StoreArgs {
    /// The configuration file.
    #[arg(long, short, env = "HOOKGATE_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Only this source (every source with a `store` block when not given).
    #[arg(long, global = true)]
    source: Option<String>,
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// The store's webhooks for each source: active or not, whether a route takes the topic, when a
    /// delivery from it last verified and with which secret, whether its deliveries fail verification, and
    /// the topics routes take that no webhook sends. Exits 1 when anything needs attention.
    Status,
    /// Make the store's webhooks match the config: one active webhook per topic the source's routes take,
    /// named `hookgate: <source> <topic>`, delivering to `delivery_url` with the source's first secret.
    /// Creates, updates and reactivates; deletes only webhooks of that name no route wants any more.
    Sync {
        /// Print what would change, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Fetch every order, product, customer and coupon the store modified since a time and queue each as a
    /// `<resource>.updated` delivery to the routes that take that topic (queue mode, one --source), unless
    /// the spool holds that resource at the same or a newer state. Marked `X-Hookgate-Backfill: 1`.
    Backfill {
        /// A duration before now (`2h`, `90m`) or an RFC 3339 time (`2026-12-01T09:30:00Z`).
        #[arg(long)]
        since: String,
        /// Only the topics this glob matches (`order.*`).
        #[arg(long, value_name = "GLOB")]
        topics: Option<String>,
    },
}

#[derive(Args, Debug)]
struct SpoolArgs {
    /// The configuration file whose delivery.spool_path or delivery.postgres names the spool.
    #[arg(long, short, env = "HOOKGATE_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: SpoolCommand,
}

#[derive(Subcommand, Debug)]
enum SpoolCommand {
    /// Deliveries per route and state, and the oldest pending one.
    Stats,
    /// Deliveries, oldest first.
    List {
        /// Only this route's deliveries.
        #[arg(long)]
        route: Option<String>,
        /// Only deliveries in this state (`unrouted`: the deliveries no route took).
        #[arg(long, value_parser = ["pending", "dead", "delivered", "unrouted"])]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One event: its deliveries, headers and body.
    Show {
        /// The event id (as answered to WooCommerce and sent as X-Hookgate-Event-Id).
        id: String,
    },
    /// Make deliveries pending again: one event's, every dead letter, or the unrouted events.
    Replay {
        /// The event to deliver again (its dead and delivered entries; an unrouted event is routed).
        #[arg(required_unless_present_any = ["dead", "unrouted"], conflicts_with_all = ["dead", "unrouted"])]
        id: Option<String>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "unrouted")]
        dead: bool,
        /// Only this route's deliveries.
        #[arg(long, conflicts_with = "unrouted")]
        route: Option<String>,
        /// Route every unrouted event along the config's routes as they are now.
        #[arg(long)]
        unrouted: bool,
        /// With --unrouted: only events whose topic this glob matches ("order.*").
        #[arg(long, requires = "unrouted", value_name = "GLOB")]
        topic: Option<String>,
    },
    /// Delete an event and all its deliveries.
    Drop {
        /// The event id.
        id: String,
    },
    /// Make pending deliveries that wait out a backoff due now (once an upstream is fixed): one event's,
    /// one route's, or all.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "route", "all"])))]
    Retry {
        /// The event whose pending deliveries to send now.
        id: Option<String>,
        /// Every pending delivery of this route.
        #[arg(long)]
        route: Option<String>,
        /// Every pending delivery.
        #[arg(long)]
        all: bool,
    },
    /// Copy an SQLite spool's pending and dead deliveries and unrouted events into the PostgreSQL spool
    /// the config names (delivery.postgres); running it again copies nothing twice.
    Migrate {
        /// The SQLite spool file to copy from.
        #[arg(long, value_name = "SQLITE_FILE")]
        from: PathBuf,
    },
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// The configuration file.
    #[arg(long, short, env = "HOOKGATE_CONFIG", value_name = "FILE")]
    config: PathBuf,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("secret_source").required(true).args(["secret_env", "secret_file", "secret"])))]
struct SignArgs {
    /// The hash WooCommerce signs with (its woocommerce_webhook_hash_algorithm filter).
    #[arg(long, default_value = "sha256", value_parser = parse_algorithm)]
    algorithm: Algorithm,
    /// Read the secret from this environment variable.
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// Read the secret from this file (one trailing newline removed).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// The secret itself (it shows in the shell history and process list: prefer the other two).
    #[arg(long, value_name = "SECRET")]
    secret: Option<String>,
}

fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    text.parse()
}

/// Parses the command line and runs it; the process's exit code says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args.config),
        Command::Check(args) => check(&args.config),
        Command::Sign(args) => sign_stdin(&args),
        Command::Diagnose(args) => diagnose(&args),
        Command::Spool(args) => crate::spool::admin::run(args.config.as_deref(), to_admin(args.command)),
        Command::Store(args) => store(&args),
        Command::Health(args) => crate::health::run(args.url.as_deref(), args.config.as_deref()),
    }
}

fn to_admin(command: SpoolCommand) -> crate::spool::admin::Command {
    use crate::spool::admin::Command as Admin;
    match command {
        SpoolCommand::Stats => Admin::Stats,
        SpoolCommand::List { route, state, limit } => Admin::List { route, state, limit },
        SpoolCommand::Show { id } => Admin::Show { id },
        SpoolCommand::Replay { unrouted: true, topic, .. } => Admin::ReplayUnrouted { topic },
        SpoolCommand::Replay { id, dead: _, route, unrouted: false, topic: _ } => Admin::Replay { id, route },
        SpoolCommand::Drop { id } => Admin::Drop { id },
        SpoolCommand::Retry { id, route, all: _ } => Admin::Retry { id, route },
        SpoolCommand::Migrate { from } => Admin::Migrate { from },
    }
}

fn store(args: &StoreArgs) -> ExitCode {
    let Some(config) = &args.config else {
        eprintln!("hookgate store needs --config FILE (or HOOKGATE_CONFIG)");
        return ExitCode::from(2);
    };
    use crate::store_api::commands::Command as Store;
    let command = match &args.command {
        StoreCommand::Status => Store::Status,
        StoreCommand::Sync { dry_run } => Store::Sync { dry_run: *dry_run },
        StoreCommand::Backfill { since, topics } => Store::Backfill { since: since.clone(), topics: topics.clone() },
    };
    crate::store_api::commands::run(config, args.source.as_deref(), &command)
}

fn load(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(config) => Some(config),
        Err(error) => {
            eprint!("{error}");
            None
        }
    }
}

fn serve(path: &Path) -> ExitCode {
    let Some(config) = load(path) else { return ExitCode::from(2) };
    // From here on every message, start-up errors included, is a log line in the configured format.
    init_logging(&config.log);
    let open_files = raise_open_file_limit();
    let needed = config.limits.max_connections as u64 + OPEN_FILES_RESERVE;
    if open_files.is_some_and(|limit| limit < needed) {
        tracing::warn!(
            open_files,
            max_connections = config.limits.max_connections,
            "the process may open fewer files than limits.max_connections needs (plus {OPEN_FILES_RESERVE} for the spool, upstreams and admin): raise its nofile limit or lower limits.max_connections"
        );
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Installed before anything can say it serves, and before the spool opens (a migration may take a
        // while): a signal must meet our handlers, never the default action.
        let stop = stop_signal();
        let reloads = Reloads::on_file_change_and_sighup(path);
        let server = match Server::bind(config).await {
            Ok(server) => server.reload(reloads).with_connection_workers(connection_workers()),
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::FAILURE;
            }
        };
        match server.run(stop).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(%error, "the server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// One connection worker per core the process may run on (its CPU affinity and cgroup quota count): the
/// webhook path then runs on threads that never hand a request's work to each other.
fn connection_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Completes on SIGINT or SIGTERM (what Kubernetes and systemd send to stop a process).
fn stop_signal() -> impl std::future::Future<Output = ()> {
    // The handlers are installed now, before the gateway says it serves: a signal sent right after that
    // line must not meet the default action (which would end the process without a clean stop).
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut interrupt) = signals;
            tokio::select! {
                Some(()) = async { term.as_mut()?.recv().await } => {}
                Some(()) = async { interrupt.as_mut()?.recv().await } => {}
                else => { let _ = tokio::signal::ctrl_c().await; }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("stop requested: finishing requests in flight");
    }
}

/// Logs go to standard error: text on a terminal, JSON otherwise (unless `log.format` says), at
/// `log.level` unless `RUST_LOG` is set (a `RUST_LOG` that does not parse falls back to `log.level`).
fn init_logging(log: &crate::config::Log) {
    use crate::config::LogFormat;
    // RUST_LOG, when set, stands for log.level, and is held to the same rule for h2's warnings.
    let level = std::env::var("RUST_LOG").ok().filter(|value| !value.trim().is_empty());
    let filter = tracing_subscriber::EnvFilter::try_new(level_filter(level.as_deref().unwrap_or(&log.level)))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level_filter(&log.level)));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = log.format.unwrap_or(if terminal { LogFormat::Text } else { LogFormat::Json });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(terminal).try_init(),
    };
}

/// File descriptors kept for everything but webhook connections: the spool, upstream connections, the
/// admin listener, watched folders.
const OPEN_FILES_RESERVE: u64 = 1024;

/// Raises the soft limit on open files to the hard limit (1,024 is a common soft limit, far below what a
/// gateway facing the internet needs), and returns the limit now in force (`None`: unlimited).
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(%error, "cannot raise the open-file limit to its hard limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// `log.level` as a filter. h2's own warnings are a client's protocol errors in disguise (a rapid-reset
/// loop writes one per connection, anybody can cause them): they show only when the level asks for debug
/// or names h2.
fn level_filter(level: &str) -> String {
    if ["h2", "debug", "trace"].iter().any(|word| level.contains(word)) {
        level.to_owned()
    } else {
        format!("{level},h2=error")
    }
}

fn check(path: &Path) -> ExitCode {
    let Some(config) = load(path) else { return ExitCode::from(2) };
    printed(&summary::summary(path, &config), ExitCode::SUCCESS)
}

/// `code` once `text` is on standard output, or a failure when it could not be written (a reader that has
/// gone is no failure).
fn printed(text: &str, code: ExitCode) -> ExitCode {
    if crate::output::print(text) { code } else { ExitCode::FAILURE }
}

fn diagnose(args: &DiagnoseArgs) -> ExitCode {
    let Some(config) = load(&args.config) else { return ExitCode::from(2) };
    let Some(source) = config.sources.iter().find(|s| s.name == args.source) else {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        eprintln!("no source {:?} in {}: use one of {names:?}", args.source, args.config.display());
        return ExitCode::from(2);
    };
    let body = match &args.body_file {
        Some(path) => std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display())),
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map(|_| body)
                .map_err(|e| format!("cannot read standard input: {e}"))
        }
    };
    let body = match body {
        Ok(body) => body,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let found = crate::diagnose::diagnose(source, &args.signature, &body);
    let text: String = found.lines.iter().map(|line| format!("{line}\n")).collect();
    printed(&text, if found.verifies { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn sign_stdin(args: &SignArgs) -> ExitCode {
    let secret = match read_secret(args) {
        Ok(secret) => secret,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mut body = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("cannot read the body from standard input: {error}");
        return ExitCode::FAILURE;
    }
    printed(&format!("{}\n", sign(args.algorithm, &secret, &body)), ExitCode::SUCCESS)
}

/// The secret `hookgate sign` was given, resolved as the configuration resolves its secrets.
fn read_secret(args: &SignArgs) -> Result<Secret, ResolveError> {
    let origin = if let Some(var) = &args.secret_env {
        SecretOrigin::Env(var.clone())
    } else if let Some(path) = &args.secret_file {
        SecretOrigin::File(path.clone())
    } else {
        SecretOrigin::Value(Secret::new(args.secret.clone().unwrap_or_default().into_bytes()))
    };
    crate::secret::resolve(&origin)
}
