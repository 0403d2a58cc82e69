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
    /// Read from the spool, due, not yet started; and when they were read.
    ready: VecDeque<Due>,
    read_at: Option<Instant>,
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
        }
        if free == 0 || self.ready.len() >= free { 0 } else { free + read_ahead - self.ready.len() }
    }

    /// The ids a read must leave out: those held and those already read ahead.
    pub fn not_due(&self) -> HashSet<i64> {
        self.held.iter().copied().chain(self.ready.iter().map(|due| due.delivery_id)).collect()
    }

    /// The resources of the held deliveries.
    pub fn resources(&self) -> &HashSet<String> {
        &self.resources
    }

    /// Adds what a read found, in its order, behind what was ready.
    pub fn read(&mut self, due: Vec<Due>) {
        if self.ready.is_empty() {
            self.read_at = Some(Instant::now());
        }
        self.ready.extend(due);
    }

    /// The next ready delivery that may start now, taken as sending; a ready one whose resource is held
    /// (a replay or drop from `hookgate spool` moved its resource's head while its old head is being sent)
    /// is let go, to be read again once due.
    pub fn start_next(&mut self) -> Option<Due> {
        while let Some(due) = self.ready.pop_front() {
            if self.held.contains(&due.delivery_id) {
                continue;
            }
            if let Some(key) = &due.resource_key
                && !self.resources.insert(key.clone())
            {
                continue;
            }
            self.held.insert(due.delivery_id);
            self.sending += 1;
            return Some(due);
        }
        None
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
        slots.read(vec![due(1, Some("o:1")), due(2, Some("o:2"))]);
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
        slots.read(vec![due(1, Some("o:1")), due(3, Some("o:1")), due(4, None), due(5, None)]);
        assert_eq!(slots.start_next().unwrap().delivery_id, 1);
        assert_eq!(slots.start_next().unwrap().delivery_id, 4, "3 is about o:1, held by 1");
        slots.read(vec![due(4, None)]);
        assert_eq!(slots.start_next().unwrap().delivery_id, 5);
        assert!(slots.start_next().is_none(), "4 is held already");
    }

    #[test]
    fn results_waiting_for_their_commit_are_bounded() {
        let mut slots = Slots::default();
        slots.read((0..MAX_RECORDING as i64).map(|id| due(id, None)).collect());
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
        slots.read((0..72).map(|id| due(id, None)).collect());
        assert_eq!(slots.wanted_from_spool(8, 64), 0, "enough ready");
        assert_eq!(slots.not_due().len(), 72, "what is ready is not read again");
        slots.read_at = Some(Instant::now() - READ_AHEAD_FOR - Duration::from_millis(1));
        assert_eq!(slots.wanted_from_spool(8, 64), 72, "read too long ago: read again");
        assert!(slots.not_due().is_empty());
    }
}
