//! Result export: the current rows of every view, kept in process 0 at one shared `as_of`.
//!
//! Each view's updates are routed, by a hash of the row, to one of process 0's workers,
//! which keeps that partition of the rows; an update is stashed until it is before the
//! store's `as_of`, the least frontier over all views and partitions. Only then is it
//! applied, so a snapshot shows every view at exactly the same logical time: the views are
//! mutually consistent. Partitioning spreads the upkeep over all of process 0's workers.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use differential_dataflow::{ExchangeData, Hashable, VecCollection};
use foldhash::{HashMap, HashMapExt};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::multiset::add_to_counts;
use crate::rows::{AlertRow, FunnelRow, PageViewRow, SessionRow};
use crate::views::{Time, Views};

/// The current state of every view, shared with readers on other threads.
#[derive(Clone)]
pub struct ViewStore {
    partitions: Arc<Vec<Mutex<Partition>>>,
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

/// One worker's share of every view.
#[derive(Default)]
struct Partition {
    page_views: ViewState<PageViewRow>,
    sessions: ViewState<SessionRow>,
    funnel: ViewState<FunnelRow>,
    alerts: ViewState<AlertRow>,
}

struct ViewState<R> {
    /// Current rows and their multiplicities (sorted only when read).
    rows: HashMap<R, isize>,
    pending: BTreeMap<Time, Vec<(R, isize)>>,
    /// The view's input frontier; `None` when the view is complete.
    frontier: Option<Time>,
}

impl<R> Default for ViewState<R> {
    fn default() -> Self {
        Self {
            rows: HashMap::new(),
            pending: BTreeMap::new(),
            frontier: Some(0),
        }
    }
}

impl<R: Ord + Hash + Clone> ViewState<R> {
    fn apply_before(&mut self, as_of: Option<Time>) {
        while let Some(entry) = self.pending.first_entry() {
            if as_of.is_some_and(|as_of| *entry.key() >= as_of) {
                break;
            }
            for (row, diff) in entry.remove() {
                add_to_counts(&mut self.rows, row, diff);
            }
        }
    }

    /// Appends the current rows, each as often as its multiplicity.
    fn read_into(&self, rows: &mut Vec<R>) {
        rows.extend(
            self.rows
                .iter()
                .flat_map(|(row, &count)| {
                    std::iter::repeat_n(row, usize::try_from(count).unwrap_or(0))
                })
                .cloned(),
        );
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

    fn apply_before(&mut self, as_of: Option<Time>) {
        self.page_views.apply_before(as_of);
        self.sessions.apply_before(as_of);
        self.funnel.apply_before(as_of);
        self.alerts.apply_before(as_of);
    }
}

impl ViewStore {
    /// An empty store kept by `partitions` workers: pass the number of worker threads per
    /// process, so that process 0's workers keep it.
    pub fn new(partitions: usize) -> Self {
        let partitions = (0..partitions.max(1))
            .map(|_| Mutex::new(Partition::default()))
            .collect();
        Self {
            partitions: Arc::new(partitions),
        }
    }

    /// The logical time the store's rows reflect (see [`ViewSnapshot::as_of`]); starts at 0.
    pub fn as_of(&self) -> Option<Time> {
        self.partitions
            .iter()
            .filter_map(|partition| lock(partition).frontier())
            .min()
    }

    /// Every view's rows at the store's current `as_of`.
    pub fn snapshot(&self) -> ViewSnapshot {
        let mut partitions: Vec<_> = self.partitions.iter().map(lock).collect();
        let as_of = partitions
            .iter()
            .filter_map(|partition| partition.frontier())
            .min();
        let mut snapshot = ViewSnapshot {
            as_of,
            ..ViewSnapshot::default()
        };
        for partition in &mut partitions {
            partition.apply_before(as_of);
            partition.page_views.read_into(&mut snapshot.page_views);
            partition.sessions.read_into(&mut snapshot.sessions);
            partition.funnel.read_into(&mut snapshot.funnel);
            partition.alerts.read_into(&mut snapshot.alerts);
        }
        snapshot.page_views.sort_unstable();
        snapshot.sessions.sort_unstable();
        snapshot.funnel.sort_unstable();
        snapshot.alerts.sort_unstable();
        snapshot
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

fn sink<R: ExchangeData + Hash>(
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
                lock(&store.partitions[*index]).apply_before(as_of);
            }
        });
}
