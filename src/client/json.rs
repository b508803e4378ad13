//! The `--json` output: each message as a JSON object with the `.proto` field names (as
//! proto3's JSON mapping with `preserving_proto_field_name`), except that 64-bit integers
//! are JSON numbers, not strings, and every field is present (an unset message is
//! `null`). Enums are their `.proto` value names; a oneof is an object with the one field
//! that is set.

use clickflow_proto::v1::{
    AlertRow, AlertRule, AlertTransition, AsOf, CreateAlertRuleResponse, DeleteAlertRuleResponse,
    FunnelRow, GetStatusResponse, ListAlertRulesResponse, ListAlertsResponse, PageViewRow,
    PartitionStatus, Progress, QueryFunnelResponse, QueryPageViewsResponse, QuerySessionsResponse,
    Row, SessionRow, Snapshot, SubscribeResponse, TopPagesResponse, Update, UpdateBatch, row,
    subscribe_response,
};
use serde_json::{Value, json};

/// A message as JSON.
pub trait ToJson {
    /// The JSON object of the message.
    fn to_json(&self) -> Value;
}

impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::to_json)
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Value {
        self.iter().map(T::to_json).collect()
    }
}

impl ToJson for AsOf {
    fn to_json(&self) -> Value {
        let offsets: Vec<Value> = self
            .offsets
            .iter()
            .map(|offset| {
                json!({
                    "topic": offset.topic,
                    "partition": offset.partition,
                    "next_offset": offset.next_offset,
                })
            })
            .collect();
        json!({"frontier_ms": self.frontier_ms, "offsets": offsets})
    }
}

impl ToJson for PageViewRow {
    fn to_json(&self) -> Value {
        json!({
            "page": self.page,
            "window_start_ms": self.window_start_ms,
            "window_end_ms": self.window_end_ms,
            "view_count": self.view_count,
            "unique_users": self.unique_users,
        })
    }
}

impl ToJson for SessionRow {
    fn to_json(&self) -> Value {
        json!({
            "user_id": self.user_id,
            "session_start_ms": self.session_start_ms,
            "session_end_ms": self.session_end_ms,
            "pages_viewed": self.pages_viewed,
            "page_sequence": self.page_sequence,
        })
    }
}

impl ToJson for FunnelRow {
    fn to_json(&self) -> Value {
        json!({
            "funnel_step": self.funnel_step,
            "window_start_ms": self.window_start_ms,
            "window_end_ms": self.window_end_ms,
            "unique_users": self.unique_users,
            "converted_users": self.converted_users,
        })
    }
}

impl ToJson for AlertRow {
    fn to_json(&self) -> Value {
        json!({
            "rule_id": self.rule_id,
            "page": self.page,
            "window_start_ms": self.window_start_ms,
            "window_end_ms": self.window_end_ms,
            "value": self.value,
            "threshold": self.threshold,
        })
    }
}

impl ToJson for Row {
    fn to_json(&self) -> Value {
        match &self.row {
            Some(row::Row::PageView(row)) => json!({"page_view": row.to_json()}),
            Some(row::Row::Session(row)) => json!({"session": row.to_json()}),
            Some(row::Row::Funnel(row)) => json!({"funnel": row.to_json()}),
            Some(row::Row::Alert(row)) => json!({"alert": row.to_json()}),
            None => json!({}),
        }
    }
}

impl ToJson for Update {
    fn to_json(&self) -> Value {
        json!({"row": self.row.to_json(), "diff": self.diff})
    }
}

impl ToJson for Snapshot {
    fn to_json(&self) -> Value {
        json!({"as_of": self.as_of.to_json(), "rows": self.rows.to_json(), "more": self.more})
    }
}

impl ToJson for UpdateBatch {
    fn to_json(&self) -> Value {
        json!({"time_ms": self.time_ms, "updates": self.updates.to_json(), "more": self.more})
    }
}

impl ToJson for Progress {
    fn to_json(&self) -> Value {
        json!({"as_of": self.as_of.to_json()})
    }
}

impl ToJson for SubscribeResponse {
    fn to_json(&self) -> Value {
        match &self.message {
            Some(subscribe_response::Message::Snapshot(m)) => json!({"snapshot": m.to_json()}),
            Some(subscribe_response::Message::Updates(m)) => json!({"updates": m.to_json()}),
            Some(subscribe_response::Message::Progress(m)) => json!({"progress": m.to_json()}),
            None => json!({}),
        }
    }
}

impl ToJson for AlertRule {
    fn to_json(&self) -> Value {
        json!({
            "rule_id": self.rule_id,
            "view": self.view().as_str_name(),
            "metric": self.metric().as_str_name(),
            "comparison": self.comparison().as_str_name(),
            "threshold": self.threshold,
            "page_prefix": self.page_prefix,
        })
    }
}

impl ToJson for AlertTransition {
    fn to_json(&self) -> Value {
        json!({
            "alert": self.alert.to_json(),
            "state": self.state().as_str_name(),
            "time_ms": self.time_ms,
        })
    }
}

impl ToJson for QueryPageViewsResponse {
    fn to_json(&self) -> Value {
        json!({
            "as_of": self.as_of.to_json(),
            "rows": self.rows.to_json(),
            "next_page_token": self.next_page_token,
        })
    }
}

impl ToJson for TopPagesResponse {
    fn to_json(&self) -> Value {
        json!({
            "as_of": self.as_of.to_json(),
            "window_start_ms": self.window_start_ms,
            "rows": self.rows.to_json(),
        })
    }
}

impl ToJson for QuerySessionsResponse {
    fn to_json(&self) -> Value {
        json!({
            "as_of": self.as_of.to_json(),
            "rows": self.rows.to_json(),
            "next_page_token": self.next_page_token,
        })
    }
}

impl ToJson for QueryFunnelResponse {
    fn to_json(&self) -> Value {
        json!({
            "as_of": self.as_of.to_json(),
            "rows": self.rows.to_json(),
            "next_page_token": self.next_page_token,
        })
    }
}

impl ToJson for ListAlertsResponse {
    fn to_json(&self) -> Value {
        json!({
            "as_of": self.as_of.to_json(),
            "rows": self.rows.to_json(),
            "next_page_token": self.next_page_token,
        })
    }
}

impl ToJson for ListAlertRulesResponse {
    fn to_json(&self) -> Value {
        json!({"rules": self.rules.to_json()})
    }
}

impl ToJson for CreateAlertRuleResponse {
    fn to_json(&self) -> Value {
        json!({"rule": self.rule.to_json()})
    }
}

impl ToJson for DeleteAlertRuleResponse {
    fn to_json(&self) -> Value {
        json!({"rule": self.rule.to_json()})
    }
}

impl ToJson for PartitionStatus {
    fn to_json(&self) -> Value {
        json!({
            "topic": self.topic,
            "partition": self.partition,
            "worker": self.worker,
            "next_offset": self.next_offset,
            "high_watermark": self.high_watermark,
            "lag": self.lag,
            "watermark_ms": self.watermark_ms,
            "idle": self.idle,
        })
    }
}

impl ToJson for GetStatusResponse {
    fn to_json(&self) -> Value {
        json!({
            "as_of": self.as_of.to_json(),
            "partitions": self.partitions.to_json(),
            "events_counted": self.events_counted,
            "dead_letters": self.dead_letters,
            "workers": self.workers,
            "processes": self.processes,
            "subscribers": self.subscribers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_proto_field_names_and_numbers() {
        let message = SubscribeResponse {
            message: Some(subscribe_response::Message::Updates(UpdateBatch {
                time_ms: 60_000,
                updates: vec![Update {
                    row: Some(Row {
                        row: Some(row::Row::PageView(PageViewRow {
                            page: "/a".into(),
                            window_start_ms: 0,
                            window_end_ms: 60_000,
                            view_count: 3,
                            unique_users: 2,
                        })),
                    }),
                    diff: -1,
                }],
                more: true,
            })),
        };
        assert_eq!(
            message.to_json(),
            json!({"updates": {"time_ms": 60_000, "updates": [{"diff": -1, "row": {"page_view": {
                "page": "/a", "window_start_ms": 0, "window_end_ms": 60_000,
                "view_count": 3, "unique_users": 2,
            }}}], "more": true}})
        );
    }

    #[test]
    fn enums_are_their_value_names_and_unset_messages_null() {
        let rule = AlertRule {
            rule_id: "hot".into(),
            view: 1,
            metric: 2,
            comparison: 2,
            threshold: 5,
            page_prefix: "/p".into(),
        };
        assert_eq!(
            rule.to_json(),
            json!({"rule_id": "hot", "view": "VIEW_PAGE_VIEWS_PER_MINUTE",
                   "metric": "METRIC_UNIQUE_USERS", "comparison": "COMPARISON_GREATER_OR_EQUAL",
                   "threshold": 5, "page_prefix": "/p"})
        );
        assert_eq!(
            CreateAlertRuleResponse { rule: None }.to_json(),
            json!({"rule": null})
        );
    }
}
