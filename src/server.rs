//! The webhook listener: accepts connections, takes each request through the steps of the contract
//! (source, method, size, ping, signature, allow-list, topic, route), and hands verified deliveries to the
//! configured delivery mode.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use arc_swap::ArcSwap;

use crate::answer::{Body, Outcome, Rejection, json, status_with_id};
use crate::config::{Config, Delivery, QueueSettings, Source, Unrouted};
use crate::forward::Forwarder;
use crate::spool::dispatch::Dispatcher;
use crate::spool::{NewEvent, Spool, SpoolError, Stored, dedupe_key, encode_headers, now_ms, resource_key};
use crate::verify::{
    Signature, UnverifiedDelivery, VerifiedDelivery, X_WC_WEBHOOK_DELIVERY_ID, X_WC_WEBHOOK_ID, X_WC_WEBHOOK_SIGNATURE,
};

/// Prefix of every header WooCommerce sends about a delivery; all of them are forwarded.
const WOOCOMMERCE_HEADER_PREFIX: &str = "x-wc-webhook-";

/// WooCommerce's ping body is `webhook_id=<id>`; an unsigned request with a larger body cannot be one,
/// so it is refused without reading more than this.
pub const MAX_PING_BODY_BYTES: u64 = 64;
/// The most memory reserved for a body before its bytes arrive.
const INITIAL_BODY_BUFFER: usize = 256 * 1024;
/// hyper's read buffer bound; it also bounds the request line and header block a client can send.
const MAX_HEADER_BUFFER_BYTES: usize = 64 * 1024;

/// Everything a request needs: the configuration, the upstream client and, in queue mode, the spool.
pub struct Gateway {
    /// The configuration in force; a reload swaps it whole, and a request keeps the one it started with.
    config: Arc<ArcSwap<Config>>,
    forwarder: Forwarder,
    scheme: &'static str,
    queue: Option<Queue>,
    /// One permit per request being answered: `limits.max_concurrent`.
    permits: Arc<tokio::sync::Semaphore>,
    /// What `/readyz` reports.
    pub health: Health,
}

/// Readiness: serving once the listener is bound (and, in queue mode, the spool is writable), not once a
/// stop has begun.
#[derive(Default)]
pub struct Health {
    serving: std::sync::atomic::AtomicBool,
    stopping: std::sync::atomic::AtomicBool,
}

impl Health {
    /// Marks the listener as bound and serving.
    pub fn set_serving(&self) {
        self.serving.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Marks the start of a graceful stop: readiness goes 503 at once.
    pub fn set_stopping(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn serving(&self) -> bool {
        self.serving.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Queue mode's parts: the spool and the dispatcher delivering from it.
struct Queue {
    spool: Arc<Spool>,
    dispatcher: std::sync::Mutex<Option<Dispatcher>>,
    /// The queue settings at start: in force while a reload has switched the file to proxy mode, which takes
    /// effect only at a restart.
    settings: QueueSettings,
}

impl Gateway {
    /// A gateway serving `config` over plain HTTP. In queue mode this opens (creating or migrating) the spool
    /// and starts delivering what it holds, so it must run inside a tokio runtime.
    pub fn new(config: Config) -> Result<Gateway, SpoolError> {
        // The recorder must be in place before the first request is counted.
        crate::metrics::handle();
        let config = Arc::new(config);
        let shared = Arc::new(ArcSwap::new(Arc::clone(&config)));
        let forwarder = Forwarder::new();
        let queue = match &config.delivery {
            Delivery::Proxy => None,
            Delivery::Queue(settings) => {
                let spool = Arc::new(Spool::open(&settings.spool_path)?);
                let dispatcher =
                    Dispatcher::start(Arc::clone(&spool), Arc::clone(&shared), forwarder.clone(), settings.clone());
                Some(Queue { spool, dispatcher: std::sync::Mutex::new(Some(dispatcher)), settings: settings.clone() })
            }
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(config.limits.max_concurrent));
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        Ok(Gateway { config: shared, forwarder, scheme, queue, permits, health: Health::default() })
    }

    /// `None` when the gateway can take deliveries; otherwise why not (for `/readyz`).
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.health.stopping() {
            return Some("stopping");
        }
        if !self.health.serving() {
            return Some("the webhook listener is not serving yet");
        }
        if let Some(queue) = &self.queue
            && !queue.spool.writable()
        {
            return Some("the spool cannot be written");
        }
        None
    }

    /// Stops delivering (attempts in flight get up to `grace` to end) and closes the spool. Everything not
    /// delivered stays pending for the next start.
    pub async fn shutdown(&self, grace: Duration) {
        if let Some(queue) = &self.queue {
            let dispatcher = queue.dispatcher.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(dispatcher) = dispatcher {
                dispatcher.stop(grace).await;
            }
            queue.spool.close().await;
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
        let old = self.config();
        let mut restart = Vec::new();
        if new.listen != old.listen {
            restart.push(format!("listen ({} → {})", old.listen, new.listen));
        }
        if new.admin_listen != old.admin_listen {
            restart.push(format!("admin_listen ({} → {})", old.admin_listen, new.admin_listen));
        }
        let spool_path = |config: &Config| config.delivery.queue().map(|queue| queue.spool_path.clone());
        if new.delivery.mode() != old.delivery.mode() || spool_path(&new) != spool_path(&old) {
            restart.push("delivery.mode and delivery.spool_path".to_owned());
        }
        if new.tls.is_some() != old.tls.is_some() {
            restart.push("turning tls on or off".to_owned());
        }
        if new.log.format != old.log.format || new.log.level != old.log.level {
            restart.push("log.format and log.level".to_owned());
        }
        if new.limits.header_timeout != old.limits.header_timeout
            || new.limits.max_concurrent != old.limits.max_concurrent
        {
            restart.push("limits.header_timeout and limits.max_concurrent".to_owned());
        }
        self.config.store(Arc::new(new));
        crate::metrics::config_loaded();
        Ok(restart)
    }

    /// Answers one request. Every path ends in an answer and one log line.
    pub async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let config = self.config();
        let mut log = RequestLog::new(&request);
        // Past max_concurrent, 503 at once: never an unbounded queue of waiting requests.
        let permit = Arc::clone(&self.permits).try_acquire_owned();
        let answered = match permit {
            Ok(_permit) => self.answer(&config, request, peer, &mut log).await,
            Err(_) => {
                log.source = config.source_for_path(request.uri().path()).cloned();
                Err(Rejection::Overloaded)
            }
        };
        let response = match answered {
            Ok(response) => response,
            Err(rejection) => {
                log.outcome = rejection.outcome();
                rejection.answer()
            }
        };
        log.emit(response.status().as_u16(), started.elapsed());
        response
    }

    async fn answer(
        &self,
        config: &Config,
        request: Request<Incoming>,
        peer: SocketAddr,
        log: &mut RequestLog,
    ) -> Result<Response<Body>, Rejection> {
        let source = config.source_for_path(request.uri().path()).ok_or(Rejection::NotFound)?;
        log.source = Some(Arc::clone(source));
        if request.method() != Method::POST {
            return Err(Rejection::MethodNotAllowed);
        }
        let (parts, body) = request.into_parts();
        let declared_length = declared_length(&parts.headers)?;
        if declared_length.is_some_and(|n| n > config.limits.max_body_bytes) {
            return Err(Rejection::TooLarge);
        }

        let mut signatures = parts.headers.get_all(&X_WC_WEBHOOK_SIGNATURE).iter();
        let Some(signature_header) = signatures.next() else {
            return answer_unsigned(config, source, body, declared_length, log).await;
        };
        if signatures.next().is_some() {
            // Two signatures are refused, never "either one".
            return Err(Rejection::InvalidSignature);
        }
        let signature = Signature::from_header(signature_header.as_bytes(), source.verifier.algorithm())
            .map_err(|_| Rejection::InvalidSignature)?;
        if let Some(allowed) = &source.webhook_ids
            && !log.webhook_id.is_some_and(|id| allowed.contains(&id))
        {
            return Err(Rejection::ForbiddenWebhook);
        }

        let headers = forwarded_headers(&parts, peer, self.scheme);
        let body = read_body(body, config.limits.max_body_bytes, declared_length, config.limits.body_timeout).await?;
        log.bytes = body.len();
        let delivery = source
            .verifier
            .verify(UnverifiedDelivery { body, headers }, &signature)
            .ok_or(Rejection::InvalidSignature)?;
        // Checked only now, so that an unsigned caller learns nothing about what else is expected.
        let topic = delivery.topic().ok_or(Rejection::MissingTopic)?;
        log.topic = Some(topic.to_owned());
        if let Some(max_age) = source.reject_older_than
            && let Some(modified) = delivery.modified_at()
            && now_ms() / 1000 - modified > i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
        {
            // 200, so that WooCommerce does not count a failure against the webhook for a replay.
            log.outcome = Outcome::Stale;
            return Ok(json(StatusCode::OK, r#"{"status":"stale"}"#));
        }
        match &self.queue {
            None => self.proxy(config, source, delivery, log).await,
            Some(queue) => self.enqueue(config, queue, source, delivery, log).await,
        }
    }

    /// Queue mode: store the delivery with one pending entry per matching route (fan-out), and answer 200
    /// only once that is committed to disk.
    async fn enqueue(
        &self,
        config: &Config,
        queue: &Queue,
        source: &Source,
        delivery: VerifiedDelivery,
        log: &mut RequestLog,
    ) -> Result<Response<Body>, Rejection> {
        let (spool, settings) = (&queue.spool, config.delivery.queue().unwrap_or(&queue.settings));
        let topic = delivery.topic().unwrap_or_default();
        let routes: Vec<String> = config.routes.matching(&source.name, topic).map(|r| r.name.clone()).collect();
        if routes.is_empty() {
            return unrouted(config, log);
        }
        log.route = Some(routes.join(","));
        let body = delivery.body();
        if spool.used_bytes().saturating_add(body.len() as u64) > settings.max_spool_bytes {
            tracing::warn!(
                spool_bytes = spool.used_bytes(),
                max_spool_bytes = settings.max_spool_bytes,
                "spool full: refusing a delivery with 503"
            );
            return Err(Rejection::SpoolFull);
        }
        let received_at = now_ms();
        let dedupe = settings.dedupe.applies_to(topic).then(|| {
            let window = i64::try_from(settings.dedupe.window.as_millis()).unwrap_or(i64::MAX);
            (dedupe_key(&source.name, topic, body), received_at.saturating_sub(window))
        });
        let event = NewEvent {
            public_id: uuid::Uuid::now_v7().to_string(),
            received_at,
            source: source.name.clone(),
            topic: topic.to_owned(),
            resource_key: resource_key(&source.name, topic, body),
            headers: encode_headers(delivery.headers()),
            body: body.clone(),
            routes,
            dedupe,
        };
        match spool.insert(event).await {
            Ok(Stored::Queued { public_id }) => {
                log.outcome = Outcome::Queued;
                log.event_id = Some(public_id.clone());
                Ok(status_with_id("queued", &public_id))
            }
            Ok(Stored::Duplicate { public_id }) => {
                log.outcome = Outcome::Duplicate;
                log.event_id = Some(public_id.clone());
                Ok(status_with_id("duplicate", &public_id))
            }
            Err(error) => {
                tracing::error!(%error, "cannot store a delivery: answering 503");
                Err(Rejection::SpoolUnavailable)
            }
        }
    }

    /// Proxy mode: the first matching route gets the delivery now, and its answer is WooCommerce's answer.
    async fn proxy(
        &self,
        config: &Config,
        source: &Source,
        delivery: VerifiedDelivery,
        log: &mut RequestLog,
    ) -> Result<Response<Body>, Rejection> {
        let topic = delivery.topic().unwrap_or_default();
        let Some(route) = config.routes.first(&source.name, topic) else {
            return unrouted(config, log);
        };
        log.outcome = Outcome::Accepted;
        log.route = Some(route.name.clone());
        match self.forwarder.send(route, &source.name, &delivery).await {
            Ok(answer) => {
                let mut response = Response::new(http_body_util::Full::new(answer.body));
                *response.status_mut() = answer.status;
                *response.headers_mut() = answer.headers;
                Ok(response)
            }
            Err(error) => {
                let answer = error.answer();
                log.error = Some(error.to_string());
                Ok(answer)
            }
        }
    }
}

/// A verified delivery that no route takes: `unrouted` decides.
fn unrouted(config: &Config, log: &mut RequestLog) -> Result<Response<Body>, Rejection> {
    match config.unrouted {
        Unrouted::Accept => {
            log.outcome = Outcome::Unrouted;
            Ok(json(http::StatusCode::OK, r#"{"status":"unrouted"}"#))
        }
        Unrouted::Reject => Err(Rejection::Unrouted),
    }
}

/// An unsigned request is only acceptable as WooCommerce's ping: `webhook_id=<digits>`, answered 200 at
/// once (a ping that fails makes WooCommerce refuse to activate the webhook) and forwarded nowhere.
async fn answer_unsigned(
    config: &Config,
    source: &Source,
    body: Incoming,
    declared_length: Option<u64>,
    log: &mut RequestLog,
) -> Result<Response<Body>, Rejection> {
    if declared_length.is_some_and(|n| n > MAX_PING_BODY_BYTES) {
        return Err(Rejection::MissingSignature);
    }
    let body = match read_body(body, MAX_PING_BODY_BYTES, declared_length, config.limits.body_timeout).await {
        Ok(body) => body,
        Err(Rejection::TooLarge) => return Err(Rejection::MissingSignature),
        Err(other) => return Err(other),
    };
    log.bytes = body.len();
    let id = ping_webhook_id(&body).ok_or(Rejection::MissingSignature)?;
    log.webhook_id = Some(id);
    if source.webhook_ids.as_ref().is_some_and(|allowed| !allowed.contains(&id)) {
        return Err(Rejection::ForbiddenWebhook);
    }
    log.outcome = Outcome::Ping;
    Ok(json(http::StatusCode::OK, r#"{"status":"pong"}"#))
}

/// The id in a ping body: exactly `webhook_id=` and the id.
pub fn ping_webhook_id(body: &[u8]) -> Option<u64> {
    parse_webhook_id(body.strip_prefix(b"webhook_id=")?)
}

/// A webhook id as WooCommerce writes it: 1 to 19 ASCII digits (every such number fits in a u64), no sign,
/// no space, no leading zero; anything else matches no allow-list.
pub fn parse_webhook_id(digits: &[u8]) -> Option<u64> {
    if digits.is_empty()
        || digits.len() > 19
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && digits.len() > 1)
    {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The body's declared length. hyper has already refused a malformed or conflicting `Content-Length`.
fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, Rejection> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value.to_str().ok().and_then(|v| v.parse().ok()).map(Some).ok_or(Rejection::BodyUnreadable),
    }
}

/// Reads the whole body into one buffer, refusing it once it passes `limit` bytes (a chunked body stops
/// being read there) or when it does not arrive within `timeout`.
async fn read_body(
    mut body: Incoming,
    limit: u64,
    declared_length: Option<u64>,
    timeout: Duration,
) -> Result<Bytes, Rejection> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // Sized from Content-Length so a body is read into one buffer, but never more than INITIAL_BODY_BUFFER up
    // front: a client cannot make the gateway reserve memory for bytes it has not sent.
    let capacity =
        declared_length.map_or(8 * 1024, |n| usize::try_from(n).unwrap_or(limit)).min(limit).min(INITIAL_BODY_BUFFER);
    let read = async {
        let mut buffer = BytesMut::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Rejection::BodyUnreadable)?;
            if let Ok(data) = frame.into_data() {
                if buffer.len() + data.len() > limit {
                    return Err(Rejection::TooLarge);
                }
                buffer.extend_from_slice(&data);
            }
        }
        Ok(buffer.freeze())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| Rejection::BodyTimeout)?
}

/// The headers sent upstream: what WooCommerce sent about the delivery (`Content-Type`, `User-Agent`, every
/// `X-WC-Webhook-*`) and the usual `X-Forwarded-*`. Everything else, hop-by-hop headers included, stays here.
fn forwarded_headers(parts: &http::request::Parts, peer: SocketAddr, scheme: &'static str) -> HeaderMap {
    let incoming = &parts.headers;
    let connection_only = crate::forward::connection_named(incoming);
    let mut headers = HeaderMap::with_capacity(16);
    for (name, value) in incoming {
        let wanted = name == header::CONTENT_TYPE
            || name == header::USER_AGENT
            || name.as_str().starts_with(WOOCOMMERCE_HEADER_PREFIX);
        if wanted && !connection_only.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let forwarded_for = match incoming.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(scheme));
    // HTTP/2 carries the host in the :authority pseudo-header, which hyper puts in the URI.
    let host = incoming
        .get(header::HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
    headers
}

/// What is known of a request so far, logged as one line when it is answered. Only validated values are
/// kept: never the body, never a secret, never raw header bytes.
struct RequestLog {
    source: Option<Arc<Source>>,
    topic: Option<String>,
    route: Option<String>,
    webhook_id: Option<u64>,
    delivery_id: Option<String>,
    event_id: Option<String>,
    /// Why an upstream failed (its text never holds request input).
    error: Option<String>,
    outcome: Outcome,
    bytes: usize,
}

impl RequestLog {
    fn new(request: &Request<Incoming>) -> RequestLog {
        let headers = request.headers();
        let webhook_id = single_header(headers, &X_WC_WEBHOOK_ID).and_then(|v| parse_webhook_id(v.as_bytes()));
        // A delivery id is 32 hex characters; anything else is not echoed into the log.
        let delivery_id = single_header(headers, &X_WC_WEBHOOK_DELIVERY_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .map(str::to_owned);
        RequestLog {
            source: None,
            topic: None,
            route: None,
            webhook_id,
            delivery_id,
            event_id: None,
            error: None,
            outcome: Outcome::BadRequest,
            bytes: 0,
        }
    }

    fn emit(&self, status: u16, duration: Duration) {
        let source = self.source.as_ref().map_or(crate::metrics::NO_SOURCE, |s| s.name.as_str());
        metrics::counter!(crate::metrics::REQUESTS_TOTAL, "source" => source.to_owned(), "outcome" => self.outcome.as_str())
            .increment(1);
        metrics::histogram!(crate::metrics::REQUEST_DURATION_SECONDS, "source" => source.to_owned())
            .record(duration.as_secs_f64());
        if self.bytes > 0 {
            metrics::histogram!(crate::metrics::REQUEST_BODY_BYTES, "source" => source.to_owned())
                .record(self.bytes as f64);
        }
        // Every value here is validated (plain names, topic characters, hex ids), so it is logged unquoted.
        tracing::info!(
            source = %self.source.as_ref().map_or("-", |s| s.name.as_str()),
            topic = %self.topic.as_deref().unwrap_or("-"),
            route = %self.route.as_deref().unwrap_or("-"),
            webhook_id = self.webhook_id,
            delivery_id = %self.delivery_id.as_deref().unwrap_or("-"),
            event_id = %self.event_id.as_deref().unwrap_or("-"),
            outcome = %self.outcome.as_str(),
            status,
            bytes = self.bytes,
            duration_ms = (duration.as_secs_f64() * 1e6).round() / 1e3,
            error = self.error.as_deref(),
            "request"
        );
    }
}

/// A header's value when it is present exactly once.
pub fn single_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// The first bytes of every HTTP/2 connection (RFC 9113, section 3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HTTP/2 connections are pinged this often, and closed when a ping goes unanswered for as long.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Streams one HTTP/2 connection may have open at once.
const HTTP2_MAX_STREAMS: u32 = 64;

/// Serves webhook requests on `listener` until `shutdown` completes, then lets requests in flight finish
/// within `shutdown_grace` and stops the gateway (in queue mode: its deliveries and spool).
pub async fn run(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = gateway.config().limits;
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BUFFER_BYTES)
        .keep_alive(true);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_BUFFER_BYTES as u32)
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    // Whether the listener speaks TLS is decided at start; a reload changes the certificate, not that.
    let started_with_tls = gateway.config().tls.clone();
    gateway.health.set_serving();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors must not end the server: wait and go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let stream = WriteDeadline::new(stream, gateway.config().limits.body_timeout);
        let gateway = Arc::clone(&gateway);
        let (http1, http2) = (http1.clone(), http2.clone());
        let watcher = graceful.watcher();
        // The certificate in force now: a reload's new certificate serves the next handshake.
        let tls = started_with_tls
            .as_ref()
            .map(|first| gateway.config().tls.clone().unwrap_or_else(|| Arc::clone(first)))
            .map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            let service = {
                let gateway = Arc::clone(&gateway);
                service_fn(move |request| {
                    let gateway = Arc::clone(&gateway);
                    async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
                })
            };
            // The handshake, or the first bytes that tell the protocol, must arrive within header_timeout: a
            // connection that sends nothing is closed rather than kept open forever.
            let result = match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let is_http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let io = TokioIo::new(stream);
                    if is_http2 {
                        watcher.watch(http2.serve_connection(io, service)).await
                    } else {
                        watcher.watch(http1.serve_connection(io, service)).await
                    }
                }
                None => {
                    let Ok(Ok((is_http2, stream))) = tokio::time::timeout(limits.header_timeout, sniff(stream)).await
                    else {
                        return;
                    };
                    let io = TokioIo::new(stream);
                    if is_http2 {
                        watcher.watch(http2.serve_connection(io, service)).await
                    } else {
                        watcher.watch(http1.serve_connection(io, service)).await
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
        });
    }
    gateway.health.set_stopping();
    drop(listener);
    // One grace period for everything: requests being answered, then delivery attempts in flight.
    let deadline = tokio::time::Instant::now() + gateway.config().shutdown_grace;
    if tokio::time::timeout_at(deadline, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
    gateway.shutdown(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
    Ok(())
}

/// Reads just enough of a new connection to tell HTTP/2's preface from an HTTP/1 request line, and gives
/// back the stream with those bytes put in front again.
async fn sniff<S: AsyncRead + Unpin>(mut stream: S) -> std::io::Result<(bool, Prefixed<S>)> {
    let mut seen = Vec::with_capacity(HTTP2_PREFACE.len());
    let mut buffer = [0u8; 24];
    while seen.len() < HTTP2_PREFACE.len() && HTTP2_PREFACE.starts_with(&seen) {
        let n = stream.read(&mut buffer[..HTTP2_PREFACE.len() - seen.len()]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buffer[..n]);
    }
    let is_http2 = seen.as_slice() == HTTP2_PREFACE;
    Ok((is_http2, Prefixed { prefix: Bytes::from(seen), inner: stream }))
}

/// A client connection whose writes must make progress: a client that leaves its answers unread (the
/// socket's buffers full) for longer than `limit` is disconnected, instead of holding the connection and
/// its task for ever. hyper has no write timeout of its own.
struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, limit: Duration) -> WriteDeadline<T> {
        WriteDeadline { inner, limit, stalled: None }
    }

    /// Passes a finished write through; a pending one starts (or keeps) the stall timer and fails once it
    /// runs out.
    fn watch<R>(&mut self, cx: &mut Context<'_>, result: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client left its answer unread for longer than limits.body_timeout",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        this.watch(cx, result)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, result)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, result)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, result)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A stream whose first bytes were already read: they are served again before the rest.
struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_bodies() {
        assert_eq!(ping_webhook_id(b"webhook_id=535"), Some(535));
        assert_eq!(ping_webhook_id(b"webhook_id=9999999999999999999"), Some(9_999_999_999_999_999_999));
        assert_eq!(ping_webhook_id(b"webhook_id=99999999999999999999"), None);
        assert_eq!(ping_webhook_id(b"webhook_id="), None);
        assert_eq!(ping_webhook_id(b"webhook_id=12&x=1"), None);
        assert_eq!(ping_webhook_id(b"webhook_id=-1"), None);
        assert_eq!(ping_webhook_id(b"id=1"), None);
    }
}
