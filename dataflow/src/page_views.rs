//! `page_views_per_minute`: views and exact distinct users per page per tumbling window.
//!
//! Keyed by `(page, window_start)`; the state is the window's view count and a multiset of
//! its users. A window `[start, end)` shows a row while `end + retention` is after the
//! watermark, and is dropped at that watermark: no admissible event can reach it then.

use foldhash::HashMap;

use compact_str::CompactString;
use differential_dataflow::VecCollection;

use crate::config::Windows;
use crate::keyed::{KeyedView, maintain};
use crate::multiset::add_to_counts;
use crate::rows::PageViewRow;
use crate::views::{ArrivedEvent, Time};

/// Maintains `page_views_per_minute` over `events`.
pub(crate) fn page_views_per_minute<'s>(
    events: VecCollection<'s, Time, ArrivedEvent>,
    windows: Windows,
) -> VecCollection<'s, Time, PageViewRow> {
    let keyed = events.map(move |arrived| {
        let event = arrived.event;
        ((event.page, windows.start(event.time)), event.user_id)
    });
    maintain(keyed, "PageViewsPerMinute", PageWindows { windows })
}

struct PageWindows {
    windows: Windows,
}

#[derive(Default)]
struct WindowState {
    views: isize,
    users: HashMap<CompactString, isize>,
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
        state: &mut WindowState,
        time: Time,
        _previous: &[PageViewRow],
        rows: &mut Vec<PageViewRow>,
    ) {
        if state.views > 0 && time < self.windows.expiry(*start) {
            rows.push(PageViewRow {
                page: page.clone(),
                window_start: *start,
                window_end: self.windows.end(*start),
                view_count: state.views.unsigned_abs() as u64,
                unique_users: state.users.len() as u64,
            });
        }
    }

    fn retire(&self, (_, start): &Self::Key, state: &mut WindowState, time: Time) -> bool {
        time >= self.windows.expiry(*start) || (state.views == 0 && state.users.is_empty())
    }

    fn next_change(
        &self,
        (_, start): &Self::Key,
        _state: &WindowState,
        time: Time,
        _rows: &[PageViewRow],
    ) -> Option<Time> {
        self.windows.next_expiry(*start, time)
    }
}
