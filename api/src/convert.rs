//! Conversions between the dataflow's rows and rules and their `clickflow.v1` messages.

use clickflow_dataflow::{
    AlertRow, AlertRule, AnyRow, Comparison, FunnelRow, Metric, PageViewRow, SessionRow, Time,
    ViewName,
};
use clickflow_ingest::status::IngestStatus;
use clickflow_proto::v1;

/// The `AsOf` of a read at `as_of` (`None`: complete), with this process's input offsets.
pub fn as_of(as_of: Option<Time>, status: &IngestStatus) -> v1::AsOf {
    v1::AsOf {
        frontier_ms: as_of.unwrap_or(Time::MAX),
        offsets: status
            .offsets_before(as_of)
            .into_iter()
            .map(|(topic, partition, next_offset)| v1::PartitionOffset {
                topic,
                partition,
                next_offset,
            })
            .collect(),
    }
}

/// A page-view row as a message.
pub fn page_view(row: &PageViewRow) -> v1::PageViewRow {
    v1::PageViewRow {
        page: row.page.to_string(),
        window_start_ms: row.window_start,
        window_end_ms: row.window_end,
        view_count: row.view_count,
        unique_users: row.unique_users,
    }
}

/// A session row as a message.
pub fn session(row: &SessionRow) -> v1::SessionRow {
    v1::SessionRow {
        user_id: row.user_id.to_string(),
        session_start_ms: row.session_start,
        session_end_ms: row.session_end,
        pages_viewed: row.pages_viewed,
        page_sequence: row.page_sequence.iter().map(ToString::to_string).collect(),
    }
}

/// A funnel row as a message.
pub fn funnel(row: &FunnelRow) -> v1::FunnelRow {
    v1::FunnelRow {
        funnel_step: row.funnel_step.to_string(),
        window_start_ms: row.window_start,
        window_end_ms: row.window_end,
        unique_users: row.unique_users,
        converted_users: row.converted_users,
    }
}

/// An alert row as a message.
pub fn alert(row: &AlertRow) -> v1::AlertRow {
    v1::AlertRow {
        rule_id: row.rule.to_string(),
        page: row.page.to_string(),
        window_start_ms: row.window_start,
        window_end_ms: row.window_end,
        value: row.value,
        threshold: row.threshold,
    }
}

/// A row of any view as a message.
pub fn any_row(row: &AnyRow) -> v1::Row {
    let row = match row {
        AnyRow::PageView(row) => v1::row::Row::PageView(page_view(row)),
        AnyRow::Session(row) => v1::row::Row::Session(session(row)),
        AnyRow::Funnel(row) => v1::row::Row::Funnel(funnel(row)),
        AnyRow::Alert(row) => v1::row::Row::Alert(alert(row)),
    };
    v1::Row { row: Some(row) }
}

/// A rule as a message.
pub fn rule(rule: &AlertRule) -> v1::AlertRule {
    v1::AlertRule {
        rule_id: rule.rule_id.to_string(),
        view: match rule.view {
            ViewName::PageViewsPerMinute => v1::View::PageViewsPerMinute,
        } as i32,
        metric: match rule.metric {
            Metric::ViewCount => v1::Metric::ViewCount,
            Metric::UniqueUsers => v1::Metric::UniqueUsers,
        } as i32,
        comparison: match rule.comparison {
            Comparison::Greater => v1::Comparison::Greater,
            Comparison::GreaterOrEqual => v1::Comparison::GreaterOrEqual,
            Comparison::Less => v1::Comparison::Less,
            Comparison::LessOrEqual => v1::Comparison::LessOrEqual,
            Comparison::Equal => v1::Comparison::Equal,
        } as i32,
        threshold: rule.threshold,
        page_prefix: rule.page_prefix.to_string(),
    }
}
