//! Forwarding: POSTs a verified delivery, byte for byte, to a route's upstream over a pooled, kept-alive
//! connection (the shared client, a connection worker's own, or the route's own for its `tls`, see
//! [`crate::upstream`]), with the route's own headers, and brings back the whole answer within the route's
//! timeout.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::route::Route;
use crate::upstream::{UpstreamClient, error_chain};
use crate::verify::VerifiedDelivery;

/// An upstream's answer is relayed to WooCommerce, which only logs it: 1 MiB is far more than any receiver
/// sends, and keeps memory per request bounded.
pub const MAX_UPSTREAM_ANSWER_BYTES: usize = 1024 * 1024;

/// The name of the header saying which source a delivery came from.
pub static X_HOOKGATE_SOURCE: HeaderName = HeaderName::from_static("x-hookgate-source");
/// The name of the header saying which route a delivery took.
pub static X_HOOKGATE_ROUTE: HeaderName = HeaderName::from_static("x-hookgate-route");

/// An upstream's complete answer.
#[derive(Debug)]
pub struct UpstreamAnswer {
    /// The upstream's status.
    pub status: StatusCode,
    /// Its headers, hop-by-hop ones removed.
    pub headers: HeaderMap,
    /// Its body, whole.
    pub body: Bytes,
}

pub use crate::upstream::UpstreamError;

/// The pooled HTTP/HTTPS client shared by every route without `tls`; a route with `tls` brings its own
/// (see [`Route::client`]).
#[derive(Clone)]
pub struct Forwarder {
    shared: UpstreamClient,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder::new()
    }
}

impl Forwarder {
    /// A client that speaks HTTP/1.1 to http upstreams and HTTP/1.1 or HTTP/2 (by ALPN) to https ones,
    /// verifying certificates against the bundled Mozilla roots.
    pub fn new() -> Forwarder {
        Forwarder { shared: UpstreamClient::with_bundled_roots() }
    }

    /// POSTs the delivery to the route's upstream and returns its whole answer, all within the route's
    /// timeout. The body is the received buffer itself, not a copy.
    pub async fn send(
        &self,
        route: &Route,
        source: &str,
        delivery: &VerifiedDelivery,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        // A clone keeps the names, values and their order as they are, without hashing each name again.
        let headers = delivery.headers().clone();
        self.post(route, source, headers, delivery.body().clone(), AnswerBody::Whole).await
    }

    /// POSTs `body` with `headers` (plus `X-Hookgate-Source`, `X-Hookgate-Route` and the route's own
    /// `headers`) to the route's upstream, through the route's own client when it has one, within the
    /// route's timeout.
    pub async fn post(
        &self,
        route: &Route,
        source: &str,
        mut headers: HeaderMap,
        body: Bytes,
        answer_body: AnswerBody,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        headers.insert(X_HOOKGATE_SOURCE.clone(), header_value(source));
        headers.insert(X_HOOKGATE_ROUTE.clone(), header_value(&route.name));
        // Sensitive values, held zeroed-on-drop; the names cannot be any of the headers set above
        // (refused by the configuration's checker).
        for (name, value) in route.headers.iter() {
            headers.insert(name.clone(), value.clone());
        }
        let own = if route.client.is_none() { THIS_THREADS_CLIENT.with(|own| own.get().cloned()) } else { None };
        // On a connection worker, a plain-http route without `tls` goes on the worker's own connections.
        let through = match (&route.client, &own) {
            (Some(client), _) => Through::Pooled(client),
            (None, Some(_)) if route.upstream.scheme() == Some(&http::uri::Scheme::HTTP) => Through::Own,
            (None, Some(own)) => Through::Pooled(own),
            (None, None) => Through::Pooled(&self.shared),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = route.upstream.clone();
        *request.headers_mut() = headers;
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(route.timeout, exchange(through, request, answer_body)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout),
        };
        let label = match &result {
            Ok(answer) => crate::metrics::upstream_status_class(answer.status),
            Err(error) => error.metric_label(),
        };
        RouteSeries::with(&route.name, |series| {
            series.requests(&route.name, label).increment(1);
            series.duration.record(started.elapsed().as_secs_f64());
        });
        result
    }
}

/// The metric series an upstream exchange of one route is counted in, registered once per thread (an
/// exchange then builds no label and makes no lookup in the recorder's registry).
struct RouteSeries {
    /// `hookgate_upstream_requests_total` by result (a fixed set of labels), each registered the first time
    /// it is counted, as before.
    requests: Vec<(&'static str, metrics::Counter)>,
    duration: metrics::Histogram,
}

impl RouteSeries {
    /// Calls `record` with the series of `route`, registering them on this thread's first use.
    fn with(route: &str, record: impl FnOnce(&mut RouteSeries)) {
        ROUTE_SERIES.with_borrow_mut(|series| {
            if !series.contains_key(route) {
                // The recorder is in place before a handle is taken, or the handle would count nothing.
                crate::metrics::handle();
                let duration =
                    metrics::histogram!(crate::metrics::UPSTREAM_DURATION_SECONDS, "route" => route.to_owned());
                series.insert(route.into(), RouteSeries { requests: Vec::new(), duration });
            }
            if let Some(found) = series.get_mut(route) {
                record(found);
            }
        });
    }

    /// The counter of `route`'s exchanges that ended with `result`.
    fn requests(&mut self, route: &str, result: &'static str) -> &metrics::Counter {
        let position = match self.requests.iter().position(|(label, _)| *label == result) {
            Some(position) => position,
            None => {
                let name = crate::metrics::UPSTREAM_REQUESTS_TOTAL;
                let counter = metrics::counter!(name, "route" => route.to_owned(), "result" => result);
                self.requests.push((result, counter));
                self.requests.len() - 1
            }
        };
        &self.requests[position].1
    }
}

thread_local! {
    /// The series of each route name seen on this thread (route names come from the configuration only).
    static ROUTE_SERIES: std::cell::RefCell<std::collections::HashMap<Box<str>, RouteSeries>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
    /// A connection worker's own client, used instead of the shared one (see [`use_a_client_of_this_thread`]).
    static THIS_THREADS_CLIENT: std::cell::OnceCell<UpstreamClient> = const { std::cell::OnceCell::new() };
}

/// Makes requests sent from this thread to routes without `tls` go on connections of this thread's own: for
/// a connection worker (see [`crate::server::workers`]) and queue mode's dispatcher on its own thread, whose
/// upstream connections are then driven on their thread, never woken from another. An `http://` upstream's go on [`crate::upstream::own`]'s connections,
/// an `https://` one's through a pooled client of the thread's own.
pub fn use_a_client_of_this_thread() {
    THIS_THREADS_CLIENT.with(|own| {
        own.get_or_init(UpstreamClient::with_bundled_roots);
    });
}

/// What an exchange goes through: a pooled client, or a connection worker's own connections.
enum Through<'a> {
    Pooled(&'a UpstreamClient),
    Own,
}

/// Sends `request` through `through` and reads as much of the answer as `answer_body` says.
async fn exchange(
    through: Through<'_>,
    request: Request<Full<Bytes>>,
    answer_body: AnswerBody,
) -> Result<UpstreamAnswer, UpstreamError> {
    let (response, taken) = match through {
        Through::Pooled(client) => (
            client.client().request(request).await.map_err(|e| {
                if e.is_connect() {
                    UpstreamError::Connect(error_chain(&e))
                } else {
                    UpstreamError::Failed(error_chain(&e))
                }
            })?,
            None,
        ),
        Through::Own => {
            let (response, taken) = crate::upstream::own::send(request).await?;
            (response, Some(taken))
        }
    };
    let (parts, mut body) = response.into_parts();
    let mut collected = BytesMut::new();
    let mut whole = true;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UpstreamError::Failed(error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            match answer_body {
                AnswerBody::Whole if collected.len() + data.len() > MAX_UPSTREAM_ANSWER_BYTES => {
                    return Err(UpstreamError::AnswerTooLarge { limit: MAX_UPSTREAM_ANSWER_BYTES });
                }
                AnswerBody::Start(keep) if collected.len() + data.len() >= keep => {
                    collected.extend_from_slice(&data[..keep - collected.len()]);
                    whole = false;
                    break;
                }
                _ => collected.extend_from_slice(&data),
            }
        }
    }
    // A connection whose answer was not read to its end cannot carry another request.
    if let Some(taken) = taken.filter(|_| whole) {
        taken.give_back();
    }
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    // The body is relayed whole: its length is set anew.
    headers.remove(header::CONTENT_LENGTH);
    Ok(UpstreamAnswer { status: parts.status, headers, body: collected.freeze() })
}

/// How much of an upstream's answer to read.
#[derive(Debug, Clone, Copy)]
pub enum AnswerBody {
    /// All of it, to relay it (refused past [`MAX_UPSTREAM_ANSWER_BYTES`]).
    Whole,
    /// Only its first bytes, to record why an attempt failed.
    Start(usize),
}

/// The peer of one connection, with its address as `X-Forwarded-For` writes it: made once per connection,
/// so that a request costs a reference count rather than formatting the address again.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The connection's remote address.
    pub address: std::net::SocketAddr,
    /// Its IP address as a header value.
    forwarded_for: HeaderValue,
}

impl Peer {
    /// The peer at `address`.
    pub fn new(address: std::net::SocketAddr) -> Peer {
        let forwarded_for = header_value(&address.ip().to_string());
        Peer { address, forwarded_for }
    }
}

/// The headers sent upstream: what WooCommerce sent about the delivery (`Content-Type`, `User-Agent`, every
/// `X-WC-Webhook-*`) and the usual `X-Forwarded-*`. Everything else, hop-by-hop headers included, stays here.
pub fn forwarded_headers(parts: &http::request::Parts, peer: &Peer, scheme: &'static str) -> HeaderMap {
    let incoming = &parts.headers;
    let connection_only = connection_named(incoming);
    let mut headers = HeaderMap::with_capacity(16);
    for (name, value) in incoming {
        let wanted = name == header::CONTENT_TYPE
            || name == header::USER_AGENT
            || name.as_str().starts_with(crate::woocommerce::HEADER_PREFIX);
        if wanted && !connection_only.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let forwarded_for = match incoming.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => HeaderValue::from_str(&format!("{earlier}, {}", peer.address.ip())).ok(),
        None => Some(peer.forwarded_for.clone()),
    };
    if let Some(value) = forwarded_for {
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

/// Names and values in the config are plain ASCII (validated), so this cannot fail in practice.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The headers a `Connection` header names: they describe that connection only.
pub fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Removes the headers that describe one connection rather than the message (RFC 9110, section 7.6.1),
/// including any the `Connection` header names. The headers are looked over once, and only those found are
/// removed (an answer usually has one, `Connection` itself).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    let found: Vec<HeaderName> =
        headers.keys().filter(|name| is_hop_by_hop(name) || named.contains(name)).cloned().collect();
    for name in found {
        headers.remove(name);
    }
}

/// Whether `name` is one of the headers that are hop-by-hop whatever `Connection` says.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ]
    .contains(name)
        || name == "keep-alive"
        || name == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn every_hop_by_hop_header_is_removed_and_nothing_else() {
        let mut headers = HeaderMap::new();
        for name in [
            "connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
            "content-type",
            "x-answer",
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        headers.append(header::CONNECTION, HeaderValue::from_static("close"));
        strip_hop_by_hop(&mut headers);
        let mut names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "x-answer"]);
    }
}
