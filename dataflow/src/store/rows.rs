//! One copy of every view's rows at one `as_of`, kept the way the store reads them: page
//! views by page (pages in order) and by window, sessions by user, funnel and alert rows
//! sorted. Rows carry multiplicities: while a batch is applied, a key can briefly hold an
//! old row and its replacement, or a retraction ahead of its insertion.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::ops::{Bound, RangeBounds};

use compact_str::CompactString;
use foldhash::HashMap;
use smallvec::SmallVec;

use crate::multiset::{add_to_sorted_counts, partition_point_from_end};
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

/// How an update's row gets into the rows when it is inserted.
#[derive(Clone, Copy)]
pub(super) enum Take {
    /// Copied: the updates are applied again, to the other copy.
    Copy,
    /// Moved out, leaving an empty row in its place: the updates' last application.
    Move,
}

impl Take {
    fn row<R: Clone + Default>(self, row: &mut R) -> R {
        match self {
            Take::Copy => row.clone(),
            Take::Move => std::mem::take(row),
        }
    }
}

/// A key's rows with their multiplicities, sorted. A key nearly always shows one row,
/// kept inline: reading it costs no cache miss beyond the key's own entry. A retraction
/// that comes before its replacement (as the views emit them when the row grows) keeps it
/// inline.
pub(super) type KeyRows<R> = SmallVec<[(R, isize); 1]>;

/// One copy of every view's rows.
pub(super) struct Rows {
    /// See [`super::ViewSnapshot::as_of`].
    pub(super) as_of: Option<Time>,
    pub(super) page_views: PageViews,
    /// Each user's session rows, sorted.
    pub(super) sessions: HashMap<CompactString, KeyRows<SessionRow>>,
    pub(super) funnel: BTreeMap<FunnelRow, isize>,
    pub(super) alerts: BTreeMap<AlertRow, isize>,
}

/// The page-view rows, by page and by window.
#[derive(Default)]
pub(super) struct PageViews {
    /// Every page with rows, in order.
    pages: BTreeSet<CompactString>,
    /// Each page's rows by window: windows in order (sought from the latest, where
    /// nearly every update lands), rows sorted within a window.
    by_page: HashMap<CompactString, Vec<(u64, KeyRows<PageViewRow>)>>,
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

    /// Applies `updates`, taking in only the rows that are inserted (as `take` says). Any
    /// order gives the same rows; a key's neighbouring updates (as the sinks stash them)
    /// are applied together: the key is looked up once, and a key whose row is replaced
    /// keeps its entry instead of losing and regaining it.
    pub(super) fn apply(&mut self, updates: &mut Updates, take: Take) {
        for window_updates in updates
            .page_views
            .chunk_by_mut(|(a, _), (b, _)| (&a.page, a.window_start) == (&b.page, b.window_start))
        {
            self.page_views.add_to_window(window_updates, take);
        }
        for user_updates in updates
            .sessions
            .chunk_by_mut(|(a, _), (b, _)| a.user_id == b.user_id)
        {
            self.add_user_sessions(user_updates, take);
        }
        for (row, diff) in &mut updates.funnel {
            add_to_sorted_counts(&mut self.funnel, take.row(row), *diff);
        }
        for (row, diff) in &mut updates.alerts {
            add_to_sorted_counts(&mut self.alerts, take.row(row), *diff);
        }
    }

    /// Applies updates of one user's session rows.
    fn add_user_sessions(&mut self, updates: &mut [(SessionRow, isize)], take: Take) {
        let Some((first, _)) = updates.first() else {
            return;
        };
        // The entry is kept, not the key: a moved row leaves no user id behind to remove by.
        let mut sessions = match self.sessions.entry(first.user_id.clone()) {
            Entry::Occupied(entry) => entry,
            Entry::Vacant(entry) => entry.insert_entry(KeyRows::new()),
        };
        for (row, diff) in updates {
            add_to_key_rows(sessions.get_mut(), row, *diff, take);
        }
        if sessions.get().is_empty() {
            sessions.remove();
        }
    }
}

impl PageViews {
    /// Applies updates of one page's rows in one window.
    fn add_to_window(&mut self, updates: &mut [(PageViewRow, isize)], take: Take) {
        let Some((first, _)) = updates.first() else {
            return;
        };
        let (page, window_start) = (first.page.clone(), first.window_start);
        let windows_of_page = match self.by_page.entry(page.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                self.pages.insert(page.clone());
                entry.insert(Vec::new())
            }
        };
        let at = partition_point_from_end(windows_of_page, |(start, _)| *start < window_start);
        if windows_of_page
            .get(at)
            .is_none_or(|(start, _)| *start != window_start)
        {
            windows_of_page.insert(at, (window_start, KeyRows::new()));
        }
        let at_window = &mut windows_of_page[at].1;
        for (row, diff) in updates {
            add_to_key_rows(at_window, row, *diff, take);
        }
        // While a batch is applied a window can briefly hold no row or two for a page, in
        // any order; the row that remains after the page's updates is indexed.
        let positive = at_window
            .iter()
            .find(|(_, count)| *count > 0)
            .map(|(row, _)| row.clone());
        if at_window.is_empty() {
            windows_of_page.remove(at);
            if windows_of_page.is_empty() {
                self.by_page.remove(&page);
                self.pages.remove(&page);
            }
        }
        self.index(&page, window_start, positive);
    }

    /// Makes `row` the page's row in its window's index, or takes the page out of it.
    fn index(&mut self, page: &CompactString, window_start: u64, row: Option<PageViewRow>) {
        match row {
            Some(row) => {
                let window = self.windows.entry(window_start).or_default();
                window.insert(page.clone(), row);
            }
            None => {
                if let btree_map::Entry::Occupied(mut window) = self.windows.entry(window_start) {
                    window.get_mut().remove(page);
                    if window.get().is_empty() {
                        window.remove();
                    }
                }
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
            .flat_map(|windows| windows.iter().flat_map(|(_, rows)| rows))
            .map(|(row, count)| (row, count))
            .filter(move |(row, _)| bounds.contains(*row))
    }
}

/// Adds `diff` to `row`'s multiplicity among a key's rows, removing it at zero.
fn add_to_key_rows<R: Ord + Clone + Default>(
    rows: &mut KeyRows<R>,
    row: &mut R,
    diff: isize,
    take: Take,
) {
    match rows.binary_search_by(|(kept, _)| kept.cmp(row)) {
        Ok(index) => {
            rows[index].1 += diff;
            if rows[index].1 == 0 {
                rows.remove(index);
            }
        }
        Err(index) => rows.insert(index, (take.row(row), diff)),
    }
}
