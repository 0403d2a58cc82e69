//! Accepting connections, for the webhook and the admin listener alike: an error (out of file descriptors,
//! say) never ends a listener and never spins; it waits, longer each time it repeats, and says so once.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The first wait after a failed accept: short enough that a brief shortage costs little.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// The longest wait: a listener out of descriptors still tries again every second.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts the next connection. Failures are waited out with a doubling backoff (5 ms to 1 s); the first
/// of a run is logged as a warning, the rest at debug level, so a shortage cannot flood the log.
pub async fn accept(listener: &TcpListener, name: &'static str) -> (TcpStream, SocketAddr) {
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u64;
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                if failures > 0 {
                    tracing::info!(listener = name, failures, "accepting connections again");
                }
                return accepted;
            }
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(listener = name, %error, "accept failed: waiting before the next");
                } else {
                    tracing::debug!(listener = name, %error, failures, "accept failed again");
                }
                metrics::counter!(crate::metrics::ACCEPT_ERRORS_TOTAL, "listener" => name).increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
