//! Capacity for verified deliveries: `limits.max_concurrent` is tower's load shedding over one global
//! concurrency limit, around the work done for a delivery once its signature has been checked (relaying
//! it, or storing it). A request whose body is still arriving, or whose signature does not match, holds
//! no slot: unauthenticated clients compete only among themselves (for `limits.max_unverified_bytes`), and
//! cannot take capacity from the store's real deliveries.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{ServiceBuilder, ServiceExt};

use crate::answer::Rejection;

/// Runs `work` in one of the slots `permits` holds (`limits.max_concurrent`, one semaphore for the
/// listener) through tower's load shedding over its global concurrency limit: with no slot free, the work
/// is refused at once as overloaded (503 `Retry-After: 1`), never queued. The slot is held until the work
/// ends.
pub async fn within<T>(
    permits: &Arc<Semaphore>,
    work: impl Future<Output = Result<T, Rejection>>,
) -> Result<T, Rejection> {
    let slot = ServiceBuilder::new()
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(Arc::clone(permits)))
        .service_fn(|work| async move { Ok::<_, Infallible>(work.await) });
    match slot.oneshot(work).await {
        Ok(result) => result,
        Err(error) => Err(Rejection::from_layer(error)),
    }
}
