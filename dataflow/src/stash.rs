//! Updates waiting for the frontier to pass their time, kept by time in the containers
//! they arrived in.
//!
//! A container whose updates share one time (nearly all of them: a source gives each
//! batch one time, and an operator emits each time's changes together) is kept whole, not
//! copied update by update into a vector that grows as it goes; taking a time's updates
//! then moves them out of their containers once. The operators that stash hold one
//! capability, at the earliest time with work waiting ([`hold`]), and do the work of each
//! time the frontier has passed in order ([`release`]).

use std::collections::BTreeMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::{Capability, InputCapability};

use crate::views::Time;

/// Makes `held` cover the time of a message that arrived under `capability`, and returns
/// that time. A message with no time makes no progress claim and cannot be given a time to
/// emit at: timely says to drop it, and this returns `None` (no upstream sends one).
pub(crate) fn hold(
    held: &mut Option<Capability<Time>>,
    capability: &InputCapability<Time>,
) -> Option<Time> {
    let time = *capability.least()?;
    if held.as_ref().is_none_or(|cap| *cap.time() > time) {
        *held = Some(capability.delayed(&time, 0));
    }
    Some(time)
}

/// An operator's work waiting for the frontier, by time.
pub(crate) trait Waiting {
    /// What the changes it emits are about.
    type Row: Clone + 'static;
    /// The earliest time with work waiting.
    fn next_time(&self) -> Option<Time>;
    /// Does the work at `time`, appending the changes it makes to `changes`.
    fn process(&mut self, time: Time, changes: &mut Vec<(Self::Row, Time, isize)>);
}

/// A stream of `(row, time, diff)` updates leaving an operator.
type UpdatesOut<'a, R> =
    OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<(R, Time, isize)>>>;

/// Does `work` at each waiting time that the frontier has `passed`, earliest first,
/// emitting each time's changes at that time (through `changes`, a buffer kept between
/// calls), and then moves `held` to the earliest time still waiting, or drops it.
pub(crate) fn release<W: Waiting>(
    work: &mut W,
    held: &mut Option<Capability<Time>>,
    passed: impl Fn(&Time) -> bool,
    changes: &mut Vec<(W::Row, Time, isize)>,
    output: &mut UpdatesOut<'_, W::Row>,
) {
    while let Some(time) = work.next_time() {
        let Some(cap) = held.as_mut() else { break };
        if !passed(&time) {
            break;
        }
        work.process(time, changes);
        if !changes.is_empty() {
            output
                .session(&cap.delayed(&time))
                .give_iterator(changes.drain(..));
        }
    }
    match (work.next_time(), held.as_mut()) {
        (Some(time), Some(cap)) => cap.downgrade(&time),
        _ => *held = None,
    }
}

/// Updates as they arrive: `(data, time, diff)`.
type Container<D> = Vec<(D, Time, isize)>;

/// Updates `(data, time, diff)` by time.
pub(crate) struct TimeStash<D> {
    by_time: BTreeMap<Time, Vec<Container<D>>>,
}

impl<D> Default for TimeStash<D> {
    fn default() -> Self {
        Self {
            by_time: BTreeMap::new(),
        }
    }
}

impl<D> TimeStash<D> {
    /// Takes in the updates of `container`, leaving it empty.
    pub(crate) fn push(&mut self, container: &mut Container<D>) {
        let Some(&(_, first, _)) = container.first() else {
            return;
        };
        if container.iter().all(|(_, time, _)| *time == first) {
            let mut whole = std::mem::take(container);
            // A few updates in a large buffer do not keep the buffer while they wait.
            if whole.len() < whole.capacity() / 4 {
                whole.shrink_to_fit();
            }
            self.by_time.entry(first).or_default().push(whole);
            return;
        }
        // Updates at several times: split by time, each time's in their order.
        container.sort_by_key(|(_, time, _)| *time);
        let mut updates = container.drain(..).peekable();
        while let Some(update) = updates.next() {
            let time = update.1;
            let mut run = vec![update];
            run.extend(std::iter::from_fn(|| {
                updates.next_if(|(_, next, _)| *next == time)
            }));
            self.by_time.entry(time).or_default().push(run);
        }
    }

    /// The earliest time with updates.
    pub(crate) fn first_time(&self) -> Option<Time> {
        self.by_time.first_key_value().map(|(time, _)| *time)
    }

    /// Removes the updates at `time`, in the order they arrived.
    pub(crate) fn take(&mut self, time: Time) -> impl Iterator<Item = (D, isize)> + use<D> {
        let containers = self.by_time.remove(&time).unwrap_or_default();
        containers
            .into_iter()
            .flatten()
            .map(|(data, _, diff)| (data, diff))
    }

    /// Removes the updates at times before `to` (all of them when `to` is `None`), ordered
    /// by time.
    pub(crate) fn take_before(&mut self, to: Option<Time>) -> Container<D> {
        let later = match to {
            Some(to) => self.by_time.split_off(&to),
            None => BTreeMap::new(),
        };
        let earlier = std::mem::replace(&mut self.by_time, later);
        let total = earlier.values().flatten().map(Vec::len).sum();
        let mut updates = Vec::with_capacity(total);
        for container in earlier.into_values().flatten() {
            updates.extend(container);
        }
        updates
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the containers, each time gives back its updates in arrival order, and
        /// the updates before a bound come out ordered by time.
        #[test]
        fn updates_come_back_by_time_in_arrival_order(
            containers in prop::collection::vec(
                prop::collection::vec((0..1000_u32, 0..4_u64, -2..3_isize), 0..20),
                0..10,
            ),
            bound in prop::option::of(0..5_u64),
        ) {
            let mut stash = TimeStash::default();
            for container in &containers {
                let mut container = container.clone();
                stash.push(&mut container);
                prop_assert!(container.is_empty());
            }
            let all: Vec<_> = containers.into_iter().flatten().collect();
            let mut expected: Vec<_> = all
                .iter()
                .filter(|(_, time, _)| bound.is_none_or(|bound| *time < bound))
                .copied()
                .collect();
            expected.sort_by_key(|(_, time, _)| *time);
            prop_assert_eq!(stash.take_before(bound), expected);
            let left: Vec<_> = all
                .iter()
                .filter(|(_, time, _)| bound.is_some_and(|bound| *time >= bound))
                .collect();
            prop_assert_eq!(stash.first_time(), left.iter().map(|(_, time, _)| *time).min());
            for time in 0..4 {
                let at_time: Vec<_> = left
                    .iter()
                    .filter(|(_, at, _)| *at == time)
                    .map(|(data, _, diff)| (*data, *diff))
                    .collect();
                prop_assert_eq!(stash.take(time).collect::<Vec<_>>(), at_time);
            }
            prop_assert_eq!(stash.first_time(), None);
        }
    }
}
