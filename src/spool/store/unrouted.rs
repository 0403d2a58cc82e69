//! Deliveries no route took when they came (queue mode, `unrouted: accept`): events marked `unrouted`, with
//! no delivery, so the dispatcher has nothing of theirs to send. `hookgate spool replay --unrouted` routes
//! them along the routes configured now; pruning removes them after `keep_unrouted`. (What an operator
//! reads of them is in `inspect`.)

use rusqlite::{Connection, TransactionBehavior, params};

use super::{SpoolError, insert_deliveries};
use crate::route::{Routes, TopicPattern};

/// Events routed in one transaction: each event's deliveries and its mark change together, and a large
/// replay still lets the gateway's writer in between.
const ROUTE_CHUNK: usize = 200;

/// Removes up to `chunk` unrouted events received before `before` (unix ms). They have no deliveries.
pub(super) fn prune(conn: &Connection, before: i64, chunk: i64) -> Result<usize, SpoolError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM events WHERE id IN (
                 SELECT id FROM events WHERE unrouted = 1 AND received_at < ?1 LIMIT ?2)",
        )?
        .execute(params![before, chunk])?)
}

/// What [`route_unrouted`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    /// Events routed: each now has a pending delivery per route that takes it.
    pub events: usize,
    /// The pending deliveries made for them.
    pub deliveries: usize,
    /// The topics of the events still taken by no route, each with how many there are.
    pub still_unrouted: Vec<(String, usize)>,
}

/// An unrouted event, as read to be routed.
struct Candidate {
    id: i64,
    source: String,
    topic: String,
    resource_key: Option<String>,
}

/// Routes the unrouted events (the one with `public_id`, or every one, of topics `topic` matches when
/// given) along `routes`, as a delivery received now would be routed: one pending delivery per route that
/// takes it, due at `now` (unix ms). Each event's deliveries and the end of its `unrouted` mark are
/// written in one transaction, and only while it is still marked: a second replay, or two at once, never
/// routes an event twice. The gateway, running or started later, delivers them like any other.
pub fn route_unrouted(
    conn: &mut Connection,
    routes: &Routes,
    public_id: Option<&str>,
    topic: Option<&TopicPattern>,
    now: i64,
) -> Result<Routed, SpoolError> {
    let candidates: Vec<Candidate> = conn
        .prepare(
            "SELECT id, source, topic, resource_key FROM events
             WHERE unrouted = 1 AND (?1 IS NULL OR public_id = ?1) ORDER BY id",
        )?
        .query_map([public_id], |row| {
            Ok(Candidate { id: row.get(0)?, source: row.get(1)?, topic: row.get(2)?, resource_key: row.get(3)? })
        })?
        .filter(|candidate| candidate.as_ref().map_or(true, |c| topic.is_none_or(|t| t.matches(&c.topic))))
        .collect::<Result<_, _>>()?;
    let mut routed = Routed::default();
    let mut unmatched: Vec<(String, usize)> = Vec::new();
    for chunk in candidates.chunks(ROUTE_CHUNK) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for event in chunk {
            let names: Vec<String> = routes.matching(&event.source, &event.topic).map(|r| r.name.clone()).collect();
            if names.is_empty() {
                match unmatched.iter_mut().find(|(topic, _)| *topic == event.topic) {
                    Some((_, count)) => *count += 1,
                    None => unmatched.push((event.topic.clone(), 1)),
                }
                continue;
            }
            // Still unrouted now, inside the transaction: another replay may have routed (or an operator
            // dropped) it since it was read.
            if tx
                .prepare_cached("UPDATE events SET unrouted = 0 WHERE id = ?1 AND unrouted = 1")?
                .execute([event.id])?
                == 0
            {
                continue;
            }
            insert_deliveries(&tx, event.id, event.resource_key.as_deref(), &names, now)?;
            routed.events += 1;
            routed.deliveries += names.len();
        }
        tx.commit()?;
    }
    routed.still_unrouted = unmatched;
    Ok(routed)
}
