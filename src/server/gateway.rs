//! The contract's steps for one request, in order: source (by path), method, declared size, the unsigned
//! ping, the signature, the webhook allow-list, the body, verification, topic, replay age, then the
//! delivery mode (proxy: relay to the first route; queue: store for every route). Each step either moves
//! on or ends the request with an [`Accepted`] or a [`Rejection`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::answer::{Accepted, Rejection};
use crate::clock::Clock;
use crate::config::{Config, Delivery, Source, Unrouted};
use crate::forward::{Forwarder, Peer, forwarded_headers};
use crate::spool::{NotStored, Queue, SpoolError, Stored};
use crate::verify::{Signature, UnverifiedDelivery, VerifiedDelivery};
use crate::woocommerce::{
    MAX_PING_BODY_BYTES, X_WC_WEBHOOK_ID, X_WC_WEBHOOK_SIGNATURE, parse_webhook_id, single_header,
};

use super::capacity;
use super::clients::{Client, Requests};
use super::log::{Found, Throttle};
use super::unverified::{Reservation, UnverifiedBytes};
use crate::seen::SeenWebhooks;

/// The most memory reserved for a body before its bytes arrive.
const INITIAL_BODY_BUFFER: usize = 64 * 1024;

/// Everything a request needs: the configuration, the upstream client and the delivery mode's half.
pub struct Gateway {
    /// The configuration in force; a reload swaps it whole, and a request keeps the one it started with.
    config: Arc<ArcSwap<Config>>,
    forwarder: Forwarder,
    /// Read for the replay-age check and the time a delivery is stored with; the dispatcher reads the same.
    clock: Clock,
    scheme: &'static str,
    mode: Mode,
    /// One permit per verified delivery being relayed or stored: `limits.max_concurrent` (see
    /// [`super::capacity`]).
    permits: Arc<tokio::sync::Semaphore>,
    /// Bytes of bodies being read before their signature is checked: `limits.max_unverified_bytes`, and
    /// one client's share of it (see [`super::unverified`]).
    unverified: Arc<UnverifiedBytes>,
    /// Requests in flight per client address: `limits.max_requests_per_client` (see [`super::service`]).
    pub(super) requests: Arc<Requests>,
    /// What `/readyz` reports.
    pub health: Health,
    /// Holds back request lines that anybody can cause past a rate (see [`super::log::Throttle`]).
    pub throttle: Throttle,
    /// What was seen of each store webhook, for `hookgate store status` (see [`crate::seen`]).
    pub seen: SeenWebhooks,
}

/// The delivery mode's half of the gateway.
enum Mode {
    /// Each delivery is relayed now; nothing is kept.
    Proxy,
    /// Each delivery is stored, and the queue's dispatcher delivers it.
    Queue(Box<Queue>),
}

/// Readiness: serving once everything is started, not once a stop has begun.
#[derive(Default)]
pub struct Health {
    serving: AtomicBool,
    stopping: AtomicBool,
}

impl Health {
    /// Marks the gateway as serving: listeners bound, spool open.
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::SeqCst);
    }

    /// Marks the start of a graceful stop: readiness goes 503 at once.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

impl Gateway {
    /// A gateway serving `config`. In queue mode this opens (creating or migrating) the spool and takes its
    /// lock; delivering from it starts with [`Gateway::start_delivering`], which [`super::Server::run`] calls.
    pub async fn new(config: Config) -> Result<Gateway, SpoolError> {
        Gateway::with_clock(config, Clock::system()).await
    }

    /// A gateway like [`Gateway::new`]'s that reads the time from `clock`: for its replay-age check, the
    /// time deliveries are stored with, and its dispatcher's backoff, give-up, pruning and gauges.
    pub async fn with_clock(config: Config, clock: Clock) -> Result<Gateway, SpoolError> {
        // The recorder must be in place before the first request is counted.
        crate::metrics::handle();
        let config = Arc::new(config);
        let shared = Arc::new(ArcSwap::new(Arc::clone(&config)));
        let forwarder = Forwarder::new();
        let mode = match &config.delivery {
            Delivery::Proxy => Mode::Proxy,
            Delivery::Queue(settings) => Mode::Queue(Box::new(Queue::open(settings, clock).await?)),
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(config.limits.max_concurrent));
        let unverified = UnverifiedBytes::new(config.limits.max_unverified_bytes);
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        Ok(Gateway {
            config: shared,
            forwarder,
            clock,
            scheme,
            mode,
            permits,
            unverified,
            requests: Requests::new(),
            health: Health::default(),
            throttle: Throttle::default(),
            seen: SeenWebhooks::default(),
        })
    }

    /// In queue mode, starts delivering what the spool holds (once); in proxy mode there is nothing to start.
    pub fn start_delivering(&self) {
        if let Mode::Queue(queue) = &self.mode {
            queue.start_delivering(Arc::clone(&self.config), self.forwarder.clone());
        }
    }

    /// The queue, in queue mode.
    pub fn queue(&self) -> Option<&Queue> {
        match &self.mode {
            Mode::Queue(queue) => Some(queue),
            Mode::Proxy => None,
        }
    }

    /// The gateway's clock (tests pass one that follows tokio's paused clock).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// `None` when the gateway can take deliveries; otherwise why not (for `/readyz`).
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.health.stopping.load(Ordering::SeqCst) {
            return Some("stopping");
        }
        if !self.health.serving.load(Ordering::SeqCst) {
            return Some("the webhook listener is not serving yet");
        }
        if let Mode::Queue(queue) = &self.mode
            && let Some(reason) = queue.unavailable()
        {
            return Some(reason);
        }
        None
    }

    /// Stops delivering (attempts in flight get up to `grace` to end) and closes the spool. Everything not
    /// delivered stays pending for the next start.
    pub async fn shutdown(&self, grace: Duration) {
        if let Mode::Queue(queue) = &self.mode {
            queue.stop(grace).await;
        }
    }

    /// The configuration requests are served with.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Loads `path` again and, when it validates, swaps it in atomically: sources, secrets (read again from
    /// their environment variables and files), routes, limits, TLS certificate. A file that does not validate
    /// is refused and the configuration in force keeps serving. Settings that only take effect at start are
    /// reported as needing a restart.
    pub fn reload(&self, path: &std::path::Path) -> Result<Vec<String>, crate::config::ConfigError> {
        let new = match Config::load(path) {
            Ok(new) => new,
            Err(error) => {
                metrics::counter!(crate::metrics::CONFIG_RELOADS_TOTAL, "result" => "failure").increment(1);
                return Err(error);
            }
        };
        let restart = needs_restart(&self.config(), &new);
        self.config.store(Arc::new(new));
        crate::metrics::config_loaded();
        Ok(restart)
    }

    /// The contract's steps for one request, with what they learn written into `found`.
    pub(super) async fn steps(
        &self,
        config: &Config,
        request: Request<Incoming>,
        peer: &Peer,
        found: &mut Found,
    ) -> Result<Accepted, Rejection> {
        let source = config.source_for_path(request.uri().path());
        found.source = source.cloned();
        if !host_is_sound(&request) {
            return Err(Rejection::BadHost);
        }
        let source = source.ok_or(Rejection::NotFound)?;
        if request.method() != Method::POST {
            return Err(Rejection::MethodNotAllowed);
        }
        let (parts, body) = request.into_parts();
        let declared_length = declared_length(&parts.headers)?;
        if declared_length.is_some_and(|n| n > config.limits.max_body_bytes) {
            return Err(Rejection::TooLarge);
        }

        // The client the per-client caps count (the peer, or behind a trusted proxy the one it names).
        let client = parts.extensions.get::<Client>().map_or(peer.address.ip(), |client| client.0);
        let mut reservation = self.unverified.reservation(client, config.limits.max_unverified_bytes_per_client);
        let mut signatures = parts.headers.get_all(&X_WC_WEBHOOK_SIGNATURE).iter();
        let Some(signature_header) = signatures.next() else {
            return answer_unsigned(config, source, body, declared_length, &mut reservation, found).await;
        };
        if signatures.next().is_some() {
            // Two signatures are refused, never "either one".
            return Err(Rejection::InvalidSignature);
        }
        let signature = Signature::from_header(signature_header.as_bytes(), source.verifier.algorithm())
            .map_err(|_| Rejection::InvalidSignature)?;
        let webhook_id = single_header(&parts.headers, &X_WC_WEBHOOK_ID).and_then(|v| parse_webhook_id(v.as_bytes()));
        if let Some(allowed) = &source.webhook_ids
            && !webhook_id.is_some_and(|id| allowed.contains(&id))
        {
            return Err(Rejection::ForbiddenWebhook);
        }

        let headers = forwarded_headers(&parts, peer, self.scheme);
        // Memory for the body is reserved as it arrives, and held until it is verified.
        let body =
            read_body(body, config.limits.max_body_bytes, declared_length, &config.limits, &mut reservation).await?;
        found.bytes = body.len();
        let delivery = self.verify(source, UnverifiedDelivery { body, headers }, &signature, webhook_id);
        drop(reservation);
        let delivery = delivery?;
        // Checked only now, so that an unsigned caller learns nothing about what else is expected.
        let topic = delivery.topic().ok_or(Rejection::MissingTopic)?;
        found.topic = Some(topic.to_owned());
        if let Some(max_age) = source.reject_older_than
            && let Some(modified) = delivery.modified_at()
            && self.clock.now_ms() / 1000 - modified > i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
        {
            return Ok(Accepted::Stale);
        }
        // Only now does the request take one of the `max_concurrent` slots. Each mode's work is boxed: its
        // future is the largest part of a request's, and nested unboxed in the layers' futures it would be
        // laid out several times over and moved whole at each layer's box (8 KiB per request, was).
        capacity::within(&self.permits, async {
            match &self.mode {
                Mode::Proxy => Box::pin(self.proxy(config, source, delivery, found)).await,
                Mode::Queue(queue) => Box::pin(enqueue(config, queue, source, delivery, found)).await,
            }
        })
        .await
    }

    /// Checks the signature, and notes what it says of webhook `webhook_id` (see [`crate::seen`]).
    fn verify(
        &self,
        source: &Source,
        delivery: UnverifiedDelivery,
        signature: &Signature,
        webhook_id: Option<u64>,
    ) -> Result<VerifiedDelivery, Rejection> {
        let verified = source.verifier.verify(delivery, signature);
        if let Some(id) = webhook_id {
            let now = self.clock.now_ms() / 1000;
            match verified.as_ref().and_then(|delivery| source.secrets.get(delivery.secret_position())) {
                Some(secret) => self.seen.verified(&source.name, id, secret, now),
                None if verified.is_none() => self.seen.refused(&source.name, id, now),
                None => {}
            }
        }
        verified.ok_or(Rejection::InvalidSignature)
    }

    /// Proxy mode: the first matching route gets the delivery now, and its answer is WooCommerce's answer.
    async fn proxy(
        &self,
        config: &Config,
        source: &Source,
        delivery: VerifiedDelivery,
        found: &mut Found,
    ) -> Result<Accepted, Rejection> {
        let topic = delivery.topic().unwrap_or_default();
        let Some(route) = config.routes.first(&source.name, topic) else {
            return unrouted(config);
        };
        found.route = Some(route.name.clone());
        let answer = self.forwarder.send(route, &source.name, &delivery).await?;
        Ok(Accepted::Relayed(answer))
    }
}

/// Queue mode: store the delivery with one pending entry per matching route (fan-out), and answer 200
/// only once that is committed to disk.
async fn enqueue(
    config: &Config,
    queue: &Queue,
    source: &Source,
    delivery: VerifiedDelivery,
    found: &mut Found,
) -> Result<Accepted, Rejection> {
    let topic = delivery.topic().unwrap_or_default();
    let routes: Vec<String> = config.routes.matching(&source.name, topic).map(|r| r.name.clone()).collect();
    if routes.is_empty() && config.unrouted != Unrouted::Accept {
        return unrouted(config);
    }
    found.route = (!routes.is_empty()).then(|| routes.join(","));
    // With no route, `unrouted: accept`: stored as unrouted, for a replay once a route takes it.
    match queue.store(config, &source.name, &delivery, routes).await {
        Ok(Stored::Queued { public_id }) => Ok(Accepted::Queued { id: public_id }),
        Ok(Stored::Duplicate { public_id }) => Ok(Accepted::Duplicate { id: public_id }),
        Ok(Stored::Unrouted { public_id }) => {
            tracing::warn!(
                source = %source.name,
                topic,
                event_id = %public_id,
                "no route takes this delivery: kept as unrouted until delivery.keep_unrouted has passed; once a route takes its topic, `hookgate spool replay --unrouted` delivers it"
            );
            Ok(Accepted::Unrouted { id: Some(public_id) })
        }
        Err(NotStored::Full) => Err(Rejection::SpoolFull),
        Err(NotStored::Unavailable(error)) => {
            tracing::error!(%error, "cannot store a delivery: answering 503");
            Err(Rejection::SpoolUnavailable)
        }
    }
}

/// What changed between `old` and `new` that only a restart applies.
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut restart = Vec::new();
    if new.listen != old.listen {
        restart.push(format!("listen ({} → {})", old.listen, new.listen));
    }
    if new.admin_listen != old.admin_listen {
        restart.push(format!("admin_listen ({} → {})", old.admin_listen, new.admin_listen));
    }
    let same_spool = match (new.delivery.queue(), old.delivery.queue()) {
        (Some(new), Some(old)) => new.spool.same_as(&old.spool),
        (new, old) => new.is_none() && old.is_none(),
    };
    if new.delivery.mode() != old.delivery.mode() || !same_spool {
        restart.push("delivery.mode and the spool (delivery.spool_path or delivery.postgres)".to_owned());
    }
    if new.limits.max_connections != old.limits.max_connections
        || new.limits.max_connections_per_client != old.limits.max_connections_per_client
    {
        restart.push("limits.max_connections and limits.max_connections_per_client".to_owned());
    }
    if new.limits.max_unverified_bytes != old.limits.max_unverified_bytes {
        restart.push("limits.max_unverified_bytes".to_owned());
    }
    if new.http2 != old.http2 {
        restart.push("http2".to_owned());
    }
    if new.tls.is_some() != old.tls.is_some() {
        restart.push("turning tls on or off".to_owned());
    }
    if new.log.format != old.log.format || new.log.level != old.log.level {
        restart.push("log.format and log.level".to_owned());
    }
    if new.limits.header_timeout != old.limits.header_timeout || new.limits.max_concurrent != old.limits.max_concurrent
    {
        restart.push("limits.header_timeout and limits.max_concurrent".to_owned());
    }
    let same_store = |source: &Arc<Source>| {
        let before = old.sources.iter().find(|s| s.name == source.name).and_then(|s| s.store.as_ref());
        match (before, source.store.as_ref()) {
            (Some(before), Some(now)) => before.same_as(now),
            (before, now) => before.is_none() && now.is_none(),
        }
    };
    let stores = |config: &Config| config.sources.iter().filter(|s| s.store.is_some()).count();
    if !new.sources.iter().all(same_store) || stores(new) != stores(old) {
        restart.push("sources[].store (the store watches run with the settings at start)".to_owned());
    }
    restart
}

/// A verified delivery that no route takes and that is not kept: `unrouted` decides. `accept` promises a
/// delivery kept, which only queue mode's spool can keep (see [`enqueue`]): anywhere else (a reload to
/// queue mode while proxy mode still serves) it is refused, never answered 200 and dropped.
fn unrouted(config: &Config) -> Result<Accepted, Rejection> {
    match config.unrouted {
        Unrouted::Discard => Ok(Accepted::Unrouted { id: None }),
        Unrouted::Accept | Unrouted::Reject => Err(Rejection::Unrouted),
    }
}

/// An unsigned request is only acceptable as WooCommerce's ping: `webhook_id=<digits>`, answered 200 at
/// once (a ping that fails makes WooCommerce refuse to activate the webhook) and forwarded nowhere.
async fn answer_unsigned(
    config: &Config,
    source: &Source,
    body: Incoming,
    declared_length: Option<u64>,
    reservation: &mut Reservation,
    found: &mut Found,
) -> Result<Accepted, Rejection> {
    if declared_length.is_some_and(|n| n > MAX_PING_BODY_BYTES) {
        return Err(Rejection::MissingSignature);
    }
    let body = match read_body(body, MAX_PING_BODY_BYTES, declared_length, &config.limits, reservation).await {
        Ok(body) => body,
        Err(Rejection::TooLarge) => return Err(Rejection::MissingSignature),
        Err(other) => return Err(other),
    };
    found.bytes = body.len();
    let id = crate::woocommerce::ping_webhook_id(&body).ok_or(Rejection::MissingSignature)?;
    found.ping_webhook_id = Some(id);
    if source.webhook_ids.as_ref().is_some_and(|allowed| !allowed.contains(&id)) {
        return Err(Rejection::ForbiddenWebhook);
    }
    Ok(Accepted::Pong)
}

/// RFC 9112, section 3.2: an HTTP/1.1 request has exactly one `Host` header, and no request has two (a
/// server must answer 400 otherwise). HTTP/1.0 may leave it out, and HTTP/2 carries `:authority` instead.
fn host_is_sound<B>(request: &Request<B>) -> bool {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => false,
        (None, None) => request.version() != http::Version::HTTP_11,
        (Some(_), None) => true,
    }
}

/// The body's declared length. hyper has already refused a malformed or conflicting `Content-Length`.
fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, Rejection> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value.to_str().ok().and_then(|v| v.parse().ok()).map(Some).ok_or(Rejection::BodyUnreadable),
    }
}

/// Reads the whole body into one buffer, refusing it once it passes `limit` bytes (a chunked body stops
/// being read there), when it does not arrive within `body_timeout`, when it sends nothing for
/// `body_stall_timeout`, or when `reservation` cannot grow to the buffer it needs.
async fn read_body(
    mut body: Incoming,
    limit: u64,
    declared_length: Option<u64>,
    limits: &crate::config::Limits,
    reservation: &mut Reservation,
) -> Result<Bytes, Rejection> {
    let stall = limits.body_stall_timeout;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // Sized from Content-Length so a body is read into one buffer, but never more than INITIAL_BODY_BUFFER up
    // front: a client cannot make the gateway reserve memory for bytes it has not sent.
    let capacity =
        declared_length.map_or(8 * 1024, |n| usize::try_from(n).unwrap_or(limit)).min(limit).min(INITIAL_BODY_BUFFER);
    reservation.grow_to(capacity as u64)?;
    let read = async {
        let mut buffer = BytesMut::with_capacity(capacity);
        while let Some(frame) = tokio::time::timeout(stall, body.frame()).await.map_err(|_| Rejection::BodyTimeout)? {
            let frame = frame.map_err(|_| Rejection::BodyUnreadable)?;
            if let Ok(data) = frame.into_data() {
                if buffer.len() + data.len() > limit {
                    return Err(Rejection::TooLarge);
                }
                reservation.grow_to((buffer.len() + data.len()) as u64)?;
                buffer.extend_from_slice(&data);
            }
        }
        Ok(buffer.freeze())
    };
    tokio::time::timeout(limits.body_timeout, read).await.map_err(|_| Rejection::BodyTimeout)?
}
