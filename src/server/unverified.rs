//! Memory for bodies not verified yet: `limits.max_unverified_bytes` in all, and at most
//! `limits.max_unverified_bytes_per_client` of it for one client. It is taken as a body's bytes arrive,
//! not for what its `Content-Length` promises, and given back once the body is verified or refused: a
//! client that promises large bodies and sends them slowly holds only what it has sent, and one address
//! cannot hold what every other client's bodies need.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::answer::Rejection;

use super::clients::Tally;

/// The pool of bytes for unverified bodies, and what each client holds of it.
pub struct UnverifiedBytes {
    pool: Arc<Semaphore>,
    /// Only clients holding something have an entry.
    by_client: Mutex<Tally>,
}

/// What one body holds of the pool, given back when dropped.
pub struct Reservation {
    bytes: Arc<UnverifiedBytes>,
    client: IpAddr,
    per_client: u64,
    permit: Option<OwnedSemaphorePermit>,
    held: u64,
}

impl UnverifiedBytes {
    /// A pool of `total` bytes (fixed at start).
    pub fn new(total: u64) -> Arc<UnverifiedBytes> {
        let total = usize::try_from(total).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Arc::new(UnverifiedBytes { pool: Arc::new(Semaphore::new(total)), by_client: Mutex::default() })
    }

    /// An empty reservation for a body from `client`, who may hold `per_client` bytes in all.
    pub fn reservation(self: &Arc<Self>, client: IpAddr, per_client: u64) -> Reservation {
        Reservation { bytes: Arc::clone(self), client, per_client, permit: None, held: 0 }
    }
}

impl Reservation {
    /// Makes the reservation `total` bytes (it never shrinks): 429 `too_many_requests` when that would
    /// take the client past its share, 503 `overloaded` when the pool has not that much left.
    pub fn grow_to(&mut self, total: u64) -> Result<(), Rejection> {
        let more = total.saturating_sub(self.held);
        if more == 0 {
            return Ok(());
        }
        let permits = u32::try_from(more).map_err(|_| Rejection::TooLarge)?;
        let mut by_client = self.bytes.by_client.lock().unwrap_or_else(|p| p.into_inner());
        if !by_client.take(self.client, more, self.per_client) {
            return Err(Rejection::TooManyRequests);
        }
        let Ok(permit) = Arc::clone(&self.bytes.pool).try_acquire_many_owned(permits) else {
            by_client.give_back(self.client, more);
            return Err(Rejection::Overloaded);
        };
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        self.held = total;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held == 0 {
            return;
        }
        self.bytes.by_client.lock().unwrap_or_else(|p| p.into_inner()).give_back(self.client, self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_share_and_all_clients_at_most_the_pool() {
        let bytes = UnverifiedBytes::new(100);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap(), "127.0.0.4".parse().unwrap());
        let mut first = bytes.reservation(a, 40);
        first.grow_to(30).unwrap();
        let mut second = bytes.reservation(a, 40);
        assert!(matches!(second.grow_to(11), Err(Rejection::TooManyRequests)), "past a's share");
        second.grow_to(10).unwrap();
        let mut other = bytes.reservation(b, 80);
        other.grow_to(60).unwrap();
        let mut third = bytes.reservation(c, 80);
        assert!(matches!(third.grow_to(1), Err(Rejection::Overloaded)), "the pool is used up");
        drop(first);
        third.grow_to(30).unwrap();
        assert_eq!(bytes.pool.available_permits(), 0);
        drop((second, other, third));
        assert_eq!(bytes.pool.available_permits(), 100, "everything is given back");
        assert!(bytes.by_client.lock().unwrap().is_empty());
    }
}
