//! Multisets as the views keep them: counts in a hash map or a sorted map, or a sorted
//! vector.

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
    let position = values.partition_point(|v| v < &value);
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
