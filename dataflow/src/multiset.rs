//! Multisets as the views keep them: counts in a hash map or a sorted map, or a sorted
//! vector, and a search of a sorted vector from its end.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, btree_map};
use std::hash::{BuildHasher, Hash};

/// Adds `diff` to the count of `key`, removing the key when its count reaches zero.
pub(crate) fn add_to_counts<K: Hash + Eq, S: BuildHasher>(
    counts: &mut HashMap<K, isize, S>,
    key: K,
    diff: isize,
) {
    match counts.entry(key) {
        Entry::Occupied(mut count) => {
            *count.get_mut() += diff;
            if *count.get() == 0 {
                count.remove();
            }
        }
        Entry::Vacant(slot) => {
            slot.insert(diff);
        }
    }
}

/// Adds `diff` to the count of `key` in a sorted map, removing the key at zero.
pub(crate) fn add_to_sorted_counts<K: Ord>(counts: &mut BTreeMap<K, isize>, key: K, diff: isize) {
    match counts.entry(key) {
        btree_map::Entry::Occupied(mut count) => {
            *count.get_mut() += diff;
            if *count.get() == 0 {
                count.remove();
            }
        }
        btree_map::Entry::Vacant(slot) => {
            slot.insert(diff);
        }
    }
}

/// Applies `diff` copies of `value` to a sorted multiset held as a vector.
pub(crate) fn apply_to_sorted<T: Ord + Clone>(values: &mut Vec<T>, value: T, diff: isize) {
    // Values mostly come in order: one past the last is pushed without a search.
    if diff > 0 && values.last().is_none_or(|last| *last < value) {
        values.extend(std::iter::repeat_n(value, diff.unsigned_abs()));
        return;
    }
    let position = partition_point_from_end(values, |v| v < &value);
    if diff > 0 {
        values.splice(
            position..position,
            std::iter::repeat_n(value, diff.unsigned_abs()),
        );
    } else {
        let equal = values[position..]
            .iter()
            .take_while(|v| **v == value)
            .count();
        values.drain(position..position + equal.min(diff.unsigned_abs()));
    }
}

/// `items.partition_point(pred)`, searched for from the end: it reads about `2 log2(d)`
/// items, `d` being the point's distance from the end, so that a point near the end (a
/// user's latest events) costs a few reads of the items there, not a search of them all.
pub(crate) fn partition_point_from_end<T>(items: &[T], pred: impl Fn(&T) -> bool) -> usize {
    // `pred` is false for every item from `end` on; the probes go back 1, 2, 4, ... items.
    let mut end = items.len();
    let mut step = 1;
    while end > 0 {
        let probe = end.saturating_sub(step);
        if pred(&items[probe]) {
            return probe + 1 + items[probe + 1..end].partition_point(&pred);
        }
        end = probe;
        step *= 2;
    }
    0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn the_search_from_the_end_finds_the_partition_point(
            mut items in prop::collection::vec(0..50_u32, 0..200),
            bound in 0..55_u32,
        ) {
            items.sort_unstable();
            prop_assert_eq!(
                partition_point_from_end(&items, |item| *item < bound),
                items.partition_point(|item| *item < bound)
            );
        }
    }
}
