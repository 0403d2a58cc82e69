//! `hookgate store status` for one source, worked out from what the store lists and what the gateway has
//! seen: each webhook that delivers to the source's `delivery_url` or carries a name sync gives, whether
//! it is active, whether a route takes its topic, when a delivery from it last verified and with which
//! secret, whether its deliveries fail verification; then the topics routes take that no webhook sends.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::config::{Source, StoreSettings};
use crate::seen::SeenReport;

use super::plan::{API_VERSION, status_name, webhook_name};
use super::{Webhook, WebhookStatus};

/// What status found for one source: the text to print, and whether anything needs attention.
pub struct Status {
    /// One block: a line for the store, a line per webhook with its problems below it, then the missing
    /// topics.
    pub text: String,
    /// True when a webhook is not active, takes a topic no route wants, fails verification or signs with
    /// a secret other than the first, or a topic routes take has no webhook.
    pub needs_attention: bool,
}

/// `at` (unix seconds) as RFC 3339 in UTC.
fn time(at: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The status of `source`'s webhooks among the store's `webhooks`; `seen` is what the gateway reported
/// (`Err`: why it could not be asked).
pub fn status(
    source: &Source,
    store: &StoreSettings,
    wanted: &BTreeMap<String, Vec<String>>,
    webhooks: &[Webhook],
    seen: Result<&[SeenReport], &str>,
) -> Status {
    let delivery_url = store.delivery_url.to_string();
    let prefix = webhook_name(&source.name, "");
    let mut mine: Vec<&Webhook> =
        webhooks.iter().filter(|w| w.delivery_url == delivery_url || w.name.starts_with(&prefix)).collect();
    mine.sort_by_key(|webhook| webhook.id);
    let mut text = format!(
        "source {}: store {}, {} webhook(s) delivering to {delivery_url}\n",
        source.name,
        store.url,
        mine.len()
    );
    if let Err(why) = seen {
        let _ = writeln!(text, "  (what the gateway has seen is unknown: {why})");
    }
    let mut needs_attention = false;
    for webhook in &mine {
        let routes = wanted.get(&webhook.topic);
        let report = seen.ok().and_then(|seen| seen.iter().find(|report| report.webhook_id == webhook.id));
        let _ = writeln!(
            text,
            "  #{} {:?}: {} {}, {}, {}{}",
            webhook.id,
            webhook.name,
            webhook.topic,
            status_name(webhook.status),
            webhook.api_version.as_deref().map_or_else(|| "payload version not shown".to_owned(), str::to_owned),
            routes.map_or_else(|| "no route".to_owned(), |routes| format!("route(s) {}", routes.join(", "))),
            match report.and_then(|report| report.last_verified_at.map(|at| (at, report.verified_with_secret))) {
                Some((at, Some(n))) => format!(", last verified {} with secret {n}", time(at)),
                Some((at, None)) => format!(", last verified {} with a secret no longer configured", time(at)),
                None => ", no verified delivery seen".to_owned(),
            }
        );
        let twin = mine.iter().find(|other| other.id != webhook.id && other.topic == webhook.topic).map(|w| w.id);
        let standing = Standing {
            routed: routes.is_some(),
            seen: report,
            asked: seen.is_ok(),
            ours: webhook.name == webhook_name(&source.name, &webhook.topic),
            rotating: source.secrets.len() > 1,
            twin,
        };
        let problems = problems(webhook, &standing, &delivery_url);
        needs_attention |= !problems.is_empty();
        for problem in problems {
            let _ = writeln!(text, "    ! {problem}");
        }
    }
    for (topic, routes) in wanted {
        if !mine.iter().any(|webhook| &webhook.topic == topic) {
            needs_attention = true;
            let _ = writeln!(
                text,
                "  ! missing: {topic} (route(s) {}): no webhook sends it; `hookgate store sync` creates it",
                routes.join(", ")
            );
        }
    }
    if !needs_attention {
        text.push_str("  all good\n");
    }
    Status { text, needs_attention }
}

/// How one webhook stands, for [`problems`].
struct Standing<'a> {
    /// A route of the source takes its topic.
    routed: bool,
    /// What the gateway saw of it, when it could be asked and saw something.
    seen: Option<&'a SeenReport>,
    /// The gateway could be asked.
    asked: bool,
    /// Sync names it (`hookgate: <source> <topic>`) and so manages it.
    ours: bool,
    /// The source has more than one secret: a rotation is under way.
    rotating: bool,
    /// Another webhook delivering to the source sends the same topic.
    twin: Option<u64>,
}

/// What is wrong with one webhook, one phrase each.
fn problems(webhook: &Webhook, standing: &Standing<'_>, delivery_url: &str) -> Vec<String> {
    // Sync mends only the webhooks it names; another is changed in WooCommerce (or deleted, for sync to
    // make its own).
    let mend = if standing.ours {
        "`hookgate store sync` mends it"
    } else {
        "sync does not manage it (it is not named `hookgate: <source> <topic>`): change it in WooCommerce, or delete it and run `hookgate store sync`"
    };
    let mut problems = Vec::new();
    match webhook.status {
        WebhookStatus::Active => {}
        WebhookStatus::Paused => problems.push(format!("paused: WooCommerce sends nothing; {mend}")),
        WebhookStatus::Disabled => problems.push(format!(
            "disabled by WooCommerce after failed deliveries: it sends nothing; {mend} (and `watch` with `reactivate` sets it active by itself)"
        )),
    }
    if !standing.routed {
        problems
            .push(format!("no route of this source takes {}: its deliveries are answered as unrouted", webhook.topic));
    }
    if webhook.delivery_url != delivery_url {
        problems.push(format!("delivers to {}, not to this source's delivery_url; {mend}", webhook.delivery_url));
    }
    if let Some(version) = webhook.api_version.as_deref().filter(|version| *version != API_VERSION) {
        problems.push(format!("its payloads are {version}, not {API_VERSION}"));
    }
    if let Some(twin) = standing.twin {
        problems.push(format!("webhook #{twin} sends the same topic here: each event arrives twice; delete one"));
    }
    match standing.seen {
        Some(report) if report.refused_since_verified > 0 => problems.push(format!(
            "{} deliveries failed verification since the last that verified (the last at {}): it signs with a \
             secret that is not one of this source's; {mend}",
            report.refused_since_verified,
            report.last_refused_at.map_or_else(|| "an unknown time".to_owned(), time)
        )),
        Some(SeenReport { verified_with_secret: Some(1), .. }) => {}
        Some(SeenReport { verified_with_secret: Some(n), .. }) => {
            problems.push(format!("it signs with secret {n}, not the first; {mend}"));
        }
        Some(SeenReport { last_verified_at: Some(_), .. }) => {
            problems.push(format!("it signs with a secret no longer configured; {mend}"));
        }
        _ if standing.rotating && standing.asked => problems.push(format!(
            "the source has several secrets (a rotation), and no delivery of this webhook has verified with the first since the gateway started; {mend}, and keep the old secret until one has"
        )),
        _ => {}
    }
    problems
}
