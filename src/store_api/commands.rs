//! `hookgate store status`, `store sync` and `store backfill`. For status and sync, for each source with a
//! `store` (or the one named), the store's webhooks are listed through its REST API, what the running
//! gateway has seen of them is asked of its admin listener (`GET /webhooks`), and the findings are printed
//! or the changes made. Backfill fetches what one source's store modified and queues it.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use crate::clock::Clock;
use crate::config::{Config, Source, SpoolLocation, StoreSettings};
use crate::route::TopicPattern;
use crate::seen::SeenReport;
use crate::spool::Queue;

use super::backfill::{Target, backfill};
use super::plan::{Change, sync_plan, wanted_topics};
use super::status::status;
use super::{StoreClient, StoreError};

/// How long the gateway's admin listener is given to say what it has seen.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do with the store.
#[derive(Debug)]
pub enum Command {
    /// Print the webhooks' state; exit 1 when something needs attention.
    Status,
    /// Make the webhooks match the config; with `dry_run`, only print what would change.
    Sync {
        /// Print the changes without making them.
        dry_run: bool,
    },
    /// Fetch what the store modified since `since` and queue it (queue mode; one source).
    Backfill {
        /// A duration before now (`2h`) or an RFC 3339 time (`2026-12-01T09:30:00Z`).
        since: String,
        /// Only the topics this glob matches (`order.*`).
        topics: Option<String>,
    },
}

/// Runs `command` for the sources of the config at `path` that have a `store` (only `only`, when given).
/// Exit 0: done and nothing needs attention; 1: something needs attention or a request failed; 2: the
/// config or the arguments are wrong.
pub fn run(path: &Path, only: Option<&str>, command: &Command) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            eprint!("{error}");
            return ExitCode::from(2);
        }
    };
    let sources: Vec<&Source> =
        config.sources.iter().map(AsRef::as_ref).filter(|s| only.is_none_or(|name| s.name == name)).collect();
    if let Some(name) = only
        && sources.is_empty()
    {
        eprintln!("{}: no source is named {name:?}", path.display());
        return ExitCode::from(2);
    }
    let with_store: Vec<(&Source, &StoreSettings)> =
        sources.iter().filter_map(|source| source.store.as_ref().map(|store| (*source, store))).collect();
    if with_store.is_empty() {
        let which = only.map_or_else(|| "no source has".to_owned(), |name| format!("source {name:?} has no"));
        eprintln!(
            "{}: {which} `store` block (sources[].store: url, consumer_key, consumer_secret, delivery_url)",
            path.display()
        );
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    if let Command::Backfill { since, topics } = command {
        let ([(source, store)], Some(_)) = (&with_store[..], only) else {
            eprintln!("hookgate store backfill needs --source NAME: one source at a time");
            return ExitCode::from(2);
        };
        return runtime.block_on(backfill_command(&config, source, store, since, topics.as_deref()));
    }
    runtime.block_on(async {
        let seen = seen_by_gateway(&config).await;
        let mut healthy = true;
        for (source, store) in with_store {
            let seen = seen.as_ref().map(|seen| seen.get(&source.name).map_or(&[][..], Vec::as_slice));
            healthy &= match command {
                Command::Status => status_of(&config, source, store, seen.map_err(String::as_str)).await,
                Command::Sync { dry_run } => sync(&config, source, store, seen.ok(), *dry_run).await,
                Command::Backfill { .. } => unreachable!("backfill runs above"),
            };
        }
        if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    })
}

/// A client of `store`, or `None` after saying why there is none.
fn client(source: &Source, store: &StoreSettings) -> Option<StoreClient> {
    match StoreClient::new(store) {
        Ok(client) => Some(client),
        Err(error) => {
            eprintln!("source {}: cannot set up TLS for the store: {error}", source.name);
            None
        }
    }
}

async fn status_of(config: &Config, source: &Source, store: &StoreSettings, seen: Result<&[SeenReport], &str>) -> bool {
    let Some(client) = client(source, store) else { return false };
    let webhooks = match client.list_webhooks().await {
        Ok(webhooks) => webhooks,
        Err(error) => return failed(source, &error),
    };
    let found = status(source, store, &wanted_topics(config, &source.name), &webhooks, seen);
    crate::output::print(&found.text);
    !found.needs_attention
}

async fn sync(
    config: &Config,
    source: &Source,
    store: &StoreSettings,
    seen: Option<&[SeenReport]>,
    dry_run: bool,
) -> bool {
    let Some(client) = client(source, store) else { return false };
    let webhooks = match client.list_webhooks().await {
        Ok(webhooks) => webhooks,
        Err(error) => return failed(source, &error),
    };
    let changes = sync_plan(source, store, &wanted_topics(config, &source.name), &webhooks, seen);
    if changes.is_empty() {
        crate::output::print(&format!(
            "source {}: the store's webhooks match the config; nothing to change\n",
            source.name
        ));
        return true;
    }
    if source.secrets.first().is_some_and(|secret| std::str::from_utf8(secret.expose()).is_err()) {
        eprintln!(
            "source {}: its first secret is not UTF-8 text, and WooCommerce's REST API takes a webhook's secret as text: give a secret of text (a random one: `openssl rand -base64 32`)",
            source.name
        );
        return false;
    }
    let sets_a_secret = changes.iter().any(|change| match change {
        Change::Create { fields, .. } | Change::Update { fields, .. } => fields.secret.is_some(),
        Change::Delete { .. } => false,
    });
    if sets_a_secret && store.url.scheme_str() == Some("http") && !dry_run {
        eprintln!(
            "source {}: warning: the store is reached over plain http, so the webhook secret sync sets travels in clear (the REST key does not: its requests are signed); use the store's https URL",
            source.name
        );
    }
    for change in changes {
        if dry_run {
            crate::output::print(&format!("source {}: would {change}\n", source.name));
            continue;
        }
        let done = match &change {
            Change::Create { fields, .. } => {
                client.create_webhook(fields).await.map(|made| format!(" as #{}", made.id))
            }
            Change::Update { id, fields, .. } => client.update_webhook(*id, fields).await.map(|_| String::new()),
            Change::Delete { id, .. } => client.delete_webhook(*id).await.map(|()| String::new()),
        };
        match done {
            Ok(detail) => crate::output::print(&format!("source {}: {change}: done{detail}\n", source.name)),
            Err(error) => return failed(source, &error),
        };
    }
    true
}

/// `hookgate store backfill`: into the SQLite spool beside the gateway, or into PostgreSQL as one more
/// replica. Exit 0 when every resource was fetched and queued (or was held already).
async fn backfill_command(
    config: &Config,
    source: &Source,
    store: &StoreSettings,
    since: &str,
    topics: Option<&str>,
) -> ExitCode {
    let Some(settings) = config.delivery.queue() else {
        eprintln!("hookgate store backfill queues what it fetches: it needs delivery.mode: queue");
        return ExitCode::from(2);
    };
    let since = match parse_since(since, std::time::SystemTime::now()) {
        Ok(since) => since,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let topics = match topics.map(TopicPattern::parse).transpose() {
        Ok(topics) => topics,
        Err(error) => {
            eprintln!("--topics: {error}");
            return ExitCode::from(2);
        }
    };
    let Some(client) = client(source, store) else { return ExitCode::FAILURE };
    let done = match &settings.spool {
        SpoolLocation::Sqlite(path) => {
            if !path.exists() {
                eprintln!(
                    "there is no spool at {} (delivery.spool_path): has hookgate run in queue mode with this config?",
                    path.display()
                );
                return ExitCode::from(2);
            }
            let conn = match crate::spool::store::open(path) {
                Ok(conn) => std::sync::Mutex::new(conn),
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            let target = Target::Sqlite { conn: &conn, settings };
            backfill(&client, &target, config, source, store, since, topics.as_ref()).await
        }
        SpoolLocation::Postgres(_) => {
            let queue = match Queue::open(settings, Clock::system()).await {
                Ok(queue) => queue,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            let done = backfill(&client, &Target::Queue(&queue), config, source, store, since, topics.as_ref()).await;
            queue.stop(Duration::ZERO).await;
            done
        }
    };
    let at = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(since.max(0) as u64));
    match done {
        Ok(done) => {
            crate::output::print(&format!(
                "source {}: since {at}, the store listed {} modified resource(s) that routes take: {} queued, {} already held\n",
                source.name, done.fetched, done.queued, done.already_held
            ));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "source {}: the backfill since {at} stopped: {error} (what was queued before stays queued)",
                source.name
            );
            ExitCode::FAILURE
        }
    }
}

/// `--since`: a duration before `now` (`2h`, `90m`) or an RFC 3339 time, as unix seconds.
fn parse_since(text: &str, now: std::time::SystemTime) -> Result<i64, String> {
    let at = match humantime::parse_duration(text) {
        Ok(ago) => now.checked_sub(ago).ok_or_else(|| format!("--since {text}: that is before 1970"))?,
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| {
            format!(
                "--since {text:?}: give a duration before now (2h, 90m, 3d) or an RFC 3339 time (2026-12-01T09:30:00Z)"
            )
        })?,
    };
    let seconds =
        at.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("--since {text}: that is before 1970"))?;
    Ok(i64::try_from(seconds.as_secs()).unwrap_or(i64::MAX))
}

fn failed(source: &Source, error: &StoreError) -> bool {
    eprintln!("source {}: {error}", source.name);
    false
}

/// What the running gateway has seen of each source's webhooks, from its admin listener; why not, when
/// it does not answer.
async fn seen_by_gateway(config: &Config) -> Result<HashMap<String, Vec<SeenReport>>, String> {
    #[derive(serde::Deserialize)]
    struct Seen {
        sources: HashMap<String, Vec<SeenReport>>,
    }
    let url = crate::health::admin_url(config.admin_listen, "/webhooks");
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = url.parse().map_err(|_| format!("{url} is not a URL"))?;
    let exchange = async {
        let response = client.get(uri).await.map_err(|e| format!("the gateway's admin listener at {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("the gateway's admin listener at {url} answered {}", response.status()));
        }
        let body = response.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
        serde_json::from_slice::<Seen>(&body).map_err(|e| format!("{url} answered something else: {e}"))
    };
    let seen = tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("the gateway's admin listener at {url} did not answer within 5 s"))??;
    Ok(seen.sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_duration_before_now_or_an_rfc_3339_time() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_since("2h", now), Ok(1_800_000_000 - 7200));
        assert_eq!(parse_since("2026-12-01T09:30:00Z", now), Ok(1_796_117_400));
        let error = parse_since("yesterday", now).unwrap_err();
        assert!(error.contains("a duration before now") && error.contains("RFC 3339"), "{error}");
    }
}
