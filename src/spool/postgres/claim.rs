//! Claiming due deliveries with a lease: of the replicas looking at once, each gets different deliveries
//! (`FOR UPDATE SKIP LOCKED`), and each claim lapses at `lease_until`, so that a replica that died
//! mid-attempt leaves nothing held for good.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Client;

use super::{SpoolError, pg_error};
use crate::spool::Due;

/// What one route can take in a pass: how many more attempts, which deliveries it has in flight already,
/// and how long a claim holds (longer than an attempt can take).
#[derive(Debug, Clone)]
pub struct Wanted {
    pub route: String,
    pub free: usize,
    pub in_flight: HashSet<i64>,
    /// The resources of the deliveries in flight: the next about one of them may have become its head
    /// before this gateway has heard that the attempt before it ended.
    pub resources_in_flight: HashSet<String>,
    pub lease: Duration,
}

/// Claims for `owner`, per route in `wanted` (in order), up to its free slots of the deliveries due at
/// `now`: only a resource's head, never one another replica holds; and when the next head on any of them
/// becomes due or has its lease lapse.
pub async fn claim(
    client: &Client,
    owner: &str,
    wanted: Vec<Wanted>,
    now: i64,
) -> Result<(Vec<Vec<Due>>, Option<i64>), SpoolError> {
    let mut due = Vec::with_capacity(wanted.len());
    let routes: Vec<String> = wanted.iter().map(|w| w.route.clone()).collect();
    for Wanted { route, free, in_flight, resources_in_flight, lease } in wanted {
        if free == 0 {
            due.push(Vec::new());
            continue;
        }
        let lease_until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let in_flight: Vec<i64> = in_flight.into_iter().collect();
        let resources_in_flight: Vec<String> = resources_in_flight.into_iter().collect();
        let limit = i64::try_from(free).unwrap_or(i64::MAX);
        let statement = client
            .prepare_cached(
                "WITH claimed AS (
                     UPDATE deliveries SET lease_owner = $1, lease_until = $2
                     WHERE id IN (SELECT c.id FROM deliveries c
                                  WHERE c.route = $3 AND c.state = 'pending' AND c.is_head AND c.next_attempt_at <= $4
                                    AND (c.lease_until IS NULL OR c.lease_until <= $4) AND c.id <> ALL($5)
                                    AND (c.resource_key IS NULL OR (c.resource_key <> ALL($7)
                                         -- An operator's replay or drop can move a resource's head while
                                         -- another replica still sends the old one: it waits for that.
                                         AND NOT EXISTS (SELECT 1 FROM deliveries o
                                                         WHERE o.route = c.route AND o.resource_key = c.resource_key
                                                           AND o.state = 'pending' AND o.id <> c.id
                                                           AND o.lease_until IS NOT NULL AND o.lease_until > $4)))
                                  ORDER BY c.next_attempt_at, c.id LIMIT $6
                                  FOR UPDATE SKIP LOCKED)
                     RETURNING id, attempts, pending_since, event_id, resource_key, next_attempt_at)
                 SELECT c.id, c.attempts, c.pending_since, e.public_id, e.source, e.headers, e.body, c.resource_key
                 FROM claimed c JOIN events e ON e.id = c.event_id
                 ORDER BY c.next_attempt_at, c.id",
            )
            .await
            .map_err(pg_error)?;
        let rows = client
            .query(&statement, &[&owner, &lease_until, &route, &now, &in_flight, &limit, &resources_in_flight])
            .await
            .map_err(pg_error)?;
        let claimed = rows
            .into_iter()
            .map(|row| Due {
                delivery_id: row.get(0),
                route: route.clone(),
                attempts: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
                pending_since: row.get(2),
                public_id: row.get(3),
                source: row.get(4),
                headers: row.get(5),
                body: Bytes::from(row.get::<_, Vec<u8>>(6)),
                resource_key: row.get(7),
            })
            .collect();
        due.push(claimed);
    }
    let next = client
        .prepare_cached(
            "SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_until, 0))) FROM deliveries
             WHERE route = ANY($1) AND state = 'pending' AND is_head",
        )
        .await
        .map_err(pg_error)?;
    let next: Option<i64> = client.query_one(&next, &[&routes]).await.map_err(pg_error)?.get(0);
    Ok((due, next))
}
