//! Wiring: the input collection of admitted events in, the four views out.

use clickflow_events::Event;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::ProbeHandle;

use crate::alerts::{AlertRule, alerts};
use crate::config::{ViewConfig, Windows};
use crate::funnel::checkout_funnel;
use crate::page_views::page_views_per_minute;
use crate::rows::{AlertRow, FunnelRow, PageViewRow, SessionRow};
use crate::sessions::user_sessions;
use crate::store::{ViewStore, export};

/// Logical time: the watermark (epoch ms) at which an update takes effect.
pub type Time = u64;

/// An admitted event and its position in arrival order (for tie-breaking equal times).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ArrivedEvent {
    /// The event.
    pub event: Event,
    /// Arrival order: the line number of a file, or the offset within a partition.
    pub arrival: u64,
}

/// The four views, as differential collections.
pub struct Views<'s> {
    /// `page_views_per_minute`.
    pub page_views: VecCollection<'s, Time, PageViewRow>,
    /// `user_sessions`.
    pub sessions: VecCollection<'s, Time, SessionRow>,
    /// `checkout_funnel`.
    pub funnel: VecCollection<'s, Time, FunnelRow>,
    /// `alerts`.
    pub alerts: VecCollection<'s, Time, AlertRow>,
}

/// Builds every view over `events`, with alert `rules` as a collection of their own.
pub fn build_views<'s>(
    events: VecCollection<'s, Time, ArrivedEvent>,
    rules: VecCollection<'s, Time, AlertRule>,
    config: &ViewConfig,
) -> Views<'s> {
    let windows = |size_ms| Windows {
        size_ms,
        retention_ms: config.retention_ms,
    };
    let page_views = page_views_per_minute(events.clone(), windows(config.page_window_ms));
    let sessions = user_sessions(events.clone(), config.session_gap_ms, config.retention_ms);
    let funnel = checkout_funnel(
        events,
        &config.funnel_steps,
        windows(config.funnel_window_ms),
    );
    let alerts = alerts(page_views.clone(), rules);
    Views {
        page_views,
        sessions,
        funnel,
        alerts,
    }
}

impl Views<'_> {
    /// Attaches `probe` to every view, so a worker can tell when they have caught up.
    pub fn probe_with(self, probe: &ProbeHandle<Time>) -> Self {
        Views {
            page_views: self.page_views.probe_with(probe),
            sessions: self.sessions.probe_with(probe),
            funnel: self.funnel.probe_with(probe),
            alerts: self.alerts.probe_with(probe),
        }
    }

    /// Routes every view to process 0 and keeps its current state in `store` there.
    pub fn export(self, store: &ViewStore) {
        export(self, store);
    }
}
