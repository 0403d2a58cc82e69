//! What `hookgate check` prints about a configuration that checks out: listeners, mode, spool, sources
//! (never a secret, only where each comes from), routes, what happens to unrouted deliveries, and every
//! warning. Durations are shown the way a config file writes them (`72h`, not `3days`), so a line can be
//! copied back into the file.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::config::Config;

/// The summary, one line per item.
pub(super) fn summary(path: &Path, config: &Config) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = write_summary(&mut text, path, config);
    text
}

fn write_summary(out: &mut String, path: &Path, config: &Config) -> std::fmt::Result {
    writeln!(out, "{}: OK", path.display())?;
    writeln!(out, "listen: {}", config.listen)?;
    writeln!(out, "delivery mode: {}", config.delivery.mode().as_str())?;
    if let Some(delivery) = config.delivery.queue() {
        writeln!(
            out,
            "spool: {} (max {} bytes; retry {} to {}, give up after {}; {} in flight per route)",
            delivery.spool.describe(),
            delivery.max_spool_bytes,
            written(delivery.retry.initial_backoff),
            written(delivery.retry.max_backoff),
            written(delivery.retry.give_up_after),
            delivery.max_in_flight
        )?;
    }
    writeln!(out, "sources:")?;
    for source in &config.sources {
        let ids = match &source.webhook_ids {
            Some(ids) => format!(", webhook ids {ids:?}"),
            None => String::new(),
        };
        writeln!(
            out,
            "  {} at {} ({}, {} secret{}: {}; {} key{} tried{ids})",
            source.name,
            source.path,
            source.verifier.algorithm(),
            source.secrets.len(),
            if source.secrets.len() == 1 { "" } else { "s" },
            source.secret_origins.join(", "),
            source.verifier.key_count(),
            if source.verifier.key_count() == 1 { "" } else { "s" },
        )?;
        if let Some(store) = &source.store {
            // Where the REST key comes from, never the key itself.
            let (key_origin, secret_origin) = &store.key_origins;
            let auth = if store.url.scheme_str() == Some("https") { "HTTP Basic" } else { "OAuth 1.0a" };
            let watch = store.watch.map_or_else(|| "off".to_owned(), written);
            writeln!(
                out,
                "    store {} ({auth}; consumer key from {key_origin}, consumer secret from {secret_origin}; trusts {}), delivers to {}, watch {watch}, reactivate {}, backfill {}",
                store.url, store.trusts, store.delivery_url, store.reactivate, store.backfill,
            )?;
        }
    }
    writeln!(out, "routes:")?;
    for route in &config.routes {
        let topics: Vec<&str> = route.topics.iter().map(|t| t.as_str()).collect();
        writeln!(
            out,
            "  {}: {} from {} -> {} (timeout {})",
            route.name,
            topics.join(", "),
            route.source.as_deref().unwrap_or("every source"),
            route.upstream,
            written(route.timeout),
        )?;
        if let Some(client) = &route.client {
            writeln!(out, "    tls: {}", client.description())?;
        }
        if !route.headers.is_empty() {
            // Where each value comes from, never the value.
            writeln!(out, "    headers: {}", route.headers.summary().join(", "))?;
        }
    }
    writeln!(out, "unrouted: {}", unrouted(config))?;
    for warning in &config.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    Ok(())
}

/// What becomes of a verified delivery no route takes, said plainly: above all, whether a 200 keeps it.
fn unrouted(config: &Config) -> String {
    use crate::config::Unrouted;
    match (config.unrouted, config.delivery.queue()) {
        (Unrouted::Accept, Some(queue)) => format!(
            "accept (answered 200 once kept in the spool as unrouted, for {}; `hookgate spool replay --unrouted` routes them once a route takes them)",
            written(queue.keep_unrouted)
        ),
        (Unrouted::Discard, _) => {
            "discard (answered 200 and DROPPED: nothing keeps them, and WooCommerce counts them delivered)".to_owned()
        }
        (Unrouted::Reject | Unrouted::Accept, _) => {
            "reject (answered 404: WooCommerce logs a failed delivery, and disables the webhook after repeated failures; nothing keeps them)".to_owned()
        }
    }
}

/// A duration as a config file writes it: in the largest of hours, minutes, seconds or milliseconds that
/// holds it whole (`72h`, `5m`, `90s`, `1500ms`), which `humantime` reads back as the same duration. A
/// duration finer than a millisecond (never configured) falls back to humantime's own form.
pub(super) fn written(duration: Duration) -> String {
    let (seconds, nanos) = (duration.as_secs(), duration.subsec_nanos());
    if nanos == 0 {
        match seconds {
            0 => "0s".to_owned(),
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    } else if nanos % 1_000_000 == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        humantime::format_duration(duration).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_a_config_file_writes_them_and_read_back_the_same() {
        for (duration, expected) in [
            (Duration::from_secs(72 * 3600), "72h"),
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(1), "1s"),
            (Duration::ZERO, "0s"),
            (Duration::from_millis(50), "50ms"),
            (Duration::from_millis(1500), "1500ms"),
        ] {
            assert_eq!(written(duration), expected);
            assert_eq!(humantime::parse_duration(expected).unwrap(), duration, "{expected} reads back");
        }
    }
}
