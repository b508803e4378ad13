//! Result export: the current rows of every view, kept in process 0 at one shared `as_of`,
//! and (for subscriptions) a changelog of their recent updates.
//!
//! Each view's updates are routed, by a hash of the row's key, to one of process 0's
//! workers, whose sink stashes them with the view's frontier. When the least frontier over
//! every view and sink (the store's `as_of`) advances, the store's own thread applies
//! every stashed update before the new `as_of` and publishes the result, so a read shows
//! every view at exactly one logical time: the views are mutually consistent. The workers
//! only stash, so the store's upkeep never delays the dataflow or the output topics.
//!
//! In a serving store, reads never wait for the store's thread either. It keeps two copies
//! of the rows: the published one, which reads share, and a standby that it brings up to
//! date (the updates it published last, then the new ones) and publishes in its place by
//! swapping a pointer. The old published copy becomes the standby once the last read of it
//! ends. A store read only once its input has ended (`batch`) keeps one copy, updated in
//! place. A backlog is applied in chunks of whole times, each published at its own `as_of`
//! (about [`CHUNK_UPDATES`] updates each), so that it shows as it is applied.
//!
//! A key's updates at one time reach one sink in the order its view produced them, next
//! to each other: a publication applies them together, so that a key's retraction and its
//! replacement meet its state in the cache once. Page views, funnel and alert rows are
//! kept sorted (row order is key order), so that a read can take a key range; page-view
//! rows are also indexed by window, for top-k reads.
//! Sessions are kept by user, as they are read one user at a time (a read of all of them
//! sorts them). A serving store also keeps a changelog: every applied update with its time,
//! for `changelog_ms` of logical time, so that a subscriber can read what changed after a
//! snapshot or a previous subscription.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::Duration;

use differential_dataflow::{ExchangeData, Hashable, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::rows::{AlertRow, FunnelRow, PageViewRow, SessionRow};
use crate::views::{Time, Views};

mod rows;

use rows::{Rows, Take, Updates};

/// The current state of every view, shared with readers on other threads. The store's
/// thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct ViewStore {
    handle: Arc<Handle>,
}

/// Owned by the store's clones; dropping the last one ends the store's thread.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.tell(Signal::Closed);
    }
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
pub type TimedUpdates = (Time, Arc<[(AnyRow, isize)]>);

/// One view's recorded updates by time.
type ViewChanges = BTreeMap<Time, Arc<[(AnyRow, isize)]>>;

struct Shared {
    /// Per partition (one per worker of process 0): updates not yet applied, and frontiers.
    stashes: Vec<Mutex<Stash>>,
    /// The rows at the latest published `as_of`; a read shares them (the lock is held only
    /// to copy or swap the pointer).
    published: Mutex<Arc<Rows>>,
    changelog: RwLock<Changelog>,
    /// Held while updates are taken, recorded and published, and while a view starts being
    /// followed: a view's changelog starts exactly at a published `as_of`.
    publishing: Mutex<()>,
    /// Callers of [`ViewStore::follow`] waiting for `publishing`.
    followers_waiting: AtomicUsize,
    /// The frontier of an input that readers must see up to the same `as_of` as the views
    /// (see [`ViewStore::hold`]); `None` while nothing holds the store back.
    held_at: Mutex<Option<Time>>,
    /// What the store's thread has been told since it last looked.
    signal: Mutex<Signal>,
    wake: Condvar,
    /// Called after every publication (see [`ViewStore::on_publication`]).
    listeners: Mutex<Vec<PublicationListener>>,
}

/// Called on the store's thread after each publication, with its `as_of`.
type PublicationListener = Box<dyn Fn(Option<Time>) + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Signal {
    Nothing,
    /// A stash's frontier moved.
    Moved,
    /// The store is dropped.
    Closed,
}

/// The most updates the store's thread publishes at once, unless one time has more.
const CHUNK_UPDATES: usize = 512;

/// How long the store's thread sleeps between looks while a read still holds the rows it
/// is to update, or a view's first subscriber waits to follow it.
const READ_ENDING: Duration = Duration::from_micros(50);

/// How the store's thread brings the published rows up to date.
enum Upkeep {
    /// In place, while reads wait: for a store read once its input has ended (`batch`).
    InPlace,
    /// On a standby copy that then replaces the published one, so reads never wait: for a
    /// store that serves reads while it is updated.
    Standby {
        rows: Arc<Rows>,
        /// The updates of the last publication, which this copy has not had yet.
        behind: Updates,
    },
}

/// `rows`, once no read holds them any more (no read can start holding them meanwhile:
/// reads only take the published copy).
fn exclusive(rows: &mut Arc<Rows>) -> &mut Rows {
    while Arc::get_mut(rows).is_none() {
        std::thread::sleep(READ_ENDING);
    }
    Arc::get_mut(rows).unwrap_or_else(|| unreachable!("a read took the standby copy"))
}

/// One partition's updates not yet applied, per view.
#[derive(Default)]
struct Stash {
    page_views: Pending<PageViewRow>,
    sessions: Pending<SessionRow>,
    funnel: Pending<FunnelRow>,
    alerts: Pending<AlertRow>,
}

struct Pending<R> {
    by_time: BTreeMap<Time, Vec<(R, isize)>>,
    /// The view's input frontier at this partition; `None` when the view is complete.
    frontier: Option<Time>,
}

impl<R> Pending<R> {
    fn count_by_time(&self, counts: &mut BTreeMap<Time, usize>) {
        for (time, updates) in &self.by_time {
            *counts.entry(*time).or_default() += updates.len();
        }
    }
}

impl<R> Default for Pending<R> {
    fn default() -> Self {
        Self {
            by_time: BTreeMap::new(),
            frontier: Some(0),
        }
    }
}

/// The updates of the followed views by time, on their way to the changelog.
#[derive(Default)]
struct Changes {
    followed: [bool; 4],
    by_view: [BTreeMap<Time, Vec<(AnyRow, isize)>>; 4],
}

/// A view's row type, and where the store keeps its updates.
trait StoredRow: ExchangeData + Ord {
    const VIEW: ViewKind;
    /// A hash of the row's key, as the view's operator partitions its keys: every update
    /// of a key reaches one partition of the store, in the order the view produced it, so
    /// that a key's retraction and its replacement arrive next to each other (and, in one
    /// process, stay on the worker that produced them).
    fn key_hash(&self) -> u64;
    fn pending(stash: &mut Stash) -> &mut Pending<Self>;
    fn updates(updates: &mut Updates) -> &mut Vec<(Self, isize)>;
    fn any(&self) -> AnyRow;
}

macro_rules! stored_row {
    ($row:ty, $view:ident, $field:ident, $any:ident, |$this:ident| $key:expr) => {
        impl StoredRow for $row {
            const VIEW: ViewKind = ViewKind::$view;
            fn key_hash(&self) -> u64 {
                let $this = self;
                $key.hashed()
            }
            fn pending(stash: &mut Stash) -> &mut Pending<Self> {
                &mut stash.$field
            }
            fn updates(updates: &mut Updates) -> &mut Vec<(Self, isize)> {
                &mut updates.$field
            }
            fn any(&self) -> AnyRow {
                AnyRow::$any(self.clone())
            }
        }
    };
}

stored_row!(PageViewRow, PageViews, page_views, PageView, |row| (
    &row.page,
    row.window_start
));
stored_row!(SessionRow, Sessions, sessions, Session, |row| &row.user_id);
stored_row!(FunnelRow, Funnel, funnel, Funnel, |row| (
    &row.funnel_step,
    row.window_start
));
stored_row!(AlertRow, Alerts, alerts, Alert, |row| (
    &row.rule,
    &row.page,
    row.window_start
));

impl Stash {
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

    /// Adds the number of updates stashed at each time to `counts`.
    fn count_by_time(&self, counts: &mut BTreeMap<Time, usize>) {
        self.page_views.count_by_time(counts);
        self.sessions.count_by_time(counts);
        self.funnel.count_by_time(counts);
        self.alerts.count_by_time(counts);
    }

    /// Moves the updates before `as_of` into `updates`, and those of the followed views
    /// into `changes` too.
    fn take_before(&mut self, as_of: Option<Time>, updates: &mut Updates, changes: &mut Changes) {
        self.take_view_before::<PageViewRow>(as_of, updates, changes);
        self.take_view_before::<SessionRow>(as_of, updates, changes);
        self.take_view_before::<FunnelRow>(as_of, updates, changes);
        self.take_view_before::<AlertRow>(as_of, updates, changes);
    }

    fn take_view_before<R: StoredRow>(
        &mut self,
        as_of: Option<Time>,
        updates: &mut Updates,
        changes: &mut Changes,
    ) {
        let pending = R::pending(self);
        let later = match as_of {
            Some(as_of) => pending.by_time.split_off(&as_of),
            None => BTreeMap::new(),
        };
        for (time, rows) in std::mem::replace(&mut pending.by_time, later) {
            if changes.followed[R::VIEW as usize] {
                changes.by_view[R::VIEW as usize]
                    .entry(time)
                    .or_default()
                    .extend(rows.iter().map(|(row, diff)| (row.any(), *diff)));
            }
            R::updates(updates).extend(rows);
        }
    }
}

/// Recent updates of the followed views by time, kept for `retention_ms` of logical time
/// behind the store's `as_of` (nothing when it is 0). A view is followed from its first
/// subscriber on.
#[derive(Default)]
struct Changelog {
    retention_ms: u64,
    views: [ViewChanges; 4],
    /// Per view: `None` while nobody follows it, else the time from which every update is
    /// kept.
    kept_from: [Option<Time>; 4],
}

impl Changelog {
    fn followed(&self) -> [bool; 4] {
        self.kept_from.map(|kept_from| kept_from.is_some())
    }

    fn append(&mut self, changes: Changes) {
        for (view, times) in self.views.iter_mut().zip(changes.by_view) {
            for (time, updates) in times {
                view.insert(time, updates.into());
            }
        }
    }

    fn trim(&mut self, as_of: Option<Time>) {
        let Some(as_of) = as_of else { return };
        let keep_from = as_of.saturating_sub(self.retention_ms);
        for (view, kept_from) in self.views.iter_mut().zip(&mut self.kept_from) {
            if let Some(kept_from) = kept_from.as_mut().filter(|from| **from < keep_from) {
                *view = view.split_off(&keep_from);
                *kept_from = keep_from;
            }
        }
    }

    /// Where `view`'s kept updates start, if it is followed.
    fn kept_from(&self, view: ViewKind) -> Option<Time> {
        self.kept_from[view as usize]
    }
}

impl Shared {
    /// The published rows, for a read.
    fn published(&self) -> Arc<Rows> {
        Arc::clone(&lock(&self.published))
    }

    /// Tells the store's thread something; closing is never overridden.
    fn tell(&self, signal: Signal) {
        let mut current = lock(&self.signal);
        if *current != Signal::Closed {
            *current = signal;
        }
        self.wake.notify_one();
    }

    /// The store's thread: applies and publishes what the stashes' frontiers allow, each
    /// time one moves, until the store is dropped.
    fn keep_up(&self, mut upkeep: Upkeep) {
        loop {
            {
                let mut signal = lock(&self.signal);
                while *signal == Signal::Nothing {
                    signal = self
                        .wake
                        .wait(signal)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if *signal == Signal::Closed {
                    return;
                }
                *signal = Signal::Nothing;
            }
            self.catch_up(&mut upkeep);
        }
    }

    /// Applies and publishes every stashed update before the least frontier, a chunk at a
    /// time (see [`chunk_ends`]).
    fn catch_up(&self, upkeep: &mut Upkeep) {
        let (frontier, chunk_ends) = {
            let stashes: Vec<_> = self.stashes.iter().map(lock).collect();
            let frontier = stashes
                .iter()
                .filter_map(|stash| stash.frontier())
                .chain(*lock(&self.held_at))
                .min();
            let mut counts = BTreeMap::new();
            for stash in &stashes {
                stash.count_by_time(&mut counts);
            }
            (frontier, chunk_ends(&counts, frontier, CHUNK_UPDATES))
        };
        if frontier == lock(&self.published).as_of {
            return;
        }
        for as_of in chunk_ends {
            // A view's first subscriber waits for the publishing lock: it goes before the
            // next chunk, not after the whole backlog.
            while self.followers_waiting.load(Ordering::Acquire) > 0 {
                std::thread::sleep(READ_ENDING);
            }
            self.publish_before(as_of, upkeep);
        }
    }

    /// Applies every stashed update before `as_of` and publishes the rows at `as_of`.
    fn publish_before(&self, as_of: Option<Time>, upkeep: &mut Upkeep) {
        // Nobody starts following a view until the updates are published.
        let _publishing = lock(&self.publishing);
        let mut updates = Updates::default();
        let mut changes = Changes {
            followed: read(&self.changelog).followed(),
            ..Changes::default()
        };
        for stash in &self.stashes {
            lock(stash).take_before(as_of, &mut updates, &mut changes);
        }
        // The changelog has every update before `as_of` by the time a read sees `as_of`.
        write(&self.changelog).append(changes);
        match upkeep {
            Upkeep::InPlace => loop {
                let mut published = lock(&self.published);
                if let Some(rows) = Arc::get_mut(&mut published) {
                    rows.apply(&mut updates, Take::Move);
                    rows.as_of = as_of;
                    break;
                }
                drop(published);
                std::thread::sleep(READ_ENDING);
            },
            Upkeep::Standby { rows, behind } => {
                let standby = exclusive(rows);
                standby.apply(behind, Take::Move);
                standby.apply(&mut updates, Take::Copy);
                standby.as_of = as_of;
                std::mem::swap(&mut *lock(&self.published), rows);
                *behind = updates;
            }
        }
        write(&self.changelog).trim(as_of);
        for listener in lock(&self.listeners).iter() {
            listener(as_of);
        }
    }
}

/// Where the chunks of updates before `frontier` end, in order: each at the first time
/// where the updates before it since the last end (`counts` by time) would add up to more
/// than `max`, and the last at `frontier`. A chunk holds at least one time, and never part
/// of one.
fn chunk_ends(
    counts: &BTreeMap<Time, usize>,
    frontier: Option<Time>,
    max: usize,
) -> Vec<Option<Time>> {
    let mut ends = Vec::new();
    let mut total = 0;
    for (&time, &count) in counts {
        if frontier.is_some_and(|frontier| time >= frontier) {
            break;
        }
        if total > 0 && total + count > max {
            ends.push(Some(time));
            total = 0;
        }
        total += count;
    }
    ends.push(frontier);
    ends
}

/// A consistent read of every view at one `as_of`. The store publishes its next rows
/// meanwhile, but cannot reuse these until the read ends: do not keep it for long.
pub struct ViewRead<'a> {
    rows: Arc<Rows>,
    changelog: &'a RwLock<Changelog>,
}

impl ViewRead<'_> {
    /// The logical time the rows reflect (see [`ViewSnapshot::as_of`]).
    pub fn as_of(&self) -> Option<Time> {
        self.rows.as_of
    }

    /// Up to `limit` page-view rows from `from` on that `visit` takes, in key order.
    pub fn page_views(
        &self,
        from: Bound<&PageViewRow>,
        visit: impl Fn(&PageViewRow) -> Visit,
        limit: usize,
    ) -> Vec<PageViewRow> {
        taken(self.rows.page_views.from(from), visit, limit)
    }

    /// Up to `limit` of `user_id`'s session rows from `from` on that `visit` takes, in key
    /// order.
    pub fn user_sessions(
        &self,
        user_id: &str,
        from: Bound<&SessionRow>,
        visit: impl Fn(&SessionRow) -> Visit,
        limit: usize,
    ) -> Vec<SessionRow> {
        let sessions = self
            .rows
            .sessions
            .get(user_id)
            .map_or(&[][..], |rows| rows.as_slice());
        let from: (Bound<&SessionRow>, Bound<&SessionRow>) = (from, Bound::Unbounded);
        taken(
            sessions
                .iter()
                .filter(|(row, _)| from.contains(row))
                .map(|(row, count)| (row, count)),
            visit,
            limit,
        )
    }

    /// Every session row, in key order.
    pub fn all_sessions(&self) -> Vec<SessionRow> {
        let mut rows: Vec<SessionRow> = self
            .rows
            .sessions
            .values()
            .flatten()
            .flat_map(|(row, count)| repeat(row, *count))
            .cloned()
            .collect();
        rows.sort_unstable();
        rows
    }

    /// Up to `limit` funnel rows from `from` on that `visit` takes, in key order.
    pub fn funnel(
        &self,
        from: Bound<&FunnelRow>,
        visit: impl Fn(&FunnelRow) -> Visit,
        limit: usize,
    ) -> Vec<FunnelRow> {
        taken(
            self.rows.funnel.range((from, Bound::Unbounded)),
            visit,
            limit,
        )
    }

    /// Up to `limit` alert rows from `from` on that `visit` takes, in key order.
    pub fn alerts(
        &self,
        from: Bound<&AlertRow>,
        visit: impl Fn(&AlertRow) -> Visit,
        limit: usize,
    ) -> Vec<AlertRow> {
        taken(
            self.rows.alerts.range((from, Bound::Unbounded)),
            visit,
            limit,
        )
    }

    /// Every row of `view`, in key order.
    pub fn all(&self, view: ViewKind) -> Vec<AnyRow> {
        match view {
            ViewKind::PageViews => self.all_of(Self::page_views),
            ViewKind::Sessions => self
                .all_sessions()
                .into_iter()
                .map(AnyRow::Session)
                .collect(),
            ViewKind::Funnel => self.all_of(Self::funnel),
            ViewKind::Alerts => self.all_of(Self::alerts),
        }
    }

    /// The `k` page-view rows of the window starting at `window_start` with the most views
    /// (the most unique users, when `by_users`), ties by page.
    pub fn top_pages(&self, window_start: u64, by_users: bool, k: usize) -> Vec<PageViewRow> {
        let Some(window) = self.rows.page_views.windows.get(&window_start) else {
            return Vec::new();
        };
        let metric = |row: &PageViewRow| {
            if by_users {
                row.unique_users
            } else {
                row.view_count
            }
        };
        let order = |a: &&PageViewRow, b: &&PageViewRow| -> std::cmp::Ordering {
            metric(b).cmp(&metric(a)).then_with(|| a.page.cmp(&b.page))
        };
        let mut rows: Vec<&PageViewRow> = window.values().collect();
        if rows.len() > k {
            rows.select_nth_unstable_by(k, order);
            rows.truncate(k);
        }
        rows.sort_unstable_by(order);
        rows.into_iter().cloned().collect()
    }

    /// The latest window start with any page views.
    pub fn latest_window(&self) -> Option<u64> {
        self.rows
            .page_views
            .windows
            .last_key_value()
            .map(|(start, _)| *start)
    }

    /// The updates of `view` at times in `[from, as_of)`, by time (none when `from` is at
    /// or past the `as_of`). When some of them are not kept (too old, or from before the
    /// view was first followed), the error is the time they are kept from; `None` when the
    /// view's updates are not kept at all.
    pub fn changes_since(
        &self,
        view: ViewKind,
        from: Time,
    ) -> Result<Vec<TimedUpdates>, Option<Time>> {
        let changelog = read(self.changelog);
        match changelog.kept_from(view) {
            Some(kept_from) if from >= kept_from => Ok(self.kept_changes(&changelog, view, from)),
            kept_from => Err(kept_from),
        }
    }

    /// The updates of `view` at times in `[from, as_of)` that are kept, by time: those from
    /// when the view was first followed on, none if it is not.
    pub fn recent_changes(&self, view: ViewKind, from: Time) -> Vec<TimedUpdates> {
        let changelog = read(self.changelog);
        changelog
            .kept_from(view)
            .map_or_else(Vec::new, |kept_from| {
                self.kept_changes(&changelog, view, from.max(kept_from))
            })
    }

    fn kept_changes(&self, changelog: &Changelog, view: ViewKind, from: Time) -> Vec<TimedUpdates> {
        if self.as_of().is_some_and(|as_of| from >= as_of) {
            return Vec::new();
        }
        let until = self.as_of().map_or(Bound::Unbounded, Bound::Excluded);
        changelog.views[view as usize]
            .range((Bound::Included(from), until))
            .map(|(time, updates)| (*time, Arc::clone(updates)))
            .collect()
    }

    /// Every row that `read` reads from the start.
    fn all_of<R: StoredRow>(
        &self,
        read: impl Fn(&Self, Bound<&R>, fn(&R) -> Visit, usize) -> Vec<R>,
    ) -> Vec<AnyRow> {
        read(self, Bound::Unbounded, |_| Visit::Take, usize::MAX)
            .iter()
            .map(R::any)
            .collect()
    }
}

/// Up to `limit` of `rows` (in order, with their multiplicities) that `visit` takes, each as
/// often as its multiplicity, until `visit` says stop.
fn taken<'a, R: Clone + 'a>(
    rows: impl Iterator<Item = (&'a R, &'a isize)>,
    visit: impl Fn(&R) -> Visit,
    limit: usize,
) -> Vec<R> {
    rows.map(|(row, count)| (row, count, visit(row)))
        .take_while(|(_, _, visit)| *visit != Visit::Stop)
        .filter(|(_, _, visit)| *visit == Visit::Take)
        .flat_map(|(row, count, _)| repeat(row, *count))
        .take(limit)
        .cloned()
        .collect()
}

/// `row` as often as its multiplicity (never, when that is not positive).
fn repeat<R>(row: &R, count: isize) -> impl Iterator<Item = &R> {
    std::iter::repeat_n(row, usize::try_from(count).unwrap_or(0))
}

impl ViewStore {
    /// An empty store kept by `partitions` workers (pass the number of worker threads per
    /// process, so that process 0's workers keep it), to be read once its input has ended:
    /// it keeps one copy of the rows, updated in place while reads wait, and no changelog.
    pub fn new(partitions: usize) -> Self {
        Self::start(partitions, 0, Upkeep::InPlace)
    }

    /// An empty store that serves reads while it is updated: it keeps two copies of the
    /// rows, so that reads never wait for updates, and keeps the followed views' updates
    /// for `changelog_ms` of logical time for subscribers (see [`ViewStore::follow`]).
    pub fn serving(partitions: usize, changelog_ms: u64) -> Self {
        let standby = Upkeep::Standby {
            rows: Arc::new(Rows::empty()),
            behind: Updates::default(),
        };
        Self::start(partitions, changelog_ms, standby)
    }

    fn start(partitions: usize, changelog_ms: u64, upkeep: Upkeep) -> Self {
        let shared = Arc::new(Shared {
            stashes: (0..partitions.max(1)).map(|_| Mutex::default()).collect(),
            published: Mutex::new(Arc::new(Rows::empty())),
            changelog: RwLock::new(Changelog {
                retention_ms: changelog_ms,
                ..Changelog::default()
            }),
            publishing: Mutex::new(()),
            followers_waiting: AtomicUsize::new(0),
            held_at: Mutex::new(None),
            signal: Mutex::new(Signal::Nothing),
            wake: Condvar::new(),
            listeners: Mutex::default(),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("clickflow-store".to_owned())
            .spawn(move || thread_shared.keep_up(upkeep))
            .unwrap_or_else(|error| panic!("the view store's thread did not start: {error}"));
        Self {
            handle: Arc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The logical time the store's rows reflect (see [`ViewSnapshot::as_of`]); starts at 0.
    pub fn as_of(&self) -> Option<Time> {
        lock(&self.shared().published).as_of
    }

    /// A consistent read of every view at the store's current `as_of`.
    pub fn read(&self) -> ViewRead<'_> {
        ViewRead {
            rows: self.shared().published(),
            changelog: &self.shared().changelog,
        }
    }

    /// Calls `listener` with the new `as_of` after every publication, on the store's
    /// thread, once reads see it: a reader can follow the store without polling it. It
    /// delays the next publication, so it should only wake someone.
    pub fn on_publication(&self, listener: impl Fn(Option<Time>) + Send + Sync + 'static) {
        lock(&self.shared().listeners).push(Box::new(listener));
    }

    /// Keeps the store's `as_of` at or before `frontier` (`None`: no longer), until called
    /// again: for an input that a read must reflect up to its `as_of` as the views do,
    /// whose frontier the views' do not follow.
    pub fn hold(&self, frontier: Option<Time>) {
        let moved = std::mem::replace(&mut *lock(&self.shared().held_at), frontier) != frontier;
        if moved {
            self.shared().tell(Signal::Moved);
        }
    }

    /// Starts keeping `view`'s updates in the changelog (if the store keeps one), from the
    /// current `as_of` on: call it before reading what a subscriber starts from.
    pub fn follow(&self, view: ViewKind) {
        let shared = self.shared();
        let unfollowed = |changelog: &Changelog| {
            changelog.retention_ms > 0 && changelog.kept_from(view).is_none()
        };
        // A view stays followed: its later subscribers need not wait for a publication.
        if !unfollowed(&read(&shared.changelog)) {
            return;
        }
        shared.followers_waiting.fetch_add(1, Ordering::AcqRel);
        let _publishing = lock(&shared.publishing);
        shared.followers_waiting.fetch_sub(1, Ordering::AcqRel);
        let mut changelog = write(&shared.changelog);
        if unfollowed(&changelog) {
            let as_of = lock(&shared.published).as_of;
            changelog.kept_from[view as usize] = Some(as_of.unwrap_or(Time::MAX));
        }
    }

    /// Every view's rows at the store's current `as_of`.
    pub fn snapshot(&self) -> ViewSnapshot {
        let read = self.read();
        let all = usize::MAX;
        ViewSnapshot {
            as_of: read.as_of(),
            page_views: read.page_views(Bound::Unbounded, |_| Visit::Take, all),
            sessions: read.all_sessions(),
            funnel: read.funnel(Bound::Unbounded, |_| Visit::Take, all),
            alerts: read.alerts(Bound::Unbounded, |_| Visit::Take, all),
        }
    }

    /// Stashes updates of one view at one partition and moves its frontier there.
    fn stash<R: StoredRow>(
        &self,
        partition: usize,
        updates: impl IntoIterator<Item = (R, Time, isize)>,
        frontier: Option<Time>,
    ) {
        let moved = {
            let mut stash = lock(&self.shared().stashes[partition]);
            let pending = R::pending(&mut stash);
            for (row, time, diff) in updates {
                pending.by_time.entry(time).or_default().push((row, diff));
            }
            std::mem::replace(&mut pending.frontier, frontier) != frontier
        };
        if moved {
            self.shared().tell(Signal::Moved);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Installs one sink per view on every worker; the first workers, one per partition of
/// the store (process 0's workers), each keep one partition.
pub(crate) fn export(views: Views<'_>, store: &ViewStore) {
    let index = views.page_views.inner.scope().index();
    let keeper = (index < store.shared().stashes.len()).then(|| (store.clone(), index));
    let partitions = store.shared().stashes.len() as u64;
    sink(views.page_views, partitions, keeper.clone());
    sink(views.sessions, partitions, keeper.clone());
    sink(views.funnel, partitions, keeper.clone());
    sink(views.alerts, partitions, keeper);
}

fn sink<R: StoredRow>(
    view: VecCollection<'_, Time, R>,
    partitions: u64,
    keeper: Option<(ViewStore, usize)>,
) {
    let by_key = Exchange::new(move |(row, _, _): &(R, Time, isize)| row.key_hash() % partitions);
    view.inner
        .sink(by_key, "ExportView", move |(input, frontier)| {
            // The containers are taken whole, not copied into one vector.
            let mut containers = Vec::new();
            input.for_each_stamp(|_, stamped| containers.extend(stamped.map(std::mem::take)));
            if let Some((store, index)) = &keeper {
                let updates = containers.into_iter().flatten();
                store.stash(*index, updates, frontier.frontier().first().copied());
            }
        });
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;

    fn page_view(page: &str, window_start: u64, views: u64, users: u64) -> PageViewRow {
        PageViewRow {
            page: page.into(),
            window_start,
            window_end: window_start + 60_000,
            view_count: views,
            unique_users: users,
        }
    }

    /// Moves every view's frontier at `partition` to `frontier`, with `updates` of page views.
    fn step(
        store: &ViewStore,
        partition: usize,
        updates: Vec<(PageViewRow, Time, isize)>,
        frontier: Option<Time>,
    ) {
        store.stash::<SessionRow>(partition, [], frontier);
        store.stash::<FunnelRow>(partition, [], frontier);
        store.stash::<AlertRow>(partition, [], frontier);
        store.stash(partition, updates, frontier);
    }

    /// Waits until the store's thread has published `as_of`.
    fn settle(store: &ViewStore, as_of: Option<Time>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.as_of() != as_of {
            assert!(
                Instant::now() < deadline,
                "the store is at {:?}, not {as_of:?}",
                store.as_of()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn all_page_views(read: &ViewRead<'_>) -> Vec<PageViewRow> {
        read.page_views(Bound::Unbounded, |_| Visit::Take, usize::MAX)
    }

    #[test]
    fn the_store_shows_updates_before_the_least_frontier_of_its_partitions_only() {
        let store = ViewStore::serving(2, 0);
        let a = page_view("/a", 0, 1, 1);
        let b = page_view("/b", 0, 1, 1);
        step(
            &store,
            0,
            vec![(a.clone(), 1, 1), (b.clone(), 7, 1)],
            Some(8),
        );
        step(&store, 1, vec![], Some(5));
        settle(&store, Some(5));
        assert_eq!(all_page_views(&store.read()), vec![a.clone()]);
        step(&store, 1, vec![], None);
        settle(&store, Some(8));
        step(&store, 0, vec![], None);
        settle(&store, None);
        assert_eq!(store.snapshot().page_views, vec![a, b]);
    }

    #[test]
    fn listeners_hear_of_each_publication_once_reads_see_it() {
        let store = ViewStore::serving(1, 0);
        let (sender, heard) = std::sync::mpsc::channel();
        store.on_publication(move |as_of| {
            let _ = sender.send(as_of);
        });
        // Nothing else publishes before the next step: what is heard is what reads see.
        let next = || {
            let as_of = heard.recv_timeout(Duration::from_secs(10)).unwrap();
            (as_of, store.as_of())
        };
        step(&store, 0, vec![(page_view("/a", 0, 1, 1), 1, 1)], Some(2));
        assert_eq!(next(), (Some(2), Some(2)));
        step(&store, 0, vec![], Some(9));
        assert_eq!(next(), (Some(9), Some(9)));
        step(&store, 0, vec![], None);
        assert_eq!(next(), (None, None));
    }

    #[test]
    fn a_read_keeps_its_as_of_while_later_rows_are_published_beside_it() {
        let store = ViewStore::serving(1, 0);
        let a = page_view("/a", 0, 1, 1);
        let b = page_view("/b", 0, 1, 1);
        step(&store, 0, vec![(a.clone(), 1, 1)], Some(2));
        settle(&store, Some(2));
        let held = store.read();
        step(
            &store,
            0,
            vec![(b.clone(), 2, 1), (a.clone(), 3, -1)],
            Some(4),
        );
        settle(&store, Some(4));
        assert_eq!(held.as_of(), Some(2));
        assert_eq!(all_page_views(&held), vec![a.clone()]);
        assert_eq!(all_page_views(&store.read()), vec![b.clone()]);
        drop(held);
        step(&store, 0, vec![(a.clone(), 5, 1)], Some(6));
        settle(&store, Some(6));
        assert_eq!(all_page_views(&store.read()), vec![a, b]);
    }

    #[test]
    fn a_hold_keeps_the_as_of_back_until_it_is_released() {
        let store = ViewStore::new(1);
        let a = page_view("/a", 0, 1, 1);
        store.hold(Some(3));
        step(
            &store,
            0,
            vec![(a.clone(), 1, 1), (a.clone(), 5, 1)],
            Some(8),
        );
        settle(&store, Some(3));
        assert_eq!(all_page_views(&store.read()), vec![a.clone()]);
        store.hold(None);
        settle(&store, Some(8));
        assert_eq!(all_page_views(&store.read()), vec![a.clone(), a]);
    }

    #[test]
    fn a_backlog_is_published_in_chunks_of_whole_times() {
        let counts = BTreeMap::from([(1, 3), (2, 3), (3, 10), (4, 1), (9, 1)]);
        assert_eq!(
            chunk_ends(&counts, Some(5), 100),
            vec![Some(5)],
            "all of it fits"
        );
        assert_eq!(
            chunk_ends(&counts, Some(5), 6),
            vec![Some(3), Some(4), Some(5)]
        );
        assert_eq!(chunk_ends(&counts, Some(5), 11), vec![Some(3), Some(5)]);
        assert_eq!(
            chunk_ends(&counts, Some(5), 2),
            vec![Some(2), Some(3), Some(4), Some(5)],
            "one time at least, though it has more"
        );
        assert_eq!(chunk_ends(&counts, Some(3), 100), vec![Some(3)]);
        assert_eq!(chunk_ends(&counts, None, 100), vec![None]);
        assert_eq!(chunk_ends(&counts, None, 16), vec![Some(4), None]);
        assert_eq!(chunk_ends(&BTreeMap::new(), Some(7), 1), vec![Some(7)]);
    }

    #[test]
    fn a_backlog_ends_at_the_frontier_whatever_its_chunks() {
        let store = ViewStore::new(1);
        let rows: Vec<PageViewRow> = (0..3 * CHUNK_UPDATES as u64)
            .map(|n| page_view(&format!("/{n}"), 0, 1, 1))
            .collect();
        let updates = rows
            .iter()
            .enumerate()
            .map(|(index, row)| (row.clone(), index as Time / 100, 1))
            .collect();
        step(&store, 0, updates, Some(1_000));
        settle(&store, Some(1_000));
        assert_eq!(all_page_views(&store.read()).len(), rows.len());
    }

    #[test]
    fn the_changelog_has_every_update_by_time_until_it_is_trimmed() {
        let store = ViewStore::serving(2, 100);
        let a = page_view("/a", 0, 1, 1);
        let b = page_view("/b", 0, 1, 1);
        store.follow(ViewKind::PageViews);
        step(&store, 0, vec![(a.clone(), 10, 1)], Some(50));
        step(
            &store,
            1,
            vec![(b.clone(), 10, 1), (b.clone(), 20, -1)],
            Some(50),
        );
        settle(&store, Some(50));
        let changes = store.read().changes_since(ViewKind::PageViews, 0).unwrap();
        let times: Vec<Time> = changes.iter().map(|(time, _)| *time).collect();
        assert_eq!(times, vec![10, 20]);
        let mut at_10 = changes[0].1.to_vec();
        at_10.sort();
        assert_eq!(
            at_10,
            vec![(AnyRow::PageView(a), 1), (AnyRow::PageView(b.clone()), 1)]
        );
        assert_eq!(changes[1].1.to_vec(), vec![(AnyRow::PageView(b), -1)]);
        let since_15 = store.read().changes_since(ViewKind::PageViews, 15);
        assert_eq!(since_15.map(|changes| changes.len()), Ok(1));
        assert_eq!(
            store.read().changes_since(ViewKind::PageViews, 70),
            Ok(Vec::new()),
            "a time ahead of the as_of has nothing yet"
        );
        step(&store, 0, vec![], Some(130));
        step(&store, 1, vec![], Some(130));
        settle(&store, Some(130));
        assert_eq!(
            store.read().changes_since(ViewKind::PageViews, 15),
            Err(Some(30)),
            "trimmed to the as_of minus the changelog's 100"
        );
        assert_eq!(
            store.read().changes_since(ViewKind::PageViews, 30),
            Ok(Vec::new())
        );
    }

    #[test]
    fn a_view_is_kept_in_the_changelog_from_the_as_of_it_was_first_followed_at() {
        let store = ViewStore::serving(1, 1_000);
        let a = page_view("/a", 0, 1, 1);
        let b = page_view("/b", 0, 1, 1);
        step(&store, 0, vec![(a.clone(), 5, 1)], Some(10));
        settle(&store, Some(10));
        assert_eq!(
            store.read().changes_since(ViewKind::PageViews, 0),
            Err(None),
            "not followed"
        );
        assert_eq!(store.read().recent_changes(ViewKind::PageViews, 0), vec![]);
        store.follow(ViewKind::PageViews);
        step(&store, 0, vec![(b.clone(), 12, 1)], Some(20));
        settle(&store, Some(20));
        let read = store.read();
        assert_eq!(
            read.changes_since(ViewKind::PageViews, 5),
            Err(Some(10)),
            "before it was followed"
        );
        let kept = read.changes_since(ViewKind::PageViews, 10).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0, 12);
        assert_eq!(kept[0].1.to_vec(), vec![(AnyRow::PageView(b), 1)]);
        assert_eq!(read.recent_changes(ViewKind::PageViews, 0), kept);
        assert_eq!(
            read.changes_since(ViewKind::Sessions, 10),
            Err(None),
            "never followed"
        );
    }

    #[test]
    fn a_followed_view_is_followed_again_without_waiting_for_a_publication() {
        let store = ViewStore::serving(1, 1_000);
        store.follow(ViewKind::PageViews);
        let _publishing = lock(&store.shared().publishing);
        let (done, finished) = std::sync::mpsc::channel();
        let follower = store.clone();
        std::thread::spawn(move || {
            follower.follow(ViewKind::PageViews);
            let _ = done.send(());
        });
        assert!(
            finished.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the second follow waited for the publishing lock"
        );
    }

    fn session(user: &str, start: u64, end: u64, pages: &[&str]) -> SessionRow {
        SessionRow {
            user_id: user.into(),
            session_start: start,
            session_end: end,
            pages_viewed: pages.len() as u64,
            page_sequence: pages.iter().map(|&page| page.into()).collect(),
        }
    }

    #[test]
    fn sessions_are_read_by_user_in_key_order() {
        let store = ViewStore::serving(1, 0);
        let short = session("u1", 10, 10, &["/a"]);
        let longer = session("u1", 10, 20, &["/a", "/b"]);
        let later = session("u1", 5_000, 5_000, &["/c"]);
        let other = session("u2", 0, 0, &["/a"]);
        let updates = [
            (later.clone(), 1, 1),
            (short.clone(), 1, 1),
            (other.clone(), 1, 1),
            (longer.clone(), 2, 1),
            (short.clone(), 2, -1),
        ];
        store.stash::<PageViewRow>(0, [], Some(3));
        store.stash::<FunnelRow>(0, [], Some(3));
        store.stash::<AlertRow>(0, [], Some(3));
        store.stash(0, updates, Some(3));
        settle(&store, Some(3));
        let read = store.read();
        let all = |_: &SessionRow| Visit::Take;
        assert_eq!(
            read.user_sessions("u1", Bound::Unbounded, all, 10),
            vec![longer.clone(), later.clone()]
        );
        assert_eq!(
            read.user_sessions("u1", Bound::Excluded(&longer), all, 10),
            vec![later.clone()]
        );
        assert_eq!(
            read.user_sessions(
                "u1",
                Bound::Unbounded,
                |row| {
                    if row.session_start < 1_000 {
                        Visit::Take
                    } else {
                        Visit::Stop
                    }
                },
                10
            ),
            vec![longer.clone()]
        );
        assert_eq!(
            read.user_sessions("u1", Bound::Unbounded, all, 1),
            vec![longer.clone()]
        );
        assert_eq!(read.user_sessions("u3", Bound::Unbounded, all, 10), vec![]);
        assert_eq!(read.all_sessions(), vec![longer, later, other]);
    }

    /// Upserts of page counts: `(page, window, views, users)` per step; no views deletes
    /// the page's row in the window.
    fn upsert_steps() -> impl Strategy<Value = Vec<Vec<(u8, u8, u64, u64)>>> {
        let upsert = (0..6_u8, 0..4_u8, 0..5_u64, 1..5_u64);
        prop::collection::vec(prop::collection::vec(upsert, 0..8), 1..12)
    }

    proptest! {
        #[test]
        fn rows_and_top_pages_match_a_sorted_reference(
            steps in upsert_steps(),
            published in prop::collection::vec(any::<bool>(), 12),
            changelog in any::<bool>(),
        ) {
            // Rows go to the partition of their hash, as the sinks route them, so a
            // window's old row and its replacement can sit in different partitions; steps
            // not `published` are published together with the next one.
            let store = if changelog { ViewStore::serving(2, 1_000) } else { ViewStore::new(2) };
            let mut current: BTreeMap<(u8, u8), PageViewRow> = BTreeMap::new();
            let mut frontier = Some(0);
            let last = steps.len() - 1;
            for (index, upserts) in steps.into_iter().enumerate() {
                let time = index as Time;
                let mut updates = [Vec::new(), Vec::new()];
                for (page, window, views, users) in upserts {
                    let row = page_view(&format!("/{page}"), u64::from(window) * 60_000, views, users);
                    let old = if views == 0 {
                        current.remove(&(page, window))
                    } else {
                        updates[(row.hashed() % 2) as usize].push((row.clone(), time, 1));
                        current.insert((page, window), row)
                    };
                    if let Some(old) = old {
                        updates[(old.hashed() % 2) as usize].push((old, time, -1));
                    }
                }
                if published[index] || index == last {
                    frontier = Some(time + 1);
                }
                for (partition, updates) in updates.into_iter().enumerate() {
                    step(&store, partition, updates, frontier);
                }
                if frontier != Some(time + 1) {
                    continue;
                }
                settle(&store, frontier);
                let read = store.read();
                let rows: Vec<PageViewRow> = current.values().cloned().collect();
                prop_assert_eq!(all_page_views(&read), rows.clone());
                for (index, row) in rows.iter().enumerate() {
                    let after = read.page_views(Bound::Excluded(row), |_| Visit::Take, 2);
                    let expected: Vec<PageViewRow> = rows.iter().skip(index + 1).take(2).cloned().collect();
                    prop_assert_eq!(after, expected);
                    let same_page = read.page_views(
                        Bound::Included(row),
                        |other| if other.page == row.page { Visit::Take } else { Visit::Stop },
                        usize::MAX,
                    );
                    let expected: Vec<PageViewRow> = rows[index..].iter().take_while(|other| other.page == row.page).cloned().collect();
                    prop_assert_eq!(same_page, expected);
                }
                for window in 0..3_u64 {
                    let window_start = window * 60_000;
                    for by_users in [false, true] {
                        let mut expected: Vec<PageViewRow> = current
                            .values()
                            .filter(|row| row.window_start == window_start)
                            .cloned()
                            .collect();
                        let metric = |row: &PageViewRow| if by_users { row.unique_users } else { row.view_count };
                        expected.sort_by(|a, b| metric(b).cmp(&metric(a)).then_with(|| a.page.cmp(&b.page)));
                        expected.truncate(3);
                        prop_assert_eq!(read.top_pages(window_start, by_users, 3), expected);
                    }
                }
                let latest = current.values().map(|row| row.window_start).max();
                prop_assert_eq!(read.latest_window(), latest);
            }
        }
    }
}
