//! One log line and one set of metric samples per request, written when it is answered, whatever answered
//! it: the contract's steps, or a layer that refused it (overload).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use crate::answer::Outcome;
use crate::config::Source;
use crate::woocommerce::{X_WC_WEBHOOK_DELIVERY_ID, X_WC_WEBHOOK_ID, parse_webhook_id, single_header};

/// What is known of a request, logged as one line when it is answered. Only validated values are kept:
/// never the body, never a secret, never raw header bytes.
pub struct RequestLog {
    /// WooCommerce's ids for the delivery, read from its headers (and from a ping's body).
    pub webhook_id: Option<u64>,
    delivery_id: Option<String>,
    /// What the contract's steps found out.
    pub found: Found,
}

/// What the contract's steps learn about a request as they go: each is logged, none is request input that
/// was not validated first.
#[derive(Default)]
pub struct Found {
    /// The source whose path was asked for.
    pub source: Option<Arc<Source>>,
    /// The verified delivery's topic.
    pub topic: Option<String>,
    /// The route (or, in queue mode, the routes) taking the delivery.
    pub route: Option<String>,
    /// The webhook id in a ping's body.
    pub ping_webhook_id: Option<u64>,
    /// Bytes of body read.
    pub bytes: usize,
}

impl RequestLog {
    /// Starts the record of a request from its headers.
    pub fn new(headers: &HeaderMap) -> RequestLog {
        let webhook_id = single_header(headers, &X_WC_WEBHOOK_ID).and_then(|v| parse_webhook_id(v.as_bytes()));
        // A delivery id is 32 hex characters; anything else is not echoed into the log.
        let delivery_id = single_header(headers, &X_WC_WEBHOOK_DELIVERY_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .map(str::to_owned);
        RequestLog { webhook_id, delivery_id, found: Found::default() }
    }

    /// Writes the line and the metric samples.
    pub fn emit(&self, outcome: Outcome, status: u16, event_id: Option<&str>, error: Option<&str>, took: Duration) {
        let found = &self.found;
        let source = found.source.as_ref().map_or(crate::metrics::NO_SOURCE, |s| s.name.as_str());
        metrics::counter!(crate::metrics::REQUESTS_TOTAL, "source" => source.to_owned(), "outcome" => outcome.as_str())
            .increment(1);
        metrics::histogram!(crate::metrics::REQUEST_DURATION_SECONDS, "source" => source.to_owned())
            .record(took.as_secs_f64());
        if found.bytes > 0 {
            metrics::histogram!(crate::metrics::REQUEST_BODY_BYTES, "source" => source.to_owned())
                .record(found.bytes as f64);
        }
        // Every value here is validated (plain names, topic characters, hex ids), so it is logged unquoted.
        tracing::info!(
            source = %found.source.as_ref().map_or("-", |s| s.name.as_str()),
            topic = %found.topic.as_deref().unwrap_or("-"),
            route = %found.route.as_deref().unwrap_or("-"),
            webhook_id = found.ping_webhook_id.or(self.webhook_id),
            delivery_id = %self.delivery_id.as_deref().unwrap_or("-"),
            event_id = %event_id.unwrap_or("-"),
            outcome = %outcome.as_str(),
            status,
            bytes = found.bytes,
            duration_ms = (took.as_secs_f64() * 1e6).round() / 1e3,
            error,
            "request"
        );
    }
}
