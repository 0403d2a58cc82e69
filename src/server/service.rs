//! The webhook path as a tower service over the contract's steps, and one function, [`respond`], where
//! every end of a request becomes an answer and one log line.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::ServiceExt;

use crate::answer::{Accepted, Body, Rejection};

use super::gateway::Gateway;
use super::log::{Found, RequestLog};

/// The innermost service: the contract's steps for one request (see [`super::gateway`]).
#[derive(Clone)]
pub struct Steps {
    gateway: Arc<Gateway>,
    peer: SocketAddr,
}

/// How the steps ended a request, and what they learnt on the way.
pub struct Handled {
    result: Result<Accepted, Rejection>,
    found: Found,
}

impl tower::Service<Request<Incoming>> for Steps {
    type Response = Handled;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Handled, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let (gateway, peer) = (Arc::clone(&self.gateway), self.peer);
        Box::pin(async move {
            // A request keeps the configuration it started with, whatever a reload swaps in meanwhile.
            let config = gateway.config();
            let mut found = Found::default();
            let result = gateway.steps(&config, request, peer, &mut found).await;
            Ok(Handled { result, found })
        })
    }
}

/// The webhook service of one connection: the contract's steps (overload is decided inside them, once a
/// delivery is verified: see [`super::capacity`]).
pub type Webhook = Steps;

/// The webhook service for a connection from `peer`.
pub fn webhook(gateway: Arc<Gateway>, peer: SocketAddr) -> Webhook {
    Steps { gateway, peer }
}

/// Answers one request through `service`. Every path ends here in exactly one answer and one log line.
pub async fn respond(service: Webhook, gateway: &Gateway, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let mut log = RequestLog::new(request.headers());
    let Ok(handled) = service.oneshot(request).await;
    log.found = handled.found;
    let result = handled.result;
    match result {
        Ok(accepted) => {
            let (outcome, event_id) = (accepted.outcome(), accepted.event_id().map(str::to_owned));
            let response = accepted.answer();
            let status = response.status().as_u16();
            log.emit(outcome, status, event_id.as_deref(), None, started.elapsed(), &gateway.throttle);
            response
        }
        Err(rejection) => {
            let response = rejection.answer();
            let error =
                matches!(rejection, Rejection::Upstream(_) | Rejection::Internal(_)).then(|| rejection.to_string());
            let status = response.status().as_u16();
            log.emit(rejection.outcome(), status, None, error.as_deref(), started.elapsed(), &gateway.throttle);
            response
        }
    }
}

impl Gateway {
    /// Answers one request from `peer` through the whole webhook path (layers and steps), as a connection
    /// does: for callers that bring their own transport, such as the fuzz harness.
    pub async fn handle(self: &Arc<Self>, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        respond(webhook(Arc::clone(self), peer), self, request).await
    }
}
