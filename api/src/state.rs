//! What the services share: the view store, the ingest status, the alert rules, the
//! feed of view changes, and counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clickflow_dataflow::{FunnelStep, ViewConfig, ViewStore};
use clickflow_ingest::status::IngestStatus;
use tokio::sync::broadcast;

use crate::metrics::RequestDurations;
use crate::rules::AlertRules;
use crate::subscribe::FeedBatch;

/// Feed batches kept for subscribers that are behind; one that falls further behind is
/// cut off.
pub(crate) const FEED_BACKLOG: usize = 4096;

/// The services' shared state. Cloning shares it.
#[derive(Clone)]
pub struct ApiState {
    /// The views.
    pub store: ViewStore,
    /// Ingest status (offsets, lag, counters).
    pub status: IngestStatus,
    /// The alert rules.
    pub rules: AlertRules,
    /// Worker threads per process.
    pub workers: u32,
    /// Processes.
    pub processes: u32,
    /// Retention, to tell an expired alert from a cleared one.
    pub retention_ms: u64,
    /// The session gap, to tell when a session is final.
    pub session_gap_ms: u64,
    /// The funnel's steps, to refuse a step that is not one of them.
    pub funnel_steps: Vec<FunnelStep>,
    /// Messages buffered per subscriber before it is cut off.
    pub subscriber_buffer: usize,
    /// Encoded bytes buffered per subscriber before it is cut off.
    pub subscriber_buffer_bytes: usize,
    /// The size a subscription's snapshots and update batches are split at.
    pub subscription_message_bytes: usize,
    pub(crate) feed: broadcast::Sender<Arc<FeedBatch>>,
    pub(crate) durations: Arc<RequestDurations>,
    subscribers: Arc<AtomicUsize>,
}

impl ApiState {
    /// The state of a server over `store` (which must keep a changelog for
    /// subscriptions to resume).
    pub fn new(store: ViewStore, status: IngestStatus, rules: AlertRules) -> Self {
        Self {
            store,
            status,
            rules,
            workers: 1,
            processes: 1,
            retention_ms: 86_400_000,
            session_gap_ms: 1_800_000,
            funnel_steps: ViewConfig::default().funnel_steps,
            subscriber_buffer: 1024,
            subscriber_buffer_bytes: 4 << 20,
            subscription_message_bytes: 1 << 20,
            feed: broadcast::channel(FEED_BACKLOG).0,
            durations: Arc::default(),
            subscribers: Arc::default(),
        }
    }

    /// Subscribers connected now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// The API's metrics in Prometheus text (see [`crate::metrics`]).
    pub fn prometheus_text(&self) -> String {
        self.durations.prometheus_text(self.subscribers())
    }

    /// Counts a subscriber until the returned guard drops.
    pub(crate) fn subscriber(&self) -> SubscriberGuard {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        SubscriberGuard(Arc::clone(&self.subscribers))
    }
}

/// Counts one subscriber while it lives.
pub(crate) struct SubscriberGuard(Arc<AtomicUsize>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
