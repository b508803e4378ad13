//! What a batch of updates changed, key by key: the rows that changed (for upsert
//! outputs) and the alert transitions (an alert fired or cleared), shared by the output
//! topics and the alert subscriptions.

use differential_dataflow::consolidation::consolidate;

use crate::rows::AlertRow;
use crate::views::Time;

/// Whether an alert started or stopped holding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// The condition holds now.
    Fired,
    /// The condition no longer holds (its rule was deleted, say); not an alert whose
    /// window left retention.
    Cleared,
}

/// An alert that fired or cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertTransition {
    /// The alert, with its value when it fired (or the last value, when it cleared).
    pub row: AlertRow,
    /// Fired or cleared.
    pub state: AlertState,
    /// The logical time of the transition.
    pub time: Time,
}

/// The last row each key held in `updates`, for every key whose row changed, in key
/// order. A key that lost its row (a window that left retention) is listed with the row
/// it held last, unless that is the row it held before the updates: a window that
/// changed and expired within `updates` still has its final value written, and one that
/// only expired writes nothing.
pub fn changed_rows<R: Clone + Ord, K: Ord>(
    updates: &[(R, Time, isize)],
    key: impl Fn(&R) -> K,
) -> Vec<R> {
    changes_by_key(updates, key)
        .into_iter()
        .filter_map(|(_, changes)| {
            let held_before = changes.first()?.deleted;
            let last = changes.last()?;
            let held_last = last.inserted.or(last.deleted);
            (held_last != held_before).then(|| held_last.cloned())?
        })
        .collect()
}

/// The alert transitions in `updates`, in time order (key order within a time): a key
/// that gains a row at a time fired, a key that loses its row at a time before its
/// window's retention ends cleared. A standing alert whose value changes is no
/// transition, and neither is an alert whose window expired; an alert that fires and
/// clears (or expires) within `updates` is still listed.
pub fn alert_transitions(
    updates: &[(AlertRow, Time, isize)],
    retention_ms: u64,
) -> Vec<AlertTransition> {
    let mut transitions: Vec<AlertTransition> = changes_by_key(updates, |row| {
        (row.rule.clone(), row.page.clone(), row.window_start)
    })
    .into_iter()
    .flat_map(|(_, changes)| changes)
    .filter_map(|change| match (change.inserted, change.deleted) {
        (Some(row), None) => Some(AlertTransition {
            row: row.clone(),
            state: AlertState::Fired,
            time: change.time,
        }),
        (None, Some(row)) if row.window_end.saturating_add(retention_ms) > change.time => {
            Some(AlertTransition {
                row: row.clone(),
                state: AlertState::Cleared,
                time: change.time,
            })
        }
        _ => None,
    })
    .collect();
    transitions.sort_by_key(|transition| transition.time);
    transitions
}

/// What the updates at one time did to one key: the row it holds afterwards and the row
/// it held before, where they differ.
struct Change<'r, R> {
    time: Time,
    inserted: Option<&'r R>,
    deleted: Option<&'r R>,
}

/// Nets out updates by key and time: each key's changes in time order, keys in key order.
///
/// The updates are consolidated by key, time and row (by reference): a sort of one vector,
/// where ordered maps cost a tree search per update in the output writer's profile.
fn changes_by_key<R: Ord, K: Ord>(
    updates: &[(R, Time, isize)],
    key: impl Fn(&R) -> K,
) -> Vec<(K, Vec<Change<'_, R>>)> {
    let mut netted: Vec<((K, Time, &R), isize)> = updates
        .iter()
        .map(|(row, time, diff)| ((key(row), *time, row), *diff))
        .collect();
    consolidate(&mut netted);
    let mut changes: Vec<(K, Vec<Change<'_, R>>)> = Vec::new();
    for ((key, time, row), diff) in netted {
        if changes.last().is_none_or(|(last, _)| *last != key) {
            changes.push((key, Vec::new()));
        }
        let key_changes = &mut changes.last_mut().expect("pushed above").1;
        if key_changes.last().is_none_or(|change| change.time != time) {
            key_changes.push(Change {
                time,
                inserted: None,
                deleted: None,
            });
        }
        let change = key_changes.last_mut().expect("pushed above");
        if diff > 0 {
            change.inserted = Some(row);
        } else {
            change.deleted = Some(row);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Each key's value at each time (`None`: the key holds no row then).
    type Histories = Vec<Vec<Option<u64>>>;

    fn histories() -> impl Strategy<Value = Histories> {
        prop::collection::vec(prop::collection::vec(prop::option::of(0u64..3), 12), 1..5)
    }

    /// The updates that move every key through its history at the times in `from..to`,
    /// in an order that depends on `shuffle` (netting must not depend on it). Each change
    /// comes with a row the key never holds (value 3), inserted and retracted at the same
    /// time, which must net out.
    fn updates<R>(
        histories: &Histories,
        from: usize,
        to: usize,
        shuffle: usize,
        row: impl Fn(usize, u64) -> R,
    ) -> Vec<(R, Time, isize)> {
        let mut updates = Vec::new();
        for (key, history) in histories.iter().enumerate() {
            for time in from..to {
                let before = time.checked_sub(1).and_then(|earlier| history[earlier]);
                if before == history[time] {
                    continue;
                }
                updates.extend(before.map(|value| (row(key, value), time as Time, -1)));
                updates.extend(history[time].map(|value| (row(key, value), time as Time, 1)));
                updates.push((row(key, 3), time as Time, 1));
                updates.push((row(key, 3), time as Time, -1));
            }
        }
        if !updates.is_empty() {
            let pivot = shuffle % updates.len();
            updates.rotate_left(pivot);
        }
        if shuffle % 2 == 1 {
            updates.reverse();
        }
        updates
    }

    fn alert(key: usize, value: u64) -> AlertRow {
        AlertRow {
            rule: "rule".into(),
            page: format!("/{key}").into(),
            window_start: key as u64,
            window_end: 2 * key as u64,
            value,
            threshold: 0,
        }
    }

    proptest! {
        /// Upserting each transaction's changed rows leaves every key with the last value
        /// it held, as upserting every time's new value would, whatever removed it after.
        #[test]
        fn upserts_leave_each_key_with_the_last_row_it_held(
            histories in histories(),
            cut in 0usize..=12,
            shuffle in 0usize..100,
        ) {
            let mut topic = BTreeMap::new();
            for (from, to) in [(0, cut), (cut, 12)] {
                let updates = updates(&histories, from, to, shuffle, |key, value| (key, value));
                for (key, value) in changed_rows(&updates, |row| row.0) {
                    topic.insert(key, value);
                }
            }
            let expected: BTreeMap<usize, u64> = histories
                .iter()
                .enumerate()
                .filter_map(|(key, history)| Some((key, history.iter().rev().find_map(|v| *v)?)))
                .collect();
            prop_assert_eq!(topic, expected);
        }

        /// Every time a key gains a row it fired, and every time it loses one before its
        /// window's retention ends it cleared, in time order, however the updates net out.
        #[test]
        fn alert_transitions_are_every_appearance_and_every_removal_but_expiry(
            histories in histories(),
            shuffle in 0usize..100,
        ) {
            const RETENTION: u64 = 3;
            let updates = updates(&histories, 0, 12, shuffle, alert);
            let found: Vec<(Time, AlertRow, AlertState)> = alert_transitions(&updates, RETENTION)
                .into_iter()
                .map(|transition| (transition.time, transition.row, transition.state))
                .collect();
            let mut expected = Vec::new();
            for time in 0..12_usize {
                for (key, history) in histories.iter().enumerate() {
                    let before = time.checked_sub(1).and_then(|earlier| history[earlier]);
                    let at = time as Time;
                    match (before, history[time]) {
                        (None, Some(value)) => expected.push((at, alert(key, value), AlertState::Fired)),
                        (Some(value), None) if at < alert(key, value).window_end + RETENTION => {
                            expected.push((at, alert(key, value), AlertState::Cleared));
                        }
                        _ => {}
                    }
                }
            }
            prop_assert_eq!(found, expected);
        }
    }
}
