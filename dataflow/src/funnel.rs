//! `checkout_funnel`: per step and tumbling window, the distinct users who visited the
//! step's page and the distinct users who converted through it.
//!
//! A user converts through step `k` in a window when, inside that window, they have events
//! for steps `1..=k` with non-decreasing event times. Scanning the user's funnel events in
//! (time, step) order and advancing whenever the next needed step appears finds the
//! deepest such `k`: equal times are allowed in either arrival order. Two keyed stages:
//! per `(window, user)` the steps visited and reached, then per `(step, window)` the counts.
//! Stage one retracts a window's marks when it leaves retention, which empties stage two.

use compact_str::CompactString;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use crate::config::{FunnelStep, Windows};
use crate::keyed::{KeyedView, maintain};
use crate::multiset::apply_to_sorted;
use crate::rows::FunnelRow;
use crate::views::{ArrivedEvent, Time};

/// Maintains `checkout_funnel` over `events`.
pub(crate) fn checkout_funnel<'s>(
    events: VecCollection<'s, Time, ArrivedEvent>,
    steps: &[FunnelStep],
    windows: Windows,
) -> VecCollection<'s, Time, FunnelRow> {
    let pages: Vec<CompactString> = steps.iter().map(|step| step.page.clone()).collect();
    let visits = events.flat_map(move |arrived| {
        let event = arrived.event;
        let step = pages.iter().position(|page| *page == event.page)?;
        Some((
            (windows.start(event.time), event.user_id),
            (event.time, step as u8),
        ))
    });
    let marks = maintain(visits, "FunnelProgress", UserProgress { windows });
    let names = steps.iter().map(|step| step.name.clone()).collect();
    maintain(
        marks.map(|(step, start, mark)| ((step, start), mark)),
        "FunnelCounts",
        StepCounts { names, windows },
    )
}

/// What a user contributed to one step of one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Mark {
    Visited,
    Converted,
}

struct UserProgress {
    windows: Windows,
}

impl KeyedView for UserProgress {
    type Key = (u64, CompactString);
    /// A visit: event time and step index.
    type Value = (u64, u8);
    type State = Vec<(u64, u8)>;
    /// (step index, window start, mark).
    type Row = (u8, u64, Mark);

    fn apply(&self, visits: &mut Vec<(u64, u8)>, visit: (u64, u8), diff: isize) {
        apply_to_sorted(visits, visit, diff);
    }

    fn rows(
        &self,
        (start, _): &Self::Key,
        visits: &mut Vec<(u64, u8)>,
        time: Time,
        _previous: &[Self::Row],
        rows: &mut Vec<Self::Row>,
    ) {
        if time >= self.windows.expiry(*start) || visits.is_empty() {
            return;
        }
        let mut visited = Vec::new();
        let mut reached = 0;
        for &(_, step) in visits.iter() {
            if !visited.contains(&step) {
                visited.push(step);
            }
            if step == reached {
                reached += 1;
            }
        }
        rows.extend(
            visited
                .into_iter()
                .map(|step| (step, *start, Mark::Visited)),
        );
        rows.extend((0..reached).map(|step| (step, *start, Mark::Converted)));
    }

    fn retire(&self, (start, _): &Self::Key, visits: &mut Vec<(u64, u8)>, time: Time) -> bool {
        time >= self.windows.expiry(*start) || visits.is_empty()
    }

    fn next_change(
        &self,
        (start, _): &Self::Key,
        _visits: &Vec<(u64, u8)>,
        time: Time,
        _rows: &[Self::Row],
    ) -> Option<Time> {
        self.windows.next_expiry(*start, time)
    }
}

struct StepCounts {
    names: Vec<CompactString>,
    windows: Windows,
}

impl KeyedView for StepCounts {
    type Key = (u8, u64);
    type Value = Mark;
    /// Users who visited, users who converted.
    type State = (isize, isize);
    type Row = FunnelRow;

    fn apply(&self, (visited, converted): &mut (isize, isize), mark: Mark, diff: isize) {
        match mark {
            Mark::Visited => *visited += diff,
            Mark::Converted => *converted += diff,
        }
    }

    fn rows(
        &self,
        &(step, start): &Self::Key,
        &mut (visited, converted): &mut (isize, isize),
        _time: Time,
        _previous: &[FunnelRow],
        rows: &mut Vec<FunnelRow>,
    ) {
        if visited > 0 {
            rows.push(FunnelRow {
                funnel_step: self.names[usize::from(step)].clone(),
                window_start: start,
                window_end: self.windows.end(start),
                unique_users: visited.unsigned_abs() as u64,
                converted_users: converted.max(0).unsigned_abs() as u64,
            });
        }
    }

    fn retire(
        &self,
        _key: &Self::Key,
        &mut (visited, converted): &mut (isize, isize),
        _time: Time,
    ) -> bool {
        visited == 0 && converted == 0
    }

    fn next_change(
        &self,
        _key: &Self::Key,
        _state: &(isize, isize),
        _time: Time,
        _rows: &[FunnelRow],
    ) -> Option<Time> {
        None
    }
}
