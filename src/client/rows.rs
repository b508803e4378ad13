//! Rows as text: the columns of each kind of row, so that one definition gives both the
//! table (`query`, `alerts`, `status`) and the `name=value` line (`subscribe`, `alerts
//! watch`). Times are ISO-8601 UTC.

use std::io;

use clickflow_proto::v1::{
    AlertRow, AlertRule, Comparison, FunnelRow, PageViewRow, PartitionStatus, Row, SessionRow, row,
};

use super::{Column, Output, format_time, number, text};

/// A row with named columns.
pub trait Tabular {
    /// The columns, in order.
    const COLUMNS: &'static [Column];
    /// The cells, one per column.
    fn cells(&self) -> Vec<String>;
}

/// Writes `rows` as a table.
pub fn write_table<T: Tabular>(out: &mut Output, rows: &[T]) -> io::Result<()> {
    let cells: Vec<Vec<String>> = rows.iter().map(T::cells).collect();
    out.table(T::COLUMNS, &cells)
}

/// The row as `name=value` pairs; values with spaces (or none) are quoted.
pub fn fields<T: Tabular>(row: &T) -> String {
    T::COLUMNS
        .iter()
        .zip(row.cells())
        .map(|(column, cell)| {
            if cell.is_empty() || cell.contains(char::is_whitespace) || cell.contains('"') {
                format!("{}={cell:?}", column.name)
            } else {
                format!("{}={cell}", column.name)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A row of any view as `name=value` pairs.
pub fn row_fields(row: &Row) -> String {
    match &row.row {
        Some(row::Row::PageView(row)) => fields(row),
        Some(row::Row::Session(row)) => fields(row),
        Some(row::Row::Funnel(row)) => fields(row),
        Some(row::Row::Alert(row)) => fields(row),
        None => "(empty row)".to_owned(),
    }
}

impl Tabular for PageViewRow {
    const COLUMNS: &'static [Column] = &[
        text("page"),
        text("window_start"),
        text("window_end"),
        number("views"),
        number("users"),
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.page.clone(),
            format_time(self.window_start_ms),
            format_time(self.window_end_ms),
            self.view_count.to_string(),
            self.unique_users.to_string(),
        ]
    }
}

impl Tabular for SessionRow {
    const COLUMNS: &'static [Column] = &[
        text("user"),
        text("session_start"),
        text("session_end"),
        number("pages"),
        text("page_sequence"),
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.user_id.clone(),
            format_time(self.session_start_ms),
            format_time(self.session_end_ms),
            self.pages_viewed.to_string(),
            self.page_sequence.join(" > "),
        ]
    }
}

impl Tabular for FunnelRow {
    const COLUMNS: &'static [Column] = &[
        text("step"),
        text("window_start"),
        text("window_end"),
        number("users"),
        number("converted"),
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.funnel_step.clone(),
            format_time(self.window_start_ms),
            format_time(self.window_end_ms),
            self.unique_users.to_string(),
            self.converted_users.to_string(),
        ]
    }
}

impl Tabular for AlertRow {
    const COLUMNS: &'static [Column] = &[
        text("rule"),
        text("page"),
        text("window_start"),
        text("window_end"),
        number("value"),
        number("threshold"),
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.rule_id.clone(),
            self.page.clone(),
            format_time(self.window_start_ms),
            format_time(self.window_end_ms),
            self.value.to_string(),
            self.threshold.to_string(),
        ]
    }
}

impl Tabular for AlertRule {
    const COLUMNS: &'static [Column] = &[text("rule"), text("condition"), text("page_prefix")];

    fn cells(&self) -> Vec<String> {
        vec![
            self.rule_id.clone(),
            condition(self),
            self.page_prefix.clone(),
        ]
    }
}

/// `page_views_per_minute.view_count > 1000`.
pub fn condition(rule: &AlertRule) -> String {
    let comparison = match rule.comparison() {
        Comparison::Greater => ">",
        Comparison::GreaterOrEqual => ">=",
        Comparison::Less => "<",
        Comparison::LessOrEqual => "<=",
        Comparison::Equal => "==",
        Comparison::Unspecified => "?",
    };
    let lower = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .unwrap_or(name)
            .to_ascii_lowercase()
    };
    format!(
        "{}.{} {comparison} {}",
        lower(rule.view().as_str_name(), "VIEW_"),
        lower(rule.metric().as_str_name(), "METRIC_"),
        rule.threshold
    )
}

impl Tabular for PartitionStatus {
    const COLUMNS: &'static [Column] = &[
        text("topic"),
        number("partition"),
        number("worker"),
        number("next_offset"),
        number("high_watermark"),
        number("lag"),
        text("watermark"),
        text("idle"),
    ];

    fn cells(&self) -> Vec<String> {
        let known = |value: i64| {
            if value < 0 {
                "-".to_owned()
            } else {
                value.to_string()
            }
        };
        vec![
            self.topic.clone(),
            self.partition.to_string(),
            self.worker.to_string(),
            self.next_offset.to_string(),
            known(self.high_watermark),
            known(self.lag),
            if self.watermark_ms == 0 {
                "-".to_owned()
            } else {
                format_time(self.watermark_ms)
            },
            if self.idle { "idle" } else { "" }.to_owned(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_quote_values_with_spaces() {
        let session = SessionRow {
            user_id: "u 1".into(),
            session_start_ms: 0,
            session_end_ms: 1000,
            pages_viewed: 2,
            page_sequence: vec!["/a".into(), "/b".into()],
        };
        assert_eq!(
            fields(&session),
            "user=\"u 1\" session_start=1970-01-01T00:00:00.000Z \
             session_end=1970-01-01T00:00:01.000Z pages=2 page_sequence=\"/a > /b\""
        );
    }

    #[test]
    fn conditions_read_like_the_rule() {
        let rule = AlertRule {
            rule_id: "high_traffic".into(),
            view: 1,
            metric: 1,
            comparison: 1,
            threshold: 1000,
            page_prefix: String::new(),
        };
        assert_eq!(condition(&rule), "page_views_per_minute.view_count > 1000");
    }
}
