//! The unary queries: every view by key range, top pages of a window, and the status.
//! Each answer is read from the view store at one `as_of` (all views consistent) and
//! carries it. Pages of a long answer continue after the last key of the previous page
//! (`next_page_token`), each page at its own `as_of`.

use std::ops::Bound;

use clickflow_dataflow::{AlertRow, FunnelRow, PageSequence, PageViewRow, SessionRow, Visit};
use clickflow_events::DeadLetterReason;
use clickflow_proto::v1;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::convert;
use crate::error::ApiError;
use crate::rules::validate_rule_id;
use crate::state::ApiState;

/// Rows per page when the request says 0.
const DEFAULT_LIMIT: u32 = 1000;
/// The most rows per page.
const MAX_LIMIT: u32 = 10_000;
/// The most pages of a top-k answer.
const MAX_K: u32 = 1000;
/// The longest page, user or prefix in a request.
const MAX_KEY_BYTES: usize = 4096;

/// `QueryPageViews`.
pub fn page_views(
    state: &ApiState,
    request: v1::QueryPageViewsRequest,
) -> Result<v1::QueryPageViewsResponse, ApiError> {
    let limit = limit(request.limit)?;
    let (start, end) = range(request.range)?;
    let (page, exact) = match request.page_filter {
        Some(v1::query_page_views_request::PageFilter::Page(page)) if !page.is_empty() => {
            (page, true)
        }
        Some(v1::query_page_views_request::PageFilter::Page(_)) => {
            return Err(ApiError::invalid("page", "empty"));
        }
        Some(v1::query_page_views_request::PageFilter::PagePrefix(prefix)) => (prefix, false),
        None => return Err(ApiError::invalid("page_filter", "give page or page_prefix")),
    };
    key_length(&page, if exact { "page" } else { "page_prefix" })?;
    let after: Option<(String, u64)> = token(&request.page_token)?;
    let from = match &after {
        Some((page, window_start)) => Bound::Excluded(page_view_key(page, *window_start, u64::MAX)),
        None => Bound::Included(page_view_key(&page, if exact { start } else { 0 }, 0)),
    };
    let read = state.store.read();
    let rows = read.page_views(
        as_ref(&from),
        |row| match () {
            () if !row.page.starts_with(page.as_str()) || (exact && row.page != page) => {
                Visit::Stop
            }
            () if in_range(row.window_start, start, end) => Visit::Take,
            () if exact && end.is_some_and(|end| row.window_start >= end) => Visit::Stop,
            () => Visit::Skip,
        },
        limit + 1,
    );
    let (rows, next) = page_of(rows, limit, |row| (row.page.to_string(), row.window_start));
    Ok(v1::QueryPageViewsResponse {
        as_of: Some(convert::as_of(read.as_of(), &state.status)),
        rows: rows.iter().map(convert::page_view).collect(),
        next_page_token: next,
    })
}

/// `TopPages`.
pub fn top_pages(
    state: &ApiState,
    request: v1::TopPagesRequest,
) -> Result<v1::TopPagesResponse, ApiError> {
    let k = match request.k {
        0 => 10,
        k if k <= MAX_K => k,
        k => return Err(ApiError::invalid("k", format!("{k} is more than {MAX_K}"))),
    } as usize;
    let by_users = match v1::TopPagesOrder::try_from(request.order) {
        Ok(v1::TopPagesOrder::Unspecified | v1::TopPagesOrder::ViewCount) => false,
        Ok(v1::TopPagesOrder::UniqueUsers) => true,
        Err(_) => {
            return Err(ApiError::invalid(
                "order",
                format!("unknown value {}", request.order),
            ));
        }
    };
    let read = state.store.read();
    let window = match request.window_start_ms {
        0 => read.latest_window(),
        start => Some(start),
    };
    let rows = window
        .map(|window| read.top_pages(window, by_users, k))
        .unwrap_or_default();
    Ok(v1::TopPagesResponse {
        as_of: Some(convert::as_of(read.as_of(), &state.status)),
        window_start_ms: window.unwrap_or(0),
        rows: rows.iter().map(convert::page_view).collect(),
    })
}

/// `QuerySessions`.
pub fn sessions(
    state: &ApiState,
    request: v1::QuerySessionsRequest,
) -> Result<v1::QuerySessionsResponse, ApiError> {
    if request.user_id.is_empty() {
        return Err(ApiError::invalid("user_id", "required"));
    }
    key_length(&request.user_id, "user_id")?;
    let limit = limit(request.limit)?;
    let (start, end) = range(request.range)?;
    let after: Option<(String, u64)> = token(&request.page_token)?;
    let user = request.user_id;
    let bound = |user: &str, session_start: u64, rest: u64| SessionRow {
        user_id: user.into(),
        session_start,
        session_end: rest,
        pages_viewed: rest,
        page_sequence: PageSequence::default(),
    };
    let from = match &after {
        Some((user, session_start)) => Bound::Excluded(bound(user, *session_start, u64::MAX)),
        None => Bound::Included(bound(&user, start, 0)),
    };
    let read = state.store.read();
    let rows = read.user_sessions(
        &user,
        as_ref(&from),
        |row| match () {
            () if row.user_id != user.as_str()
                || end.is_some_and(|end| row.session_start >= end) =>
            {
                Visit::Stop
            }
            () => Visit::Take,
        },
        limit + 1,
    );
    let (rows, next) = page_of(rows, limit, |row| {
        (row.user_id.to_string(), row.session_start)
    });
    Ok(v1::QuerySessionsResponse {
        as_of: Some(convert::as_of(read.as_of(), &state.status)),
        rows: rows.iter().map(convert::session).collect(),
        next_page_token: next,
    })
}

/// `QueryFunnel`.
pub fn funnel(
    state: &ApiState,
    request: v1::QueryFunnelRequest,
) -> Result<v1::QueryFunnelResponse, ApiError> {
    key_length(&request.funnel_step, "funnel_step")?;
    let steps = &state.funnel_steps;
    if !request.funnel_step.is_empty()
        && !steps
            .iter()
            .any(|step| step.name == request.funnel_step.as_str())
    {
        let names: Vec<&str> = steps.iter().map(|step| step.name.as_str()).collect();
        return Err(ApiError::invalid(
            "funnel_step",
            format!(
                "no step {:?}; the steps are {}",
                request.funnel_step,
                names.join(", ")
            ),
        ));
    }
    let limit = limit(request.limit)?;
    let (start, end) = range(request.range)?;
    let after: Option<(String, u64)> = token(&request.page_token)?;
    let step = request.funnel_step;
    let bound = |step: &str, window_start: u64, rest: u64| FunnelRow {
        funnel_step: step.into(),
        window_start,
        window_end: rest,
        unique_users: rest,
        converted_users: rest,
    };
    let from = match &after {
        Some((step, window_start)) => Bound::Excluded(bound(step, *window_start, u64::MAX)),
        None if step.is_empty() => Bound::Unbounded,
        None => Bound::Included(bound(&step, start, 0)),
    };
    let read = state.store.read();
    let rows = read.funnel(
        as_ref(&from),
        |row| match () {
            () if !step.is_empty()
                && (row.funnel_step != step.as_str()
                    || end.is_some_and(|end| row.window_start >= end)) =>
            {
                Visit::Stop
            }
            () if in_range(row.window_start, start, end) => Visit::Take,
            () => Visit::Skip,
        },
        limit + 1,
    );
    let (rows, next) = page_of(rows, limit, |row| {
        (row.funnel_step.to_string(), row.window_start)
    });
    Ok(v1::QueryFunnelResponse {
        as_of: Some(convert::as_of(read.as_of(), &state.status)),
        rows: rows.iter().map(convert::funnel).collect(),
        next_page_token: next,
    })
}

/// `ListAlerts`.
pub fn alerts(
    state: &ApiState,
    request: v1::ListAlertsRequest,
) -> Result<v1::ListAlertsResponse, ApiError> {
    if !request.rule_id.is_empty() {
        validate_rule_id(&request.rule_id, "rule_id")?;
    }
    key_length(&request.page_prefix, "page_prefix")?;
    let limit = limit(request.limit)?;
    let (start, end) = range(request.range)?;
    let after: Option<(String, String, u64)> = token(&request.page_token)?;
    let bound = |rule: &str, page: &str, window_start: u64, rest: u64| AlertRow {
        rule: rule.into(),
        page: page.into(),
        window_start,
        window_end: rest,
        value: rest,
        threshold: rest,
    };
    let from = match &after {
        Some((rule, page, window_start)) => {
            Bound::Excluded(bound(rule, page, *window_start, u64::MAX))
        }
        None => Bound::Included(bound(&request.rule_id, "", 0, 0)),
    };
    let read = state.store.read();
    let rows = read.alerts(
        as_ref(&from),
        |row| match () {
            () if !request.rule_id.is_empty() && row.rule != request.rule_id.as_str() => {
                Visit::Stop
            }
            () if row.page.starts_with(request.page_prefix.as_str())
                && in_range(row.window_start, start, end) =>
            {
                Visit::Take
            }
            () => Visit::Skip,
        },
        limit + 1,
    );
    let (rows, next) = page_of(rows, limit, |row| {
        (row.rule.to_string(), row.page.to_string(), row.window_start)
    });
    Ok(v1::ListAlertsResponse {
        as_of: Some(convert::as_of(read.as_of(), &state.status)),
        rows: rows.iter().map(convert::alert).collect(),
        next_page_token: next,
    })
}

/// `GetStatus`.
pub fn status(state: &ApiState) -> v1::GetStatusResponse {
    let as_of = state.store.as_of();
    let status = &state.status;
    let (events_counted, dead_letters) = status.cluster_counters();
    v1::GetStatusResponse {
        as_of: Some(convert::as_of(as_of, status)),
        partitions: status
            .cluster_partitions()
            .into_iter()
            .map(|((topic, partition), p)| v1::PartitionStatus {
                topic,
                partition,
                worker: u32::try_from(p.worker).unwrap_or(u32::MAX),
                next_offset: p.next_offset,
                high_watermark: p.high_watermark.unwrap_or(-1),
                lag: p.lag().unwrap_or(-1),
                watermark_ms: p.watermark.unwrap_or(0),
                idle: p.idle,
            })
            .collect(),
        events_counted,
        dead_letters: DeadLetterReason::ALL
            .iter()
            .zip(dead_letters)
            .map(|(reason, count)| (reason.as_str().to_owned(), count))
            .collect(),
        workers: state.workers,
        processes: state.processes,
        subscribers: u32::try_from(state.subscribers()).unwrap_or(u32::MAX),
    }
}

fn page_view_key(page: &str, window_start: u64, rest: u64) -> PageViewRow {
    PageViewRow {
        page: page.into(),
        window_start,
        window_end: rest,
        view_count: rest,
        unique_users: rest,
    }
}

fn as_ref<R>(bound: &Bound<R>) -> Bound<&R> {
    bound.as_ref()
}

fn limit(limit: u32) -> Result<usize, ApiError> {
    match limit {
        0 => Ok(DEFAULT_LIMIT as usize),
        limit if limit <= MAX_LIMIT => Ok(limit as usize),
        limit => Err(ApiError::invalid(
            "limit",
            format!("{limit} is more than {MAX_LIMIT}"),
        )),
    }
}

/// The window starts a range covers: `start..end`, `end` `None` for no upper bound.
fn range(range: Option<v1::TimeRange>) -> Result<(u64, Option<u64>), ApiError> {
    let range = range.unwrap_or_default();
    let end = (range.end_ms != 0).then_some(range.end_ms);
    if end.is_some_and(|end| end < range.start_ms) {
        return Err(ApiError::invalid(
            "range",
            format!(
                "end_ms {} is before start_ms {}",
                range.end_ms, range.start_ms
            ),
        ));
    }
    Ok((range.start_ms, end))
}

fn in_range(time: u64, start: u64, end: Option<u64>) -> bool {
    time >= start && end.is_none_or(|end| time < end)
}

fn key_length(key: &str, field: &'static str) -> Result<(), ApiError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::invalid(
            field,
            format!("longer than {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The key a page token carries (`None` for an empty token).
fn token<K: DeserializeOwned>(token: &str) -> Result<Option<K>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(token)
        .map(Some)
        .map_err(|_| ApiError::invalid("page_token", "not a token from a previous response"))
}

/// The first `limit` of `rows` (read with one extra) and the token that continues after
/// them, if there is more.
fn page_of<R, K: Serialize>(
    mut rows: Vec<R>,
    limit: usize,
    key: impl Fn(&R) -> K,
) -> (Vec<R>, String) {
    if rows.len() <= limit {
        return (rows, String::new());
    }
    rows.truncate(limit);
    let next = rows
        .last()
        .map(|row| serde_json::to_string(&key(row)).unwrap_or_default())
        .unwrap_or_default();
    (rows, next)
}
