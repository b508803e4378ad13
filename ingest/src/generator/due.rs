//! The generator's open sessions, taken in the order their next events fall due.
//!
//! A binary heap of every open session (100,000 at 50,000 events/s) costs a chain of
//! cache misses per record. Sessions are instead filed in one-second buckets by the time
//! of their next event: a session is appended to its bucket, and a bucket is sorted only
//! when it becomes the earliest. The order is the heap's, `(next_time, id)`, which ids make
//! total, so a seed still yields the same records.

use std::collections::BTreeMap;

use super::Session;

/// The width of a bucket: a session's next event is at least this far after its last
/// ([`super::MIN_THINK_MS`]) or after the clock that started it, so sessions go to a later
/// bucket than the one being taken.
const BUCKET_MS: u64 = 1_000;

/// Open sessions by when their next event is due.
#[derive(Clone, Debug, Default)]
pub(super) struct DueSessions {
    /// The earliest sessions, those of bucket `front_bucket` (and any pushed there or
    /// earlier since), sorted latest first so that the earliest is taken from the end.
    front: Vec<Session>,
    front_bucket: u64,
    /// Every other session, by bucket, in the order they came.
    later: BTreeMap<u64, Vec<Session>>,
}

impl DueSessions {
    /// Takes the earliest session if its next event is due by `clock`.
    pub(super) fn pop_due(&mut self, clock: u64) -> Option<Session> {
        if self.front.is_empty() {
            // A bucket is sorted once its first millisecond is due, not before: sessions
            // started until then fall due a bucket later, so the front takes no inserts.
            let (bucket, mut sessions) = self
                .later
                .first_entry()
                .filter(|first| *first.key() * BUCKET_MS <= clock)?
                .remove_entry();
            sessions.sort_unstable_by(|a, b| b.cmp(a));
            self.front = sessions;
            self.front_bucket = bucket;
        }
        if self.front.last()?.next_time <= clock {
            self.front.pop()
        } else {
            None
        }
    }

    /// Files `session` by the time of its next event.
    pub(super) fn push(&mut self, session: Session) {
        let bucket = session.next_time / BUCKET_MS;
        if !self.front.is_empty() && bucket <= self.front_bucket {
            let position = self.front.partition_point(|other| *other > session);
            self.front.insert(position, session);
        } else {
            self.later.entry(bucket).or_default().push(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use super::*;
    use crate::generator::{Plan, Rng};

    fn session(next_time: u64, id: u64) -> Session {
        Session {
            next_time,
            id,
            user: id % 7,
            plan: Plan::Browse { remaining: 1 },
            last_page: None,
        }
    }

    /// Random pushes and takes, including sessions due in the bucket being taken or
    /// before it and many due at the same millisecond, give what a binary heap gives.
    #[test]
    fn sessions_come_out_in_the_order_of_a_binary_heap() {
        let mut rng = Rng::seeded(7);
        let mut due = DueSessions::default();
        let mut heap = BinaryHeap::new();
        let mut clock = 0;
        let mut taken = 0;
        for id in 0..200_000 {
            clock += rng.below(3);
            let next_time = match rng.below(10) {
                0 => clock.saturating_sub(rng.below(2 * BUCKET_MS)),
                1 => clock + rng.below(BUCKET_MS),
                2 => clock,
                _ => clock + rng.below(40 * BUCKET_MS),
            };
            due.push(session(next_time, id));
            heap.push(Reverse(session(next_time, id)));
            for _ in 0..rng.below(3) {
                let expected = heap
                    .peek()
                    .is_some_and(|Reverse(top)| top.next_time <= clock)
                    .then(|| heap.pop().map(|Reverse(top)| top))
                    .flatten();
                assert_eq!(due.pop_due(clock), expected, "at {clock}");
                taken += usize::from(expected.is_some());
            }
        }
        while let Some(Reverse(expected)) = heap.pop() {
            assert_eq!(due.pop_due(u64::MAX), Some(expected));
        }
        assert_eq!(due.pop_due(u64::MAX), None);
        assert!(
            taken > 100_000,
            "only {taken} sessions were taken before the end"
        );
    }
}
