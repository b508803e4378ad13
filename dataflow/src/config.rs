//! Configuration of the views: window sizes, session gap, funnel steps and retention.

use compact_str::CompactString;

use crate::views::Time;

/// One step of the checkout funnel: a name and the page that counts as a visit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunnelStep {
    /// The step's name in the `checkout_funnel` view (for example `browse`).
    pub name: CompactString,
    /// The page whose views count for this step (exact match, for example `/products`).
    pub page: CompactString,
}

/// Sizes and rules of the views. All durations are in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewConfig {
    /// Tumbling window of `page_views_per_minute` (default one minute).
    pub page_window_ms: u64,
    /// Tumbling window of `checkout_funnel` (default five minutes).
    pub funnel_window_ms: u64,
    /// Largest gap between two events of one session, inclusive (default 30 minutes).
    pub session_gap_ms: u64,
    /// State whose end is at or before `watermark - retention_ms` leaves the views
    /// (default 24 hours).
    pub retention_ms: u64,
    /// The funnel steps, in order (default browse, cart, checkout, purchase).
    pub funnel_steps: Vec<FunnelStep>,
}

impl Default for ViewConfig {
    fn default() -> Self {
        let step = |name: &str, page: &str| FunnelStep {
            name: name.into(),
            page: page.into(),
        };
        Self {
            page_window_ms: 60_000,
            funnel_window_ms: 300_000,
            session_gap_ms: 30 * 60_000,
            retention_ms: 24 * 3_600_000,
            funnel_steps: vec![
                step("browse", "/products"),
                step("cart", "/cart"),
                step("checkout", "/checkout"),
                step("purchase", "/confirmation"),
            ],
        }
    }
}

/// Epoch-aligned tumbling windows of one size, and the watermark at which each leaves
/// retention: the first watermark `w` with `window_end <= w - retention`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Windows {
    pub(crate) size_ms: u64,
    pub(crate) retention_ms: u64,
}

impl Windows {
    /// The start of the window that holds `time`.
    pub(crate) fn start(self, time: u64) -> u64 {
        time - time % self.size_ms
    }

    /// The end (exclusive) of the window starting at `start`.
    pub(crate) fn end(self, start: u64) -> u64 {
        start + self.size_ms
    }

    /// The watermark at which the window starting at `start` leaves the views.
    pub(crate) fn expiry(self, start: u64) -> Time {
        self.end(start).saturating_add(self.retention_ms)
    }

    /// The window's expiry, if it is still after `time`.
    pub(crate) fn next_expiry(self, start: u64, time: Time) -> Option<Time> {
        let expiry = self.expiry(start);
        (time < expiry).then_some(expiry)
    }
}
