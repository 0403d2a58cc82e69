//! The floor under proxy mode's cost: a bare hyper proxy in hookgate's own shape (one current-thread
//! runtime per core, connections handed out round robin, an upstream pool per thread), that verifies
//! nothing, counts nothing and logs nothing. What hookgate costs beyond it is hookgate's own work; what it
//! costs beyond nginx is hyper's and tokio's.
//!
//!     cargo run --release --example floor_proxy -- LISTEN UPSTREAM [legacy|conn] [verify SECRET]
//!
//! `legacy` (the default) sends through hyper-util's pooled client, as hookgate does; `conn` through
//! hyper's `client::conn::http1` with a pool of ready senders of the thread's own. `verify SECRET` adds the
//! HMAC-SHA256 of the body, compared with `X-WC-Webhook-Signature` (refused with 401 when it differs).
//! Measured by `bench/ab-proxy.py` with `FLOOR=1` (see bench/ANALYSIS.md).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

type Legacy = Client<HttpConnector, Full<Bytes>>;

#[derive(Clone)]
struct Setup {
    upstream: Uri,
    address: SocketAddr,
    conn: bool,
    secret: Option<Arc<Vec<u8>>>,
}

thread_local! {
    static LEGACY: RefCell<Option<Legacy>> = const { RefCell::new(None) };
    static SENDERS: RefCell<Vec<SendRequest<Full<Bytes>>>> = const { RefCell::new(Vec::new()) };
}

fn main() -> std::io::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, rest @ ..] = arguments.as_slice() else {
        eprintln!("usage: floor_proxy LISTEN UPSTREAM [legacy|conn] [verify SECRET]");
        std::process::exit(2);
    };
    let upstream: Uri = upstream.parse().map_err(std::io::Error::other)?;
    let address = upstream.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
    let address: SocketAddr = address.parse().map_err(std::io::Error::other)?;
    let conn = rest.first().is_some_and(|mode| mode == "conn");
    let secret = rest.iter().position(|a| a == "verify").and_then(|i| rest.get(i + 1));
    let setup = Setup { upstream, address, conn, secret: secret.map(|s| Arc::new(s.as_bytes().to_vec())) };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut handles = Vec::new();
    for _ in 0..cores {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        handles.push(runtime.handle().clone());
        std::thread::spawn(move || runtime.block_on(std::future::pending::<()>()));
    }
    let accepting = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    accepting.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        let next = AtomicUsize::new(0);
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let stream = stream.into_std()?;
            let setup = setup.clone();
            handles[next.fetch_add(1, Ordering::Relaxed) % handles.len()].spawn(async move {
                let Ok(stream) = TcpStream::from_std(stream) else { return };
                let service = hyper::service::service_fn(move |request| handle(setup.clone(), request));
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

async fn handle(setup: Setup, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    if let Some(secret) = &setup.secret
        && !signed(secret, &parts.headers, &body)
    {
        return Ok(answer(StatusCode::UNAUTHORIZED, Bytes::new()));
    }
    let mut headers = HeaderMap::with_capacity(16);
    for (name, value) in &parts.headers {
        if name == http::header::CONTENT_TYPE || name.as_str().starts_with("x-wc-webhook-") {
            headers.append(name.clone(), value.clone());
        }
    }
    let mut upstream = Request::new(Full::new(body));
    *upstream.method_mut() = http::Method::POST;
    *upstream.uri_mut() = setup.upstream.clone();
    *upstream.headers_mut() = headers;
    let answered = if setup.conn { through_conn(&setup, upstream).await } else { through_legacy(upstream).await };
    Ok(match answered {
        Ok((status, body)) => answer(status, body),
        Err(_) => answer(StatusCode::BAD_GATEWAY, Bytes::new()),
    })
}

fn answer(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

fn signed(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let Some(given) = headers.get("x-wc-webhook-signature") else { return false };
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given.as_bytes()) else { return false };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

type Answered = Result<(StatusCode, Bytes), Box<dyn std::error::Error + Send + Sync>>;

async fn through_legacy(request: Request<Full<Bytes>>) -> Answered {
    let client = LEGACY.with_borrow_mut(|client| {
        client
            .get_or_insert_with(|| {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                Client::builder(TokioExecutor::new()).build(http)
            })
            .clone()
    });
    let response = client.request(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

async fn through_conn(setup: &Setup, mut request: Request<Full<Bytes>>) -> Answered {
    let mut sender = loop {
        match SENDERS.with_borrow_mut(Vec::pop) {
            Some(sender) if sender.is_ready() => break sender,
            Some(_) => continue,
            None => {
                let stream = TcpStream::connect(setup.address).await?;
                stream.set_nodelay(true)?;
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                break sender;
            }
        }
    };
    // client::conn sends the request line's path; the Host header is ours to set.
    let host = http::HeaderValue::from_str(&setup.address.to_string())?;
    request.headers_mut().insert(http::header::HOST, host);
    *request.uri_mut() = Uri::from(setup.upstream.path_and_query().cloned().ok_or("no path")?);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    SENDERS.with_borrow_mut(|senders| senders.push(sender));
    Ok((status, body))
}
