//! How long a connection may go without a request. Its first request head must arrive within
//! `header_timeout` of the accept (the TLS handshake and HTTP/2's preface count against it); after that, a
//! connection with no request in flight is closed once it has been so for `limits.idle_timeout`. hyper bounds
//! neither for HTTP/2, where a connection can otherwise sit open for ever after its preface.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::answer::Body;

/// Why a connection was closed for doing nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No request head arrived within `header_timeout` of the accept.
    FirstRequest,
    /// No request was in flight for `limits.idle_timeout`.
    Idle,
}

impl Expired {
    /// The `reason` label of `hookgate_connections_idled_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Expired::FirstRequest => "first_request",
            Expired::Idle => "idle",
        }
    }
}

/// The time limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// When the connection was accepted.
    pub accepted: Instant,
    /// Time from the accept to the first request head (`limits.header_timeout`).
    pub header_timeout: Duration,
    /// Time with no request in flight after that (`limits.idle_timeout`).
    pub idle_timeout: Duration,
}

/// What a connection's requests are doing.
#[derive(Debug, Clone, Copy)]
struct State {
    in_flight: usize,
    /// Whether any request head has arrived.
    started: bool,
    /// When the last request in flight was answered.
    quiet_since: Instant,
}

/// The requests of one connection, counted by the service that answers them and watched by [`expired`].
pub struct Activity {
    state: watch::Sender<State>,
}

impl Activity {
    /// A connection accepted at `accepted`, with nothing in flight yet; and the receiver [`expired`] watches.
    pub fn new(accepted: Instant) -> (Arc<Activity>, Watched) {
        let (state, watched) = watch::channel(State { in_flight: 0, started: false, quiet_since: accepted });
        (Arc::new(Activity { state }), Watched(watched))
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.state.send_modify(|state| {
            state.in_flight += 1;
            state.started = true;
        });
        InFlight(Arc::clone(self))
    }
}

/// One request in flight, until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.send_modify(|state| {
            state.in_flight -= 1;
            state.quiet_since = Instant::now();
        });
    }
}

/// The watching side of an [`Activity`].
#[derive(Clone)]
pub struct Watched(watch::Receiver<State>);

impl Watched {
    /// Resolves once no request is in flight (at once if none is).
    pub async fn quiet(&mut self) {
        let _ = self.0.wait_for(|state| state.in_flight == 0).await;
    }
}

/// Resolves once the connection has waited too long for its first request, or sat with nothing in flight
/// for the idle timeout; never while a request is in flight.
pub async fn expired(Watched(mut watched): Watched, deadlines: Deadlines) -> Expired {
    loop {
        let state = *watched.borrow_and_update();
        if state.in_flight > 0 {
            if watched.changed().await.is_err() {
                return Expired::Idle;
            }
            continue;
        }
        let (deadline, why) = if state.started {
            (state.quiet_since + deadlines.idle_timeout, Expired::Idle)
        } else {
            (deadlines.accepted + deadlines.header_timeout, Expired::FirstRequest)
        };
        tokio::select! {
            // A request that has just begun wins over a deadline that has just passed.
            biased;
            changed = watched.changed() => if changed.is_err() { return why },
            () = tokio::time::sleep_until(deadline) => return why,
        }
    }
}

/// A connection's service that counts its requests in flight: from the request head to the answer.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Tracked<S> {
        Tracked { inner, activity }
    }
}

impl<S> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(in_flight);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines() -> Deadlines {
        Deadlines {
            accepted: Instant::now(),
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_expires_at_the_header_timeout() {
        let (_activity, watched) = Activity::new(Instant::now());
        let started = Instant::now();
        assert_eq!(expired(watched, deadlines()).await, Expired::FirstRequest);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_last_answer_and_never_during_a_request() {
        let deadlines = deadlines();
        let (activity, watched) = Activity::new(deadlines.accepted);
        let watching = tokio::spawn(expired(watched, deadlines));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let request = activity.begin();
        // A request in flight far longer than both limits does not expire the connection.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!watching.is_finished());
        drop(request);
        let answered = Instant::now();
        assert_eq!(watching.await.unwrap(), Expired::Idle);
        assert_eq!(answered.elapsed(), Duration::from_secs(5));
    }
}
