//! Configuration of the views: window sizes, session gap, funnel steps and retention.

use compact_str::CompactString;

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

/// The start of the tumbling window of size `size` that holds `time` (epoch-aligned).
pub(crate) fn window_start(time: u64, size: u64) -> u64 {
    time - time % size
}
