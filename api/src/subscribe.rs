//! Subscriptions: the feed of view changes, `Subscribe` and `SubscribeAlerts`.
//!
//! One feed task reads the store's changelog every few milliseconds and broadcasts each
//! view's new updates, by time, with the new `as_of`. Every subscriber has its own task
//! that filters the feed and writes to a buffer towards its client, bounded both in
//! messages and in bytes. A view's feed messages are encoded once, by the first subscriber
//! that takes them whole (no key prefix, not final-only), and shared by all such
//! subscribers; the others encode their own. A subscriber that falls behind (its buffer
//! has no room for the next feed batch, or the feed has moved past what it has read) is
//! cut off with `RESOURCE_EXHAUSTED`; ingestion never waits for subscribers. A batch once
//! admitted, and the messages a subscription starts with, go out as the client makes room.
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
use crate::state::{ApiState, FEED_BACKLOG};

/// The least time between two reads of the store by the feed: publications that come
/// closer together (a catch-up publishes in chunks) go out in one batch, so that hundreds
/// of subscribers get a few hundred messages a second at most.
const FEED_SPACING: Duration = Duration::from_millis(5);

/// How often a subscription whose first messages wait for room checks whether the feed
/// has moved so far on that it is cut off.
const LAG_CHECK: Duration = Duration::from_millis(100);

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
    /// The size update batches are split at.
    message_bytes: usize,
}

impl FeedBatch {
    /// The batch of `changes` that brings the views to `as_of`, whose update batches are
    /// split at `message_bytes`.
    pub(crate) fn new(
        as_of: v1::AsOf,
        changes: [Vec<TimedUpdates>; 4],
        message_bytes: usize,
    ) -> Self {
        Self {
            progress: progress(as_of.clone()).into(),
            as_of,
            changes,
            encoded: Default::default(),
            message_bytes,
        }
    }

    /// Every update batch of `view`, with its time, encoded (once, for all subscribers).
    fn encoded_updates(&self, view: ViewKind) -> &[(Time, EncodedSubscribeResponse)] {
        self.encoded[view as usize].get_or_init(|| {
            self.changes[view as usize]
                .iter()
                .flat_map(|(time, updates)| {
                    update_batch(*time, updates, &mut |_, _| true, self.message_bytes)
                        .into_iter()
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
    /// Told each time the client takes a message.
    room: Arc<Notify>,
}

impl<T> Stream for Subscription<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.messages).poll_next(context).map(|next| {
            next.map(|(message, size)| {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                self.room.notify_one();
                message
            })
        })
    }
}

/// A subscriber's buffer: the sending end, for its task, and the stream for its client.
fn buffer<T>(state: &ApiState) -> (Outbox<T>, Subscription<T>) {
    let (sender, receiver) = mpsc::channel(state.subscriber_buffer.max(2));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let room = Arc::new(Notify::new());
    let outbox = Outbox {
        sender,
        queued_bytes: Arc::clone(&queued_bytes),
        max_bytes: state.subscriber_buffer_bytes,
        room: Arc::clone(&room),
    };
    let subscription = Subscription {
        messages: ReceiverStream::new(receiver),
        queued_bytes,
        room,
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
            let as_of = convert::as_of(as_of, &state.status);
            FeedBatch::new(as_of, changes, state.subscription_message_bytes)
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
    let message_bytes = state.subscription_message_bytes;
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
                message_bytes,
            ));
        } else if request.snapshot || final_only.is_some() {
            let mut rows: Vec<AnyRow> =
                read.all(view).into_iter().filter(|row| keep(row)).collect();
            if let Some(final_only) = final_only.as_mut() {
                rows.retain(|row| final_only.pass(row, 1, frontier));
            }
            if request.snapshot {
                let snapshot_as_of = convert::as_of(as_of, &state.status);
                let rows = rows.iter().map(convert::any_row).collect();
                first.extend(in_messages(rows, message_bytes, |rows, more| {
                    v1::subscribe_response::Message::Snapshot(v1::Snapshot {
                        as_of: Some(snapshot_as_of.clone()),
                        rows,
                        more,
                    })
                }));
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
        // These come all at once, however many: each waits for the client to read.
        for message in first {
            if !out.send_when_room(message.into(), &feed).await {
                return;
            }
        }
        // The feed batches that came meanwhile are part of the start too.
        let mut starting = feed.len();
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
                    message_bytes,
                );
                if let Some(released) = final_only
                    .as_mut()
                    .map(|final_only| final_only.release(frontier))
                {
                    let released_at = frontier.saturating_sub(1);
                    let released = update_batches(
                        &[(released_at, released.into())],
                        0,
                        &mut |_, _| true,
                        message_bytes,
                    );
                    // Released rows at the time of the last updates continue them.
                    if let (
                        Some(_),
                        Some(v1::SubscribeResponse {
                            message: Some(last),
                        }),
                    ) = (released.first(), updates.last_mut())
                        && let v1::subscribe_response::Message::Updates(last) = last
                        && last.time_ms == released_at
                    {
                        last.more = true;
                    }
                    updates.extend(released);
                }
                updates.into_iter().map(Into::into).collect()
            };
            let mut messages = updates;
            messages.push(batch.progress.clone());
            let admitted = if starting > 0 {
                starting -= 1;
                true
            } else {
                out.admits(&messages)
            };
            if !admitted {
                out.cut_off("the client reads too slowly".to_owned());
                return;
            }
            for message in messages {
                if !out.send_when_room(message, &feed).await {
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
    /// Told each time the client takes a message.
    room: Arc<Notify>,
}

impl<T: Message> Outbox<T> {
    /// Queues `message`; `false` when the client left or was cut off for being behind.
    fn send(&mut self, message: T) -> bool {
        let size = message.encoded_len();
        if !self.has_room(size) {
            self.cut_off("the client reads too slowly".to_owned());
            return false;
        }
        self.queue(message, size)
    }

    /// Whether the buffer takes the `messages` of one feed batch: it has a free slot, and
    /// room for all their bytes or nothing queued. A subscriber whose buffer does not is
    /// behind; one whose buffer does gets them all, each as room comes (there may be more
    /// of them than slots, or than bytes, when one time's many updates are split).
    fn admits(&self, messages: &[T]) -> bool {
        self.has_room(messages.iter().map(Message::encoded_len).sum())
    }

    /// Queues `message` once the buffer has room for it, waiting for the client to read;
    /// `false` when the client left, or when the `feed` it has not read meanwhile moved so
    /// far on that it is cut off.
    async fn send_when_room(
        &mut self,
        message: T,
        feed: &broadcast::Receiver<Arc<FeedBatch>>,
    ) -> bool {
        let size = message.encoded_len();
        while !self.has_room(size) {
            if feed.len() > FEED_BACKLOG {
                let behind = feed.len();
                self.cut_off(format!("fell {behind} feed batches behind"));
                return false;
            }
            tokio::select! {
                () = self.room.notified() => {}
                () = self.sender.closed() => return false,
                () = tokio::time::sleep(LAG_CHECK) => {}
            }
        }
        self.queue(message, size)
    }

    /// Whether `bytes` more fit: a free slot besides the last, which is kept for the error
    /// that cuts a slow client off, and room for the bytes (more may go when nothing is
    /// queued).
    fn has_room(&self, bytes: usize) -> bool {
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        self.sender.capacity() > 1 && (queued == 0 || queued + bytes <= self.max_bytes)
    }

    fn queue(&mut self, message: T, size: usize) -> bool {
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

/// The `UpdateBatch` messages of every time at or after `from` with updates that `pass`
/// lets through (see [`update_batch`]).
fn update_batches(
    changes: &[TimedUpdates],
    from: Time,
    pass: &mut impl FnMut(&AnyRow, isize) -> bool,
    message_bytes: usize,
) -> Vec<v1::SubscribeResponse> {
    changes
        .iter()
        .filter(|(time, _)| *time >= from)
        .flat_map(|(time, updates)| update_batch(*time, updates, pass, message_bytes))
        .collect()
}

/// The `UpdateBatch` messages of the `updates` at `time` that `pass` lets through: none if
/// none does, else one, or several in a row of about `message_bytes` at most each.
fn update_batch(
    time: Time,
    updates: &[(AnyRow, isize)],
    pass: &mut impl FnMut(&AnyRow, isize) -> bool,
    message_bytes: usize,
) -> Vec<v1::SubscribeResponse> {
    let updates: Vec<v1::Update> = updates
        .iter()
        .filter(|(row, diff)| pass(row, *diff))
        .map(|(row, diff)| v1::Update {
            row: Some(convert::any_row(row)),
            diff: *diff as i64,
        })
        .collect();
    if updates.is_empty() {
        return Vec::new();
    }
    in_messages(updates, message_bytes, |updates, more| {
        v1::subscribe_response::Message::Updates(v1::UpdateBatch {
            time_ms: time,
            updates,
            more,
        })
    })
}

/// `items` in messages that `make` composes from a run of them and whether more follow:
/// one message, or several of about `message_bytes` at most each (an item larger than that
/// is a message of its own). No items make one message with none.
fn in_messages<T: Message>(
    items: Vec<T>,
    message_bytes: usize,
    make: impl Fn(Vec<T>, bool) -> v1::subscribe_response::Message,
) -> Vec<v1::SubscribeResponse> {
    // An item's field tag and length prefix: a few bytes more than the item.
    const FRAMING: usize = 8;
    let (mut runs, mut run, mut run_bytes) = (Vec::new(), Vec::new(), 0);
    for item in items {
        let size = item.encoded_len() + FRAMING;
        if !run.is_empty() && run_bytes + size > message_bytes {
            runs.push(std::mem::take(&mut run));
            run_bytes = 0;
        }
        run_bytes += size;
        run.push(item);
    }
    runs.push(run);
    let last = runs.len() - 1;
    runs.into_iter()
        .enumerate()
        .map(|(index, run)| message(make(run, index < last)))
        .collect()
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
        split_batch_of_pages(time, pages, 1 << 20)
    }

    /// [`batch_of_pages`], its update batches split at `message_bytes`.
    fn split_batch_of_pages(time: Time, pages: &[&str], message_bytes: usize) -> Arc<FeedBatch> {
        let windows: Vec<(&str, Time)> = pages.iter().map(|page| (*page, 60_000)).collect();
        batch_of_windows(time, &windows, message_bytes)
    }

    /// A feed batch to `time + 1` with one page-view update at `time` per `(page, end)`: a
    /// row of that page whose window ends then.
    fn batch_of_windows(
        time: Time,
        windows: &[(&str, Time)],
        message_bytes: usize,
    ) -> Arc<FeedBatch> {
        let updates: Vec<(AnyRow, isize)> = windows
            .iter()
            .map(|(page, window_end)| {
                let row = PageViewRow {
                    page: (*page).into(),
                    window_start: 0,
                    window_end: *window_end,
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
            message_bytes,
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

    /// Many updates at one time come in several messages of about `message_bytes` at most,
    /// all at that time, with `more` on all but the last: for subscribers of the whole feed
    /// (which share their encoding) and filtered ones alike. Together they are more than
    /// the buffer's bytes, and go out as one message that large would.
    #[tokio::test]
    async fn many_updates_at_one_time_come_in_several_messages() {
        let mut state = state();
        state.subscription_message_bytes = 200;
        state.subscriber_buffer_bytes = 300;
        let pages: Vec<String> = (0..50).map(|n| format!("/page-{n:02}")).collect();
        let request = |key_prefix: &str| v1::SubscribeRequest {
            view: v1::View::PageViewsPerMinute as i32,
            key_prefix: key_prefix.into(),
            ..Default::default()
        };
        let mut whole = subscribe(&state, request("")).unwrap();
        let mut prefixed = subscribe(&state, request("/page-1")).unwrap();
        for stream in [&mut whole, &mut prefixed] {
            let first = stream.next().await.unwrap().unwrap();
            assert_eq!(
                pages_or_frontier(first),
                Err(0),
                "the empty store's progress"
            );
        }
        let page_refs: Vec<&str> = pages.iter().map(String::as_str).collect();
        state
            .feed
            .send(split_batch_of_pages(7, &page_refs, 200))
            .unwrap();
        let in_tens: Vec<String> = pages[10..20].to_vec();
        for (stream, expected) in [(&mut whole, pages.clone()), (&mut prefixed, in_tens)] {
            let mut got = Vec::new();
            let mut mores = Vec::new();
            loop {
                let message = stream.next().await.unwrap().unwrap();
                let size = message.encoded_len();
                match message.message().unwrap().message {
                    Some(v1::subscribe_response::Message::Updates(batch)) => {
                        assert_eq!(batch.time_ms, 7);
                        assert!(size <= 200 + 16, "{size} bytes");
                        mores.push(batch.more);
                    }
                    Some(v1::subscribe_response::Message::Progress(_)) => break,
                    other => panic!("{other:?}"),
                }
                got.extend(pages_or_frontier(message).unwrap());
            }
            assert_eq!(got, expected);
            assert!(mores.len() > 1, "{} messages", mores.len());
            let (last, earlier) = mores.split_last().unwrap();
            assert!(earlier.iter().all(|more| *more) && !last);
        }
    }

    /// A progress message to `frontier_ms`.
    fn progress_to(frontier_ms: Time) -> v1::Progress {
        v1::Progress {
            as_of: Some(v1::AsOf {
                frontier_ms,
                offsets: Vec::new(),
            }),
        }
    }

    /// A subscription's first messages, more than its buffer holds in messages and in
    /// bytes, all reach a client that reads them slowly: each waits for room instead of
    /// cutting the client off.
    #[tokio::test]
    async fn first_messages_wait_for_a_slow_client_to_make_room() {
        let mut state = state();
        state.subscriber_buffer = 4;
        state.subscriber_buffer_bytes = 10;
        let (mut out, mut subscription) = buffer(&state);
        let feed = state.feed.subscribe();
        let sender = tokio::spawn(async move {
            for frontier in 0..20 {
                if !out.send_when_room(progress_to(frontier), &feed).await {
                    return false;
                }
            }
            true
        });
        let mut got = Vec::new();
        while got.len() < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let message = subscription.next().await.unwrap().unwrap();
            got.push(message.as_of.unwrap().frontier_ms);
        }
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert!(sender.await.unwrap(), "every message was queued");
    }

    #[tokio::test]
    async fn a_first_message_waiting_for_room_is_given_up_when_the_client_leaves() {
        let mut state = state();
        state.subscriber_buffer = 2;
        let (mut out, subscription) = buffer(&state);
        let feed = state.feed.subscribe();
        assert!(out.send_when_room(progress_to(1), &feed).await);
        let waiting = tokio::spawn(async move { out.send_when_room(progress_to(2), &feed).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no room: the message waits");
        drop(subscription);
        let sent = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(!sent.unwrap().unwrap());
    }

    /// A client that reads nothing while its first messages wait is cut off once the feed
    /// has moved on further than it keeps: its wait does not hold the feed's batches.
    #[tokio::test]
    async fn a_first_message_waiting_for_room_is_cut_off_when_the_feed_moves_too_far_on() {
        let mut state = state();
        state.subscriber_buffer = 2;
        let (mut out, mut subscription) = buffer(&state);
        let feed = state.feed.subscribe();
        assert!(out.send_when_room(progress_to(1), &feed).await);
        let waiting = tokio::spawn(async move { out.send_when_room(progress_to(2), &feed).await });
        for time in 0..FEED_BACKLOG as u64 {
            state.feed.send(batch(time)).unwrap();
        }
        tokio::time::sleep(LAG_CHECK * 3).await;
        assert!(!waiting.is_finished(), "still within the feed's backlog");
        state.feed.send(batch(FEED_BACKLOG as u64)).unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(!sent.unwrap().unwrap(), "cut off");
        let first = subscription.next().await.unwrap().unwrap();
        assert_eq!(first.as_of.unwrap().frontier_ms, 1);
        let status = subscription.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    }

    /// Items go in runs of about `message_bytes`, in order, with `more` on all but the
    /// last; an item larger than that is a message of its own; no items make one message.
    #[test]
    fn items_are_split_into_messages_of_about_the_size_given() {
        let rows = |sizes: &[usize]| -> Vec<v1::Row> {
            sizes
                .iter()
                .map(|size| v1::Row {
                    row: Some(v1::row::Row::PageView(v1::PageViewRow {
                        page: "x".repeat(*size),
                        ..Default::default()
                    })),
                })
                .collect()
        };
        let split = |items: Vec<v1::Row>, message_bytes: usize| -> Vec<(Vec<usize>, bool)> {
            in_messages(items, message_bytes, |rows, more| {
                v1::subscribe_response::Message::Snapshot(v1::Snapshot {
                    as_of: None,
                    rows,
                    more,
                })
            })
            .into_iter()
            .map(|message| match message.message {
                Some(v1::subscribe_response::Message::Snapshot(snapshot)) => {
                    let pages = snapshot.rows.iter().map(|row| match &row.row {
                        Some(v1::row::Row::PageView(row)) => row.page.len(),
                        other => panic!("{other:?}"),
                    });
                    (pages.collect(), snapshot.more)
                }
                other => panic!("{other:?}"),
            })
            .collect()
        };
        // A row of a page of n bytes encodes in n + 4 bytes, plus 8 counted for framing.
        assert_eq!(
            split(rows(&[88, 88, 88, 500, 1]), 200),
            [
                (vec![88, 88], true),
                (vec![88], true),
                (vec![500], true),
                (vec![1], false)
            ]
        );
        assert_eq!(split(rows(&[1, 2, 3]), 1 << 20), [(vec![1, 2, 3], false)]);
        assert_eq!(split(Vec::new(), 200), [(vec![], false)]);
    }

    /// A page-view subscription (`final_only` or not) to `state`'s empty store, past the
    /// progress it starts with.
    async fn past_the_start(
        state: &ApiState,
        final_only: bool,
    ) -> Subscription<EncodedSubscribeResponse> {
        let request = v1::SubscribeRequest {
            view: v1::View::PageViewsPerMinute as i32,
            final_only,
            ..Default::default()
        };
        let mut stream = subscribe(state, request).unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(
            pages_or_frontier(first),
            Err(0),
            "the empty store's progress"
        );
        stream
    }

    /// A final-only subscription's rows released at a time come after that time's updates
    /// of rows already final, as their continuation: `more` on all but the last message of
    /// the time.
    #[tokio::test]
    async fn released_final_rows_continue_the_updates_at_their_time() {
        let state = state();
        let mut stream = past_the_start(&state, true).await;
        // "/early" ends at 3: held at time 5, released by the frontier 6.
        state
            .feed
            .send(batch_of_windows(5, &[("/early", 3)], 1 << 20))
            .unwrap();
        // At time 10, a correction of "/late-fix" (final already: its end is before the
        // frontier 6) passes, and "/now" (ending at 11) is released by the frontier 11.
        state
            .feed
            .send(batch_of_windows(
                10,
                &[("/late-fix", 4), ("/now", 11)],
                1 << 20,
            ))
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            let message = stream.next().await.unwrap().unwrap();
            let described = match message.message().unwrap().message {
                Some(v1::subscribe_response::Message::Updates(batch)) => {
                    let pages: Vec<String> = pages_or_frontier(message).unwrap();
                    format!("{} {pages:?} more={}", batch.time_ms, batch.more)
                }
                Some(v1::subscribe_response::Message::Progress(progress)) => {
                    format!("progress {}", progress.as_of.unwrap().frontier_ms)
                }
                other => panic!("{other:?}"),
            };
            got.push(described);
        }
        assert_eq!(
            got,
            [
                r#"5 ["/early"] more=false"#,
                "progress 6",
                r#"10 ["/late-fix"] more=true"#,
                r#"10 ["/now"] more=false"#,
                "progress 11",
            ]
        );
    }

    /// A feed batch with updates at more times than the buffer has slots (a catch-up puts
    /// many times in one) reaches a client that reads: it is admitted while the buffer has
    /// room, and its messages then go out as the client makes room.
    #[tokio::test]
    async fn a_feed_batch_of_more_messages_than_the_buffer_holds_reaches_a_reader() {
        let mut state = state();
        state.subscriber_buffer = 4;
        let mut stream = past_the_start(&state, false).await;
        let times: Vec<TimedUpdates> = (1..=10)
            .map(|time| {
                let pages = batch_of_pages(time, &["/a"]);
                pages.changes[ViewKind::PageViews as usize][0].clone()
            })
            .collect();
        let as_of = v1::AsOf {
            frontier_ms: 11,
            offsets: Vec::new(),
        };
        let changes = [times, Vec::new(), Vec::new(), Vec::new()];
        state
            .feed
            .send(Arc::new(FeedBatch::new(as_of, changes, 1 << 20)))
            .unwrap();
        let mut got = Vec::new();
        while got.last() != Some(&Err(11)) {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
            got.push(pages_or_frontier(message.unwrap().unwrap().unwrap()));
        }
        let a = || Ok(vec!["/a".to_owned()]);
        assert_eq!(got.len(), 11);
        assert!(got[..10].iter().all(|updates| *updates == a()), "{got:?}");
    }
}
