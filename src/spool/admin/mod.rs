//! `hookgate spool ...`: an operator's view of the spool, and retries, replays and drops. It opens the file the
//! config names with its own connection, so it works while the gateway runs (a running gateway picks up
//! replayed and retried deliveries within a second). Only routing unrouted events reads more of the config
//! than the spool's path: its routes (never its secrets).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

mod migrate;
mod spool;

pub use spool::AdminSpool;

use super::SpoolError;
use crate::clock::Clock;
use crate::config::Config;
use crate::route::TopicPattern;

/// What to do with the spool. (`ReplayUnrouted`: route the unrouted events, of topics `topic` matches
/// when given, along the config's routes now.)
#[derive(Debug)]
pub enum Command {
    Stats,
    List {
        route: Option<String>,
        state: Option<String>,
        limit: usize,
    },
    Show {
        id: String,
    },
    Replay {
        id: Option<String>,
        route: Option<String>,
    },
    ReplayUnrouted {
        topic: Option<String>,
    },
    Drop {
        id: String,
    },
    /// Pending deliveries waiting for a retry, due now: one event's, one route's, or (neither) all.
    Retry {
        id: Option<String>,
        route: Option<String>,
    },
    /// Copy the SQLite spool `from` into the config's PostgreSQL spool.
    Migrate {
        from: std::path::PathBuf,
    },
}

/// Runs a spool command against the spool `config` names; the exit code says how it went.
pub fn run(config: Option<&Path>, command: Command) -> ExitCode {
    let Some(config) = config else {
        eprintln!("hookgate spool needs --config FILE (or HOOKGATE_CONFIG)");
        return ExitCode::from(2);
    };
    let location = match Config::load_spool(config) {
        Ok(location) => location,
        Err(error) => {
            eprint!("{error}");
            return ExitCode::from(2);
        }
    };
    if let Command::Migrate { from } = &command {
        return migrate::run(&location, from, config);
    }
    if let Some(path) = location.sqlite_path().filter(|path| !path.exists()) {
        eprintln!(
            "there is no spool at {} (delivery.spool_path of {}): has hookgate run in queue mode with this config?",
            path.display(),
            config.display()
        );
        return ExitCode::from(2);
    }
    let mut spool = match AdminSpool::open(&location) {
        Ok(spool) => spool,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(code) = known_route(&spool, config, &command) {
        return code;
    }
    let mut out = crate::output::Stdout::lock();
    match execute(&mut spool, config, command, &mut out) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn execute(
    conn: &mut AdminSpool,
    config: &Path,
    command: Command,
    out: &mut impl Write,
) -> Result<ExitCode, SpoolError> {
    match command {
        Command::Stats => stats(conn, out),
        Command::List { route, state, limit } => list(conn, route, state, limit, out),
        Command::Show { id } => show(conn, &id, out),
        Command::Replay { id: Some(id), route: None } if is_unrouted(conn, &id)? => {
            replay_unrouted(conn, config, Some(&id), None, out)
        }
        Command::Replay { id, route } => replay(conn, id, route, out),
        Command::ReplayUnrouted { topic } => replay_unrouted(conn, config, None, topic.as_deref(), out),
        Command::Drop { id } => drop_event(conn, &id, out),
        Command::Retry { id, route } => retry(conn, id, route, out),
        Command::Migrate { .. } => unreachable!("run before the spool is opened"),
    }
}

/// A route named by `--route` must be one the config has or the spool holds deliveries for: a typo would
/// otherwise list or change nothing and look like an empty route. On an unknown one, says so (exit 2).
fn known_route(conn: &AdminSpool, config: &Path, command: &Command) -> Result<(), ExitCode> {
    let (Command::List { route: Some(route), .. }
    | Command::Replay { route: Some(route), .. }
    | Command::Retry { route: Some(route), .. }) = command
    else {
        return Ok(());
    };
    let configured = Config::load_route_names(config).unwrap_or_default();
    let spooled = conn.routes().unwrap_or_default();
    if configured.contains(route) || spooled.contains(route) {
        return Ok(());
    }
    let left_over: Vec<&String> = spooled.iter().filter(|r| !configured.contains(r)).collect();
    let also = if left_over.is_empty() { String::new() } else { format!("; the spool also holds {left_over:?}") };
    eprintln!("there is no route {route:?}: {} names {configured:?}{also}", config.display());
    Err(ExitCode::from(2))
}

fn write_error(error: std::io::Error) -> SpoolError {
    SpoolError::Open(format!("cannot write the output: {error}"))
}

/// `spool stats`: the file, its schema and size, and per route what is pending, dead and delivered.
fn stats(conn: &AdminSpool, out: &mut impl Write) -> Result<ExitCode, SpoolError> {
    let now = Clock::system().now_ms();
    let (place, schema, bytes) = conn.describe()?;
    writeln!(out, "spool {place} (schema {schema}, {bytes} bytes in use)").map_err(write_error)?;
    writeln!(out, "{:<24} {:>9} {:>7} {:>10}  oldest pending", "route", "pending", "dead", "delivered")
        .map_err(write_error)?;
    for stats in conn.stats()? {
        let oldest = stats.oldest_pending_since.map_or_else(|| "-".to_owned(), |at| age(now - at));
        writeln!(out, "{:<24} {:>9} {:>7} {:>10}  {oldest}", stats.route, stats.pending, stats.dead, stats.delivered)
            .map_err(write_error)?;
    }
    let unrouted = conn.unrouted_stats()?;
    let oldest =
        unrouted.oldest_received_at.map_or_else(String::new, |at| format!(", oldest received {} ago", age(now - at)));
    writeln!(
        out,
        "unrouted: {} event{} no route took{oldest}",
        unrouted.events,
        if unrouted.events == 1 { "" } else { "s" }
    )
    .map_err(write_error)?;
    Ok(ExitCode::SUCCESS)
}

/// `spool list`: one line per delivery, oldest first, filtered by route and state.
fn list(
    conn: &AdminSpool,
    route: Option<String>,
    state: Option<String>,
    limit: usize,
    out: &mut impl Write,
) -> Result<ExitCode, SpoolError> {
    let rows = conn.list(route.as_deref(), state.as_deref(), limit)?;
    let shown = rows.len();
    for row in rows {
        if row.state == "unrouted" {
            let (id, topic, source, received) = (&row.public_id, &row.topic, &row.source, time(row.received_at));
            writeln!(out, "{id}  -  unrouted  {topic} from {source}  received {received}").map_err(write_error)?;
            continue;
        }
        let last = match (row.last_status, &row.last_error) {
            (Some(status), _) => format!("last status {status}"),
            (None, Some(error)) => format!("last error: {error}"),
            (None, None) => "not attempted".to_owned(),
        };
        let next = if row.state == "pending" { format!(" next {}", time(row.next_attempt_at)) } else { String::new() };
        writeln!(
            out,
            "{}  {}  {}  {} from {}  received {}  attempts {}  {last}{next}",
            row.public_id,
            row.route,
            row.state,
            row.topic,
            row.source,
            time(row.received_at),
            row.attempts
        )
        .map_err(write_error)?;
    }
    if shown == limit {
        eprintln!("(the first {limit} shown: there may be more; raise --limit)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `spool show`: one event whole: its deliveries, their last answers, its headers and body.
fn show(conn: &AdminSpool, id: &str, out: &mut impl Write) -> Result<ExitCode, SpoolError> {
    let Some(event) = conn.show(id)? else {
        eprintln!("no event {id} in the spool");
        return Ok(ExitCode::FAILURE);
    };
    writeln!(out, "event {}", event.public_id).map_err(write_error)?;
    writeln!(out, "received {} from {}, topic {}", time(event.received_at), event.source, event.topic)
        .map_err(write_error)?;
    writeln!(out, "resource {}", event.resource_key.as_deref().unwrap_or("- (not ordered)")).map_err(write_error)?;
    if event.unrouted {
        writeln!(
            out,
            "unrouted: no route took it; `hookgate spool replay {}` routes it as the config routes it now",
            event.public_id
        )
        .map_err(write_error)?;
    }
    for (delivery, answer) in &event.deliveries {
        writeln!(
            out,
            "route {}: {}, attempts {}, last status {}, last error {}",
            delivery.route,
            delivery.state,
            delivery.attempts,
            delivery.last_status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            delivery.last_error.as_deref().unwrap_or("-"),
        )
        .map_err(write_error)?;
        if let Some(answer) = answer.as_ref().filter(|a| !a.is_empty()) {
            writeln!(out, "  answer: {}", String::from_utf8_lossy(answer)).map_err(write_error)?;
        }
    }
    writeln!(out, "headers:").map_err(write_error)?;
    out.write_all(&event.headers).map_err(write_error)?;
    writeln!(out, "body ({} bytes):", event.body.len()).map_err(write_error)?;
    out.write_all(&event.body).map_err(write_error)?;
    writeln!(out).map_err(write_error)?;
    Ok(ExitCode::SUCCESS)
}

/// `spool replay`: dead or delivered deliveries pending again, by event or by route.
fn replay(
    conn: &mut AdminSpool,
    id: Option<String>,
    route: Option<String>,
    out: &mut impl Write,
) -> Result<ExitCode, SpoolError> {
    let replayed = conn.replay(id.as_deref(), route.as_deref(), Clock::system().now_ms())?;
    writeln!(out, "replayed {replayed} deliver{}", if replayed == 1 { "y" } else { "ies" }).map_err(write_error)?;
    if replayed == 0 && id.is_some() {
        eprintln!("nothing to replay: no such event, or its deliveries are already pending");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `spool retry`: pending deliveries waiting out a backoff made due now, so a fixed upstream gets them at
/// once; a running gateway's dispatcher looks at the spool every second. An unknown event is exit 2.
fn retry(
    conn: &AdminSpool,
    id: Option<String>,
    route: Option<String>,
    out: &mut impl Write,
) -> Result<ExitCode, SpoolError> {
    if let Some(id) = id.as_deref()
        && !conn.event_exists(id)?
    {
        eprintln!("no event {id} in the spool");
        return Ok(ExitCode::from(2));
    }
    let made_due = conn.retry_now(id.as_deref(), route.as_deref(), Clock::system().now_ms())?;
    writeln!(out, "made {made_due} deliver{} due now", if made_due == 1 { "y" } else { "ies" }).map_err(write_error)?;
    if made_due == 0 {
        eprintln!(
            "nothing was waiting for a retry: deliveries are pending and due already, delivered or dead (replay those)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `spool drop`: an event and its deliveries, gone.
fn drop_event(conn: &mut AdminSpool, id: &str, out: &mut impl Write) -> Result<ExitCode, SpoolError> {
    if !conn.drop_event(id)? {
        eprintln!("no event {id} in the spool");
        return Ok(ExitCode::FAILURE);
    }
    writeln!(out, "dropped event {id} and its deliveries").map_err(write_error)?;
    Ok(ExitCode::SUCCESS)
}

/// Whether the event with this public id is kept as unrouted.
fn is_unrouted(conn: &AdminSpool, id: &str) -> Result<bool, SpoolError> {
    Ok(conn.show(id)?.is_some_and(|event| event.unrouted))
}

/// `spool replay --unrouted [--topic GLOB]` (or `spool replay ID` of an unrouted event): routes unrouted
/// events along the routes `config` has now, each as a delivery received now would be routed.
fn replay_unrouted(
    conn: &mut AdminSpool,
    config: &Path,
    id: Option<&str>,
    topic: Option<&str>,
    out: &mut impl Write,
) -> Result<ExitCode, SpoolError> {
    let topic = match topic.map(TopicPattern::parse).transpose() {
        Ok(topic) => topic,
        Err(message) => {
            eprintln!("--topic: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let routes = match Config::load_routes(config) {
        Ok(routes) => routes,
        Err(error) => {
            eprint!("{error}");
            return Ok(ExitCode::from(2));
        }
    };
    let routed = conn.route_unrouted(&routes, id, topic.as_ref(), Clock::system().now_ms())?;
    let plural = |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    writeln!(
        out,
        "routed {} unrouted {}: {} {} pending",
        routed.events,
        plural(routed.events, "event", "events"),
        routed.deliveries,
        plural(routed.deliveries, "delivery", "deliveries")
    )
    .map_err(write_error)?;
    if !routed.still_unrouted.is_empty() {
        let topics: Vec<String> = routed.still_unrouted.iter().map(|(topic, n)| format!("{topic} ({n})")).collect();
        eprintln!("still taken by no route in {}, and kept as unrouted: {}", config.display(), topics.join(", "));
    }
    Ok(if id.is_some() && routed.events == 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn time(unix_ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

fn age(ms: i64) -> String {
    humantime::format_duration(Duration::from_secs(u64::try_from(ms / 1000).unwrap_or(0))).to_string()
}
