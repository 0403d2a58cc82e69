//! Every answer the gateway makes itself, and the one place where each failure becomes an HTTP status.

use bytes::Bytes;
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;

/// A full spool drains as deliveries succeed; a minute is a fair first guess for a client that honours it.
const SPOOL_FULL_RETRY_AFTER: &str = "60";
/// A failing spool (a disk error) may recover quickly.
const SPOOL_UNAVAILABLE_RETRY_AFTER: &str = "5";

/// The body type of every answer: gateway answers and relayed upstream answers are both whole buffers.
pub type Body = Full<Bytes>;

/// What became of a request, as logged and (later) counted. The labels are a fixed set, never request input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and handed to its upstream (whatever the upstream answered): proxy mode.
    Accepted,
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
    /// Verified, but no route takes its topic.
    Unrouted,
    /// Body larger than `max_body_bytes`.
    TooLarge,
    /// A request hookgate cannot act on (no topic, a body that stopped arriving).
    BadRequest,
    /// Anything but POST on a source's path.
    MethodNotAllowed,
    /// A path that no source has.
    NotFound,
    /// Refused for lack of room (a full spool) or of a working spool: 503.
    Overloaded,
}

impl Outcome {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
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
        }
    }
}

/// Why a request is refused. Each maps to exactly one status and one small JSON body in [`Rejection::answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no source has this path")]
    NotFound,
    #[error("only POST is accepted")]
    MethodNotAllowed,
    #[error("the body is larger than max_body_bytes")]
    TooLarge,
    #[error("no X-WC-Webhook-Signature header")]
    MissingSignature,
    #[error("the signature is malformed or matches no secret")]
    InvalidSignature,
    #[error("X-WC-Webhook-ID is not in this source's webhook_ids")]
    ForbiddenWebhook,
    #[error("no valid X-WC-Webhook-Topic header")]
    MissingTopic,
    #[error("the body did not arrive within body_timeout")]
    BodyTimeout,
    #[error("the body could not be read")]
    BodyUnreadable,
    #[error("no route takes this topic")]
    Unrouted,
    #[error("the spool is at max_spool_bytes")]
    SpoolFull,
    #[error("the spool cannot store the delivery")]
    SpoolUnavailable,
    #[error("limits.max_concurrent requests are being answered")]
    Overloaded,
}

impl Rejection {
    /// The outcome label the rejection is logged and counted under.
    pub fn outcome(self) -> Outcome {
        match self {
            Rejection::NotFound => Outcome::NotFound,
            Rejection::MethodNotAllowed => Outcome::MethodNotAllowed,
            Rejection::TooLarge => Outcome::TooLarge,
            Rejection::MissingSignature => Outcome::MissingSignature,
            Rejection::InvalidSignature => Outcome::InvalidSignature,
            Rejection::ForbiddenWebhook => Outcome::ForbiddenWebhook,
            Rejection::MissingTopic | Rejection::BodyTimeout | Rejection::BodyUnreadable => Outcome::BadRequest,
            Rejection::Unrouted => Outcome::Unrouted,
            Rejection::SpoolFull | Rejection::SpoolUnavailable | Rejection::Overloaded => Outcome::Overloaded,
        }
    }

    /// The status and the JSON body. No answer says which secret was tried or why a comparison failed.
    pub fn answer(self) -> Response<Body> {
        let (status, body) = match self {
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
            Rejection::Overloaded => {
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

/// Why a verified delivery did not get an answer from its upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(String),
    #[error("the upstream did not answer within the route's timeout")]
    Timeout,
    #[error("the upstream's answer is larger than {limit} bytes")]
    AnswerTooLarge { limit: usize },
    #[error("the exchange with the upstream failed: {0}")]
    Failed(String),
}

impl UpstreamError {
    /// 504 for a timeout, 502 for everything else.
    pub fn answer(&self) -> Response<Body> {
        match self {
            UpstreamError::Timeout => json(StatusCode::GATEWAY_TIMEOUT, r#"{"error":"upstream_timeout"}"#),
            UpstreamError::Connect(_) => json(StatusCode::BAD_GATEWAY, r#"{"error":"upstream_unreachable"}"#),
            UpstreamError::AnswerTooLarge { .. } | UpstreamError::Failed(_) => {
                json(StatusCode::BAD_GATEWAY, r#"{"error":"upstream_failed"}"#)
            }
        }
    }
}

/// `{"status":"<status>","id":"<id>"}`: the answer to a delivery stored (or found already stored) in the
/// spool. The id is a UUID, so it needs no escaping.
pub fn status_with_id(status: &'static str, id: &str) -> Response<Body> {
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
