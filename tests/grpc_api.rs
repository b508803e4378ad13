//! The gRPC API of a real `clickflow serve` (port 0) over the real Kafka: queries agree
//! with `clickflow batch` on the same events; a subscription's snapshot plus its updates
//! equals a fresh query; resuming continues without gap or duplicate; a final-only
//! subscription holds back open windows; alert rules fire and clear at run time and
//! outlive a restart; invalid requests fail with INVALID_ARGUMENT naming the field; health
//! and reflection answer.
//! (Cutting off a slow subscriber is tested in `api/src/subscribe.rs`, where the reader's
//! pace is under control; over a real connection, HTTP/2 buffers blur it.)
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clickflow_proto::v1;
use clickflow_proto::v1::clickflow_client::ClickflowClient;
use prost::Message;
use serde_json::Value;
use support::kafka::{bootstrap, create_topic, produce, unique_topic};
use support::pipeline::{Topics, batch, generate, produce_lines, settled_counts};
use support::run::TempDir;
use support::serve::Serve;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// How long the API may take to show what is expected.
const WAIT: Duration = Duration::from_secs(60);

/// Waits until every partition is idle and the views are read just past the largest
/// watermark: the final state, which no longer moves.
async fn settle(client: &mut ClickflowClient<Channel>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = client
            .get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        let largest = status
            .partitions
            .iter()
            .map(|p| p.watermark_ms)
            .max()
            .unwrap_or(0);
        let idle = !status.partitions.is_empty() && status.partitions.iter().all(|p| p.idle);
        if idle && status.as_of.as_ref().unwrap().frontier_ms == largest + 1 {
            return;
        }
        assert!(Instant::now() < deadline, "never settled: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs blocking test helpers (Kafka clients, the binary) from an async test.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

/// A running service over generated events, and what `batch` computes for them.
struct Fixture {
    serve: Serve,
    client: ClickflowClient<Channel>,
    dir: TempDir,
    topics: Topics,
    bootstrap: String,
}

impl Fixture {
    /// Produces `events` generated events, starts serve with `sets`, and waits until its
    /// output equals batch's.
    async fn start(label: &str, seed: u64, events: u64, sets: &[&str]) -> Fixture {
        let (serve, dir, topics, bootstrap) = blocking(|| {
            let bootstrap = bootstrap();
            let dir = TempDir::new(label).unwrap();
            let topics = Topics::create(&bootstrap, label);
            let lines = generate(&dir, seed, events);
            let expected = batch(&dir, &lines);
            produce_lines(&bootstrap, &topics.input, &lines);
            let mut settings = topics.serve_settings(&bootstrap);
            settings.extend(sets.iter().map(|set| set.to_string()));
            let serve = Serve::start(&["-w", "2"], &settings);
            let counts = settled_counts(&bootstrap, &topics.counts, &expected.counts);
            assert_eq!(counts, expected.counts, "{}", serve.log());
            (serve, dir, topics, bootstrap)
        });
        let mut client = ClickflowClient::connect(serve.api_address()).await.unwrap();
        settle(&mut client).await;
        Fixture {
            serve,
            client,
            dir,
            topics,
            bootstrap,
        }
    }

    /// The rows `batch` wrote to `file`.
    fn batch_rows(&self, file: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("batch").join(file))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The windows in which [`busy_pages`] holds, by `batch`: (page, window start).
    fn busy_windows(&self) -> Vec<(String, u64)> {
        self.batch_rows("page_views_per_minute.jsonl")
            .iter()
            .filter(|row| {
                row["page"].as_str().unwrap().starts_with("/page/1")
                    && row["view_count"].as_u64().unwrap() > 1
            })
            .map(|row| {
                (
                    row["page"].as_str().unwrap().to_owned(),
                    row["window_start"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

/// A rule that fires often: more than one view a minute of a page under `/page/1`.
fn busy_pages() -> v1::AlertRule {
    v1::AlertRule {
        rule_id: "busy-pages".into(),
        view: v1::View::PageViewsPerMinute as i32,
        metric: v1::Metric::ViewCount as i32,
        comparison: v1::Comparison::Greater as i32,
        threshold: 1,
        page_prefix: "/page/1".into(),
    }
}

/// The (page, window start) of rule `rule_id`'s current alerts.
async fn alerts_of(client: &mut ClickflowClient<Channel>, rule_id: &str) -> Vec<(String, u64)> {
    let response = client
        .list_alerts(v1::ListAlertsRequest {
            rule_id: rule_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    response
        .rows
        .iter()
        .map(|row| (row.page.clone(), row.window_start_ms))
        .collect()
}

/// Waits until rule `rule_id`'s alerts are `expected`.
async fn await_alerts(
    client: &mut ClickflowClient<Channel>,
    rule_id: &str,
    expected: &[(String, u64)],
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let alerts = alerts_of(client, rule_id).await;
        if alerts == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the alerts of {rule_id} never matched: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn page_view_json(row: &v1::PageViewRow) -> Value {
    serde_json::json!({"page": row.page, "window_start": row.window_start_ms, "window_end": row.window_end_ms, "view_count": row.view_count, "unique_users": row.unique_users})
}

fn session_json(row: &v1::SessionRow) -> Value {
    serde_json::json!({"user_id": row.user_id, "session_start": row.session_start_ms, "session_end": row.session_end_ms, "pages_viewed": row.pages_viewed, "page_sequence": row.page_sequence})
}

fn funnel_json(row: &v1::FunnelRow) -> Value {
    serde_json::json!({"funnel_step": row.funnel_step, "window_start": row.window_start_ms, "window_end": row.window_end_ms, "unique_users": row.unique_users, "converted_users": row.converted_users})
}

fn alert_json(row: &v1::AlertRow) -> Value {
    serde_json::json!({"rule": row.rule_id, "page": row.page, "window_start": row.window_start_ms, "window_end": row.window_end_ms, "value": row.value, "threshold": row.threshold})
}

/// Every page-view row, following the page tokens `limit` rows at a time.
async fn all_page_views(
    client: &mut ClickflowClient<Channel>,
    limit: u32,
) -> (Vec<v1::PageViewRow>, Vec<u64>) {
    let (mut rows, mut frontiers, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let response = client
            .query_page_views(v1::QueryPageViewsRequest {
                page_filter: Some(v1::query_page_views_request::PageFilter::PagePrefix(
                    String::new(),
                )),
                limit,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        frontiers.push(response.as_of.unwrap().frontier_ms);
        rows.extend(response.rows);
        if response.next_page_token.is_empty() {
            return (rows, frontiers);
        }
        token = response.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_agree_with_batch_at_one_as_of() {
    let mut f = Fixture::start("grpc-queries", 19, 3_000, &[]).await;
    let expected_page_views = f.batch_rows("page_views_per_minute.jsonl");
    let (rows, frontiers) = all_page_views(&mut f.client, 50).await;
    assert_eq!(
        rows.iter().map(page_view_json).collect::<Vec<_>>(),
        expected_page_views
    );
    assert!(
        frontiers.len() > 2 && frontiers.windows(2).all(|w| w[0] == w[1]),
        "{frontiers:?}"
    );

    let sessions = f.batch_rows("user_sessions.jsonl");
    for user in sessions
        .iter()
        .step_by(37)
        .map(|row| row["user_id"].as_str().unwrap().to_owned())
    {
        let response = f
            .client
            .query_sessions(v1::QuerySessionsRequest {
                user_id: user.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let expected: Vec<&Value> = sessions
            .iter()
            .filter(|row| row["user_id"] == user.as_str())
            .collect();
        let actual: Vec<Value> = response.rows.iter().map(session_json).collect();
        assert_eq!(
            actual.iter().collect::<Vec<_>>(),
            expected,
            "sessions of {user}"
        );
    }

    let funnel = f
        .client
        .query_funnel(v1::QueryFunnelRequest::default())
        .await
        .unwrap()
        .into_inner();
    let expected_funnel = f.batch_rows("checkout_funnel.jsonl");
    assert_eq!(
        funnel.rows.iter().map(funnel_json).collect::<Vec<_>>(),
        expected_funnel
    );
    // A page at a time; and one step's rows in a range of windows.
    let step = expected_funnel[0]["funnel_step"]
        .as_str()
        .unwrap()
        .to_owned();
    let step_windows: Vec<u64> = expected_funnel
        .iter()
        .filter(|row| row["funnel_step"] == step.as_str())
        .map(|row| row["window_start"].as_u64().unwrap())
        .collect();
    assert!(step_windows.len() >= 2, "{step_windows:?}");
    let later = v1::TimeRange {
        start_ms: step_windows[1],
        end_ms: 0,
    };
    for (funnel_step, range, limit) in [
        (String::new(), None, 3),
        (step.clone(), None, 1),
        (step.clone(), Some(later), 1),
    ] {
        let start_ms = range.map_or(0, |range| range.start_ms);
        let expected: Vec<&Value> = expected_funnel
            .iter()
            .filter(|row| {
                (funnel_step.is_empty() || row["funnel_step"] == funnel_step.as_str())
                    && row["window_start"].as_u64().unwrap() >= start_ms
            })
            .collect();
        assert!(!expected.is_empty(), "{funnel_step:?}");
        let (mut rows, mut page_token) = (Vec::new(), String::new());
        loop {
            let page = f
                .client
                .query_funnel(v1::QueryFunnelRequest {
                    range,
                    funnel_step: funnel_step.clone(),
                    limit,
                    page_token,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.rows.len() <= limit as usize);
            rows.extend(page.rows.iter().map(funnel_json));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(rows.iter().collect::<Vec<_>>(), expected, "{funnel_step:?}");
    }
    let alerts = f
        .client
        .list_alerts(v1::ListAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        alerts.rows.iter().map(alert_json).collect::<Vec<_>>(),
        f.batch_rows("alerts.jsonl")
    );
    assert_eq!(
        alerts.as_of.as_ref().unwrap().frontier_ms,
        frontiers[0],
        "one as_of across views"
    );

    // Top pages of the busiest window, by views and by users.
    let mut by_window: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for row in &expected_page_views {
        by_window
            .entry(row["window_start"].as_u64().unwrap())
            .or_default()
            .push(row);
    }
    let (window, mut window_rows) = by_window
        .into_iter()
        .max_by_key(|(_, rows)| rows.len())
        .unwrap();
    for (order, metric) in [
        (v1::TopPagesOrder::ViewCount, "view_count"),
        (v1::TopPagesOrder::UniqueUsers, "unique_users"),
    ] {
        window_rows.sort_by(|a, b| {
            b[metric]
                .as_u64()
                .cmp(&a[metric].as_u64())
                .then_with(|| a["page"].as_str().cmp(&b["page"].as_str()))
        });
        let top = f
            .client
            .top_pages(v1::TopPagesRequest {
                window_start_ms: window,
                order: order as i32,
                k: 5,
            })
            .await
            .unwrap()
            .into_inner();
        let expected: Vec<Value> = window_rows
            .iter()
            .take(5)
            .map(|row| (*row).clone())
            .collect();
        assert_eq!(
            top.rows.iter().map(page_view_json).collect::<Vec<_>>(),
            expected,
            "top by {metric}"
        );
    }

    // A final-only subscription holds back the windows the frontier has not passed.
    let mut final_only = f
        .client
        .subscribe(v1::SubscribeRequest {
            view: v1::View::PageViewsPerMinute as i32,
            snapshot: true,
            final_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(v1::subscribe_response::Message::Snapshot(snapshot)) =
        final_only.message().await.unwrap().unwrap().message
    else {
        panic!("no snapshot first");
    };
    let frontier = snapshot.as_of.unwrap().frontier_ms;
    let finals: Vec<Value> = expected_page_views
        .iter()
        .filter(|row| row["window_end"].as_u64().unwrap() <= frontier)
        .cloned()
        .collect();
    assert!(
        finals.len() < expected_page_views.len(),
        "the last window is still open"
    );
    let rows: Vec<Value> = snapshot
        .rows
        .iter()
        .map(|row| match &row.row {
            Some(v1::row::Row::PageView(row)) => page_view_json(row),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(rows, finals);

    // The as_of names the input offsets: everything produced was read.
    let status = f
        .client
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let offsets: i64 = status
        .as_of
        .unwrap()
        .offsets
        .iter()
        .map(|offset| offset.next_offset)
        .sum();
    assert_eq!(offsets, 3_000, "{:?}", status.partitions);
    assert_eq!(
        (status.workers, status.processes, status.partitions.len()),
        (2, 1, 4)
    );
    let dead: u64 = status.dead_letters.values().sum();
    assert_eq!(status.events_counted + dead, 3_000);
}

/// A subscriber's view of page views: rows with their multiplicity, and its frontier.
#[derive(Default, Clone)]
struct Replica {
    rows: BTreeMap<String, i64>,
    frontier: u64,
}

impl Replica {
    /// Applies one message; returns whether it was progress.
    fn apply(&mut self, message: v1::SubscribeResponse) -> bool {
        let row_key = |row: &v1::Row| match &row.row {
            Some(v1::row::Row::PageView(row)) => page_view_json(row).to_string(),
            other => panic!("not a page view: {other:?}"),
        };
        match message.message.unwrap() {
            v1::subscribe_response::Message::Snapshot(snapshot) => {
                for row in &snapshot.rows {
                    *self.rows.entry(row_key(row)).or_default() += 1;
                }
                false
            }
            v1::subscribe_response::Message::Updates(batch) => {
                assert!(
                    batch.time_ms >= self.frontier,
                    "update at {} before frontier {}",
                    batch.time_ms,
                    self.frontier
                );
                for update in &batch.updates {
                    let count = self
                        .rows
                        .entry(row_key(update.row.as_ref().unwrap()))
                        .or_default();
                    *count += update.diff;
                }
                self.rows.retain(|_, count| *count != 0);
                false
            }
            v1::subscribe_response::Message::Progress(progress) => {
                self.frontier = progress.as_of.unwrap().frontier_ms;
                true
            }
        }
    }

    /// Reads `stream` until its frontier reaches `frontier`.
    async fn follow_until(&mut self, stream: &mut Streaming<v1::SubscribeResponse>, frontier: u64) {
        let deadline = Instant::now() + WAIT;
        while self.frontier < frontier {
            assert!(
                Instant::now() < deadline,
                "stuck at {} before {frontier}",
                self.frontier
            );
            let message = tokio::time::timeout(WAIT, stream.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            self.apply(message);
        }
    }
}

async fn subscribe(
    client: &mut ClickflowClient<Channel>,
    snapshot: bool,
    resume_from_ms: u64,
) -> Streaming<v1::SubscribeResponse> {
    client
        .subscribe(v1::SubscribeRequest {
            view: v1::View::PageViewsPerMinute as i32,
            snapshot,
            resume_from_ms,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The frontier once ingestion has settled and every row of `expected` is there.
async fn settled_frontier(
    client: &mut ClickflowClient<Channel>,
    expected: usize,
) -> (u64, Vec<v1::PageViewRow>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (rows, frontiers) = all_page_views(client, 10_000).await;
        if rows.len() == expected {
            return (frontiers[0], rows);
        }
        assert!(
            Instant::now() < deadline,
            "{} rows, expected {expected}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_equal_queries_and_resume_without_gaps() {
    // Small buffers and messages: the snapshot comes in several messages, and the resumed
    // subscription starts with more messages than its buffer holds.
    let settings = [
        "api.subscriber_buffer=16",
        "api.subscription_message_bytes=2048",
    ];
    let mut f = Fixture::start("grpc-subscribe", 23, 2_000, &settings).await;
    let mut early = Replica::default();
    let mut stream = subscribe(&mut f.client, true, 0).await;
    let mut snapshot_messages = Vec::new();
    loop {
        let message = stream.message().await.unwrap().unwrap();
        let size = message.encoded_len();
        let Some(v1::subscribe_response::Message::Snapshot(snapshot)) = &message.message else {
            early.apply(message);
            break;
        };
        snapshot_messages.push((size, snapshot.more));
        early.apply(message);
    }
    let (last, earlier) = snapshot_messages.split_last().unwrap();
    assert!(
        !earlier.is_empty() && earlier.iter().all(|(_, more)| *more) && !last.1,
        "{snapshot_messages:?}"
    );
    assert!(
        snapshot_messages
            .iter()
            .all(|(size, _)| *size <= 2048 + 256),
        "{snapshot_messages:?}"
    );
    early.follow_until(&mut stream, 1).await;
    // More events arrive; the first subscriber follows a little, then leaves.
    let dir = TempDir::new("grpc-subscribe-more").unwrap();
    let more: Vec<Vec<u8>> = blocking(|| generate(&dir, 29, 6_000))
        .into_iter()
        .skip(2_000)
        .collect();
    // In small pieces: many steps, many updates (of sessions, too).
    blocking(|| {
        for piece in more.chunks(200) {
            produce_lines(&f.bootstrap, &f.topics.input, piece);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    early.follow_until(&mut stream, early.frontier + 1).await;
    drop(stream);
    let (resume_from, before) = (early.frontier, early.clone());

    // Another resumes from where it left off.
    let mut resumed = subscribe(&mut f.client, false, resume_from).await;
    let mut replica = before;
    let first_lines =
        blocking(|| generate(&TempDir::new("grpc-subscribe-all").unwrap(), 23, 2_000));
    let all_lines: Vec<Vec<u8>> = first_lines.into_iter().chain(more).collect();
    let expected = blocking(|| batch(&dir, &all_lines));
    let counts = blocking(|| settled_counts(&f.bootstrap, &f.topics.counts, &expected.counts));
    assert_eq!(counts, expected.counts);
    // Every partition goes idle and the frontier settles just past the last watermark.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (frontier, rows) = settled_frontier(&mut f.client, expected.counts.len()).await;
    replica.follow_until(&mut resumed, frontier).await;
    let queried: BTreeMap<String, i64> = rows
        .iter()
        .map(|row| (page_view_json(row).to_string(), 1))
        .collect();
    assert_eq!(
        replica.rows, queried,
        "snapshot + updates + resumed updates differ from a query at {frontier}"
    );

    let (_, log) = blocking(|| f.serve.stop());
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_rules_fire_and_clear_at_run_time_and_bad_requests_name_the_field() {
    let mut f = Fixture::start("grpc-rules", 31, 1_500, &[]).await;
    let rule = busy_pages();
    let mut transitions = f
        .client
        .subscribe_alerts(v1::SubscribeAlertsRequest {
            rule_id: "busy-pages".into(),
        })
        .await
        .unwrap()
        .into_inner();
    f.client
        .create_alert_rule(v1::CreateAlertRuleRequest {
            rule: Some(rule.clone()),
        })
        .await
        .unwrap();
    let expected = f.busy_windows();
    assert!(!expected.is_empty());
    await_alerts(&mut f.client, "busy-pages", &expected).await;
    let rules = f
        .client
        .list_alert_rules(v1::ListAlertRulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rules
            .rules
            .iter()
            .map(|r| r.rule_id.as_str())
            .collect::<Vec<_>>(),
        ["busy-pages", "high_traffic"]
    );

    f.client
        .delete_alert_rule(v1::DeleteAlertRuleRequest {
            rule_id: "busy-pages".into(),
        })
        .await
        .unwrap();
    let mut states: BTreeMap<(String, u64), Vec<i32>> = BTreeMap::new();
    while states.len() < expected.len() || states.values().any(|s| s.len() < 2) {
        let transition = tokio::time::timeout(WAIT, transitions.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let alert = transition.alert.unwrap();
        states
            .entry((alert.page, alert.window_start_ms))
            .or_default()
            .push(transition.state);
    }
    let fired_then_cleared = vec![v1::AlertState::Fired as i32, v1::AlertState::Cleared as i32];
    assert!(
        states.values().all(|s| *s == fired_then_cleared),
        "{states:?}"
    );
    assert_eq!(states.keys().cloned().collect::<Vec<_>>(), expected);

    // Bad requests.
    let code_and_message = |status: tonic::Status| (status.code(), status.message().to_owned());
    let mut c = f.client.clone();
    let invalid = |field: &str, result: (Code, String)| {
        assert_eq!(result.0, Code::InvalidArgument, "{field}: {}", result.1);
        assert!(result.1.contains(field), "{field}: {}", result.1);
    };
    invalid(
        "page_filter",
        code_and_message(
            c.query_page_views(v1::QueryPageViewsRequest::default())
                .await
                .unwrap_err(),
        ),
    );
    invalid(
        "limit",
        code_and_message(
            c.query_page_views(v1::QueryPageViewsRequest {
                page_filter: Some(v1::query_page_views_request::PageFilter::Page("/a".into())),
                limit: 20_000,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
    );
    invalid(
        "page_token",
        code_and_message(
            c.query_page_views(v1::QueryPageViewsRequest {
                page_filter: Some(v1::query_page_views_request::PageFilter::Page("/a".into())),
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
    );
    invalid(
        "range",
        code_and_message(
            c.query_funnel(v1::QueryFunnelRequest {
                range: Some(v1::TimeRange {
                    start_ms: 10,
                    end_ms: 5,
                }),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
    );
    let (code, message) = code_and_message(
        c.query_funnel(v1::QueryFunnelRequest {
            funnel_step: "nosuch".into(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(
        message.contains("funnel_step") && message.contains("browse, cart, checkout, purchase"),
        "{message}"
    );
    invalid(
        "k",
        code_and_message(
            c.top_pages(v1::TopPagesRequest {
                k: 5_000,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
    );
    invalid(
        "user_id",
        code_and_message(
            c.query_sessions(v1::QuerySessionsRequest::default())
                .await
                .unwrap_err(),
        ),
    );
    invalid(
        "view",
        code_and_message(
            c.subscribe(v1::SubscribeRequest::default())
                .await
                .unwrap_err(),
        ),
    );
    invalid(
        "rule.rule_id",
        code_and_message(
            c.create_alert_rule(v1::CreateAlertRuleRequest {
                rule: Some(v1::AlertRule {
                    rule_id: "no spaces".into(),
                    ..rule.clone()
                }),
            })
            .await
            .unwrap_err(),
        ),
    );
    invalid(
        "rule.metric",
        code_and_message(
            c.create_alert_rule(v1::CreateAlertRuleRequest {
                rule: Some(v1::AlertRule {
                    metric: 0,
                    ..rule.clone()
                }),
            })
            .await
            .unwrap_err(),
        ),
    );
    let exists = c
        .create_alert_rule(v1::CreateAlertRuleRequest {
            rule: Some(v1::AlertRule {
                rule_id: "high_traffic".into(),
                ..rule.clone()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(exists.code(), Code::AlreadyExists);
    let missing = c
        .delete_alert_rule(v1::DeleteAlertRuleRequest {
            rule_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let too_old = c
        .subscribe(v1::SubscribeRequest {
            view: v1::View::PageViewsPerMinute as i32,
            resume_from_ms: 1,
            ..Default::default()
        })
        .await;
    let too_old = match too_old {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(too_old.code(), Code::OutOfRange, "{too_old:?}");

    // Health and reflection, as grpcurl uses them.
    let channel = Channel::from_shared(f.serve.api_address())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "clickflow.v1.Clickflow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Both versions of reflection list the services, as grpcurl asks for them.
    macro_rules! listed_services {
        ($version:ident) => {{
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            let request = tonic_reflection::pb::$version::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut responses = ServerReflectionClient::new(channel.clone())
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            format!("{:?}", responses.message().await.unwrap().unwrap())
        }};
    }
    for listed in [listed_services!(v1), listed_services!(v1alpha)] {
        assert!(
            listed.contains("clickflow.v1.Clickflow") && listed.contains("grpc.health.v1.Health"),
            "{listed}"
        );
    }
}

/// Rules created and deleted at run time are kept in the rules' log: a restarted service
/// has the same rules, and they fire over the replayed input. A record the service
/// cannot read stops its start, with the record's position.
#[tokio::test(flavor = "multi_thread")]
async fn alert_rules_outlive_a_restart_and_an_unreadable_log_stops_the_start() {
    let mut f = Fixture::start("grpc-rule-log", 37, 1_500, &[]).await;
    let expected = f.busy_windows();
    assert!(!expected.is_empty());
    // The built-in rule fires on these events, so that its deletion shows.
    assert!(
        f.batch_rows("alerts.jsonl")
            .iter()
            .any(|row| row["rule"] == "high_traffic")
    );
    f.client
        .create_alert_rule(v1::CreateAlertRuleRequest {
            rule: Some(busy_pages()),
        })
        .await
        .unwrap();
    let high_traffic = f
        .client
        .delete_alert_rule(v1::DeleteAlertRuleRequest {
            rule_id: "high_traffic".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .rule
        .unwrap();
    let Fixture {
        serve,
        dir: _dir,
        topics,
        bootstrap,
        ..
    } = f;
    let (stopped, log) = blocking(|| serve.stop());
    assert!(stopped, "{log}");

    let settings = topics.serve_settings(&bootstrap);
    let restarted = blocking(|| Serve::start(&["-w", "2"], &settings));
    let mut client = ClickflowClient::connect(restarted.api_address())
        .await
        .unwrap();
    let rules = client
        .list_alert_rules(v1::ListAlertRulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert_eq!(rules, [busy_pages()], "{}", restarted.log());
    await_alerts(&mut client, "busy-pages", &expected).await;
    settle(&mut client).await;
    assert_eq!(alerts_of(&mut client, &high_traffic.rule_id).await, []);
    let (stopped, log) = blocking(|| restarted.stop());
    assert!(stopped, "{log}");

    let unreadable = unique_topic("grpc-rule-log-bad");
    blocking(|| {
        create_topic(&bootstrap, &unreadable, 1, true);
        produce(
            &bootstrap,
            &unreadable,
            &[(Some(b"r".to_vec()), b"{\"created\":1}".to_vec())],
        );
    });
    let mut broken_settings = settings;
    broken_settings.push(format!("kafka.rules_topic=\"{unreadable}\""));
    let mut broken = blocking(|| Serve::start(&["-w", "1"], &broken_settings));
    let deadline = Instant::now() + WAIT;
    while broken.running() {
        assert!(
            Instant::now() < deadline,
            "still running:\n{}",
            broken.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (succeeded, log) = broken.stop();
    assert!(!succeeded, "{log}");
    assert!(
        log.contains(&format!(
            "alert rules topic {unreadable}: the record at partition 0, offset 0: not a rule change"
        )),
        "{log}"
    );
}
