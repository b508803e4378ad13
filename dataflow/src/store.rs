//! Result export: the current rows of every view, kept in process 0 at one shared `as_of`,
//! and (for subscriptions) a changelog of their recent updates.
//!
//! Each view's updates are routed, by a hash of the row, to one of process 0's workers,
//! which keeps that partition of the rows; an update is stashed until it is before the
//! store's `as_of`, the least frontier over all views and partitions. Only then is it
//! applied, so a read shows every view at exactly the same logical time: the views are
//! mutually consistent. Partitioning spreads the upkeep over all of process 0's workers.
//!
//! Rows are kept sorted (row order is key order), so that a read can take a key range, and
//! page-view rows are also indexed by window for top-k reads. When the store keeps a
//! changelog, every applied update is also recorded with its time for a while, so that a
//! subscriber can read what changed after a snapshot or a previous subscription.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use compact_str::CompactString;
use differential_dataflow::{ExchangeData, Hashable, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::multiset::add_to_sorted_counts;
use crate::rows::{AlertRow, FunnelRow, PageViewRow, SessionRow};
use crate::views::{Time, Views};

/// The current state of every view, shared with readers on other threads.
#[derive(Clone)]
pub struct ViewStore {
    partitions: Arc<Vec<Mutex<Partition>>>,
    changelog: Arc<Mutex<Changelog>>,
}

/// Every view's rows at one `as_of`, each sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViewSnapshot {
    /// The rows reflect all updates at times before `as_of`; `None` once input has ended
    /// and everything, including future retention, has been applied.
    pub as_of: Option<Time>,
    /// `page_views_per_minute`.
    pub page_views: Vec<PageViewRow>,
    /// `user_sessions`.
    pub sessions: Vec<SessionRow>,
    /// `checkout_funnel`.
    pub funnel: Vec<FunnelRow>,
    /// `alerts`.
    pub alerts: Vec<AlertRow>,
}

/// A row of any view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AnyRow {
    /// A `page_views_per_minute` row.
    PageView(PageViewRow),
    /// A `user_sessions` row.
    Session(SessionRow),
    /// A `checkout_funnel` row.
    Funnel(FunnelRow),
    /// An `alerts` row.
    Alert(AlertRow),
}

/// Which view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViewKind {
    /// `page_views_per_minute`.
    PageViews = 0,
    /// `user_sessions`.
    Sessions = 1,
    /// `checkout_funnel`.
    Funnel = 2,
    /// `alerts`.
    Alerts = 3,
}

/// What a range read does with a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Returns it.
    Take,
    /// Passes over it.
    Skip,
    /// Ends the read before it.
    Stop,
}

impl ViewKind {
    /// Every view, in index order.
    pub const ALL: [ViewKind; 4] = [Self::PageViews, Self::Sessions, Self::Funnel, Self::Alerts];
}

/// Updates of one view at one time, as recorded in the changelog.
pub type TimedUpdates = (Time, Vec<(AnyRow, isize)>);

/// One worker's share of every view.
#[derive(Default)]
struct Partition {
    page_views: ViewState<PageViewRow>,
    sessions: ViewState<SessionRow>,
    funnel: ViewState<FunnelRow>,
    alerts: ViewState<AlertRow>,
    /// Page-view rows by `(window_start, page)`, for top-k reads.
    page_views_by_window: BTreeMap<(u64, CompactString), PageViewRow>,
}

struct ViewState<R> {
    /// Current rows (row order is key order) and their multiplicities.
    rows: BTreeMap<R, isize>,
    pending: BTreeMap<Time, Vec<(R, isize)>>,
    /// The view's input frontier; `None` when the view is complete.
    frontier: Option<Time>,
}

impl<R> Default for ViewState<R> {
    fn default() -> Self {
        Self {
            rows: BTreeMap::new(),
            pending: BTreeMap::new(),
            frontier: Some(0),
        }
    }
}

impl<R: Ord + Clone> ViewState<R> {
    /// Applies the pending updates before `as_of`, handing each to `on_apply` too.
    fn apply_before(&mut self, as_of: Option<Time>, mut on_apply: impl FnMut(&R, Time, isize)) {
        while let Some(entry) = self.pending.first_entry() {
            if as_of.is_some_and(|as_of| *entry.key() >= as_of) {
                break;
            }
            let time = *entry.key();
            for (row, diff) in entry.remove() {
                on_apply(&row, time, diff);
                add_to_sorted_counts(&mut self.rows, row, diff);
            }
        }
    }

    /// The rows in `range` that `visit` takes, each as often as its multiplicity, until it
    /// says stop.
    fn range<'a>(
        &'a self,
        range: impl RangeBounds<R> + 'a,
        visit: impl Fn(&R) -> Visit + 'a,
    ) -> impl Iterator<Item = &'a R> + 'a {
        self.rows
            .range(range)
            .map(move |(row, count)| (row, count, visit(row)))
            .take_while(|(_, _, visit)| *visit != Visit::Stop)
            .filter(|(_, _, visit)| *visit == Visit::Take)
            .flat_map(|(row, &count, _)| {
                std::iter::repeat_n(row, usize::try_from(count).unwrap_or(0))
            })
    }
}

impl Partition {
    /// The least frontier of the partition's views; `None` when all are complete.
    fn frontier(&self) -> Option<Time> {
        [
            self.page_views.frontier,
            self.sessions.frontier,
            self.funnel.frontier,
            self.alerts.frontier,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn apply_before(&mut self, as_of: Option<Time>, changelog: &mut Changelog) {
        let by_window = &mut self.page_views_by_window;
        self.page_views.apply_before(as_of, |row, time, diff| {
            let key = (row.window_start, row.page.clone());
            if diff > 0 {
                by_window.insert(key, row.clone());
            } else if by_window.get(&key) == Some(row) {
                by_window.remove(&key);
            }
            changelog.record(
                ViewKind::PageViews,
                time,
                || AnyRow::PageView(row.clone()),
                diff,
            );
        });
        self.sessions.apply_before(as_of, |row, time, diff| {
            changelog.record(
                ViewKind::Sessions,
                time,
                || AnyRow::Session(row.clone()),
                diff,
            );
        });
        self.funnel.apply_before(as_of, |row, time, diff| {
            changelog.record(ViewKind::Funnel, time, || AnyRow::Funnel(row.clone()), diff);
        });
        self.alerts.apply_before(as_of, |row, time, diff| {
            changelog.record(ViewKind::Alerts, time, || AnyRow::Alert(row.clone()), diff);
        });
    }
}

/// Recent updates of every view by time, kept for `retention_ms` of logical time behind
/// the store's `as_of` (nothing when it is 0).
#[derive(Default)]
struct Changelog {
    retention_ms: u64,
    views: [BTreeMap<Time, Vec<(AnyRow, isize)>>; 4],
    /// Updates before this time may have been dropped.
    kept_from: Time,
}

impl Changelog {
    /// Records an update; the row is only built (cloned) when the changelog keeps it.
    fn record(&mut self, view: ViewKind, time: Time, row: impl FnOnce() -> AnyRow, diff: isize) {
        if self.retention_ms > 0 {
            self.views[view as usize]
                .entry(time)
                .or_default()
                .push((row(), diff));
        }
    }

    fn trim(&mut self, as_of: Option<Time>) {
        let Some(as_of) = as_of else { return };
        let keep_from = as_of.saturating_sub(self.retention_ms);
        if keep_from > self.kept_from {
            for view in &mut self.views {
                *view = view.split_off(&keep_from);
            }
            self.kept_from = keep_from;
        }
    }
}

/// A consistent read of every view: all partitions locked at one `as_of`.
pub struct ViewRead<'a> {
    partitions: Vec<MutexGuard<'a, Partition>>,
    changelog: MutexGuard<'a, Changelog>,
    as_of: Option<Time>,
}

impl ViewRead<'_> {
    /// The logical time the rows reflect (see [`ViewSnapshot::as_of`]).
    pub fn as_of(&self) -> Option<Time> {
        self.as_of
    }

    /// Up to `limit` page-view rows from `from` on that `visit` takes, in key order.
    pub fn page_views(
        &self,
        from: Bound<&PageViewRow>,
        visit: impl Fn(&PageViewRow) -> Visit,
        limit: usize,
    ) -> Vec<PageViewRow> {
        self.rows(|p| &p.page_views, from, visit, limit)
    }

    /// Up to `limit` session rows from `from` on that `visit` takes, in key order.
    pub fn sessions(
        &self,
        from: Bound<&SessionRow>,
        visit: impl Fn(&SessionRow) -> Visit,
        limit: usize,
    ) -> Vec<SessionRow> {
        self.rows(|p| &p.sessions, from, visit, limit)
    }

    /// Up to `limit` funnel rows from `from` on that `visit` takes, in key order.
    pub fn funnel(
        &self,
        from: Bound<&FunnelRow>,
        visit: impl Fn(&FunnelRow) -> Visit,
        limit: usize,
    ) -> Vec<FunnelRow> {
        self.rows(|p| &p.funnel, from, visit, limit)
    }

    /// Up to `limit` alert rows from `from` on that `visit` takes, in key order.
    pub fn alerts(
        &self,
        from: Bound<&AlertRow>,
        visit: impl Fn(&AlertRow) -> Visit,
        limit: usize,
    ) -> Vec<AlertRow> {
        self.rows(|p| &p.alerts, from, visit, limit)
    }

    /// Every row of `view`, in key order.
    pub fn all(&self, view: ViewKind) -> Vec<AnyRow> {
        let all = usize::MAX;
        match view {
            ViewKind::PageViews => self
                .page_views(Bound::Unbounded, |_| Visit::Take, all)
                .into_iter()
                .map(AnyRow::PageView)
                .collect(),
            ViewKind::Sessions => self
                .sessions(Bound::Unbounded, |_| Visit::Take, all)
                .into_iter()
                .map(AnyRow::Session)
                .collect(),
            ViewKind::Funnel => self
                .funnel(Bound::Unbounded, |_| Visit::Take, all)
                .into_iter()
                .map(AnyRow::Funnel)
                .collect(),
            ViewKind::Alerts => self
                .alerts(Bound::Unbounded, |_| Visit::Take, all)
                .into_iter()
                .map(AnyRow::Alert)
                .collect(),
        }
    }

    /// Every page-view row of the window starting at `window_start`.
    pub fn window(&self, window_start: u64) -> Vec<PageViewRow> {
        let from = (window_start, CompactString::default());
        self.partitions
            .iter()
            .flat_map(|partition| {
                partition
                    .page_views_by_window
                    .range(from.clone()..)
                    .take_while(|((start, _), _)| *start == window_start)
                    .map(|(_, row)| row.clone())
            })
            .collect()
    }

    /// The latest window start with any page views.
    pub fn latest_window(&self) -> Option<u64> {
        self.partitions
            .iter()
            .filter_map(|partition| {
                partition
                    .page_views_by_window
                    .last_key_value()
                    .map(|((start, _), _)| *start)
            })
            .max()
    }

    /// The updates of `view` at times in `[from, as_of)`, by time; `None` when some of
    /// them are no longer kept.
    pub fn changes_since(&self, view: ViewKind, from: Time) -> Option<Vec<TimedUpdates>> {
        if from < self.changelog.kept_from || self.changelog.retention_ms == 0 {
            return None;
        }
        let until = self.as_of.map_or(Bound::Unbounded, Bound::Excluded);
        Some(
            self.changelog.views[view as usize]
                .range((Bound::Included(from), until))
                .map(|(time, updates)| (*time, updates.clone()))
                .collect(),
        )
    }

    fn rows<R: Ord + Clone>(
        &self,
        view: fn(&Partition) -> &ViewState<R>,
        from: Bound<&R>,
        visit: impl Fn(&R) -> Visit,
        limit: usize,
    ) -> Vec<R> {
        let mut rows: Vec<R> = self
            .partitions
            .iter()
            .flat_map(|partition| {
                view(partition)
                    .range((from, Bound::Unbounded), &visit)
                    .take(limit)
                    .cloned()
            })
            .collect();
        rows.sort_unstable();
        rows.truncate(limit);
        rows
    }
}

impl ViewStore {
    /// An empty store kept by `partitions` workers: pass the number of worker threads per
    /// process, so that process 0's workers keep it. It keeps no changelog.
    pub fn new(partitions: usize) -> Self {
        Self::with_changelog(partitions, 0)
    }

    /// An empty store that also keeps every view's updates for `retention_ms` of logical
    /// time, for subscribers.
    pub fn with_changelog(partitions: usize, retention_ms: u64) -> Self {
        let partitions = (0..partitions.max(1))
            .map(|_| Mutex::new(Partition::default()))
            .collect();
        Self {
            partitions: Arc::new(partitions),
            changelog: Arc::new(Mutex::new(Changelog {
                retention_ms,
                ..Changelog::default()
            })),
        }
    }

    /// The logical time the store's rows reflect (see [`ViewSnapshot::as_of`]); starts at 0.
    pub fn as_of(&self) -> Option<Time> {
        self.partitions
            .iter()
            .filter_map(|partition| lock(partition).frontier())
            .min()
    }

    /// A consistent read of every view at the store's current `as_of`. Hold it briefly:
    /// the store's upkeep waits for it.
    pub fn read(&self) -> ViewRead<'_> {
        let mut partitions: Vec<_> = self.partitions.iter().map(lock).collect();
        let mut changelog = lock(&self.changelog);
        let as_of = partitions
            .iter()
            .filter_map(|partition| partition.frontier())
            .min();
        for partition in &mut partitions {
            partition.apply_before(as_of, &mut changelog);
        }
        changelog.trim(as_of);
        ViewRead {
            partitions,
            changelog,
            as_of,
        }
    }

    /// Every view's rows at the store's current `as_of`.
    pub fn snapshot(&self) -> ViewSnapshot {
        let read = self.read();
        let all = usize::MAX;
        ViewSnapshot {
            as_of: read.as_of,
            page_views: read.page_views(Bound::Unbounded, |_| Visit::Take, all),
            sessions: read.sessions(Bound::Unbounded, |_| Visit::Take, all),
            funnel: read.funnel(Bound::Unbounded, |_| Visit::Take, all),
            alerts: read.alerts(Bound::Unbounded, |_| Visit::Take, all),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Installs one sink per view on every worker; the first workers, one per partition of
/// the store (process 0's workers), each keep one partition.
pub(crate) fn export(views: Views<'_>, store: &ViewStore) {
    let index = views.page_views.inner.scope().index();
    let keeper = (index < store.partitions.len()).then(|| (store.clone(), index));
    let partitions = store.partitions.len() as u64;
    sink(views.page_views, partitions, keeper.clone(), |p| {
        &mut p.page_views
    });
    sink(views.sessions, partitions, keeper.clone(), |p| {
        &mut p.sessions
    });
    sink(views.funnel, partitions, keeper.clone(), |p| &mut p.funnel);
    sink(views.alerts, partitions, keeper, |p| &mut p.alerts);
}

fn sink<R: ExchangeData + std::hash::Hash>(
    view: VecCollection<'_, Time, R>,
    partitions: u64,
    keeper: Option<(ViewStore, usize)>,
    select: fn(&mut Partition) -> &mut ViewState<R>,
) {
    let by_row = Exchange::new(move |(row, _, _): &(R, Time, isize)| row.hashed() % partitions);
    view.inner
        .sink(by_row, "ExportView", move |(input, frontier)| {
            let mut updates = Vec::new();
            input.for_each_stamp(|_, containers| {
                for container in containers {
                    updates.append(container);
                }
            });
            if let Some((store, index)) = &keeper {
                {
                    let mut partition = lock(&store.partitions[*index]);
                    let state = select(&mut partition);
                    for (row, time, diff) in updates.drain(..) {
                        state.pending.entry(time).or_default().push((row, diff));
                    }
                    state.frontier = frontier.frontier().first().copied();
                }
                let as_of = store.as_of();
                let mut partition = lock(&store.partitions[*index]);
                let mut changelog = lock(&store.changelog);
                partition.apply_before(as_of, &mut changelog);
                changelog.trim(as_of);
            }
        });
}
