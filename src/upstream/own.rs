//! A connection worker's own connections to plain-http upstreams (an `http://` route without `tls`):
//! hyper's `client::conn::http1`, each connection driven by a task on the worker's runtime, and the idle
//! ones kept by upstream address for the worker's next request. Queue mode's dispatcher on its own thread
//! (the SQLite spool) sends its attempts on such connections of its thread too.
//!
//! On a worker every request and its upstream connection are on one thread already, so what the pooled
//! client adds on the way (its checkout, a lock and a hashed key per request, the Host header formatted
//! each time) is bookkeeping for sharing across threads that a worker does not do. HTTPS upstreams, a
//! route's own `tls` client and everything else (a PostgreSQL spool's dispatcher, the store's REST API)
//! still go through the pooled client of [`super::UpstreamClient`].
//!
//! As the pooled client does: a request is sent on the most recently used idle connection; one found
//! closed before the request was written is dropped and the request goes on another (an upstream may close
//! a kept-alive connection at any time); a connection idle for [`POOL_IDLE_TIMEOUT`] is closed; a connect
//! has [`CONNECT_TIMEOUT`].

use std::cell::RefCell;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{CONNECT_TIMEOUT, POOL_IDLE_TIMEOUT};
use super::{UpstreamError, error_chain};

/// Idle connections kept per upstream address and worker; one given back past this is closed.
const MAX_IDLE: usize = 256;

/// One upstream address's connections on this thread.
struct Upstream {
    authority: Authority,
    /// The `Host` header its requests carry, as the pooled client writes it (no port when it is 80).
    host: HeaderValue,
    /// Idle connections, the most recently used last.
    idle: Vec<Idle>,
    /// Whether a task is closing this upstream's connections as they pass their idle timeout.
    sweeping: bool,
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

thread_local! {
    static UPSTREAMS: RefCell<Vec<Upstream>> = const { RefCell::new(Vec::new()) };
}

/// A connection one exchange has; [`Taken::give_back`] once its answer has been read whole, or dropped
/// (and the connection closed) otherwise.
pub struct Taken {
    authority: Authority,
    sender: SendRequest<Full<Bytes>>,
}

impl Taken {
    /// Keeps the connection for this thread's next request to the same upstream.
    pub fn give_back(self) {
        let Taken { authority, sender } = self;
        let sweep = with_upstream(&authority, |upstream| {
            if upstream.idle.len() < MAX_IDLE && !sender.is_closed() {
                upstream.idle.push(Idle { sender, since: Instant::now() });
            }
            let sweep = !upstream.sweeping;
            upstream.sweeping = true;
            sweep
        });
        if sweep {
            drop(tokio::spawn(sweep_idle(authority)));
        }
    }
}

/// Sends `request` (whose URI is the upstream's absolute `http://` URL) on one of this thread's
/// connections to its upstream, or on a new one, and returns the answer's head with the connection.
pub async fn send(mut request: Request<Full<Bytes>>) -> Result<(Response<Incoming>, Taken), UpstreamError> {
    let authority =
        request.uri().authority().cloned().ok_or_else(|| UpstreamError::Connect("the URL names no host".into()))?;
    let host = with_upstream(&authority, |upstream| upstream.host.clone());
    request.headers_mut().entry(header::HOST).or_insert(host);
    // HTTP/1.1's origin form on the request line: the path and query only.
    let path = request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(path);
    while let Some(mut sender) = with_upstream(&authority, take_idle) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, Taken { authority, sender })),
            Err(mut error) => match error.take_message() {
                // Never written: the connection closed meanwhile. The request goes on another.
                Some(unsent) => request = unsent,
                None => return Err(UpstreamError::Failed(error_chain(error.error()))),
            },
        }
    }
    let mut sender = connect(&authority).await?;
    match sender.send_request(request).await {
        Ok(response) => Ok((response, Taken { authority, sender })),
        Err(error) => Err(UpstreamError::Failed(error_chain(&error))),
    }
}

/// The most recently used idle connection still open and within its idle timeout; the others on the way
/// are dropped (closing them).
fn take_idle(upstream: &mut Upstream) -> Option<SendRequest<Full<Bytes>>> {
    while let Some(idle) = upstream.idle.pop() {
        if !idle.sender.is_closed() && idle.since.elapsed() < POOL_IDLE_TIMEOUT {
            return Some(idle.sender);
        }
    }
    None
}

/// A new connection to `authority`, its connection task spawned on this thread's runtime.
async fn connect(authority: &Authority) -> Result<SendRequest<Full<Bytes>>, UpstreamError> {
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(UpstreamError::Connect(error.to_string())),
        Err(_) => return Err(UpstreamError::Connect(format!("no connection within {CONNECT_TIMEOUT:?}"))),
    };
    // No Nagle delay: the request's head and body go as written.
    stream.set_nodelay(true).map_err(|error| UpstreamError::Connect(error.to_string()))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| UpstreamError::Connect(error_chain(&error)))?;
    // The authority is host and port only: the configuration refuses credentials in an upstream URL.
    tracing::debug!(upstream = %authority, "connected to the upstream");
    drop(tokio::spawn(async move {
        // Its end (closed by either side, or an error) is seen by the sender as closed.
        if let Err(error) = connection.await {
            tracing::debug!(error = %error_chain(&error), "an upstream connection ended with an error");
        }
    }));
    Ok(sender)
}

/// Closes `authority`'s connections on this thread as they pass their idle timeout, until none is left.
async fn sweep_idle(authority: Authority) {
    loop {
        tokio::time::sleep(POOL_IDLE_TIMEOUT / 4).await;
        let left = with_upstream(&authority, |upstream| {
            close_expired(upstream);
            upstream.sweeping = !upstream.idle.is_empty();
            upstream.sweeping
        });
        if !left {
            return;
        }
    }
}

/// Drops (closing them) the idle connections that are closed already or past their idle timeout.
fn close_expired(upstream: &mut Upstream) {
    upstream.idle.retain(|idle| !idle.sender.is_closed() && idle.since.elapsed() < POOL_IDLE_TIMEOUT);
}

/// Calls `act` with this thread's entry for `authority`, made on first use.
fn with_upstream<T>(authority: &Authority, act: impl FnOnce(&mut Upstream) -> T) -> T {
    UPSTREAMS.with_borrow_mut(|upstreams| {
        let position = match upstreams.iter().position(|upstream| upstream.authority == *authority) {
            Some(position) => position,
            None => {
                upstreams.push(Upstream {
                    authority: authority.clone(),
                    host: host_header(authority),
                    idle: Vec::new(),
                    sweeping: false,
                });
                upstreams.len() - 1
            }
        };
        act(&mut upstreams[position])
    })
}

/// `Host` for `authority`: the host, with the port unless it is http's 80.
fn host_header(authority: &Authority) -> HeaderValue {
    let text = match authority.port_u16() {
        Some(port) if port != 80 => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn post(url: &str) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::from_static(b"{}")));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = url.parse().unwrap();
        request
    }

    /// A server that answers each request on a connection with 200 and a fixed body, counting connections,
    /// and closing each after `answers` requests without saying so in the answer.
    async fn server(answers: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/in?x=1", listener.local_addr().unwrap());
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    for _ in 0..answers {
                        let mut seen = Vec::new();
                        let mut buffer = [0u8; 4096];
                        while !seen.windows(6).any(|w| w == b"\r\n\r\n{}") {
                            let Ok(n) = stream.read(&mut buffer).await else { return };
                            if n == 0 {
                                return;
                            }
                            seen.extend_from_slice(&buffer[..n]);
                        }
                        let head = String::from_utf8_lossy(&seen);
                        assert!(head.starts_with("POST /in?x=1 HTTP/1.1\r\n"), "{head}");
                        assert!(head.to_ascii_lowercase().contains("\r\nhost: 127.0.0.1:"), "{head}");
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, connections)
    }

    async fn exchange(url: &str) -> Result<(), UpstreamError> {
        let (response, taken) = send(post(url)).await?;
        assert_eq!(response.status(), 200);
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
        taken.give_back();
        Ok(())
    }

    #[tokio::test]
    async fn a_connection_is_kept_for_the_next_request_and_one_closed_meanwhile_is_replaced() {
        let (url, connections) = server(2).await;
        for _ in 0..2 {
            exchange(&url).await.unwrap();
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1, "the second went on the first's");
        // The server has closed that connection after its second answer: the next request is not lost.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        exchange(&url).await.unwrap();
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_once_past_the_idle_timeout() {
        let (url, _) = server(100).await;
        let authority: Authority = url.parse::<Uri>().unwrap().authority().unwrap().clone();
        exchange(&url).await.unwrap();
        exchange(&url).await.unwrap();
        let idle = with_upstream(&authority, |upstream| {
            close_expired(upstream);
            upstream.idle.len()
        });
        assert_eq!(idle, 1, "kept while within its idle timeout");
        let idle = with_upstream(&authority, |upstream| {
            upstream.idle[0].since -= POOL_IDLE_TIMEOUT;
            close_expired(upstream);
            upstream.idle.len()
        });
        assert_eq!(idle, 0);
        assert!(with_upstream(&authority, |upstream| upstream.sweeping), "a sweep runs while any is idle");
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let unused = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let error = send(post(&format!("http://{unused}/in"))).await.err().unwrap();
        assert_eq!(error.metric_label(), "connect_error", "{error}");
    }
}
