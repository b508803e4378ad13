//! Result export: the current rows of every view, kept in process 0 at one shared `as_of`.
//!
//! Each view's updates are routed to one worker of process 0 and stashed until the view's frontier has
//! passed their time. The store's `as_of` is the least frontier over all views, and only
//! updates before it are applied, so a snapshot shows every view at exactly the same
//! logical time: the views are mutually consistent.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use differential_dataflow::{ExchangeData, VecCollection};
use foldhash::{HashMap, HashMapExt};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::rows::{AlertRow, FunnelRow, PageViewRow, SessionRow};
use crate::views::{Time, Views};

/// The current state of every view, shared with readers on other threads.
#[derive(Clone, Default)]
pub struct ViewStore {
    inner: Arc<Mutex<StoreInner>>,
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

struct StoreInner {
    as_of: Option<Time>,
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
                match self.rows.entry(row) {
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
        }
    }

    fn snapshot(&self) -> Vec<R> {
        let mut rows: Vec<R> = self
            .rows
            .iter()
            .flat_map(|(row, &count)| std::iter::repeat_n(row, usize::try_from(count).unwrap_or(0)))
            .cloned()
            .collect();
        rows.sort_unstable();
        rows
    }
}

impl StoreInner {
    fn advance(&mut self) {
        let frontiers = [
            self.page_views.frontier,
            self.sessions.frontier,
            self.funnel.frontier,
            self.alerts.frontier,
        ];
        let as_of = frontiers.into_iter().flatten().min();
        self.as_of = as_of;
        self.page_views.apply_before(as_of);
        self.sessions.apply_before(as_of);
        self.funnel.apply_before(as_of);
        self.alerts.apply_before(as_of);
    }
}

impl ViewStore {
    /// The logical time the store's rows reflect (see [`ViewSnapshot::as_of`]); starts at 0.
    pub fn as_of(&self) -> Option<Time> {
        self.lock().as_of
    }

    /// Every view's rows at the store's current `as_of`.
    pub fn snapshot(&self) -> ViewSnapshot {
        let inner = self.lock();
        ViewSnapshot {
            as_of: inner.as_of,
            page_views: inner.page_views.snapshot(),
            sessions: inner.sessions.snapshot(),
            funnel: inner.funnel.snapshot(),
            alerts: inner.alerts.snapshot(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for StoreInner {
    fn default() -> Self {
        Self {
            as_of: Some(0),
            page_views: ViewState::default(),
            sessions: ViewState::default(),
            funnel: ViewState::default(),
            alerts: ViewState::default(),
        }
    }
}

/// Installs one sink per view. Every update goes to one worker of process 0, the last
/// one, so that with several workers the store's upkeep stays off worker 0, which feeds
/// the input in batch mode; only that worker's sinks write to the store.
pub(crate) fn export(views: Views<'_>, store: &ViewStore, workers_per_process: usize) {
    let keeper = workers_per_process - 1;
    let keeps_store = views.page_views.inner.scope().index() == keeper;
    let store = keeps_store.then(|| store.clone());
    sink(views.page_views, keeper, store.clone(), |inner| {
        &mut inner.page_views
    });
    sink(views.sessions, keeper, store.clone(), |inner| {
        &mut inner.sessions
    });
    sink(views.funnel, keeper, store.clone(), |inner| {
        &mut inner.funnel
    });
    sink(views.alerts, keeper, store, |inner| &mut inner.alerts);
}

fn sink<R: ExchangeData + Hash>(
    view: VecCollection<'_, Time, R>,
    keeper: usize,
    store: Option<ViewStore>,
    select: fn(&mut StoreInner) -> &mut ViewState<R>,
) {
    let to_keeper = Exchange::new(move |_: &(R, Time, isize)| keeper as u64);
    view.inner
        .sink(to_keeper, "ExportView", move |(input, frontier)| {
            let mut updates = Vec::new();
            input.for_each_stamp(|_, containers| {
                for container in containers {
                    updates.append(container);
                }
            });
            if let Some(store) = &store {
                let mut inner = store.lock();
                let state = select(&mut inner);
                for (row, time, diff) in updates.drain(..) {
                    state.pending.entry(time).or_default().push((row, diff));
                }
                state.frontier = frontier.frontier().first().copied();
                inner.advance();
            }
        });
}
