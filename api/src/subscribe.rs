//! Subscriptions: the feed of view changes, `Subscribe` and `SubscribeAlerts`.
//!
//! One feed task reads the store's changelog every few milliseconds and broadcasts each
//! view's new updates, by time, with the new `as_of`. Every subscriber has its own task
//! that filters the feed and writes to a buffer towards its client, bounded both in
//! messages and in bytes. A view's feed messages are encoded once, by the first subscriber
//! that takes them whole (no key prefix, not final-only), and shared by all such
//! subscribers; the others encode their own. A subscriber that falls behind (its buffer
//! is full, or the feed has moved past what it has read) is cut off with
//! `RESOURCE_EXHAUSTED`; ingestion never waits for subscribers.
//!
//! A subscription starts with a snapshot at the store's `as_of` `S` (or, when resuming
//! from `R`, with the changelog's updates in `[R, S)`), then sends from the feed exactly
//! the updates at times at or after `S`: no gap and no duplicate.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use clickflow_dataflow::{
    AlertRow, AlertState, AnyRow, Time, TimedUpdates, ViewKind, alert_transitions,
};
use clickflow_proto::{EncodedSubscribeResponse, v1};
use prost::Message;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::debug;

use crate::convert;
use crate::error::ApiError;
use crate::state::ApiState;

/// The least time between two reads of the store by the feed: publications that come
/// closer together (a catch-up publishes in chunks) go out in one batch, so that hundreds
/// of subscribers get a few hundred messages a second at most.
const FEED_SPACING: Duration = Duration::from_millis(5);

/// Every view's updates between two reads of the store.
#[derive(Debug)]
pub(crate) struct FeedBatch {
    /// The `as_of` these updates bring the views to.
    pub as_of: v1::AsOf,
    /// Per view (in `ViewKind` order), the updates at times in `[from, as_of)` by time.
    pub changes: [Vec<TimedUpdates>; 4],
    /// The progress message to `as_of`.
    progress: EncodedSubscribeResponse,
    /// Per view, `changes` as update batches, encoded when first asked for.
    encoded: [OnceLock<Vec<(Time, EncodedSubscribeResponse)>>; 4],
}

impl FeedBatch {
    /// The batch of `changes` that brings the views to `as_of`.
    pub(crate) fn new(as_of: v1::AsOf, changes: [Vec<TimedUpdates>; 4]) -> Self {
        Self {
            progress: progress(as_of.clone()).into(),
            as_of,
            changes,
            encoded: Default::default(),
        }
    }

    /// Every update batch of `view`, with its time, encoded (once, for all subscribers).
    fn encoded_updates(&self, view: ViewKind) -> &[(Time, EncodedSubscribeResponse)] {
        self.encoded[view as usize].get_or_init(|| {
            self.changes[view as usize]
                .iter()
                .filter_map(|(time, updates)| {
                    update_batch(*time, updates, &mut |_, _| true)
                        .map(|message| (*time, message.into()))
                })
                .collect()
        })
    }
}

/// A message in a subscriber's buffer, with its encoded size (what it holds of the
/// buffer's byte budget).
type Queued<T> = (Result<T, Status>, usize);

/// The stream a subscriber reads: its buffer's receiving end, which gives the bytes of each
/// message back to the buffer's budget as the client takes it.
pub struct Subscription<T> {
    messages: ReceiverStream<Queued<T>>,
    queued_bytes: Arc<AtomicUsize>,
}

impl<T> Stream for Subscription<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.messages).poll_next(context).map(|next| {
            next.map(|(message, size)| {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                message
            })
        })
    }
}

/// A subscriber's buffer: the sending end, for its task, and the stream for its client.
fn buffer<T>(state: &ApiState) -> (Outbox<T>, Subscription<T>) {
    let (sender, receiver) = mpsc::channel(state.subscriber_buffer.max(2));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let outbox = Outbox {
        sender,
        queued_bytes: Arc::clone(&queued_bytes),
        max_bytes: state.subscriber_buffer_bytes,
    };
    let subscription = Subscription {
        messages: ReceiverStream::new(receiver),
        queued_bytes,
    };
    (outbox, subscription)
}

/// Reads the store's changelog when it publishes and broadcasts the changes, until the
/// views are complete.
pub async fn run_feed(state: ApiState) {
    let published = Arc::new(Notify::new());
    let notify = Arc::clone(&published);
    // A publication while the feed is busy leaves a permit: the next wait returns at once.
    state.store.on_publication(move |_| notify.notify_one());
    let mut from = state.store.read().as_of().unwrap_or(0);
    loop {
        published.notified().await;
        let batch = {
            let read = state.store.read();
            let as_of = read.as_of();
            if as_of == Some(from) {
                continue;
            }
            let changes = ViewKind::ALL.map(|view| read.recent_changes(view, from));
            FeedBatch::new(convert::as_of(as_of, &state.status), changes)
        };
        from = batch.as_of.frontier_ms;
        // No subscriber is no error.
        let _ = state.feed.send(Arc::new(batch));
        if from == Time::MAX {
            return;
        }
        tokio::time::sleep(FEED_SPACING).await;
    }
}

/// Starts a `Subscribe`.
pub fn subscribe(
    state: &ApiState,
    request: v1::SubscribeRequest,
) -> Result<Subscription<EncodedSubscribeResponse>, ApiError> {
    let view = match v1::View::try_from(request.view) {
        Ok(v1::View::PageViewsPerMinute) => ViewKind::PageViews,
        Ok(v1::View::UserSessions) => ViewKind::Sessions,
        Ok(v1::View::CheckoutFunnel) => ViewKind::Funnel,
        Ok(v1::View::Alerts) => ViewKind::Alerts,
        _ => return Err(ApiError::invalid("view", "required: one of the four views")),
    };
    if request.key_prefix.len() > 4096 {
        return Err(ApiError::invalid("key_prefix", "longer than 4096 bytes"));
    }
    if request.snapshot && request.resume_from_ms != 0 {
        return Err(ApiError::invalid(
            "resume_from_ms",
            "give snapshot or resume_from_ms, not both",
        ));
    }
    if request.final_only && request.resume_from_ms != 0 {
        return Err(ApiError::invalid(
            "resume_from_ms",
            "a final_only subscription cannot resume (the rows it held back are gone)",
        ));
    }
    let whole_feed = request.key_prefix.is_empty() && !request.final_only;
    let prefix = request.key_prefix;
    let keep = move |row: &AnyRow| key_of(row).starts_with(prefix.as_str());
    let mut final_only = request.final_only.then(|| FinalOnly {
        session_gap_ms: state.session_gap_ms,
        held: BTreeMap::new(),
    });
    // Follow the view and listen first, then read: every change after the read is in the
    // feed.
    state.store.follow(view);
    let mut feed = state.feed.subscribe();
    let mut first = Vec::new();
    let sent_until = {
        let read = state.store.read();
        let as_of = read.as_of();
        let frontier = as_of.unwrap_or(Time::MAX);
        if request.resume_from_ms != 0 {
            let changes = read
                .changes_since(view, request.resume_from_ms)
                .map_err(|kept_from| ApiError::ResumeTooOld { kept_from })?;
            first.extend(update_batches(
                &changes,
                request.resume_from_ms,
                &mut |row, _| keep(row),
            ));
        } else if request.snapshot || final_only.is_some() {
            let mut rows: Vec<AnyRow> =
                read.all(view).into_iter().filter(|row| keep(row)).collect();
            if let Some(final_only) = final_only.as_mut() {
                rows.retain(|row| final_only.pass(row, 1, frontier));
            }
            if request.snapshot {
                first.push(message(v1::subscribe_response::Message::Snapshot(
                    v1::Snapshot {
                        as_of: Some(convert::as_of(as_of, &state.status)),
                        rows: rows.iter().map(convert::any_row).collect(),
                    },
                )));
            }
        }
        if request.resume_from_ms > frontier {
            // The client has seen more than the store has (from a server since restarted
            // and replaying): it hears nothing until the store is past what it has seen.
            request.resume_from_ms
        } else {
            first.push(progress(convert::as_of(as_of, &state.status)));
            frontier
        }
    };
    let (mut out, subscription) = buffer(state);
    let guard = state.subscriber();
    tokio::spawn(async move {
        let _guard = guard;
        let mut sent_until = sent_until;
        for message in first {
            if !out.send(message.into()) {
                return;
            }
        }
        loop {
            let Some(batch) = next_batch(&mut feed, &mut out).await else {
                return;
            };
            if batch.as_of.frontier_ms <= sent_until {
                continue;
            }
            let updates: Vec<EncodedSubscribeResponse> = if whole_feed {
                batch
                    .encoded_updates(view)
                    .iter()
                    .filter(|(time, _)| *time >= sent_until)
                    .map(|(_, message)| message.clone())
                    .collect()
            } else {
                let frontier = batch.as_of.frontier_ms;
                let mut updates = update_batches(
                    &batch.changes[view as usize],
                    sent_until,
                    &mut |row, diff| {
                        keep(row)
                            && final_only
                                .as_mut()
                                .is_none_or(|final_only| final_only.pass(row, diff, sent_until))
                    },
                );
                if let Some(released) = final_only
                    .as_mut()
                    .map(|final_only| final_only.release(frontier))
                {
                    let released: Vec<TimedUpdates> =
                        vec![(frontier.saturating_sub(1), released.into())];
                    updates.extend(update_batches(&released, 0, &mut |_, _| true));
                }
                updates.into_iter().map(Into::into).collect()
            };
            for message in updates.into_iter().chain([batch.progress.clone()]) {
                if !out.send(message) {
                    return;
                }
            }
            sent_until = batch.as_of.frontier_ms;
        }
    });
    Ok(subscription)
}

/// Starts a `SubscribeAlerts`.
pub fn subscribe_alerts(
    state: &ApiState,
    request: v1::SubscribeAlertsRequest,
) -> Result<Subscription<v1::AlertTransition>, ApiError> {
    if !request.rule_id.is_empty() {
        crate::rules::validate_rule_id(&request.rule_id, "rule_id")?;
    }
    state.store.follow(ViewKind::Alerts);
    let mut feed = state.feed.subscribe();
    let (mut out, subscription) = buffer(state);
    let guard = state.subscriber();
    let retention_ms = state.retention_ms;
    tokio::spawn(async move {
        let _guard = guard;
        loop {
            let Some(batch) = next_batch(&mut feed, &mut out).await else {
                return;
            };
            let updates: Vec<(AlertRow, Time, isize)> = batch.changes[ViewKind::Alerts as usize]
                .iter()
                .flat_map(|(time, updates)| {
                    updates.iter().filter_map(move |(row, diff)| match row {
                        AnyRow::Alert(row) => Some((row.clone(), *time, *diff)),
                        _ => None,
                    })
                })
                .collect();
            for transition in alert_transitions(&updates, retention_ms) {
                if !request.rule_id.is_empty() && transition.row.rule != request.rule_id.as_str() {
                    continue;
                }
                let state = match transition.state {
                    AlertState::Fired => v1::AlertState::Fired,
                    AlertState::Cleared => v1::AlertState::Cleared,
                };
                let message = v1::AlertTransition {
                    alert: Some(convert::alert(&transition.row)),
                    state: state as i32,
                    time_ms: transition.time,
                };
                if !out.send(message) {
                    return;
                }
            }
        }
    });
    Ok(subscription)
}

/// A final-only subscription's filter: rows whose window (or session) the frontier has not
/// passed yet are held back, netted, and released once it has; after that, their
/// corrections (late events within retention) pass like any update.
struct FinalOnly {
    session_gap_ms: u64,
    held: BTreeMap<AnyRow, isize>,
}

impl FinalOnly {
    /// The frontier at which `row` is final: its window's end; a session's end plus the
    /// gap, plus one (an event exactly `gap` later still joins it).
    fn final_at(&self, row: &AnyRow) -> Time {
        match row {
            AnyRow::PageView(row) => row.window_end,
            AnyRow::Funnel(row) => row.window_end,
            AnyRow::Alert(row) => row.window_end,
            AnyRow::Session(row) => row
                .session_end
                .saturating_add(self.session_gap_ms)
                .saturating_add(1),
        }
    }

    /// Whether an update passes now (its row is final at `frontier`); if not, it is held.
    fn pass(&mut self, row: &AnyRow, diff: isize, frontier: Time) -> bool {
        if self.final_at(row) <= frontier {
            return true;
        }
        let count = self.held.entry(row.clone()).or_default();
        *count += diff;
        if *count == 0 {
            self.held.remove(row);
        }
        false
    }

    /// The held rows that are final at `frontier`, with their multiplicities.
    fn release(&mut self, frontier: Time) -> Vec<(AnyRow, isize)> {
        let (ready, held): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(row, _)| self.final_at(row) <= frontier);
        self.held = held;
        ready.into_iter().collect()
    }
}

/// The next feed batch; `None` when the feed has ended or the subscriber fell so far
/// behind that it was cut off.
async fn next_batch<T: Message>(
    feed: &mut broadcast::Receiver<Arc<FeedBatch>>,
    out: &mut Outbox<T>,
) -> Option<Arc<FeedBatch>> {
    match feed.recv().await {
        Ok(batch) => Some(batch),
        Err(broadcast::error::RecvError::Lagged(missed)) => {
            out.cut_off(format!("fell {missed} feed batches behind"));
            None
        }
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

/// The bounded buffer towards one client: at most `subscriber_buffer` messages and
/// `max_bytes` encoded bytes (one message alone may be larger).
struct Outbox<T> {
    sender: mpsc::Sender<Queued<T>>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl<T: Message> Outbox<T> {
    /// Queues `message`; `false` when the client left or was cut off for being behind.
    fn send(&mut self, message: T) -> bool {
        let size = message.encoded_len();
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        // The last slot is kept for the error that cuts a slow client off.
        if self.sender.capacity() <= 1 || (queued > 0 && queued + size > self.max_bytes) {
            self.cut_off("the client reads too slowly".to_owned());
            return false;
        }
        self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        self.sender.try_send((Ok(message), size)).is_ok()
    }

    fn cut_off(&mut self, why: String) {
        debug!(%why, "subscriber cut off");
        let error = Status::resource_exhausted(format!("subscriber cut off: {why}"));
        let _ = self.sender.try_send((Err(error), 0));
    }
}

/// The key a subscription's `key_prefix` filters on.
fn key_of(row: &AnyRow) -> &str {
    match row {
        AnyRow::PageView(row) => &row.page,
        AnyRow::Session(row) => &row.user_id,
        AnyRow::Funnel(row) => &row.funnel_step,
        AnyRow::Alert(row) => &row.page,
    }
}

/// One `UpdateBatch` message per time at or after `from` with updates that `pass` lets
/// through.
fn update_batches(
    changes: &[TimedUpdates],
    from: Time,
    pass: &mut impl FnMut(&AnyRow, isize) -> bool,
) -> Vec<v1::SubscribeResponse> {
    changes
        .iter()
        .filter(|(time, _)| *time >= from)
        .filter_map(|(time, updates)| update_batch(*time, updates, pass))
        .collect()
}

/// The `UpdateBatch` message of the `updates` at `time` that `pass` lets through; `None`
/// if none does.
fn update_batch(
    time: Time,
    updates: &[(AnyRow, isize)],
    pass: &mut impl FnMut(&AnyRow, isize) -> bool,
) -> Option<v1::SubscribeResponse> {
    let updates: Vec<v1::Update> = updates
        .iter()
        .filter(|(row, diff)| pass(row, *diff))
        .map(|(row, diff)| v1::Update {
            row: Some(convert::any_row(row)),
            diff: *diff as i64,
        })
        .collect();
    (!updates.is_empty()).then(|| {
        message(v1::subscribe_response::Message::Updates(v1::UpdateBatch {
            time_ms: time,
            updates,
        }))
    })
}

fn progress(as_of: v1::AsOf) -> v1::SubscribeResponse {
    message(v1::subscribe_response::Message::Progress(v1::Progress {
        as_of: Some(as_of),
    }))
}

fn message(message: v1::subscribe_response::Message) -> v1::SubscribeResponse {
    v1::SubscribeResponse {
        message: Some(message),
    }
}

#[cfg(test)]
mod tests {
    use clickflow_dataflow::{PageViewRow, RuleChanges, ViewStore};
    use clickflow_ingest::status::IngestStatus;
    use tokio_stream::StreamExt;

    use super::*;
    use crate::rules::AlertRules;

    fn batch(time: Time) -> Arc<FeedBatch> {
        batch_of_pages(time, &["/a"])
    }

    /// A feed batch to `time + 1` with one page-view update at `time` per page.
    fn batch_of_pages(time: Time, pages: &[&str]) -> Arc<FeedBatch> {
        let updates: Vec<(AnyRow, isize)> = pages
            .iter()
            .map(|page| {
                let row = PageViewRow {
                    page: (*page).into(),
                    window_start: 0,
                    window_end: 60_000,
                    view_count: time,
                    unique_users: 1,
                };
                (AnyRow::PageView(row), 1)
            })
            .collect();
        Arc::new(FeedBatch::new(
            v1::AsOf {
                frontier_ms: time + 1,
                offsets: Vec::new(),
            },
            [
                vec![(time, updates.into())],
                Vec::new(),
                Vec::new(),
                Vec::new(),
            ],
        ))
    }

    /// Feeds `batches` batches to two subscribers of `state`, one of which reads along
    /// while the other reads nothing; then returns what the one that did not read got, up
    /// to the end of its stream (which must come: it is cut off), and checks that the
    /// other was left subscribed.
    async fn slow_and_reader(
        state: &ApiState,
        batches: u64,
    ) -> Vec<Result<EncodedSubscribeResponse, Status>> {
        let request = v1::SubscribeRequest {
            view: v1::View::PageViewsPerMinute as i32,
            ..Default::default()
        };
        let mut slow = subscribe(state, request.clone()).unwrap();
        let mut reader = subscribe(state, request).unwrap();
        let mut read = 0;
        for time in 1..=batches {
            state.feed.send(batch(time)).unwrap();
            // The reader keeps up: an update batch and a progress per feed batch.
            while read < 1 + 2 * time {
                reader.next().await.unwrap().unwrap();
                read += 1;
            }
        }
        let mut slow_messages = Vec::new();
        let cut_off = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(message) = slow.next().await {
                slow_messages.push(message);
            }
        });
        cut_off.await.expect("the slow subscriber is cut off");
        assert_eq!(state.subscribers(), 1, "only the reader is left");
        let status = slow_messages.last().unwrap().as_ref().unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        slow_messages
    }

    fn state() -> ApiState {
        ApiState::new(
            ViewStore::serving(1, 60_000),
            IngestStatus::default(),
            AlertRules::new(RuleChanges::default(), []),
        )
    }

    /// The pages of an update batch's updates, or the frontier of a progress message.
    fn pages_or_frontier(message: EncodedSubscribeResponse) -> Result<Vec<String>, u64> {
        match message.message().unwrap().message {
            Some(v1::subscribe_response::Message::Updates(batch)) => Ok(batch
                .updates
                .into_iter()
                .map(|update| match update.row.and_then(|row| row.row) {
                    Some(v1::row::Row::PageView(row)) => row.page,
                    other => panic!("not a page view: {other:?}"),
                })
                .collect()),
            Some(v1::subscribe_response::Message::Progress(progress)) => {
                Err(progress.as_of.unwrap().frontier_ms)
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn subscribers_of_the_whole_feed_get_the_same_messages_and_a_prefix_filters_them() {
        let state = state();
        let request = |key_prefix: &str| v1::SubscribeRequest {
            view: v1::View::PageViewsPerMinute as i32,
            key_prefix: key_prefix.into(),
            ..Default::default()
        };
        let mut whole = [
            subscribe(&state, request("")).unwrap(),
            subscribe(&state, request("")).unwrap(),
        ];
        let mut prefixed = subscribe(&state, request("/b")).unwrap();
        for time in [7, 8] {
            state
                .feed
                .send(batch_of_pages(time, &["/a", "/b", "/bc"]))
                .unwrap();
        }
        let mut got: [Vec<EncodedSubscribeResponse>; 3] = Default::default();
        for (stream, got) in whole.iter_mut().chain([&mut prefixed]).zip(&mut got) {
            // The first progress (the store is empty), then an update batch and a progress
            // per feed batch.
            for _ in 0..5 {
                got.push(stream.next().await.unwrap().unwrap());
            }
        }
        assert_eq!(got[0], got[1], "the same bytes for the whole feed");
        let [whole, _, prefixed] = got.map(|got| {
            got.into_iter()
                .skip(1)
                .map(pages_or_frontier)
                .collect::<Vec<_>>()
        });
        let all = || Ok(vec!["/a".to_owned(), "/b".to_owned(), "/bc".to_owned()]);
        assert_eq!(whole, [all(), Err(8), all(), Err(9)]);
        let b = || Ok(vec!["/b".to_owned(), "/bc".to_owned()]);
        assert_eq!(prefixed, [b(), Err(8), b(), Err(9)]);
    }

    #[tokio::test]
    async fn a_resume_from_ahead_of_the_store_waits_for_the_store_to_pass_it() {
        let state = state();
        let request = |key_prefix: &str| v1::SubscribeRequest {
            view: v1::View::PageViewsPerMinute as i32,
            key_prefix: key_prefix.into(),
            resume_from_ms: 8,
            ..Default::default()
        };
        let mut whole = subscribe(&state, request("")).unwrap();
        let mut prefixed = subscribe(&state, request("/b")).unwrap();
        for time in [7, 8, 9] {
            state
                .feed
                .send(batch_of_pages(time, &["/a", "/b"]))
                .unwrap();
        }
        let mut got: [Vec<Result<Vec<String>, u64>>; 2] = Default::default();
        for (stream, got) in [&mut whole, &mut prefixed].into_iter().zip(&mut got) {
            for _ in 0..4 {
                got.push(pages_or_frontier(stream.next().await.unwrap().unwrap()));
            }
        }
        // Nothing at 7, which the client has seen, and no progress to an earlier as_of.
        let all = || Ok(vec!["/a".to_owned(), "/b".to_owned()]);
        assert_eq!(got[0], [all(), Err(9), all(), Err(10)]);
        let b = || Ok(vec!["/b".to_owned()]);
        assert_eq!(got[1], [b(), Err(9), b(), Err(10)]);
    }

    #[test]
    fn a_resume_is_refused_when_the_server_keeps_no_updates() {
        let mut state = state();
        state.store = ViewStore::serving(1, 0);
        let request = v1::SubscribeRequest {
            view: v1::View::PageViewsPerMinute as i32,
            resume_from_ms: 8,
            ..Default::default()
        };
        let Err(error) = subscribe(&state, request) else {
            panic!("a resume with no changelog was accepted");
        };
        assert!(
            matches!(error, ApiError::ResumeTooOld { kept_from: None }),
            "{error}"
        );
        assert!(
            error.to_string().contains("api.changelog_ms is 0"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_subscriber_is_cut_off_by_the_bytes_it_leaves_unread_while_a_reader_goes_on() {
        let mut state = state();
        state.subscriber_buffer_bytes = 1_000;
        let slow_messages = slow_and_reader(&state, 100).await;
        let (_, earlier) = slow_messages.split_last().unwrap();
        let earlier_bytes: usize = earlier
            .iter()
            .map(|message| message.as_ref().unwrap().encoded_len())
            .sum();
        assert!(
            earlier_bytes <= 1_000 && earlier.len() < 100,
            "{} messages, {earlier_bytes} bytes",
            earlier.len()
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_cut_off_while_another_goes_on() {
        let mut state = state();
        state.subscriber_buffer = 4;
        let slow_messages = slow_and_reader(&state, 20).await;
        let (_, earlier) = slow_messages.split_last().unwrap();
        assert!(earlier.iter().all(Result::is_ok));
        assert!(
            earlier.len() < 4,
            "no more than its buffer: {}",
            earlier.len()
        );
    }
}
