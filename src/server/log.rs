//! One log line and one set of metric samples per request, written when it is answered, whatever answered
//! it: the contract's steps, or a layer that refused it (the per-client cap, overload).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The client the request is counted under: the peer, or behind a trusted proxy the address its
    /// `X-Forwarded-For` names (see [`super::clients::client_address`]).
    pub client: Option<IpAddr>,
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

    /// Records the metric samples, and writes the line unless `throttle` holds it back.
    pub fn emit(
        &self,
        outcome: Outcome,
        status: u16,
        event_id: Option<&str>,
        error: Option<&str>,
        took: Duration,
        throttle: &Throttle,
    ) {
        let found = &self.found;
        let source = found.source.as_ref().map_or(crate::metrics::NO_SOURCE, |s| s.name.as_str());
        SourceSeries::with(source, |series| {
            series.requests(source, outcome).increment(1);
            series.duration.record(took.as_secs_f64());
            if found.bytes > 0 {
                series.body_bytes.record(found.bytes as f64);
            }
        });
        // Its topic is known only once a delivery is verified.
        if !throttle.admit(outcome, found.topic.is_some()) {
            return;
        }
        // Every value here is validated (plain names, topic characters, hex ids), so it is logged unquoted.
        tracing::info!(
            client = %found.client.map_or_else(|| "-".to_owned(), |client| client.to_string()),
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

/// The metric series a request of one source is counted in, registered once per thread (a request then
/// builds no label and makes no lookup in the recorder's registry, only one in this thread's map).
struct SourceSeries {
    /// `hookgate_requests_total` by outcome, each registered the first time it is counted, as before.
    requests: [Option<metrics::Counter>; Outcome::COUNT],
    duration: metrics::Histogram,
    body_bytes: metrics::Histogram,
}

thread_local! {
    /// The series of each source name seen on this thread (source names come from the configuration only).
    static SOURCE_SERIES: RefCell<HashMap<Box<str>, SourceSeries>> = RefCell::new(HashMap::new());
}

impl SourceSeries {
    /// Calls `record` with the series of `source`, registering them on this thread's first use.
    fn with(source: &str, record: impl FnOnce(&mut SourceSeries)) {
        SOURCE_SERIES.with_borrow_mut(|series| {
            if !series.contains_key(source) {
                // The recorder is in place before a handle is taken, or the handle would count nothing.
                crate::metrics::handle();
                let new = SourceSeries {
                    requests: [const { None }; Outcome::COUNT],
                    duration: metrics::histogram!(crate::metrics::REQUEST_DURATION_SECONDS, "source" => source.to_owned()),
                    body_bytes: metrics::histogram!(crate::metrics::REQUEST_BODY_BYTES, "source" => source.to_owned()),
                };
                series.insert(source.into(), new);
            }
            if let Some(found) = series.get_mut(source) {
                record(found);
            }
        });
    }

    /// The counter of `source`'s requests that ended with `outcome`.
    fn requests(&mut self, source: &str, outcome: Outcome) -> &metrics::Counter {
        self.requests[outcome as usize].get_or_insert_with(|| {
            metrics::counter!(crate::metrics::REQUESTS_TOTAL, "source" => source.to_owned(), "outcome" => outcome.as_str())
        })
    }
}

/// Lines logged per second for each outcome anybody can cause without a secret (a bad signature, a
/// wrong path, a ping...): enough to see what is happening, while 50,000 such requests a second write at
/// most this many lines a second each, not 13 MB/s. The metrics count every request.
pub const UNAUTHENTICATED_LINES_PER_SECOND: u32 = 10;

/// Holds back request lines past [`UNAUTHENTICATED_LINES_PER_SECOND`] per outcome, counting what it held
/// back for a summary line ([`Throttle::report`]).
pub struct Throttle {
    started: Instant,
    slots: Mutex<[Slot; Outcome::COUNT]>,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// The outcome the slot counts, once it has counted one.
    outcome: Option<Outcome>,
    /// The second (since `started`) the count is for.
    second: u64,
    logged: u32,
    /// Lines held back since the last report.
    suppressed: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle { started: Instant::now(), slots: Mutex::new([Slot::default(); Outcome::COUNT]) }
    }
}

impl Throttle {
    /// Whether a line for `outcome` may be written now. A `verified` delivery is always logged, whatever
    /// its outcome (a 503 for a full spool or `max_concurrent` is the store's delivery failing, not noise),
    /// and so are outcomes only a verified delivery reaches.
    pub fn admit(&self, outcome: Outcome, verified: bool) -> bool {
        if verified || !outcome.is_unauthenticated() {
            return true;
        }
        let second = self.started.elapsed().as_secs();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut slots[outcome as usize];
        slot.outcome = Some(outcome);
        if slot.second != second {
            slot.second = second;
            slot.logged = 0;
        }
        if slot.logged < UNAUTHENTICATED_LINES_PER_SECOND {
            slot.logged += 1;
            true
        } else {
            slot.suppressed += 1;
            false
        }
    }

    /// Writes one summary line per outcome whose lines were held back since the last report, and starts
    /// counting again. Called every few seconds while serving, and once at the stop.
    pub fn report(&self) {
        let held: Vec<(Outcome, u64)> = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .iter_mut()
                .filter(|slot| slot.suppressed > 0)
                .filter_map(|slot| Some((slot.outcome?, std::mem::take(&mut slot.suppressed))))
                .collect()
        };
        for (outcome, suppressed) in held {
            tracing::info!(
                outcome = outcome.as_str(),
                suppressed,
                per_second = UNAUTHENTICATED_LINES_PER_SECOND,
                "{suppressed} similar request lines suppressed (the metrics count them all)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_lines_are_held_back_past_the_rate_and_verified_ones_never() {
        let throttle = Throttle::default();
        let admitted = (0..1000).filter(|_| throttle.admit(Outcome::InvalidSignature, false)).count();
        // Within one second, or across a second's boundary at most twice the rate.
        assert!((10..=20).contains(&admitted), "{admitted}");
        assert!(throttle.admit(Outcome::NotFound, false), "each outcome has its own budget");
        assert!((0..1000).all(|_| throttle.admit(Outcome::Queued, false)), "verified deliveries are always logged");
        let held = throttle.slots.lock().unwrap()[Outcome::InvalidSignature as usize].suppressed;
        assert_eq!(held, 1000 - admitted as u64);
        throttle.report();
        assert_eq!(throttle.slots.lock().unwrap()[Outcome::InvalidSignature as usize].suppressed, 0);
    }
}
