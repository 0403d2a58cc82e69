//! Delivers what the spool holds: for each route, the pending deliveries whose time has come, up to
//! `max_in_flight` at once, one at a time per resource, retried with backoff until delivered or dead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, StatusCode};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::postgres::Wanted;
use super::{Attempted, Backend, Due, decode_headers, store};
use crate::clock::Clock;
use crate::config::{Config, QueueSettings, Retry};
use crate::forward::UpstreamError;
use crate::forward::{AnswerBody, Forwarder, UpstreamAnswer};
use crate::route::Route;
use arc_swap::ArcSwap;
use slots::Slots;

mod slots;

/// The event's id, the same on every attempt, so a receiver can drop a repeat.
pub static X_HOOKGATE_EVENT_ID: HeaderName = HeaderName::from_static("x-hookgate-event-id");
/// Which attempt this is, from 1.
pub static X_HOOKGATE_ATTEMPT: HeaderName = HeaderName::from_static("x-hookgate-attempt");

/// The spool is looked at this often even when nothing woke the dispatcher, so replays made with
/// `hookgate spool replay` from another process are picked up within a second.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Added to twice a route's timeout for a claim's lease (see [`lease_for`]).
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// Delivered entries and old dedupe records are pruned this often.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// An attempt whose result could not be recorded keeps its slot this long before it may be sent again.
const RECORD_FAILURE_PAUSE: Duration = Duration::from_secs(5);
/// The start of a failed answer kept with a dead letter or retry, for the operator.
const RECORDED_ANSWER_BYTES: usize = 512;

/// The running dispatcher; stopping it lets attempts in flight end within a grace period.
pub struct Dispatcher {
    /// `Some(grace)` once a stop is asked for.
    stop: watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl Dispatcher {
    /// Starts delivering the spool's pending entries along the routes of the configuration in force, with
    /// its queue settings; `started_with` are the settings at start, kept while a reload has switched the
    /// file to proxy mode (a mode change takes effect only at a restart). Every time it schedules by
    /// (when an attempt is due, when to give up, what is old enough to prune, when the gauges and pruning
    /// are next due) is read from `clock`.
    pub fn start(
        spool: Arc<Backend>,
        config: Arc<ArcSwap<Config>>,
        forwarder: Forwarder,
        started_with: QueueSettings,
        clock: Clock,
    ) -> Dispatcher {
        let (stop, stopped) = watch::channel(None);
        let (done, finished) = mpsc::unbounded_channel();
        let dispatch = Dispatch {
            spool,
            shared_config: config,
            forwarder,
            clock,
            in_flight: HashMap::new(),
            done,
            attempts: JoinSet::new(),
            last_gauges: None,
            last_prune: None,
        };
        let task = tokio::spawn(dispatch.run(started_with, finished, stopped));
        Dispatcher { stop, task }
    }

    /// Starts no new attempt, waits up to `grace` (`shutdown_grace`, what is left of it) for those in flight, then abandons the rest: they stay
    /// pending in the spool and are sent again at the next start.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        let mut task = self.task;
        if tokio::time::timeout(grace + Duration::from_secs(1), &mut task).await.is_err() {
            // Never left running past its grace: it holds the spool (and its lock) while it runs.
            task.abort();
            let _ = task.await;
        }
    }
}

/// The dispatcher's task, and what it keeps from one pass over the spool to the next.
struct Dispatch {
    spool: Arc<Backend>,
    /// The configuration in force; each pass follows it (a reload changes routes, upstreams and retries).
    shared_config: Arc<ArcSwap<Config>>,
    forwarder: Forwarder,
    clock: Clock,
    /// Per route, the deliveries read ahead, being sent, and waiting for their result's commit.
    in_flight: HashMap<String, Slots>,
    /// Handed to every attempt, which reports when it has its answer and when it ends.
    done: mpsc::UnboundedSender<Progress>,
    attempts: JoinSet<()>,
    /// When the gauges were last set and the spool last pruned, in unix ms by `clock`.
    last_gauges: Option<i64>,
    last_prune: Option<i64>,
}

impl Dispatch {
    /// Passes over the spool, each woken by a new delivery, a finished attempt, the next due time or the
    /// poll interval, until a stop is asked for; then lets the attempts in flight end within its grace.
    async fn run(
        mut self,
        started_with: QueueSettings,
        mut finished: mpsc::UnboundedReceiver<Progress>,
        mut stopped: watch::Receiver<Option<Duration>>,
    ) {
        warn_about_removed_routes(&self.spool, &self.shared_config.load_full()).await;
        while stopped.borrow().is_none() {
            let config = self.shared_config.load_full();
            // A file switched to proxy mode by a reload takes effect at a restart: until then, the settings at start.
            let settings = config.delivery.queue().unwrap_or(&started_with);
            while let Ok(finished) = finished.try_recv() {
                self.finish(&finished);
            }
            while self.attempts.try_join_next().is_some() {}
            let next_due = self.start_due_attempts(&config, settings).await;
            self.update_gauges_when_due(&config).await;
            self.prune_when_due(settings).await;
            let wait = wait_for(next_due, self.clock.now_ms());
            tokio::select! {
                () = self.spool.wake().notified() => {}
                Some(finished) = finished.recv() => self.finish(&finished),
                () = tokio::time::sleep(wait) => {}
                _ = stopped.changed() => {}
            }
        }
        let grace = stopped.borrow_and_update().unwrap_or(Duration::ZERO);
        drain(self.attempts, grace).await;
    }

    fn finish(&mut self, progress: &Progress) {
        let slots = self.in_flight.entry(progress.route().to_owned()).or_default();
        match progress {
            Progress::Answered { .. } => slots.answered(),
            Progress::Finished { id, resource_key, .. } => slots.finish(*id, resource_key.as_deref()),
        }
    }

    /// Starts an attempt for every delivery whose time has come, on each route up to its free slots, from
    /// what was read ahead and, when that is too little, one read of the spool (reading ahead as many more
    /// as the backend allows); returns when the next pending delivery becomes due (unix ms), if a read
    /// said. Without a read, every slot is taken, and a finished attempt wakes the dispatcher.
    async fn start_due_attempts(&mut self, config: &Config, settings: &QueueSettings) -> Option<i64> {
        let read_ahead = self.spool.read_ahead();
        let wanted: Vec<Wanted> = config
            .routes
            .iter()
            .map(|route| {
                let slots = self.in_flight.entry(route.name.clone()).or_default();
                let free = slots.wanted_from_spool(slots.free(settings.max_in_flight), read_ahead);
                let (in_flight, resources_in_flight) =
                    if free == 0 { Default::default() } else { (slots.not_due(), slots.resources().clone()) };
                Wanted { route: route.name.clone(), free, in_flight, resources_in_flight, lease: lease_for(route) }
            })
            .collect();
        if wanted.iter().all(|wanted| wanted.free == 0) {
            self.start_ready(config, settings);
            return None;
        }
        let now = self.clock.now_ms();
        let (due, next_due) = match self.spool.due(wanted, now).await {
            Ok(read) => read,
            // While the spool is known to be unreachable, its own log line has said so once.
            Err(error) if !self.spool.writable() => {
                tracing::debug!(%error, "cannot read due deliveries");
                return None;
            }
            Err(error) => {
                tracing::error!(%error, "cannot read due deliveries");
                return None;
            }
        };
        for (route, entries) in config.routes.iter().zip(due) {
            self.in_flight.entry(route.name.clone()).or_default().read(entries);
        }
        self.start_ready(config, settings);
        next_due
    }

    /// Starts, on each route, as many of the deliveries read ahead as it has free slots.
    fn start_ready(&mut self, config: &Config, settings: &QueueSettings) {
        for route in config.routes.iter() {
            let slots = self.in_flight.entry(route.name.clone()).or_default();
            while slots.free(settings.max_in_flight) > 0 {
                let Some(entry) = slots.start_next() else { break };
                let (forwarder, spool, done) = (self.forwarder.clone(), Arc::clone(&self.spool), self.done.clone());
                let retry = settings.retry;
                self.attempts.spawn(attempt(forwarder, spool, route.clone(), entry, retry, self.clock, done));
            }
        }
    }

    /// Sets the queue gauges when [`crate::metrics::UPKEEP_INTERVAL`] has passed since they were last set.
    async fn update_gauges_when_due(&mut self, config: &Config) {
        let now = self.clock.now_ms();
        if interval_passed(self.last_gauges, now, crate::metrics::UPKEEP_INTERVAL) {
            self.last_gauges = Some(now);
            update_queue_gauges(&self.spool, config, now).await;
        }
    }

    /// Prunes the spool when [`PRUNE_INTERVAL`] has passed since it was last pruned (and at start).
    async fn prune_when_due(&mut self, settings: &QueueSettings) {
        let now = self.clock.now_ms();
        if interval_passed(self.last_prune, now, PRUNE_INTERVAL) {
            self.last_prune = Some(now);
            prune(&self.spool, settings, now).await;
        }
    }
}

/// Warns about pending deliveries for routes the configuration no longer has: they stay in the spool.
async fn warn_about_removed_routes(spool: &Backend, config: &Config) {
    let stats = spool.stats().await.map(|(stats, _)| stats).unwrap_or_default();
    for stats in stats.iter().filter(|s| s.pending > 0 && config.routes.by_name(&s.route).is_none()) {
        tracing::warn!(route = %stats.route, pending = stats.pending, "pending deliveries for a route that is no longer configured stay in the spool");
    }
}

/// How long a claim on a delivery of `route` holds on a shared (PostgreSQL) spool: past the longest an
/// attempt can take (the route's timeout) with a wide margin, so that only a replica that died lets it
/// lapse. Its deliveries then go to another replica after this long.
fn lease_for(route: &Route) -> Duration {
    route.timeout * 2 + LEASE_MARGIN
}

/// Whether `interval` has passed between `last` and `now` (unix ms). It has when there was no `last`, and
/// when the clock went back (a wall clock set back must not put off pruning for as long).
fn interval_passed(last: Option<i64>, now: i64, interval: Duration) -> bool {
    let interval = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
    last.is_none_or(|last| now < last || now - last >= interval)
}

/// How long a pass sleeps when nothing wakes it first: until the next delivery is due at `next_due` (unix
/// ms), and never longer than [`POLL_INTERVAL`].
fn wait_for(next_due: Option<i64>, now: i64) -> Duration {
    match next_due {
        Some(at) if at > now => Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(POLL_INTERVAL),
        // Something is due that could not start (its route is at max_in_flight, or it is in flight):
        // a finished attempt wakes us.
        _ => POLL_INTERVAL,
    }
}

/// Removes, in short chunks, the delivered entries older than `keep_delivered`, the unrouted events older
/// than `keep_unrouted` and the dedupe records older than the dedupe window, at `now` (unix ms).
async fn prune(spool: &Backend, settings: &QueueSettings, now: i64) {
    let millis = |duration: Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    let ages = store::PruneAges {
        now,
        keep_delivered_ms: millis(settings.keep_delivered),
        keep_unrouted_ms: millis(settings.keep_unrouted),
        dedupe_window_ms: millis(settings.dedupe.window),
    };
    let mut pruned = 0;
    loop {
        match spool.prune(ages).await {
            Ok(removed) => {
                pruned += removed;
                if removed < store::PRUNE_CHUNK {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "pruning the spool failed");
                break;
            }
        }
    }
    if pruned > 0 {
        tracing::info!(pruned, "pruned delivered entries, unrouted events and old dedupe records");
    }
}

/// Lets the attempts in flight end within `grace`, then abandons the rest: they stay pending in the spool.
async fn drain(mut attempts: JoinSet<()>, grace: Duration) {
    let in_progress = attempts.len();
    if in_progress > 0 {
        tracing::info!(attempts = in_progress, "waiting for delivery attempts in flight");
    }
    let drained = tokio::time::timeout(grace, async { while attempts.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(attempts = attempts.len(), "attempts still in flight after the grace period stay pending");
        attempts.abort_all();
    }
}

/// Sets the queue gauges from the spool: pending, oldest pending age at `now` (unix ms) and dead letters per
/// configured route (zero for a route with none), the unrouted events kept, and the spool's size.
async fn update_queue_gauges(spool: &Backend, config: &Config, now: i64) {
    let Ok((stats, unrouted)) = spool.stats().await else {
        return;
    };
    metrics::gauge!(crate::metrics::UNROUTED_EVENTS).set(unrouted.events as f64);
    // Configured routes, and routes removed from the config that still have entries in the spool.
    let mut routes: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    routes.extend(stats.iter().map(|s| s.route.as_str()).filter(|r| config.routes.by_name(r).is_none()));
    for route in routes {
        let found = stats.iter().find(|s| s.route == route);
        let pending = found.map_or(0, |s| s.pending);
        let dead = found.map_or(0, |s| s.dead);
        let age = found.and_then(|s| s.oldest_pending_since).map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
        metrics::gauge!(crate::metrics::QUEUE_PENDING, "route" => route.to_owned()).set(pending as f64);
        metrics::gauge!(crate::metrics::DEAD_LETTERS, "route" => route.to_owned()).set(dead as f64);
        metrics::gauge!(crate::metrics::QUEUE_OLDEST_PENDING_AGE_SECONDS, "route" => route.to_owned()).set(age);
    }
    metrics::gauge!(crate::metrics::SPOOL_BYTES).set(spool.used_bytes() as f64);
}

/// One attempt: send, classify the answer at the time `clock` says it came, record it (committed) and say
/// it is done.
async fn attempt(
    forwarder: Forwarder,
    spool: Arc<Backend>,
    route: Route,
    due: Due,
    retry: Retry,
    clock: Clock,
    done: mpsc::UnboundedSender<Progress>,
) {
    // Says "finished" however the attempt ends, a panic included, so its resource is never held forever.
    let mut progress = FinishOnDrop {
        done,
        route: route.name.clone(),
        id: due.delivery_id,
        resource_key: due.resource_key.clone(),
        answered: false,
    };
    let number = due.attempts + 1;
    let mut headers = decode_headers(&due.headers);
    if let Ok(id) = HeaderValue::from_str(&due.public_id) {
        headers.insert(X_HOOKGATE_EVENT_ID.clone(), id);
    }
    headers.insert(X_HOOKGATE_ATTEMPT.clone(), HeaderValue::from(number));
    let started = Instant::now();
    let answer =
        forwarder.post(&route, &due.source, headers, due.body.clone(), AnswerBody::Start(RECORDED_ANSWER_BYTES)).await;
    // The upstream is done with it: its slot may take the next delivery while the result is committed.
    progress.answered();
    let now = clock.now_ms();
    let result = classify(answer, number, due.pending_since, now, &retry, fastrand::f64());
    let (result_label, status) = match &result {
        Attempted::Delivered { status } => ("delivered", Some(*status)),
        Attempted::Retry { status, .. } => ("retry", *status),
        Attempted::Dead { status, .. } => ("dead", *status),
    };
    let (error, retry_in_ms) = match &result {
        Attempted::Dead { error, .. } => (Some(error.as_str()), None),
        Attempted::Retry { error, next_attempt_at, .. } => (Some(error.as_str()), Some(next_attempt_at - now)),
        Attempted::Delivered { .. } => (None, None),
    };
    let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    macro_rules! log_attempt {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                route = %route.name,
                event_id = %due.public_id,
                attempt = number,
                result = %result_label,
                status,
                duration_ms,
                retry_in_ms,
                error,
                $message
            )
        };
    }
    metrics::counter!(crate::metrics::DELIVERY_ATTEMPTS_TOTAL, "route" => route.name.clone(), "result" => result_label)
        .increment(1);
    // A dead letter needs an operator: it is logged as a warning.
    if matches!(result, Attempted::Dead { .. }) {
        log_attempt!(warn, "delivery attempt: dead letter");
    } else {
        log_attempt!(info, "delivery attempt");
    }
    if let Err(error) = spool.record(&due, now, result).await {
        // Not recorded: it is still pending and due, and will be sent again. Hold its slot for a while
        // first, so that a failing disk does not turn into a stream of repeats to the upstream.
        tracing::error!(route = %route.name, event_id = %due.public_id, %error, "cannot record an attempt");
        tokio::time::sleep(RECORD_FAILURE_PAUSE).await;
    }
}

/// What an attempt reports: that the upstream has answered (its slot is free), then that it has ended
/// (its result recorded, or not: the delivery is let go).
enum Progress {
    Answered { route: String },
    Finished { route: String, id: i64, resource_key: Option<String> },
}

impl Progress {
    fn route(&self) -> &str {
        match self {
            Progress::Answered { route } | Progress::Finished { route, .. } => route,
        }
    }
}

/// Reports an attempt's progress, and when dropped its end (and its answer, if it never came), so that a
/// panic never keeps a slot or a resource held.
struct FinishOnDrop {
    done: mpsc::UnboundedSender<Progress>,
    route: String,
    id: i64,
    resource_key: Option<String>,
    answered: bool,
}

impl FinishOnDrop {
    fn answered(&mut self) {
        if !self.answered {
            self.answered = true;
            let _ = self.done.send(Progress::Answered { route: self.route.clone() });
        }
    }
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.answered();
        let (route, resource_key) = (std::mem::take(&mut self.route), self.resource_key.take());
        let _ = self.done.send(Progress::Finished { route, id: self.id, resource_key });
    }
}

/// Turns an attempt's outcome into what the spool records. 2xx is delivered; 408, 429, 5xx and transport
/// failures are retried; any other status (3xx, other 4xx) cannot be fixed by retrying and is a dead letter
/// at once. A retry that would fall past `give_up_after` makes a dead letter instead. `random` is in [0, 1).
pub fn classify(
    answer: Result<UpstreamAnswer, UpstreamError>,
    attempt: u32,
    pending_since: i64,
    now: i64,
    retry: &Retry,
    random: f64,
) -> Attempted {
    let (status, error, answer_start, retry_after) = match answer {
        Ok(answer) if answer.status.is_success() => return Attempted::Delivered { status: answer.status.as_u16() },
        Ok(answer) => {
            let status = answer.status;
            let retryable = status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error();
            let error = format!("the upstream answered {status}");
            if !retryable {
                return Attempted::Dead { status: Some(status.as_u16()), error, answer: answer.body.to_vec() };
            }
            let retry_after = retry_after(&answer);
            (Some(status.as_u16()), error, answer.body.to_vec(), retry_after)
        }
        Err(error) => (None, error.to_string(), Vec::new(), None),
    };
    let delay = retry_after.map_or_else(|| backoff(retry, attempt, random), |hint| hint.min(retry.max_backoff));
    let next_attempt_at = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    let give_up_at = pending_since.saturating_add(i64::try_from(retry.give_up_after.as_millis()).unwrap_or(i64::MAX));
    if next_attempt_at > give_up_at {
        let error = format!(
            "gave up after {attempt} attempts (give_up_after {}): {error}",
            humantime::format_duration(retry.give_up_after)
        );
        return Attempted::Dead { status, error, answer: answer_start };
    }
    Attempted::Retry { next_attempt_at, status, error, answer: answer_start }
}

/// Exponential backoff with full jitter: a uniform wait in [0, min(max_backoff, initial_backoff × 2^(attempt−1))].
pub fn backoff(retry: &Retry, attempt: u32, random: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(40);
    let ceiling = retry.initial_backoff.saturating_mul(1u32 << doublings.min(31)).min(retry.max_backoff);
    ceiling.mul_f64(random.clamp(0.0, 1.0))
}

/// `Retry-After` in seconds on a 429 or 503 (an HTTP date is not honoured: backoff applies then).
fn retry_after(answer: &UpstreamAnswer) -> Option<Duration> {
    if answer.status != StatusCode::TOO_MANY_REQUESTS && answer.status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let seconds: u64 = answer.headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;

    const RETRY: Retry = Retry {
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(300),
        give_up_after: Duration::from_secs(72 * 3600),
    };

    fn answer(status: u16, headers: &[(&str, &str)]) -> Result<UpstreamAnswer, UpstreamError> {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.insert(HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
        }
        Ok(UpstreamAnswer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: Bytes::from_static(b"nope"),
        })
    }

    #[test]
    fn backoff_stays_within_its_bounds() {
        for attempt in 1..=64 {
            let ceiling = Duration::from_secs(1u64 << (attempt - 1).min(20)).min(RETRY.max_backoff);
            assert_eq!(backoff(&RETRY, attempt, 0.0), Duration::ZERO);
            assert_eq!(backoff(&RETRY, attempt, 1.0), ceiling, "attempt {attempt}");
            let middle = backoff(&RETRY, attempt, 0.5);
            assert!(middle <= ceiling && middle >= ceiling / 2 - Duration::from_millis(1), "attempt {attempt}");
        }
        assert_eq!(backoff(&RETRY, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&RETRY, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(&RETRY, 10, 1.0), Duration::from_secs(300), "capped at max_backoff");
        assert_eq!(backoff(&RETRY, u32::MAX, 1.0), Duration::from_secs(300), "no overflow");
    }

    #[test]
    fn success_retry_and_dead_letter_statuses() {
        assert_eq!(classify(answer(200, &[]), 1, 0, 0, &RETRY, 0.5), Attempted::Delivered { status: 200 });
        assert_eq!(classify(answer(204, &[]), 1, 0, 0, &RETRY, 0.5), Attempted::Delivered { status: 204 });
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(classify(answer(status, &[]), 1, 0, 0, &RETRY, 0.5), Attempted::Retry { .. }), "{status}");
        }
        for status in [301, 302, 400, 401, 403, 404, 410, 422] {
            match classify(answer(status, &[]), 1, 0, 0, &RETRY, 0.5) {
                Attempted::Dead { status: Some(s), answer, .. } => {
                    assert_eq!(s, status);
                    assert_eq!(answer, b"nope");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        let timeout = classify(Err(UpstreamError::Timeout), 1, 0, 0, &RETRY, 0.5);
        assert!(matches!(timeout, Attempted::Retry { status: None, .. }));
        let refused = classify(Err(UpstreamError::Connect("refused".into())), 1, 0, 0, &RETRY, 0.5);
        assert!(matches!(refused, Attempted::Retry { status: None, .. }));
    }

    #[test]
    fn retry_after_is_honoured_up_to_max_backoff() {
        let at = |r: Attempted| match r {
            Attempted::Retry { next_attempt_at, .. } => next_attempt_at,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(classify(answer(429, &[("retry-after", "7")]), 1, 0, 1000, &RETRY, 0.0)), 8000);
        assert_eq!(at(classify(answer(503, &[("retry-after", "7")]), 1, 0, 1000, &RETRY, 0.0)), 8000);
        assert_eq!(at(classify(answer(429, &[("retry-after", "86400")]), 1, 0, 0, &RETRY, 0.0)), 300_000);
        // A date is not honoured: the jittered backoff (here 0) applies.
        assert_eq!(
            at(classify(answer(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]), 1, 0, 0, &RETRY, 0.0)),
            0
        );
    }

    #[test]
    fn an_interval_has_passed_at_first_after_it_and_when_the_clock_went_back() {
        let minute = Duration::from_secs(60);
        assert!(interval_passed(None, 1_000, minute), "never yet");
        assert!(!interval_passed(Some(1_000), 60_999, minute));
        assert!(interval_passed(Some(1_000), 61_000, minute));
        assert!(interval_passed(Some(1_000), 999, minute), "the wall clock was set back");
    }

    #[test]
    fn the_wait_is_until_the_next_due_time_and_at_most_the_poll_interval() {
        assert_eq!(wait_for(Some(1_250), 1_000), Duration::from_millis(250));
        assert_eq!(wait_for(Some(100_000), 1_000), POLL_INTERVAL);
        assert_eq!(wait_for(Some(1_000), 1_000), POLL_INTERVAL, "due and not started: a finished attempt wakes it");
        assert_eq!(wait_for(None, 1_000), POLL_INTERVAL);
    }

    #[test]
    fn retries_end_in_a_dead_letter_after_give_up_after() {
        let give_up = i64::try_from(RETRY.give_up_after.as_millis()).unwrap();
        let late = classify(answer(503, &[]), 30, 0, give_up - 1000, &RETRY, 1.0);
        match late {
            Attempted::Dead { status: Some(503), error, .. } => {
                assert!(error.starts_with("gave up after 30 attempts"), "{error}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify(answer(503, &[]), 30, 0, give_up - 400_000, &RETRY, 1.0), Attempted::Retry { .. }));
    }
}
