//! How a delivery reaches an upstream beyond its URL: the pooled HTTP/HTTPS client (the one every route
//! shares, trusting the bundled Mozilla roots, or a route's own when its `tls` names a private CA or a
//! client certificate), and the headers a route adds to every request (credentials such as
//! `Authorization`, kept like secrets: never printed, zeroed when dropped, marked sensitive).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::secret::Secret;

pub mod own;

/// Idle upstream connections are kept this long for the next delivery.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// An upstream that does not accept a connection within this time is unreachable (502), not slow (504).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The hyper client every upstream request goes through.
pub type HttpsClient = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled, kept-alive client to upstreams: HTTP/1.1 to http ones, HTTP/1.1 or HTTP/2 (by ALPN) to https
/// ones. Cloning it shares its pool.
#[derive(Clone)]
pub struct UpstreamClient {
    client: HttpsClient,
    /// What it trusts and presents, for `hookgate check` and `Debug` (paths only, never a key).
    description: String,
}

impl UpstreamClient {
    /// The client every route without `tls` shares: certificates verified against the bundled Mozilla roots.
    pub fn with_bundled_roots() -> UpstreamClient {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector());
        UpstreamClient { client: pooled(https), description: "the bundled roots".to_owned() }
    }

    /// A route's own client, speaking https only, with the roots and client certificate of `tls` (built by
    /// the configuration's checker from the route's `tls` section). `description` says what it trusts
    /// and presents, in words for `hookgate check`.
    pub fn with_tls(tls: rustls::ClientConfig, description: String) -> UpstreamClient {
        UpstreamClient::with_config(tls, false, description)
    }

    /// A client with the roots and client certificate of `tls` that speaks plain http too: for a store's
    /// REST API, whose key signs each request over http (OAuth 1.0a) and goes as HTTP Basic over https.
    pub fn with_tls_or_http(tls: rustls::ClientConfig, description: String) -> UpstreamClient {
        UpstreamClient::with_config(tls, true, description)
    }

    /// A client with `tls`, speaking plain http too when `http_too`.
    fn with_config(tls: rustls::ClientConfig, http_too: bool, description: String) -> UpstreamClient {
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let builder = if http_too { builder.https_or_http() } else { builder.https_only() };
        let https = builder.enable_http1().enable_http2().wrap_connector(connector());
        UpstreamClient { client: pooled(https), description }
    }

    /// The hyper client, to send a request with.
    pub fn client(&self) -> &HttpsClient {
        &self.client
    }

    /// What the client trusts and presents (file paths, never a key).
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UpstreamClient").field(&self.description).finish()
    }
}

/// The TCP side: no Nagle delay, and a bound on the connect.
fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http
}

fn pooled(https: HttpsConnector<HttpConnector>) -> HttpsClient {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .timer(TokioTimer::new())
        .build(https)
}

/// The roots a route's `tls.ca_file` is trusted beside, unless `only_ca_file` is set: Mozilla's, bundled,
/// the same the shared client trusts.
pub fn bundled_roots() -> rustls::RootCertStore {
    rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

/// The headers a route adds to every request to its upstream (`routes[].headers`), in file order, each with
/// where its value comes from (`env NAME`, `file PATH`, for summaries). Each value is held in memory that is
/// zeroed when the last request using it is done, and is marked sensitive (HTTP/2 never indexes it).
/// `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct UpstreamHeaders(Vec<(HeaderName, HeaderValue, String)>);

impl UpstreamHeaders {
    /// The headers, in the order given, each with where its value comes from.
    pub fn new(headers: Vec<(HeaderName, HeaderValue, String)>) -> UpstreamHeaders {
        UpstreamHeaders(headers)
    }

    /// Each name and its (sensitive) value.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(name, value, _)| (name, value))
    }

    /// The names, for summaries.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _, _)| name.as_str())
    }

    /// Each name with where its value comes from (`authorization from env TOKEN`), never the value.
    pub fn summary(&self) -> Vec<String> {
        self.0.iter().map(|(name, _, origin)| format!("{name} from {origin}")).collect()
    }

    /// True when both add the same names with the same values (compared in constant time), so that a reload
    /// can say a header's value was rotated without ever showing it.
    pub fn same_values(&self, other: &UpstreamHeaders) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|((name, value, _), (other_name, other_value, _))| {
                name == other_name && bool::from(value.as_bytes().ct_eq(other_value.as_bytes()))
            })
    }

    /// True when the route adds no header.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for UpstreamHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// A header value made from a secret without a copy: the bytes stay in the secret's zeroing buffer, shared
/// by every clone of the value, and are marked sensitive. `None` when they are not a valid header value
/// (a line break, a control character); the secret is then dropped, and zeroed.
pub fn sensitive_header_value(secret: Secret) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_maybe_shared(secret.into_shared_bytes()).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Why hookgate refuses to let a route set the header `name` (lower case), or `None` when it may.
pub fn refused_header(name: &str) -> Option<&'static str> {
    const HOP_BY_HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    if HOP_BY_HOP.contains(&name) {
        Some("it is hop-by-hop: it describes one connection, not the request, and hyper sets what the connection needs")
    } else if matches!(name, "host" | "content-length" | "expect") {
        Some("hookgate sets it from the upstream URL and the body it forwards")
    } else if matches!(name, "content-type" | "user-agent") || name.starts_with(crate::woocommerce::HEADER_PREFIX) {
        Some("hookgate forwards WooCommerce's own: a value set here would replace what the store sent")
    } else if name.starts_with("x-hookgate-") || name.starts_with("x-forwarded-") || name == "forwarded" {
        Some("hookgate sets it itself (which source and route, event id and attempt, the sender's address)")
    } else {
        None
    }
}

/// Why a verified delivery did not get an answer from its upstream. Its text never holds request input.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, no answer to the connect within 5 s).
    #[error("cannot connect to the upstream: {0}")]
    Connect(String),
    /// The upstream did not answer in full within the route's `timeout`.
    #[error("the upstream did not answer within the route's timeout")]
    Timeout,
    /// The answer passed the bound on relayed answers.
    #[error("the upstream's answer is larger than {limit} bytes")]
    AnswerTooLarge {
        /// The bound, in bytes.
        limit: usize,
    },
    /// The exchange broke after the connection was made.
    #[error("the exchange with the upstream failed: {0}")]
    Failed(String),
}

impl UpstreamError {
    /// The `result` label of `hookgate_upstream_requests_total` for this failure.
    pub fn metric_label(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect_error",
            UpstreamError::Timeout => "timeout",
            UpstreamError::AnswerTooLarge { .. } => "answer_too_large",
            UpstreamError::Failed(_) => "exchange_error",
        }
    }
}

/// The error and its causes on one line, for logs (an upstream error never holds a secret).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sensitive_value_is_made_from_a_secret_and_never_printed() {
        let value = sensitive_header_value(Secret::new(b"Bearer t0ken".to_vec())).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.as_bytes(), b"Bearer t0ken");
        assert!(!format!("{value:?}").contains("t0ken"));
        assert!(sensitive_header_value(Secret::new(b"two\r\nlines".to_vec())).is_none());
        let headers =
            UpstreamHeaders::new(vec![(HeaderName::from_static("authorization"), value, "env TOKEN".to_owned())]);
        assert_eq!(format!("{headers:?}"), r#"["authorization"]"#);
        assert_eq!(headers.summary(), ["authorization from env TOKEN"]);
    }

    #[test]
    fn hop_by_hop_and_hookgates_own_headers_are_refused() {
        for name in ["connection", "te", "host", "content-length", "content-type", "x-wc-webhook-topic"] {
            assert!(refused_header(name).is_some(), "{name}");
        }
        for name in ["x-hookgate-route", "x-forwarded-for", "forwarded"] {
            assert!(refused_header(name).is_some(), "{name}");
        }
        for name in ["authorization", "x-api-key", "cookie"] {
            assert!(refused_header(name).is_none(), "{name}");
        }
    }
}
