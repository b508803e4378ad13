//! `page_views_per_minute`: views and exact distinct users per page per tumbling window.
//!
//! Keyed by `(page, window_start)`; the state is the window's view count and a multiset of
//! its users. A window `[start, end)` shows a row while `end + retention` is after the
//! watermark, and is dropped at that watermark: no admissible event can reach it then.

use foldhash::HashMap;

use compact_str::CompactString;
use differential_dataflow::VecCollection;

use crate::config::window_start;
use crate::keyed::{KeyedView, maintain};
use crate::multiset::add_to_counts;
use crate::rows::PageViewRow;
use crate::views::{ArrivedEvent, Time};

/// Maintains `page_views_per_minute` over `events`.
pub(crate) fn page_views_per_minute<'s>(
    events: VecCollection<'s, Time, ArrivedEvent>,
    window_ms: u64,
    retention_ms: u64,
) -> VecCollection<'s, Time, PageViewRow> {
    let keyed = events.map(move |arrived| {
        let event = arrived.event;
        (
            (event.page, window_start(event.time, window_ms)),
            event.user_id,
        )
    });
    maintain(
        keyed,
        "PageViewsPerMinute",
        PageWindows {
            window_ms,
            retention_ms,
        },
    )
}

struct PageWindows {
    window_ms: u64,
    retention_ms: u64,
}

#[derive(Default)]
struct WindowState {
    views: isize,
    users: HashMap<CompactString, isize>,
}

impl PageWindows {
    fn expiry(&self, window_start: u64) -> Time {
        (window_start + self.window_ms).saturating_add(self.retention_ms)
    }
}

impl KeyedView for PageWindows {
    type Key = (CompactString, u64);
    type Value = CompactString;
    type State = WindowState;
    type Row = PageViewRow;

    fn apply(&self, state: &mut WindowState, user: CompactString, diff: isize) {
        state.views += diff;
        add_to_counts(&mut state.users, user, diff);
    }

    fn rows(
        &self,
        (page, start): &Self::Key,
        state: &WindowState,
        time: Time,
        rows: &mut Vec<PageViewRow>,
    ) {
        if state.views > 0 && time < self.expiry(*start) {
            rows.push(PageViewRow {
                page: page.clone(),
                window_start: *start,
                window_end: start + self.window_ms,
                view_count: state.views.unsigned_abs() as u64,
                unique_users: state.users.len() as u64,
            });
        }
    }

    fn retire(&self, (_, start): &Self::Key, state: &mut WindowState, time: Time) -> bool {
        time >= self.expiry(*start) || (state.views == 0 && state.users.is_empty())
    }

    fn next_change(
        &self,
        (_, start): &Self::Key,
        _state: &WindowState,
        time: Time,
    ) -> Option<Time> {
        let expiry = self.expiry(*start);
        (time < expiry).then_some(expiry)
    }
}
