//! Every answer the gateway makes, and the one place where each becomes an HTTP status: [`Accepted`] for
//! what was taken (a pong, a stored or relayed delivery), [`Rejection`] for what was refused. Each carries
//! its outcome label for logs and metrics, so no step sets an outcome or writes JSON by hand.

use bytes::Bytes;
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::forward::{UpstreamAnswer, UpstreamError};

/// A full spool drains as deliveries succeed; a minute is a fair first guess for a client that honours it.
const SPOOL_FULL_RETRY_AFTER: &str = "60";
/// A failing spool (a disk error) may recover quickly.
const SPOOL_UNAVAILABLE_RETRY_AFTER: &str = "5";

/// The body type of every answer: gateway answers and relayed upstream answers are both whole buffers.
pub type Body = Full<Bytes>;

/// What became of a request, as logged and (later) counted. The labels are a fixed set, never request input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and handed to its upstream, whose answer is relayed (whatever its status): proxy mode.
    Accepted,
    /// Verified, but its upstream gave no answer to relay (unreachable, too slow, a broken exchange, an
    /// answer over 1 MiB): proxy mode's own 502/504.
    UpstreamFailed,
    /// Verified and stored durably for delivery: queue mode.
    Queued,
    /// Verified, but a repeat of a delivery stored within the dedupe window.
    Duplicate,
    /// Verified, but its signed `date_modified_gmt` is older than the source's `reject_older_than`: a
    /// replayed capture, answered 200 `{"status":"stale"}` and sent nowhere.
    Stale,
    /// WooCommerce's unsigned ping, answered 200.
    Ping,
    /// No signature header on a request that is not a ping.
    MissingSignature,
    /// A signature that is malformed or matches no secret.
    InvalidSignature,
    /// An `X-WC-Webhook-ID` outside the source's allow-list.
    ForbiddenWebhook,
    /// Verified, but no route takes its topic: kept as unrouted (queue mode), dropped or refused, as
    /// `unrouted` says.
    Unrouted,
    /// Body larger than `max_body_bytes`.
    TooLarge,
    /// A request hookgate cannot act on (no topic, a body that stopped arriving).
    BadRequest,
    /// Anything but POST on a source's path.
    MethodNotAllowed,
    /// A path that no source has.
    NotFound,
    /// Refused for lack of room (a full spool, `max_concurrent`) or of a working spool: 503.
    Overloaded,
    /// Refused because its client has `limits.max_requests_per_client` requests in flight: 429.
    TooManyRequests,
    /// A failure inside hookgate that no other outcome names (never expected): 500.
    InternalError,
}

impl Outcome {
    /// How many outcomes there are: an array indexed by `outcome as usize` holds one slot for each.
    pub const COUNT: usize = Outcome::InternalError as usize + 1;

    /// Whether a request with this outcome is one anybody can send, signed or not: such lines are logged
    /// at a bounded rate (see `server::log`), so that the log cannot be used as an amplifier.
    pub fn is_unauthenticated(self) -> bool {
        matches!(
            self,
            Outcome::Ping
                | Outcome::MissingSignature
                | Outcome::InvalidSignature
                | Outcome::ForbiddenWebhook
                | Outcome::TooLarge
                | Outcome::BadRequest
                | Outcome::MethodNotAllowed
                | Outcome::NotFound
                | Outcome::Overloaded
                | Outcome::TooManyRequests
        )
    }

    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::Queued => "queued",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::Ping => "ping",
            Outcome::MissingSignature => "missing_signature",
            Outcome::InvalidSignature => "invalid_signature",
            Outcome::ForbiddenWebhook => "forbidden_webhook",
            Outcome::Unrouted => "unrouted",
            Outcome::TooLarge => "too_large",
            Outcome::BadRequest => "bad_request",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::NotFound => "not_found",
            Outcome::Overloaded => "overloaded",
            Outcome::TooManyRequests => "too_many_requests",
            Outcome::InternalError => "internal_error",
        }
    }
}

/// Why a request is refused. Each maps to exactly one status and one small JSON body in [`Rejection::answer`].
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// An HTTP/1.1 request without a `Host` header, or any request with two: 400 (RFC 9112).
    #[error("no Host header in an HTTP/1.1 request, or more than one")]
    BadHost,
    /// A path that no source has: 404.
    #[error("no source has this path")]
    NotFound,
    /// Anything but POST on a source's path: 405 with `Allow: POST`.
    #[error("only POST is accepted")]
    MethodNotAllowed,
    /// A body (declared or read) over `max_body_bytes`: 413, and the connection closed.
    #[error("the body is larger than max_body_bytes")]
    TooLarge,
    /// No signature, and not a ping: 401.
    #[error("no X-WC-Webhook-Signature header")]
    MissingSignature,
    /// A signature that is malformed, doubled, or matches no secret: 401.
    #[error("the signature is malformed or matches no secret")]
    InvalidSignature,
    /// A webhook id outside the source's `webhook_ids`: 403.
    #[error("X-WC-Webhook-ID is not in this source's webhook_ids")]
    ForbiddenWebhook,
    /// Verified, but no single valid topic header: 400.
    #[error("no valid X-WC-Webhook-Topic header")]
    MissingTopic,
    /// The body did not arrive within `body_timeout`: 408, and the connection closed.
    #[error("the body did not arrive within body_timeout")]
    BodyTimeout,
    /// The body could not be read (a broken chunk, a bad length): 400, and the connection closed.
    #[error("the body could not be read")]
    BodyUnreadable,
    /// Verified, no route takes it, and `unrouted: reject`: 404.
    #[error("no route takes this topic")]
    Unrouted,
    /// Queue mode at `max_spool_bytes`: 503 with `Retry-After: 60`.
    #[error("the spool is at max_spool_bytes")]
    SpoolFull,
    /// Queue mode, and the spool could not commit: 503 with `Retry-After: 5`.
    #[error("the spool cannot store the delivery")]
    SpoolUnavailable,
    /// `limits.max_concurrent` requests are being answered: 503 with `Retry-After: 1`.
    #[error("limits.max_concurrent requests are being answered")]
    Overloaded,
    /// The client has `limits.max_requests_per_client` requests in flight: 429 with `Retry-After: 1`, before
    /// anything else about the request is looked at (its body is left unread).
    #[error("the client has limits.max_requests_per_client requests in flight")]
    TooManyRequests,
    /// Proxy mode: the delivery was verified, but its upstream gave no answer to relay.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A layer of the request path failed in a way no other rejection names.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Rejection {
    /// A tower layer's error as the rejection it stands for: load shed is overload; nothing else is
    /// expected, and anything else is a 500 rather than a connection closed without an answer.
    pub fn from_layer(error: tower::BoxError) -> Rejection {
        if error.is::<tower::load_shed::error::Overloaded>() {
            Rejection::Overloaded
        } else {
            tracing::error!(%error, "a layer of the webhook path failed");
            Rejection::Internal(error.to_string())
        }
    }

    /// The outcome label the rejection is logged and counted under.
    pub fn outcome(&self) -> Outcome {
        match self {
            Rejection::NotFound => Outcome::NotFound,
            Rejection::MethodNotAllowed => Outcome::MethodNotAllowed,
            Rejection::TooLarge => Outcome::TooLarge,
            Rejection::MissingSignature => Outcome::MissingSignature,
            Rejection::InvalidSignature => Outcome::InvalidSignature,
            Rejection::ForbiddenWebhook => Outcome::ForbiddenWebhook,
            Rejection::BadHost | Rejection::MissingTopic | Rejection::BodyTimeout | Rejection::BodyUnreadable => {
                Outcome::BadRequest
            }
            Rejection::Unrouted => Outcome::Unrouted,
            Rejection::SpoolFull | Rejection::SpoolUnavailable | Rejection::Overloaded => Outcome::Overloaded,
            Rejection::TooManyRequests => Outcome::TooManyRequests,
            Rejection::Upstream(_) => Outcome::UpstreamFailed,
            Rejection::Internal(_) => Outcome::InternalError,
        }
    }

    /// The status and the JSON body. No answer says which secret was tried or why a comparison failed.
    pub fn answer(&self) -> Response<Body> {
        let (status, body) = match self {
            Rejection::BadHost => (StatusCode::BAD_REQUEST, r#"{"error":"bad_host"}"#),
            Rejection::NotFound => (StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
            Rejection::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, r#"{"error":"method_not_allowed"}"#),
            Rejection::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, r#"{"error":"too_large"}"#),
            Rejection::MissingSignature => (StatusCode::UNAUTHORIZED, r#"{"error":"missing_signature"}"#),
            Rejection::InvalidSignature => (StatusCode::UNAUTHORIZED, r#"{"error":"invalid_signature"}"#),
            Rejection::ForbiddenWebhook => (StatusCode::FORBIDDEN, r#"{"error":"forbidden_webhook"}"#),
            Rejection::MissingTopic => (StatusCode::BAD_REQUEST, r#"{"error":"missing_topic"}"#),
            Rejection::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, r#"{"error":"body_timeout"}"#),
            Rejection::BodyUnreadable => (StatusCode::BAD_REQUEST, r#"{"error":"body_unreadable"}"#),
            Rejection::Unrouted => (StatusCode::NOT_FOUND, r#"{"error":"unrouted"}"#),
            Rejection::SpoolFull => (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"spool_full"}"#),
            Rejection::SpoolUnavailable => (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"spool_unavailable"}"#),
            Rejection::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"overloaded"}"#),
            Rejection::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, r#"{"error":"too_many_requests"}"#),
            Rejection::Upstream(UpstreamError::Timeout) => {
                (StatusCode::GATEWAY_TIMEOUT, r#"{"error":"upstream_timeout"}"#)
            }
            Rejection::Upstream(UpstreamError::Connect(_)) => {
                (StatusCode::BAD_GATEWAY, r#"{"error":"upstream_unreachable"}"#)
            }
            Rejection::Upstream(UpstreamError::AnswerTooLarge { .. } | UpstreamError::Failed(_)) => {
                (StatusCode::BAD_GATEWAY, r#"{"error":"upstream_failed"}"#)
            }
            Rejection::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"internal"}"#),
        };
        let mut response = json(status, body);
        match self {
            Rejection::MethodNotAllowed => {
                response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
            }
            Rejection::SpoolFull => {
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static(SPOOL_FULL_RETRY_AFTER));
            }
            Rejection::SpoolUnavailable => {
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static(SPOOL_UNAVAILABLE_RETRY_AFTER));
            }
            // A 429 leaves the body unread without saying `Connection: close`: hyper keeps the connection
            // when the whole body had already arrived (a proxy in front keeps its connection) and closes it
            // otherwise.
            Rejection::Overloaded | Rejection::TooManyRequests => {
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The body may be left unread (or half read): close rather than read the rest to reuse the connection.
            Rejection::TooLarge | Rejection::BodyTimeout | Rejection::BodyUnreadable => {
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// What hookgate took: each variant is one answer and one outcome label.
#[derive(Debug)]
pub enum Accepted {
    /// WooCommerce's unsigned ping: 200 `{"status":"pong"}`.
    Pong,
    /// A verified replay older than `reject_older_than`: 200 `{"status":"stale"}`, so that WooCommerce does
    /// not count a failure against the webhook.
    Stale,
    /// A verified delivery that no route takes: 200 `{"status":"unrouted","id":"<event id>"}` once it is kept
    /// in the spool (queue mode, `unrouted: accept`), or 200 `{"status":"unrouted"}` when it is dropped
    /// (`unrouted: discard`).
    Unrouted {
        /// The event id it is kept under, when it is kept.
        id: Option<String>,
    },
    /// Queue mode: stored durably under this event id.
    Queued {
        /// The event id, also sent upstream as `X-Hookgate-Event-Id`.
        id: String,
    },
    /// Queue mode: a repeat of the delivery already stored under this event id.
    Duplicate {
        /// The event id of the delivery it repeats.
        id: String,
    },
    /// Proxy mode: the upstream's answer, relayed as it came.
    Relayed(UpstreamAnswer),
}

impl Accepted {
    /// The outcome label the answer is logged and counted under.
    pub fn outcome(&self) -> Outcome {
        match self {
            Accepted::Pong => Outcome::Ping,
            Accepted::Stale => Outcome::Stale,
            Accepted::Unrouted { .. } => Outcome::Unrouted,
            Accepted::Queued { .. } => Outcome::Queued,
            Accepted::Duplicate { .. } => Outcome::Duplicate,
            Accepted::Relayed(_) => Outcome::Accepted,
        }
    }

    /// The spool's event id, for the log line.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            Accepted::Queued { id } | Accepted::Duplicate { id } | Accepted::Unrouted { id: Some(id) } => Some(id),
            _ => None,
        }
    }

    /// The HTTP answer.
    pub fn answer(self) -> Response<Body> {
        match self {
            Accepted::Pong => json(StatusCode::OK, r#"{"status":"pong"}"#),
            Accepted::Stale => json(StatusCode::OK, r#"{"status":"stale"}"#),
            Accepted::Unrouted { id: Some(id) } => status_with_id("unrouted", &id),
            Accepted::Unrouted { id: None } => json(StatusCode::OK, r#"{"status":"unrouted"}"#),
            Accepted::Queued { id } => status_with_id("queued", &id),
            Accepted::Duplicate { id } => status_with_id("duplicate", &id),
            Accepted::Relayed(answer) => {
                let mut response = Response::new(Full::new(answer.body));
                *response.status_mut() = answer.status;
                *response.headers_mut() = answer.headers;
                response
            }
        }
    }
}

/// `{"status":"<status>","id":"<id>"}`: the answer to a delivery stored (or found already stored) in the
/// spool. The id is a UUID, so it needs no escaping.
fn status_with_id(status: &'static str, id: &str) -> Response<Body> {
    let body = format!(r#"{{"status":"{status}","id":"{id}"}}"#);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A small JSON answer made by the gateway itself.
pub fn json(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
