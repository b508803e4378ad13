//! What a batch of updates changed, key by key: the rows that changed (for upsert
//! outputs) and the alert transitions (an alert fired or cleared), shared by the output
//! topics and the alert subscriptions.

use std::collections::BTreeMap;

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

/// The rows whose value changed in `updates`, one per key (the new value), in key order.
/// Keys that only lost their row (a window that left retention) are not listed.
pub fn changed_rows<R: Clone + Ord, K: Ord>(
    updates: &[(R, Time, isize)],
    key: impl Fn(&R) -> K,
) -> Vec<R> {
    net_changes(updates, key)
        .into_values()
        .filter_map(|change| change.inserted)
        .collect()
}

/// The alert transitions in `updates`, in key order: a key that gains a row fired, a key
/// that loses its row before its window's retention ends cleared. A standing alert whose
/// value changes is no transition, and neither is an alert whose window expired.
pub fn alert_transitions(
    updates: &[(AlertRow, Time, isize)],
    retention_ms: u64,
) -> Vec<AlertTransition> {
    net_changes(updates, |row| {
        (row.rule.clone(), row.page.clone(), row.window_start)
    })
    .into_values()
    .filter_map(|change| match (change.inserted, change.deleted) {
        (Some(row), None) => Some(AlertTransition {
            row,
            state: AlertState::Fired,
            time: change.last_time,
        }),
        (None, Some(row)) if row.window_end.saturating_add(retention_ms) > change.last_time => {
            Some(AlertTransition {
                row,
                state: AlertState::Cleared,
                time: change.last_time,
            })
        }
        _ => None,
    })
    .collect()
}

/// What the updates did to one key: the row it holds afterwards and the row it held before,
/// if they differ.
struct NetChange<R> {
    inserted: Option<R>,
    deleted: Option<R>,
    last_time: Time,
}

/// Nets out updates by key, in key order.
fn net_changes<R: Clone + Ord, K: Ord>(
    updates: &[(R, Time, isize)],
    key: impl Fn(&R) -> K,
) -> BTreeMap<K, NetChange<R>> {
    let mut by_row: BTreeMap<&R, (isize, Time)> = BTreeMap::new();
    for (row, time, diff) in updates {
        let entry = by_row.entry(row).or_insert((0, *time));
        entry.0 += diff;
        entry.1 = entry.1.max(*time);
    }
    let mut changes = BTreeMap::new();
    for (row, (diff, time)) in by_row {
        let change = changes.entry(key(row)).or_insert(NetChange {
            inserted: None,
            deleted: None,
            last_time: time,
        });
        change.last_time = change.last_time.max(time);
        match diff.signum() {
            1 => change.inserted = Some(row.clone()),
            -1 => change.deleted = Some(row.clone()),
            _ => {}
        }
    }
    changes
}
