//! The webhook path as a tower service: the cap on requests in flight per client ([`PerClient`]) in front
//! of the contract's steps ([`Steps`]), and one function, [`respond`], where every end of a request becomes
//! an answer and one log line.

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
use crate::forward::Peer;

use super::clients::{self, InFlight};
use super::gateway::Gateway;
use super::log::{Found, RequestLog};

/// The innermost service: the contract's steps for one request (see [`super::gateway`]).
#[derive(Clone)]
pub struct Steps {
    gateway: Arc<Gateway>,
    peer: Peer,
}

/// How the steps ended a request, and what they learnt on the way.
pub struct Handled {
    result: Result<Accepted, Rejection>,
    found: Found,
    /// The request's place in its client's count, held until its answer is made.
    in_flight: Option<InFlight>,
}

impl tower::Service<Request<Incoming>> for Steps {
    type Response = Handled;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Handled, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let (gateway, peer) = (Arc::clone(&self.gateway), self.peer.clone());
        Box::pin(async move {
            // A request keeps the configuration it started with, whatever a reload swaps in meanwhile.
            let config = gateway.config();
            let mut found = Found::default();
            let result = gateway.steps(&config, request, &peer, &mut found).await;
            Ok(Handled { result, found, in_flight: None })
        })
    }
}

/// The cap on requests in flight per client address (`limits.max_requests_per_client`), in front of the
/// steps: HTTP/1 requests and HTTP/2 streams alike are counted from the moment their head arrives, under
/// the client [`clients::client_address`] finds, and one past the cap is answered 429 at once, before its
/// path, signature or body is looked at.
#[derive(Clone)]
pub struct PerClient {
    steps: Steps,
}

impl tower::Service<Request<Incoming>> for PerClient {
    type Response = Handled;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Handled, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        let (gateway, peer) = (&self.steps.gateway, self.steps.peer.address);
        let config = gateway.config();
        let client = clients::client_address(peer.ip(), request.headers(), &config.trusted_proxies);
        let Some(in_flight) = gateway.requests.admit(client, config.limits.max_requests_per_client) else {
            // The source is named by the path alone, for the metrics' label.
            let source = config.source_for_path(request.uri().path()).cloned();
            let found = Found { client: Some(client), source, ..Found::default() };
            let refused = Handled { result: Err(Rejection::TooManyRequests), found, in_flight: None };
            return Box::pin(std::future::ready(Ok(refused)));
        };
        request.extensions_mut().insert(clients::Client(client));
        let steps = self.steps.call(request);
        Box::pin(async move {
            let Ok(mut handled) = steps.await;
            handled.found.client = Some(client);
            handled.in_flight = Some(in_flight);
            Ok(handled)
        })
    }
}

/// The webhook service of one connection: the per-client cap, then the contract's steps (overload is
/// decided inside them, once a delivery is verified: see [`super::capacity`]).
pub type Webhook = PerClient;

/// The webhook service for a connection from `peer`.
pub fn webhook(gateway: Arc<Gateway>, peer: SocketAddr) -> Webhook {
    PerClient { steps: Steps { gateway, peer: Peer::new(peer) } }
}

/// Answers one request through `service`. Every path ends here in exactly one answer and one log line.
pub async fn respond(service: Webhook, gateway: &Gateway, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let mut log = RequestLog::new(request.headers());
    let Ok(handled) = service.oneshot(request).await;
    log.found = handled.found;
    // The client's count goes down only once the answer is made, at the end of this function.
    let _in_flight = handled.in_flight;
    match handled.result {
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
