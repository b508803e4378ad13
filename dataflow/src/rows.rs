//! The rows of each view. Field order is key order, so the derived `Ord` sorts rows by key.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A row of `page_views_per_minute`, keyed by `(page, window_start)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// on its way through the views and the store, its sequence never).
    pub page_sequence: Arc<[CompactString]>,
}

impl SessionRow {
    /// Every field but the page sequence, in field order.
    fn head(&self) -> (&CompactString, u64, u64, u64) {
        (
            &self.user_id,
            self.session_start,
            self.session_end,
            self.pages_viewed,
        )
    }
}

/// Hashes the key and the counts but not the page sequence, which is long and nearly
/// always implied by them: equal rows still hash equally.
impl Hash for SessionRow {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.head().hash(state);
    }
}

/// Field by field, as derived, except that two rows sharing one page sequence do not
/// compare its pages: a retraction usually carries the very sequence it retracts.
impl Ord for SessionRow {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head().cmp(&other.head()).then_with(|| {
            if Arc::ptr_eq(&self.page_sequence, &other.page_sequence) {
                std::cmp::Ordering::Equal
            } else {
                self.page_sequence.cmp(&other.page_sequence)
            }
        })
    }
}

impl PartialOrd for SessionRow {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SessionRow {
    fn eq(&self, other: &Self) -> bool {
        self.head() == other.head()
            && (Arc::ptr_eq(&self.page_sequence, &other.page_sequence)
                || self.page_sequence == other.page_sequence)
    }
}

impl Eq for SessionRow {}

/// A row of `checkout_funnel`, keyed by `(funnel_step, window_start)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn session(user: &str, start: u64, pages: &[String]) -> SessionRow {
        SessionRow {
            user_id: user.into(),
            session_start: start,
            session_end: start + 10,
            pages_viewed: pages.len() as u64,
            page_sequence: pages.iter().map(CompactString::from).collect(),
        }
    }

    /// The order a derived `Ord` would give: field by field, pages compared one by one.
    fn fields(row: &SessionRow) -> (&CompactString, u64, u64, u64, Vec<&str>) {
        let pages = row
            .page_sequence
            .iter()
            .map(CompactString::as_str)
            .collect();
        (
            &row.user_id,
            row.session_start,
            row.session_end,
            row.pages_viewed,
            pages,
        )
    }

    proptest! {
        #[test]
        fn session_rows_order_field_by_field_whether_or_not_they_share_pages(
            a in ("[ab]", 0u64..3, prop::collection::vec("[xyz]", 0..3)),
            b in ("[ab]", 0u64..3, prop::collection::vec("[xyz]", 0..3)),
        ) {
            let (a, b) = (session(&a.0, a.1, &a.2), session(&b.0, b.1, &b.2));
            prop_assert_eq!(a.cmp(&b), fields(&a).cmp(&fields(&b)));
            prop_assert_eq!(a == b, fields(&a) == fields(&b));
            let shared = a.clone();
            prop_assert!(Arc::ptr_eq(&shared.page_sequence, &a.page_sequence));
            prop_assert_eq!(shared.cmp(&a), std::cmp::Ordering::Equal);
            prop_assert_eq!(&shared, &a);
        }
    }
}
