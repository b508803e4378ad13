//! The rows of each view. Field order is key order, so the derived `Ord` sorts rows by key.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::page_sequence::PageSequence;

/// A row of `page_views_per_minute`, keyed by `(page, window_start)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PageViewRow {
    /// The page.
    pub page: CompactString,
    /// Window start, epoch ms.
    pub window_start: u64,
    /// Window end (exclusive), epoch ms.
    pub window_end: u64,
    /// Views of the page in the window.
    pub view_count: u64,
    /// Distinct users who viewed the page in the window.
    pub unique_users: u64,
}

/// A row of `user_sessions`, keyed by `(user_id, session_start)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionRow {
    /// The user.
    pub user_id: CompactString,
    /// Time of the session's first event, epoch ms.
    pub session_start: u64,
    /// Time of the session's last event, epoch ms.
    pub session_end: u64,
    /// Number of events in the session.
    pub pages_viewed: u64,
    /// Pages in event-time order, ties in arrival order (shared: a row is copied often
    /// on its way through the views and the store, its sequence never, and a session's
    /// next row shares the pages of its last).
    pub page_sequence: PageSequence,
}

/// A row of `checkout_funnel`, keyed by `(funnel_step, window_start)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FunnelRow {
    /// The step's name.
    pub funnel_step: CompactString,
    /// Window start, epoch ms.
    pub window_start: u64,
    /// Window end (exclusive), epoch ms.
    pub window_end: u64,
    /// Distinct users who visited the step's page in the window.
    pub unique_users: u64,
    /// Distinct users who visited steps 1..=k in order within the window.
    pub converted_users: u64,
}

/// A row of `alerts`: a rule whose condition holds for a page's window, keyed by
/// `(rule, page, window_start)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertRow {
    /// The rule's id.
    pub rule: CompactString,
    /// The page.
    pub page: CompactString,
    /// Window start, epoch ms.
    pub window_start: u64,
    /// Window end (exclusive), epoch ms.
    pub window_end: u64,
    /// The metric's value that satisfies the rule.
    pub value: u64,
    /// The rule's threshold.
    pub threshold: u64,
}
