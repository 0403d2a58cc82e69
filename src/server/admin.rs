//! The admin listener, apart from the webhook listener: `GET /metrics` (Prometheus text format),
//! `GET /healthz` (200 while the process serves), `GET /readyz` (200 only when deliveries can be taken)
//! and `GET /webhooks` (what was seen of each store webhook, per source, for `hookgate store status`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::Gateway;
use crate::answer::{Body, json};

/// Prometheus's text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin routes on `listener` until `shutdown` completes.
pub async fn run(listener: TcpListener, gateway: Arc<Gateway>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = super::listener::accept(&listener, "admin") => accepted,
            () = &mut shutdown => return,
        };
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let gateway = Arc::clone(&gateway);
                async move { Ok::<_, Infallible>(answer(&gateway, &request)) }
            });
            let mut http1 = hyper::server::conn::http1::Builder::new();
            http1.timer(TokioTimer::new()).header_read_timeout(std::time::Duration::from_secs(10));
            let _ = http1.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn answer(gateway: &Gateway, request: &Request<Incoming>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = json(StatusCode::METHOD_NOT_ALLOWED, r#"{"error":"method_not_allowed"}"#);
        response.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(crate::metrics::render())));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
            response
        }
        "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#),
        "/readyz" => match gateway.not_ready() {
            None => json(StatusCode::OK, r#"{"status":"ready"}"#),
            Some(reason) => {
                let body = serde_json::json!({ "status": "not_ready", "reason": reason }).to_string();
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
        },
        "/webhooks" => {
            let config = gateway.config();
            let sources: serde_json::Map<String, serde_json::Value> = config
                .sources
                .iter()
                .map(|source| {
                    let seen = gateway.seen.report(&config, &source.name);
                    (source.name.clone(), serde_json::to_value(seen).expect("reports serialise"))
                })
                .collect();
            let body = serde_json::json!({ "sources": sources }).to_string();
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
    }
}
