//! `alerts`: threshold rules, held as data, joined with the views they watch.
//!
//! The view holds every `(rule, page, window_start)` whose condition holds now. Rules are a
//! collection like any other, so adding or removing a rule fires or clears its alerts
//! incrementally, and a late event that pushes a window over a threshold fires then. The
//! few rules are replicated over a fixed number of page buckets so that the join is spread
//! over all workers instead of landing on one.

use compact_str::CompactString;
use differential_dataflow::{Hashable, VecCollection};
use serde::{Deserialize, Serialize};

use crate::rows::{AlertRow, PageViewRow};
use crate::views::Time;

/// The number of page buckets the rule join is spread over.
const BUCKETS: u64 = 64;

/// The view a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ViewName {
    /// `page_views_per_minute`.
    PageViewsPerMinute,
}

/// The value of a row that a rule compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// `view_count`.
    ViewCount,
    /// `unique_users`.
    UniqueUsers,
}

/// How a metric is compared with the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Comparison {
    /// `value > threshold`.
    Greater,
    /// `value >= threshold`.
    GreaterOrEqual,
    /// `value < threshold`.
    Less,
    /// `value <= threshold`.
    LessOrEqual,
    /// `value == threshold`.
    Equal,
}

impl Comparison {
    fn holds(self, value: u64, threshold: u64) -> bool {
        match self {
            Self::Greater => value > threshold,
            Self::GreaterOrEqual => value >= threshold,
            Self::Less => value < threshold,
            Self::LessOrEqual => value <= threshold,
            Self::Equal => value == threshold,
        }
    }
}

/// A threshold rule: `view.metric comparison threshold` for pages starting with `page_prefix`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertRule {
    /// The rule's id, reported in every alert it raises.
    pub rule_id: CompactString,
    /// The view watched.
    pub view: ViewName,
    /// The value compared.
    pub metric: Metric,
    /// The comparison.
    pub comparison: Comparison,
    /// The threshold.
    pub threshold: u64,
    /// Only pages with this prefix are watched (empty: all pages).
    pub page_prefix: CompactString,
}

impl AlertRule {
    /// The built-in rule: `page_views_per_minute.view_count > threshold` (1000 by default).
    pub fn high_traffic(threshold: u64) -> Self {
        Self {
            rule_id: "high_traffic".into(),
            view: ViewName::PageViewsPerMinute,
            metric: Metric::ViewCount,
            comparison: Comparison::Greater,
            threshold,
            page_prefix: CompactString::default(),
        }
    }

    /// The alert this rule raises for `row`, if its condition holds.
    fn evaluate(&self, row: &PageViewRow) -> Option<AlertRow> {
        let value = match self.metric {
            Metric::ViewCount => row.view_count,
            Metric::UniqueUsers => row.unique_users,
        };
        (row.page.starts_with(self.page_prefix.as_str())
            && self.comparison.holds(value, self.threshold))
        .then(|| AlertRow {
            rule: self.rule_id.clone(),
            page: row.page.clone(),
            window_start: row.window_start,
            window_end: row.window_end,
            value,
            threshold: self.threshold,
        })
    }
}

/// Maintains `alerts`: every rule joined with every row of the view it watches.
pub(crate) fn alerts<'s>(
    page_views: VecCollection<'s, Time, PageViewRow>,
    rules: VecCollection<'s, Time, AlertRule>,
) -> VecCollection<'s, Time, AlertRow> {
    let rows = page_views.map(|row| (row.page.hashed() % BUCKETS, row));
    let rules = rules.flat_map(|rule| (0..BUCKETS).map(move |bucket| (bucket, rule.clone())));
    rows.join_map(rules, |_bucket, row, rule| rule.evaluate(row))
        .flat_map(|alert| alert)
}
