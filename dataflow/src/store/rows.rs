//! One copy of every view's rows at one `as_of`, kept the way the store reads them: page
//! views by page (pages in order) and by window, sessions by user, funnel and alert rows
//! sorted. Rows carry multiplicities: while a batch is applied, a key can briefly hold an
//! old row and its replacement, or a retraction ahead of its insertion.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, RangeBounds};

use compact_str::CompactString;
use foldhash::HashMap;

use crate::multiset::add_to_sorted_counts;
use crate::rows::{AlertRow, FunnelRow, PageViewRow, SessionRow};
use crate::views::Time;

/// Every view's updates, in no particular order.
#[derive(Clone, Default)]
pub(super) struct Updates {
    pub(super) page_views: Vec<(PageViewRow, isize)>,
    pub(super) sessions: Vec<(SessionRow, isize)>,
    pub(super) funnel: Vec<(FunnelRow, isize)>,
    pub(super) alerts: Vec<(AlertRow, isize)>,
}

/// One copy of every view's rows.
pub(super) struct Rows {
    /// See [`super::ViewSnapshot::as_of`].
    pub(super) as_of: Option<Time>,
    pub(super) page_views: PageViews,
    /// Each user's session rows, sorted.
    pub(super) sessions: HashMap<CompactString, Vec<(SessionRow, isize)>>,
    pub(super) funnel: BTreeMap<FunnelRow, isize>,
    pub(super) alerts: BTreeMap<AlertRow, isize>,
}

/// The page-view rows, by page and by window.
#[derive(Default)]
pub(super) struct PageViews {
    /// Every page with rows, in order.
    pages: BTreeSet<CompactString>,
    /// Each page's rows by window, sorted within a window.
    by_page: HashMap<CompactString, BTreeMap<u64, Vec<(PageViewRow, isize)>>>,
    /// The rows of each window by page (rows with a positive multiplicity only).
    pub(super) windows: BTreeMap<u64, HashMap<CompactString, PageViewRow>>,
}

impl Rows {
    pub(super) fn empty() -> Self {
        Self {
            as_of: Some(0),
            page_views: PageViews::default(),
            sessions: HashMap::default(),
            funnel: BTreeMap::new(),
            alerts: BTreeMap::new(),
        }
    }

    pub(super) fn apply(&mut self, updates: Updates) {
        for (row, diff) in updates.page_views {
            self.page_views.add(row, diff);
        }
        for (row, diff) in updates.sessions {
            self.add_session(row, diff);
        }
        for (row, diff) in updates.funnel {
            add_to_sorted_counts(&mut self.funnel, row, diff);
        }
        for (row, diff) in updates.alerts {
            add_to_sorted_counts(&mut self.alerts, row, diff);
        }
    }

    fn add_session(&mut self, row: SessionRow, diff: isize) {
        let Some(sessions) = self.sessions.get_mut(&row.user_id) else {
            self.sessions.insert(row.user_id.clone(), vec![(row, diff)]);
            return;
        };
        if add_to_sorted_vec(sessions, &row, diff).is_none() && sessions.is_empty() {
            self.sessions.remove(&row.user_id);
        }
    }
}

impl PageViews {
    fn add(&mut self, row: PageViewRow, diff: isize) {
        let windows_of_page = match self.by_page.entry(row.page.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                self.pages.insert(row.page.clone());
                entry.insert(BTreeMap::new())
            }
        };
        let at_window = windows_of_page.entry(row.window_start).or_default();
        let after = add_to_sorted_vec(at_window, &row, diff).unwrap_or(0);
        let before = after - diff;
        if at_window.is_empty() {
            windows_of_page.remove(&row.window_start);
            if windows_of_page.is_empty() {
                self.by_page.remove(&row.page);
                self.pages.remove(&row.page);
            }
        }
        match (before > 0, after > 0) {
            (false, true) => {
                let window = self.windows.entry(row.window_start).or_default();
                window.insert(row.page.clone(), row);
            }
            (true, false) => self.unindex(&row),
            _ => {}
        }
    }

    /// Removes a row from its window's index, unless its replacement (a newer row of its
    /// page and window) has taken its place there already.
    fn unindex(&mut self, row: &PageViewRow) {
        if let Some(window) = self.windows.get_mut(&row.window_start) {
            if window.get(&row.page) == Some(row) {
                window.remove(&row.page);
            }
            if window.is_empty() {
                self.windows.remove(&row.window_start);
            }
        }
    }

    /// The rows from `from` on, in key order, with their multiplicities.
    pub(super) fn from<'a>(
        &'a self,
        from: Bound<&'a PageViewRow>,
    ) -> impl Iterator<Item = (&'a PageViewRow, &'a isize)> + 'a {
        let first_page = match from {
            Bound::Included(row) | Bound::Excluded(row) => Bound::Included(&row.page),
            Bound::Unbounded => Bound::Unbounded,
        };
        let bounds = (from, Bound::Unbounded);
        self.pages
            .range::<CompactString, _>((first_page, Bound::Unbounded))
            .filter_map(|page| self.by_page.get(page))
            .flat_map(|windows| windows.values().flatten())
            .map(|(row, count)| (row, count))
            .filter(move |(row, _)| bounds.contains(*row))
    }
}

/// Adds `diff` to `row`'s multiplicity in a sorted vector, removing it at zero; returns the
/// new multiplicity, `None` when it is zero.
fn add_to_sorted_vec<R: Ord + Clone>(
    rows: &mut Vec<(R, isize)>,
    row: &R,
    diff: isize,
) -> Option<isize> {
    match rows.binary_search_by(|(kept, _)| kept.cmp(row)) {
        Ok(index) => {
            rows[index].1 += diff;
            let count = rows[index].1;
            if count == 0 {
                rows.remove(index);
                return None;
            }
            Some(count)
        }
        Err(index) => {
            rows.insert(index, (row.clone(), diff));
            Some(diff)
        }
    }
}
