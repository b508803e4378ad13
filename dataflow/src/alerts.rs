//! `alerts`: threshold rules, held as data, evaluated against the rows of the view they
//! watch.
//!
//! The view holds every `(rule, page, window_start)` whose condition holds now. Rules are a
//! collection like any other, so adding or removing a rule fires or clears its alerts
//! incrementally, and a late event that pushes a window over a threshold fires then. The
//! few rules are broadcast to every worker; each worker keeps the page-view rows that the
//! page-view operator made on it, and evaluates the rules against them. This is the join of
//! rows and rules, without arranging every row: a time's rule changes meet the rows as
//! they were before it, and its row changes meet the rules as they are after it, which
//! adds up to the change of the join. Rows and rules are kept with their multiplicities,
//! so the result does not depend on which worker a row's updates reach.

use std::collections::BTreeMap;

use compact_str::CompactString;
use differential_dataflow::{AsCollection, VecCollection};
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;

use crate::multiset::{add_to_counts, add_to_sorted_counts};
use crate::rows::{AlertRow, PageViewRow};
use crate::stash::{TimeStash, Waiting, hold, release};
use crate::views::Time;

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

/// Maintains `alerts`: every rule evaluated against every row of the view it watches.
pub(crate) fn alerts<'s>(
    page_views: VecCollection<'s, Time, PageViewRow>,
    rules: VecCollection<'s, Time, AlertRule>,
) -> VecCollection<'s, Time, AlertRow> {
    type AlertUpdates = Vec<(AlertRow, Time, isize)>;
    page_views
        .inner
        .binary_frontier::<_, CapacityContainerBuilder<AlertUpdates>, _, _, _, _>(
            rules.inner.broadcast(),
            Pipeline,
            Pipeline,
            "Alerts",
            |_capability, _info| {
                let mut evaluation = Evaluation::default();
                let mut held: Option<Capability<Time>> = None;
                let mut alerts = Vec::new();
                move |(row_input, row_frontier), (rule_input, rule_frontier), output| {
                    row_input.for_each(|capability, data| {
                        if hold(&mut held, &capability).is_some() {
                            evaluation.pending_rows.push(data);
                        }
                    });
                    rule_input.for_each(|capability, data| {
                        if hold(&mut held, &capability).is_some() {
                            evaluation.pending_rules.push(data);
                        }
                    });
                    release(
                        &mut evaluation,
                        &mut held,
                        |time| !row_frontier.less_equal(time) && !rule_frontier.less_equal(time),
                        &mut alerts,
                        output,
                    );
                }
            },
        )
        .as_collection()
}

/// One worker's rows and rules, and the changes waiting for the frontier.
#[derive(Default)]
struct Evaluation {
    rows: HashMap<PageViewRow, isize>,
    rules: BTreeMap<AlertRule, isize>,
    pending_rows: TimeStash<PageViewRow>,
    pending_rules: TimeStash<AlertRule>,
}

impl Waiting for Evaluation {
    type Row = AlertRow;

    fn next_time(&self) -> Option<Time> {
        let rows = self.pending_rows.first_time();
        let rules = self.pending_rules.first_time();
        rows.into_iter().chain(rules).min()
    }

    /// Applies the changes at `time`, appending the alerts' changes to `alerts`.
    fn process(&mut self, time: Time, alerts: &mut Vec<(AlertRow, Time, isize)>) {
        // The rule changes meet the rows before `time`, the row changes the rules after it.
        for (rule, diff) in self.pending_rules.take(time) {
            for (row, count) in &self.rows {
                alerts.extend(rule.evaluate(row).map(|alert| (alert, time, diff * count)));
            }
            add_to_sorted_counts(&mut self.rules, rule, diff);
        }
        for (row, diff) in self.pending_rows.take(time) {
            for (rule, count) in &self.rules {
                alerts.extend(rule.evaluate(&row).map(|alert| (alert, time, diff * count)));
            }
            add_to_counts(&mut self.rows, row, diff);
        }
    }
}
