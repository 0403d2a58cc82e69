//! Delivers what the spool holds: for each route, the pending deliveries whose time has come, up to
//! `max_in_flight` at once, one at a time per resource, retried with backoff until delivered or dead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::postgres::Wanted;
use super::{Attempted, Backend, Due, decode_headers, store};
use crate::clock::Clock;
use crate::config::{Config, QueueSettings, Retry};
use crate::forward::{AnswerBody, Forwarder};
use crate::route::Route;
use arc_swap::ArcSwap;
use slots::Slots;

mod outcome;
mod progress;
mod slots;
mod thread;

use progress::{FinishOnDrop, Progress};
use thread::{OwnThread, on_a_thread_of_its_own};

pub use outcome::{backoff, classify};

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
    /// The dispatcher's own thread, when it has one (see [`thread`]).
    thread: Option<OwnThread>,
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
            next_due: None,
            last_gauges: None,
            last_prune: None,
        };
        let own_thread = !clock.follows_tokio() && dispatch.spool.hands_over_fresh();
        let run = dispatch.run(started_with, finished, stopped);
        if own_thread {
            match on_a_thread_of_its_own(run) {
                Ok((task, thread)) => return Dispatcher { stop, task, thread: Some(thread) },
                Err((error, run)) => {
                    tracing::warn!(%error, "cannot start the dispatcher's thread; it runs on the shared runtime");
                    return Dispatcher { stop, task: tokio::spawn(run), thread: None };
                }
            }
        }
        Dispatcher { stop, task: tokio::spawn(run), thread: None }
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
        if let Some(thread) = self.thread {
            thread.end().await;
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
    /// When the next delivery waiting for its time becomes due (unix ms), as the last read and the
    /// retries since said: then the spool is read again.
    next_due: Option<i64>,
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
            self.take_fresh();
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

    /// Takes an attempt's progress. Before a delivery is let go, what the spool stored since the last
    /// look is taken: a delivery handed over fresh after it was let go would be sent twice.
    fn finish(&mut self, progress: &Progress) {
        if matches!(progress, Progress::Finished { .. }) {
            self.take_fresh();
        }
        let slots = self.in_flight.entry(progress.route().to_owned()).or_default();
        match progress {
            Progress::Answered { .. } => slots.answered(),
            Progress::Finished { id, resource_key, retry_at, recorded, .. } => {
                slots.finish(*id, resource_key.as_deref());
                // Not recorded: still pending and due, which only a read finds.
                if !recorded {
                    slots.read_again();
                }
                self.next_due = earliest(self.next_due, *retry_at);
            }
        }
    }

    /// Adds the deliveries the spool stored since the last look, due at once, to what is ready on their
    /// routes (leaving out any held or ready already, and any for a route no longer configured).
    fn take_fresh(&mut self) {
        let fresh = self.spool.take_fresh();
        if fresh.missed {
            self.in_flight.values_mut().for_each(Slots::read_again);
        }
        if fresh.due.is_empty() {
            return;
        }
        let config = self.shared_config.load();
        for due in fresh.due {
            if config.routes.by_name(&due.route).is_some() {
                self.in_flight.entry(due.route.clone()).or_default().fresh(due);
            }
        }
    }

    /// Starts an attempt for every delivery whose time has come, on each route up to its free slots, from
    /// what was read ahead and, when that is too little, one read of the spool (reading ahead as many more
    /// as the backend allows); returns when the next pending delivery becomes due (unix ms), if a read
    /// said. Without a read, every slot is taken, and a finished attempt wakes the dispatcher.
    async fn start_due_attempts(&mut self, config: &Config, settings: &QueueSettings) -> Option<i64> {
        let read_ahead = self.spool.read_ahead();
        let now = self.clock.now_ms();
        // Something waiting (a retry) has come due: only a read finds it.
        if self.next_due.is_some_and(|at| at <= now) {
            self.next_due = None;
            self.in_flight.values_mut().for_each(Slots::read_again);
        }
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
            return self.next_due;
        }
        let asked: Vec<usize> = wanted.iter().map(|wanted| wanted.free).collect();
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
        // Only a spool that hands over what becomes due can be caught up with (on PostgreSQL, other
        // replicas store too): else every pass reads.
        let fresh = self.spool.hands_over_fresh();
        for ((route, entries), asked) in config.routes.iter().zip(due).zip(asked) {
            self.in_flight.entry(route.name.clone()).or_default().read(entries, if fresh { asked } else { 0 });
        }
        self.start_ready(config, settings);
        self.next_due = next_due;
        self.next_due
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

/// The earlier of two times (unix ms), either of which may be unknown.
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
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
    mut due: Due,
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
        retry_at: None,
        recorded: false,
    };
    let number = due.attempts + 1;
    let mut headers = decode_headers(&due.headers);
    if let Ok(id) = HeaderValue::from_str(&due.public_id) {
        headers.insert(X_HOOKGATE_EVENT_ID.clone(), id);
    }
    headers.insert(X_HOOKGATE_ATTEMPT.clone(), HeaderValue::from(number));
    let started = Instant::now();
    let body = std::mem::take(&mut due.body);
    // The body goes with the request: while the result waits for its commit, the attempt holds none of it.
    let answer = forwarder.post(&route, &due.source, headers, body, AnswerBody::Start(RECORDED_ANSWER_BYTES)).await;
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
    if let Attempted::Retry { next_attempt_at, .. } = &result {
        progress.retry_at = Some(*next_attempt_at);
    }
    match spool.record(&due, now, result).await {
        Ok(()) => progress.recorded = true,
        // Not recorded: it is still pending and due, and will be sent again. Hold it for a while first, so
        // that a failing disk does not turn into a stream of repeats to the upstream.
        Err(error) => {
            tracing::error!(route = %route.name, event_id = %due.public_id, %error, "cannot record an attempt");
            tokio::time::sleep(RECORD_FAILURE_PAUSE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
