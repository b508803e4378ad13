//! A keyed incremental operator: per-key state that absorbs changes and derives the key's
//! current rows, with retention built in.
//!
//! Updates are exchanged by key, stashed by logical time and applied once the input
//! frontier has passed their time, in time order. After each applied time the operator
//! emits the difference between the rows the key showed before and the rows it shows now,
//! so the output is an ordinary differential collection. A key can also ask to be woken
//! at a later time (when a window or session leaves retention); the wake-up emits the
//! retraction at exactly that time, and [`KeyedView::retire`] drops state that no future
//! input can reach, which bounds memory by the retention horizon. The keys a time touches
//! are remembered by their entries' places in the hash table, so that deriving their rows
//! does not look them up again.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hash};

use foldhash::fast::RandomState;
use hashbrown::{HashTable, hash_table};
use smallvec::SmallVec;

use differential_dataflow::{AsCollection, ExchangeData, Hashable, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::stash::{TimeStash, Waiting, hold, release};
use crate::views::Time;

/// The logic of one keyed view.
pub(crate) trait KeyedView: 'static {
    /// What the input is partitioned and grouped by.
    type Key: ExchangeData + Hash + Eq;
    /// One input record of a key.
    type Value: ExchangeData;
    /// Everything the view remembers about one key.
    type State: Default + 'static;
    /// An output row.
    type Row: ExchangeData;

    /// Applies `diff` copies of `value` to the key's state.
    fn apply(&self, state: &mut Self::State, value: Self::Value, diff: isize);
    /// Appends the rows the key shows at logical time `time`, given the rows it showed
    /// before (`previous`, sorted). Called once per time the key changes or wakes, after
    /// that time's [`KeyedView::apply`]; a view may note in its state what it derived.
    fn rows(
        &self,
        key: &Self::Key,
        state: &mut Self::State,
        time: Time,
        previous: &[Self::Row],
        rows: &mut Vec<Self::Row>,
    );
    /// Forgets what neither future input nor [`KeyedView::rows`] at `time` or later can
    /// use; returns true when nothing is left to keep.
    fn retire(&self, key: &Self::Key, state: &mut Self::State, time: Time) -> bool;
    /// The first time after `time` at which the key's rows or state change with no input;
    /// `rows` are the key's rows at `time`. Called after [`KeyedView::retire`].
    fn next_change(
        &self,
        key: &Self::Key,
        state: &Self::State,
        time: Time,
        rows: &[Self::Row],
    ) -> Option<Time>;
}

struct Entry<K, S, R> {
    key: K,
    state: S,
    /// The rows last emitted for this key, sorted: what the output collection holds for
    /// it. A retraction moves the very row that was emitted, so its shared parts (a
    /// session's page sequence) compare equal by pointer downstream. Most keys show one
    /// row, kept inline: reading it costs no cache miss beyond the key's own.
    emitted: SmallVec<[R; 1]>,
    /// The pending wake-up, if one is scheduled.
    wake: Option<Time>,
    /// The key's place in the list of keys the time being processed has changed or woken;
    /// `None` while it is not on it.
    touched: Option<u32>,
}

impl<K, S: Default, R> Entry<K, S, R> {
    fn new(key: K) -> Self {
        Self {
            key,
            state: S::default(),
            emitted: SmallVec::new(),
            wake: None,
            touched: None,
        }
    }
}

/// Maintains `view` over `input`, exchanging records by key.
pub(crate) fn maintain<'s, V: KeyedView>(
    input: VecCollection<'s, Time, (V::Key, V::Value)>,
    name: &str,
    view: V,
) -> VecCollection<'s, Time, V::Row> {
    let exchange = Exchange::new(|update: &((V::Key, V::Value), Time, isize)| update.0.0.hashed());
    input
        .inner
        .unary_frontier(exchange, name, move |_capability, _info| {
            let mut operator = KeyedOperator::new(view);
            let mut held: Option<Capability<Time>> = None;
            let mut changes = Vec::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|capability, containers| {
                    if hold(&mut held, &capability).is_some() {
                        for container in containers {
                            operator.updates.push(container);
                        }
                    }
                });
                release(
                    &mut operator,
                    &mut held,
                    |time| !frontier.less_equal(time),
                    &mut changes,
                    output,
                );
            }
        })
        .as_collection()
}

struct KeyedOperator<V: KeyedView> {
    view: V,
    hasher: RandomState,
    /// Every key's entry, by the hash of the key.
    entries: HashTable<Entry<V::Key, V::State, V::Row>>,
    /// Updates waiting for the frontier to pass their time.
    updates: TimeStash<(V::Key, V::Value)>,
    /// Keys to re-derive at a time with no input of their own.
    wakes: BTreeSet<(Time, V::Key)>,
    /// Where the entries the time being processed changed or woke are in `entries` (their
    /// bucket indices), each once. An entry stays where it is until it is removed or the
    /// table grows.
    touched: Vec<usize>,
}

impl<V: KeyedView> KeyedOperator<V> {
    fn new(view: V) -> Self {
        Self {
            view,
            hasher: RandomState::default(),
            entries: HashTable::new(),
            updates: TimeStash::default(),
            wakes: BTreeSet::new(),
            touched: Vec::new(),
        }
    }
}

impl<V: KeyedView> Waiting for KeyedOperator<V> {
    type Row = V::Row;

    fn next_time(&self) -> Option<Time> {
        let update = self.updates.first_time();
        let wake = self.wakes.first().map(|(time, _)| *time);
        update.into_iter().chain(wake).min()
    }

    /// Applies the updates and wakes at `time`, appending the row changes to `changes`.
    fn process(&mut self, time: Time, changes: &mut Vec<(V::Row, Time, isize)>) {
        // Each update is applied to its key's state as it comes (one lookup), and the
        // entry's place is noted the first time; the rows are derived once per key
        // afterwards, from there, without looking the key up again.
        let hasher = &self.hasher;
        let rehash = |entry: &Entry<V::Key, V::State, V::Row>| hasher.hash_one(&entry.key);
        let mut touched = std::mem::take(&mut self.touched);
        for ((key, value), diff) in self.updates.take(time) {
            if self.entries.len() == self.entries.capacity() {
                // A new key would move every entry (the table grows, or drops the places
                // of removed entries): they move now, and the touched ones are found again.
                // This is as rare, and costs as much, as the move.
                self.entries.reserve(1, rehash);
                for index in self.entries.iter_buckets() {
                    if let Some(place) = self.entries.get_bucket(index).and_then(|e| e.touched) {
                        touched[place as usize] = index;
                    }
                }
            }
            let hash = hasher.hash_one(&key);
            let occupied = match self.entries.entry(hash, |entry| entry.key == key, rehash) {
                hash_table::Entry::Occupied(occupied) => occupied,
                hash_table::Entry::Vacant(vacant) => vacant.insert(Entry::new(key)),
            };
            let index = occupied.bucket_index();
            let entry = occupied.into_mut();
            if entry.touched.is_none() {
                // Fewer keys than `u32::MAX` fit in memory.
                entry.touched = Some(touched.len() as u32);
                touched.push(index);
            }
            self.view.apply(&mut entry.state, value, diff);
        }
        while self.wakes.first().is_some_and(|(wake, _)| *wake == time) {
            let Some((_, key)) = self.wakes.pop_first() else {
                break;
            };
            let found = self
                .entries
                .find_bucket_index(hasher.hash_one(&key), |entry| entry.key == key);
            if let Some(index) = found
                && let Some(entry) = self.entries.get_bucket_mut(index)
                && entry.touched.is_none()
            {
                entry.touched = Some(touched.len() as u32);
                touched.push(index);
            }
        }
        let mut after = Vec::new();
        for index in touched.drain(..) {
            let Some(entry) = self.entries.get_bucket_mut(index) else {
                continue;
            };
            entry.touched = None;
            self.view.rows(
                &entry.key,
                &mut entry.state,
                time,
                &entry.emitted,
                &mut after,
            );
            after.sort();
            push_differences(&mut entry.emitted, &after, time, changes);
            entry.emitted.extend(after.drain(..));
            if self.view.retire(&entry.key, &mut entry.state, time) {
                if let Ok(retired) = self.entries.get_bucket_entry(index) {
                    retired.remove();
                }
                continue;
            }
            if let Some(next) =
                self.view
                    .next_change(&entry.key, &entry.state, time, &entry.emitted)
            {
                let already_scheduled = entry.wake.is_some_and(|wake| wake > time && wake <= next);
                if !already_scheduled {
                    entry.wake = Some(next);
                    self.wakes.insert((next, entry.key.clone()));
                }
            }
        }
        self.touched = touched;
    }
}

/// Appends `after - before` as updates at `time` and empties `before`; both are sorted.
/// Retractions move the rows of `before`, insertions copy those of `after`.
fn push_differences<R: Ord + Clone>(
    before: &mut SmallVec<[R; 1]>,
    after: &[R],
    time: Time,
    changes: &mut Vec<(R, Time, isize)>,
) {
    let mut old = before.drain(..).peekable();
    let mut new = after.iter().peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => break,
        };
        match order {
            Ordering::Equal => {
                old.next();
                new.next();
            }
            Ordering::Less => changes.extend(old.next().map(|row| (row, time, -1))),
            Ordering::Greater => changes.extend(new.next().map(|row| (row.clone(), time, 1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Each key's count, shown while it is not zero; a key at zero is retired.
    struct Counts;

    impl KeyedView for Counts {
        type Key = u64;
        type Value = ();
        type State = isize;
        type Row = (u64, isize);

        fn apply(&self, count: &mut isize, _value: (), diff: isize) {
            *count += diff;
        }

        fn rows(
            &self,
            key: &u64,
            count: &mut isize,
            _: Time,
            _: &[(u64, isize)],
            rows: &mut Vec<(u64, isize)>,
        ) {
            if *count != 0 {
                rows.push((*key, *count));
            }
        }

        fn retire(&self, _key: &u64, count: &mut isize, _time: Time) -> bool {
            *count == 0
        }

        fn next_change(&self, _: &u64, _: &isize, _: Time, _: &[(u64, isize)]) -> Option<Time> {
            None
        }
    }

    /// Times of updates: a key and whether it is inserted (else retracted).
    fn times() -> impl Strategy<Value = Vec<Vec<(u64, bool)>>> {
        let update = (0..400_u64, prop::bool::ANY);
        prop::collection::vec(prop::collection::vec(update, 0..300), 1..8)
    }

    proptest! {
        /// Times that bring many new keys make the table grow (or drop removed entries'
        /// places) while the keys touched before are waiting for their rows.
        #[test]
        fn rows_follow_the_updates_while_the_table_grows_and_shrinks(
            times in times(),
        ) {
            let mut operator = KeyedOperator::new(Counts);
            let mut expected: BTreeMap<u64, isize> = BTreeMap::new();
            let mut shown: BTreeMap<(u64, isize), isize> = BTreeMap::new();
            for (time, updates) in times.into_iter().enumerate() {
                let time = time as Time;
                for (key, insert) in updates {
                    let diff = if insert { 1 } else { -1 };
                    *expected.entry(key).or_default() += diff;
                    operator.updates.push(&mut vec![((key, ()), time, diff)]);
                }
                let mut changes = Vec::new();
                if operator.next_time() == Some(time) {
                    operator.process(time, &mut changes);
                }
                for (row, _, diff) in changes {
                    *shown.entry(row).or_default() += diff;
                }
                shown.retain(|_, count| *count != 0);
                expected.retain(|_, count| *count != 0);
                let rows: Vec<(u64, isize)> = shown.keys().copied().collect();
                let reference: Vec<(u64, isize)> = expected.clone().into_iter().collect();
                prop_assert_eq!(rows, reference);
                prop_assert!(shown.values().all(|count| *count == 1));
                prop_assert_eq!(operator.entries.len(), expected.len());
            }
        }
    }
}
