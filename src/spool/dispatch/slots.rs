//! What the dispatcher holds per route between passes: the deliveries read ahead and not yet started, the
//! attempts talking to the upstream, and those whose result is waiting for its commit.
//!
//! An attempt holds a slot of `max_in_flight` only while it talks to the upstream: once answered, its result
//! goes to the spool's writer and the slot is free for the next delivery, while the delivery itself (its id
//! and its resource) stays held until the result has committed. So the upstream sees at most
//! `max_in_flight` requests at once, and the time a commit takes (an fsync, shared by every result and new
//! delivery in its batch) no longer holds a slot.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::spool::Due;
use crate::spool::store::DUE_READ_BYTES;

/// What a route's ready list holds at most, in bodies and headers: a delivery handed over fresh past it is
/// left for a read to find.
pub const READY_BYTES: usize = 2 * DUE_READ_BYTES;

/// Deliveries whose result waits for its commit, per route, beyond the attempts in flight. They are held
/// (never sent again while held) but take no slot; past this many, no new attempt starts until commits
/// catch up. It bounds what a spool that cannot commit repeats to the upstream: each held delivery is sent
/// again only after its record failed and a pause.
pub const MAX_RECORDING: usize = 256;

/// How long deliveries read ahead may wait to be started before they are read again: past it they may
/// have been dropped or replayed by `hookgate spool` from another process.
pub const READ_AHEAD_FOR: Duration = Duration::from_secs(1);

/// One route's deliveries held by the dispatcher.
#[derive(Default)]
pub struct Slots {
    /// Every delivery held: sending, or waiting for its result's commit. Never read as due again while held.
    held: HashSet<i64>,
    /// The resources of the held deliveries: one delivery per resource at a time.
    resources: HashSet<String>,
    /// How many held deliveries are talking to the upstream now.
    sending: usize,
    /// Read from the spool or handed over fresh, due, not yet started (and their ids); and when the first
    /// of them came.
    ready: VecDeque<Due>,
    ready_ids: HashSet<i64>,
    ready_bytes: usize,
    read_at: Option<Instant>,
    /// When a read last found fewer due than it asked for. From then on what becomes due comes fresh from
    /// the spool's writer (new deliveries, the next head of a resource), so no read is needed until
    /// [`READ_AHEAD_FOR`] has passed (a `hookgate spool` command in another process may have changed
    /// the spool), a retry's time comes, a result was not recorded, or the writer missed handing some over
    /// ([`Slots::read_again`]).
    caught_up_at: Option<Instant>,
}

impl Slots {
    /// How many attempts may start now: free slots of `max_in_flight`, while results waiting for their
    /// commit stay under [`MAX_RECORDING`].
    pub fn free(&self, max_in_flight: usize) -> usize {
        let recording = self.held.len() - self.sending;
        if recording >= MAX_RECORDING { 0 } else { max_in_flight.saturating_sub(self.sending) }
    }

    /// How many more to read from the spool to start `free` attempts and keep `read_ahead` more ready; none
    /// while enough are ready. Deliveries read more than [`READ_AHEAD_FOR`] ago are let go first.
    pub fn wanted_from_spool(&mut self, free: usize, read_ahead: usize) -> usize {
        if self.read_at.is_some_and(|at| at.elapsed() > READ_AHEAD_FOR) {
            self.ready.clear();
            self.ready_ids.clear();
            self.ready_bytes = 0;
            // What was let go may have come fresh only: a read must find it.
            self.caught_up_at = None;
        }
        if self.caught_up_at.is_some_and(|at| at.elapsed() > READ_AHEAD_FOR) {
            self.caught_up_at = None;
        }
        if free == 0 || self.ready.len() >= free || self.caught_up_at.is_some() {
            0
        } else {
            free + read_ahead - self.ready.len()
        }
    }

    /// The next pass reads the spool (when a slot is free), caught up or not.
    pub fn read_again(&mut self) {
        self.caught_up_at = None;
    }

    /// The ids a read must leave out: those held and those already read ahead.
    pub fn not_due(&self) -> HashSet<i64> {
        self.held.union(&self.ready_ids).copied().collect()
    }

    /// The resources of the held deliveries.
    pub fn resources(&self) -> &HashSet<String> {
        &self.resources
    }

    /// Adds what a read that `asked` for so many found, in its order, behind what was ready (`asked` is 0
    /// when the spool does not hand over what becomes due: then the slots are never caught up).
    pub fn read(&mut self, due: Vec<Due>, asked: usize) {
        if asked > 0 {
            // A read that ended at its size bound may have left more due behind it.
            let bytes: usize = due.iter().map(size).sum();
            self.caught_up_at = (due.len() < asked && bytes < DUE_READ_BYTES).then(Instant::now);
        }
        for due in due {
            self.add(due);
        }
    }

    /// Adds a delivery handed over fresh behind what is ready, unless it is held or ready already; past
    /// [`READY_BYTES`] it is left for a read to find, and the route reads again.
    pub fn fresh(&mut self, due: Due) {
        if self.ready_bytes >= READY_BYTES {
            self.read_again();
            return;
        }
        self.add(due);
    }

    fn add(&mut self, due: Due) {
        if self.held.contains(&due.delivery_id) || !self.ready_ids.insert(due.delivery_id) {
            return;
        }
        if self.ready.is_empty() {
            self.read_at = Some(Instant::now());
        }
        self.ready_bytes += size(&due);
        self.ready.push_back(due);
    }

    /// The next ready delivery that may start now, taken as sending. One whose resource is held stays
    /// ready, for when it is let go: the next head of a resource is handed over fresh just before the
    /// delivery ahead of it is let go, and a replay from `hookgate spool` may have moved a resource's head
    /// while its old head is being sent.
    pub fn start_next(&mut self) -> Option<Due> {
        let startable = self.ready.iter().position(|due| {
            !self.held.contains(&due.delivery_id)
                && due.resource_key.as_ref().is_none_or(|key| !self.resources.contains(key))
        })?;
        let due = self.ready.remove(startable)?;
        self.ready_ids.remove(&due.delivery_id);
        self.ready_bytes = self.ready_bytes.saturating_sub(size(&due));
        if let Some(key) = &due.resource_key {
            self.resources.insert(key.clone());
        }
        self.held.insert(due.delivery_id);
        self.sending += 1;
        Some(due)
    }

    /// An attempt has its answer: its slot is free; the delivery stays held until [`Slots::finish`].
    pub fn answered(&mut self) {
        self.sending = self.sending.saturating_sub(1);
    }

    /// An attempt's result has been recorded (or could not be): the delivery and its resource are let go.
    pub fn finish(&mut self, id: i64, resource_key: Option<&str>) {
        self.held.remove(&id);
        if let Some(key) = resource_key {
            self.resources.remove(key);
        }
    }
}

/// What a ready delivery holds in memory, near enough: its body and headers.
fn size(due: &Due) -> usize {
    due.body.len() + due.headers.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(id: i64, resource: Option<&str>) -> Due {
        Due {
            delivery_id: id,
            route: "r".into(),
            resource_key: resource.map(str::to_owned),
            attempts: 0,
            pending_since: 0,
            public_id: id.to_string(),
            source: "s".into(),
            headers: Vec::new(),
            body: bytes::Bytes::new(),
        }
    }

    #[test]
    fn a_slot_is_free_once_answered_and_the_delivery_held_until_recorded() {
        let mut slots = Slots::default();
        slots.read(vec![due(1, Some("o:1")), due(2, Some("o:2"))], 2);
        assert_eq!(slots.free(1), 1);
        let first = slots.start_next().unwrap();
        assert_eq!(slots.free(1), 0, "sending takes the slot");
        slots.answered();
        assert_eq!(slots.free(1), 1, "answered frees the slot");
        assert!(slots.not_due().contains(&first.delivery_id), "held until its result is recorded");
        assert!(slots.resources().contains("o:1"));
        slots.finish(first.delivery_id, first.resource_key.as_deref());
        assert!(!slots.not_due().contains(&1));
        assert!(slots.resources().is_empty());
    }

    #[test]
    fn one_delivery_per_resource_and_none_twice() {
        let mut slots = Slots::default();
        slots.read(vec![due(1, Some("o:1")), due(3, Some("o:1")), due(4, None), due(5, None)], 4);
        assert_eq!(slots.start_next().unwrap().delivery_id, 1);
        assert_eq!(slots.start_next().unwrap().delivery_id, 4, "3 is about o:1, held by 1");
        slots.read(vec![due(4, None)], 1);
        assert_eq!(slots.start_next().unwrap().delivery_id, 5);
        assert!(slots.start_next().is_none(), "4 is held already, 3 waits for o:1");
        slots.read(vec![due(6, None), due(6, None)], 2);
        slots.fresh(due(6, None));
        assert_eq!(slots.start_next().unwrap().delivery_id, 6);
        assert!(slots.start_next().is_none(), "6 was ready once");
        slots.answered();
        slots.finish(1, Some("o:1"));
        assert_eq!(slots.start_next().unwrap().delivery_id, 3, "o:1's next once 1 is let go");
    }

    #[test]
    fn results_waiting_for_their_commit_are_bounded() {
        let mut slots = Slots::default();
        slots.read((0..MAX_RECORDING as i64).map(|id| due(id, None)).collect(), MAX_RECORDING);
        while slots.start_next().is_some() {
            slots.answered();
        }
        assert_eq!(slots.free(8), 0, "{MAX_RECORDING} results wait for their commit");
        slots.finish(0, None);
        assert_eq!(slots.free(8), 8);
    }

    #[test]
    fn reads_ahead_only_when_too_few_are_ready() {
        let mut slots = Slots::default();
        assert_eq!(slots.wanted_from_spool(0, 64), 0, "no free slot, nothing read");
        assert_eq!(slots.wanted_from_spool(8, 64), 72);
        slots.read((0..72).map(|id| due(id, None)).collect(), 72);
        assert_eq!(slots.wanted_from_spool(8, 64), 0, "enough ready");
        assert_eq!(slots.not_due().len(), 72, "what is ready is not read again");
        slots.read_at = Some(Instant::now() - READ_AHEAD_FOR - Duration::from_millis(1));
        assert_eq!(slots.wanted_from_spool(8, 64), 72, "read too long ago: read again");
        assert!(slots.not_due().is_empty());
        slots.read(vec![due(100, None)], 72);
        slots.fresh(due(101, None));
        slots.read_at = Some(Instant::now() - READ_AHEAD_FOR - Duration::from_millis(1));
        assert_eq!(slots.wanted_from_spool(8, 64), 72, "caught up, but what was ready is let go: read again");
    }

    #[test]
    fn caught_up_it_waits_for_fresh_deliveries_until_told_to_read_again() {
        let mut slots = Slots::default();
        slots.read(vec![due(1, None)], 72);
        slots.start_next().unwrap();
        assert_eq!(slots.wanted_from_spool(7, 64), 0, "the read found all there was: the rest comes fresh");
        slots.fresh(due(2, None));
        assert_eq!(slots.start_next().unwrap().delivery_id, 2);
        slots.read_again();
        assert_eq!(slots.wanted_from_spool(6, 64), 70, "told to read again");
        slots.read((10..80).map(|id| due(id, None)).collect(), 70);
        while slots.start_next().is_some() {}
        assert_eq!(slots.wanted_from_spool(1, 64), 65, "a full read: there may be more");
        slots.caught_up_at = Some(Instant::now() - READ_AHEAD_FOR - Duration::from_millis(1));
        assert_eq!(slots.wanted_from_spool(1, 64), 65, "caught up too long ago: read again");
    }

    #[test]
    fn what_is_ready_is_bounded_in_bytes() {
        let big = |id| Due { body: bytes::Bytes::from(vec![b'x'; DUE_READ_BYTES / 2]), ..due(id, None) };
        let mut slots = Slots::default();
        slots.read(vec![big(1)], 72);
        assert_eq!(slots.wanted_from_spool(8, 64), 0, "one of 72: caught up");
        slots.read(vec![big(2), big(3)], 72);
        assert_eq!(slots.wanted_from_spool(8, 64), 69, "a read that ended at its size bound is not caught up");
        slots.fresh(big(4));
        assert_eq!(slots.not_due().len(), 4);
        slots.read(vec![], 72);
        slots.fresh(big(5));
        assert_eq!(slots.not_due().len(), 4, "past READY_BYTES a fresh delivery is left to a read");
        assert!(slots.wanted_from_spool(8, 64) > 0, "and the route reads again");
        while slots.start_next().is_some() {}
        assert_eq!(slots.ready_bytes, 0);
    }
}
