//! The output topics: `page-view-counts` and `alerts`, written transactionally, whole
//! frontier steps at a time.
//!
//! Worker 0 hands each completed [`Step`] to a writer thread over a bounded channel. A
//! slow broker therefore slows worker 0 instead of growing this buffer, and while worker 0
//! waits, [`Backpressure`] pauses the sources of its process, so that the other workers do
//! not read on into timely's channels to worker 0. The thread takes the steps waiting (up
//! to `TRANSACTION_UPDATES` updates of them), turns them into upsert records, and commits
//! them in one transaction, so a `read_committed` consumer sees whole steps only. The
//! page-view updates of the steps in one transaction are netted together: a window that
//! changed in several of them is written once, with its last value (which is all a
//! consumer could see of it). Alert transitions are kept time by time: each is written
//! once.
//!
//! A commit that timed out is retried in place; a transaction that failed otherwise is
//! aborted and written again with the same records, for up to five minutes (a broker
//! restart); a fatal error (another instance took over the transactional id) ends the
//! writer with that cause.
//!
//! Records, per step and key, after netting out the step's updates:
//! - `page-view-counts`: key = page, value
//!   `{"page","count","unique_users","window_start","window_end"}` (ISO-8601 UTC bounds),
//!   for every window whose row changed, with the last value it had. A window leaving the
//!   view because its retention passed writes nothing more: the last value stays the final
//!   one, even when the window changed and expired within one transaction.
//! - `alerts`: key = `rule|page|window_start`, value
//!   `{"alert","page","count","window_start","window_end","state"}`, once when an alert
//!   fires (`"fired"`, with the value that crossed the threshold) and once when it clears
//!   (`"cleared"`, e.g. its rule was deleted). A changing value of a standing alert is not
//!   a transition; an alert whose window leaves retention does not clear.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clickflow_dataflow::{
    AlertRow, AlertState, AlertTransition, PageViewRow, Step, Time, alert_transitions, changed_rows,
};
use clickflow_events::format_iso8601_instant;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::KafkaError;
use crate::status::IngestStatus;

/// Steps waiting for the writer at most; beyond this worker 0 waits.
const STEP_QUEUE: usize = 1024;

/// The updates one transaction takes at most, in whole steps (a single larger step is
/// still one transaction). A transaction must be written within librdkafka's
/// `transaction.timeout.ms` (60 s by default) or the broker aborts it, and writing the same
/// records again would fail the same way: after an outage, the steps queued meanwhile go
/// out in several transactions.
const TRANSACTION_UPDATES: usize = 1_000_000;

/// How long one transaction operation may take before it is retried.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the writer waits for cluster metadata before it looks for its coordinator.
const METADATA_WAIT: Duration = Duration::from_secs(1);

/// How long a step may keep failing (a broker restart, a lost coordinator) before the
/// writer gives up and the service stops with the cause.
const RETRY_FOR: Duration = Duration::from_secs(300);

/// Where and how results are written.
#[derive(Clone, Debug)]
pub struct OutputConfig {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Topic of page-view counts.
    pub page_view_counts_topic: String,
    /// Topic of alert transitions.
    pub alerts_topic: String,
    /// The producer's transactional id; one writer per id.
    pub transactional_id: String,
    /// Retention, to tell a window that expired from one that changed.
    pub retention_ms: u64,
    /// Extra librdkafka producer properties.
    pub properties: BTreeMap<String, String>,
}

/// One output record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRecord {
    /// Which topic: page-view counts (`false`) or alerts (`true`).
    pub alert: bool,
    /// The key.
    pub key: String,
    /// The JSON value.
    pub value: String,
}

/// The running writer.
pub struct OutputWriter {
    thread: JoinHandle<Result<(), KafkaError>>,
}

/// Hands steps to the writer; dropping it lets the writer finish.
pub struct StepSender {
    sender: SyncSender<Step>,
    backpressure: Backpressure,
}

impl StepSender {
    /// Queues a step, waiting while the writer's queue is full (with [`Backpressure`] on
    /// meanwhile); returns `false` when the writer has stopped.
    pub fn send(&self, step: Step) -> bool {
        match self.sender.try_send(step) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(step)) => {
                self.backpressure.0.store(true, Ordering::SeqCst);
                let sent = self.sender.send(step).is_ok();
                self.backpressure.0.store(false, Ordering::SeqCst);
                sent
            }
        }
    }

    /// What tells the sources of this process to pause while this sender waits.
    pub fn backpressure(&self) -> Backpressure {
        self.backpressure.clone()
    }
}

/// On while worker 0 waits for room in the writer's queue (the broker is slow, or the
/// writer is retrying a transaction). Worker 0 takes no input meanwhile, and the sources of
/// the other workers of its process pause too, so that they do not pile up input in memory
/// that worker 0 cannot take. Off in a process that writes no output.
#[derive(Clone, Debug, Default)]
pub struct Backpressure(Arc<AtomicBool>);

impl Backpressure {
    /// Whether sources should pause now.
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl OutputWriter {
    /// Connects the transactional producer and starts the writer thread. If the writer
    /// stops on an error (fenced, or out of retries) or panics, it calls `on_failure` at
    /// once (after logging the error), so that the service stops even when no further step
    /// comes; [`OutputWriter::finish`] then returns the error.
    pub fn start(
        config: OutputConfig,
        status: IngestStatus,
        on_failure: impl FnOnce() + Send + 'static,
    ) -> Result<(Self, StepSender), KafkaError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap)
            .set("client.id", "clickflow-output")
            .set("transactional.id", &config.transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            // A transaction that begins right after a commit finds the broker still writing
            // the last one's markers (CONCURRENT_TRANSACTIONS) and is retried after this
            // backoff: librdkafka's default of 100 ms would cap the steps at about ten a second.
            .set("retry.backoff.ms", "5")
            .set("compression.type", "zstd");
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let producer: BaseProducer<DefaultProducerContext> =
            client.create().map_err(|source| KafkaError::Client {
                what: "output producer",
                source,
            })?;
        // A new producer looks for its transaction coordinator at once; when the connection
        // to the coordinating broker is not up yet, it looks again only 500 ms later. That
        // happened in about half of the starts on one broker, and was most of the
        // service's start-up. A metadata request for the whole cluster first brings the
        // connections up (16 starts of 16 without the wait; with several brokers it need
        // not reach the coordinator, and then the wait is as before). An unreachable
        // cluster is init_transactions' error to report, so this waits a second at most.
        if let Err(error) = producer.client().fetch_metadata(None, METADATA_WAIT) {
            debug!(%error, "no cluster metadata before looking for the transaction coordinator");
        }
        producer
            .init_transactions(OPERATION_TIMEOUT)
            .map_err(|source| {
                // A cluster that does not answer even a metadata request is the cause to
                // name, rather than the timeout it made the transactions wait for.
                match producer.client().fetch_metadata(None, METADATA_WAIT) {
                    Err(unanswered) => KafkaError::Unreachable {
                        what: "output producer",
                        bootstrap: config.bootstrap.clone(),
                        source: unanswered,
                    },
                    Ok(_) => KafkaError::Client {
                        what: "output producer transactions",
                        source,
                    },
                }
            })?;
        let (sender, receiver) = sync_channel(STEP_QUEUE);
        let thread = std::thread::Builder::new()
            .name("clickflow-output".to_owned())
            .spawn(move || {
                // Called when the thread ends with an error or a panic.
                let failure = FailureGuard(Some(on_failure));
                let written = write_steps(&producer, &config, &receiver, &status);
                match &written {
                    Ok(()) => failure.disarm(),
                    Err(error) => error!(%error, "output writer stopped"),
                }
                written
            })
            .map_err(|source| KafkaError::Thread {
                name: "clickflow-output",
                source,
            })?;
        let sender = StepSender {
            sender,
            backpressure: Backpressure::default(),
        };
        Ok((Self { thread }, sender))
    }

    /// Waits until the writer has written every step sent before its sender was dropped.
    pub fn finish(self) -> Result<(), KafkaError> {
        self.thread.join().map_err(|_| KafkaError::WriterPanicked)?
    }
}

fn write_steps(
    producer: &BaseProducer<DefaultProducerContext>,
    config: &OutputConfig,
    steps: &Receiver<Step>,
    status: &IngestStatus,
) -> Result<(), KafkaError> {
    while let Ok(first) = steps.recv() {
        let waiting = next_transaction(first, steps, TRANSACTION_UPDATES);
        let frontier = waiting.last().and_then(|step| step.to);
        let records = transaction_records(waiting, config.retention_ms);
        if !records.is_empty() {
            commit(producer, config, &records)?;
        }
        status.published(
            frontier,
            records.len() as u64,
            u64::from(!records.is_empty()),
        );
    }
    info!("output writer finished");
    Ok(())
}

/// Calls its function when dropped, unless disarmed: on an error, or while a panic
/// unwinds.
struct FailureGuard<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> FailureGuard<F> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for FailureGuard<F> {
    fn drop(&mut self) {
        if let Some(on_failure) = self.0.take() {
            on_failure();
        }
    }
}

/// The steps of the next transaction: `first`, then those waiting, until their updates
/// reach `max_updates`.
fn next_transaction(first: Step, steps: &Receiver<Step>, max_updates: usize) -> Vec<Step> {
    let mut taken_updates = step_updates(&first);
    let mut taken = vec![first];
    while taken_updates < max_updates {
        let Ok(step) = steps.try_recv() else { break };
        taken_updates += step_updates(&step);
        taken.push(step);
    }
    taken
}

/// The page-view and alert updates of `step`.
fn step_updates(step: &Step) -> usize {
    step.page_views.len() + step.alerts.len()
}

/// Writes `records` in one transaction, retrying (with the same records) until it
/// commits or [`RETRY_FOR`] has passed since the step's first failure.
fn commit(
    producer: &BaseProducer<DefaultProducerContext>,
    config: &OutputConfig,
    records: &[OutputRecord],
) -> Result<(), KafkaError> {
    let failing = FailingSince::default();
    for attempt in 1_u64.. {
        let error = match write_transaction(producer, config, records, &failing) {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if is_fatal(&error) || !failing.may_retry() {
            return Err(output_error(error));
        }
        warn!(attempt, %error, "output transaction failed; aborting it and writing the step again");
        abort(producer, &failing);
        if !failing.may_retry() {
            // The abort used up the retry window: the cause is the failure before it.
            return Err(output_error(error));
        }
        std::thread::sleep(Duration::from_millis(100 * attempt.min(20)));
    }
    unreachable!("the attempts never run out")
}

/// When the writing of a step first failed: its retries, whole or in place, share this one
/// clock, so that a step stops being retried [`RETRY_FOR`] after its first failure.
struct FailingSince {
    since: Cell<Option<Instant>>,
    /// How long after the first failure retries stop: [`RETRY_FOR`].
    window: Duration,
}

impl Default for FailingSince {
    fn default() -> Self {
        Self {
            since: Cell::new(None),
            window: RETRY_FOR,
        }
    }
}

impl FailingSince {
    /// Notes a failure now (the first one starts the clock); says whether the step may
    /// still be retried.
    fn may_retry(&self) -> bool {
        let since = self.since.get().unwrap_or_else(Instant::now);
        self.since.set(Some(since));
        since.elapsed() <= self.window
    }
}

/// One transaction with `records`; a commit that may be retried is retried in place.
fn write_transaction(
    producer: &BaseProducer<DefaultProducerContext>,
    config: &OutputConfig,
    records: &[OutputRecord],
    failing: &FailingSince,
) -> Result<(), RdKafkaError> {
    let began = Instant::now();
    producer.begin_transaction()?;
    for record in records {
        let topic = if record.alert {
            &config.alerts_topic
        } else {
            &config.page_view_counts_topic
        };
        let mut base = BaseRecord::to(topic)
            .key(&record.key)
            .payload(&record.value);
        loop {
            match producer.send(base) {
                Ok(()) => break,
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    base = returned;
                    pause(producer);
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
    let sent = Instant::now();
    await_deliveries(producer);
    let delivered = Instant::now();
    retry_in_place(failing, || producer.commit_transaction(OPERATION_TIMEOUT))?;
    tracing::debug!(
        records = records.len(),
        sending_ms = (sent - began).as_millis() as u64,
        delivering_ms = (delivered - sent).as_millis() as u64,
        committing_ms = delivered.elapsed().as_millis() as u64,
        "committed output transaction"
    );
    Ok(())
}

/// Serves delivery reports until every record is delivered (or the operation timeout
/// passes). `commit_transaction` flushes too, but its flush polls in 100 ms slices that the
/// last delivery report does not cut short: every commit would take a multiple of 100 ms.
fn await_deliveries(producer: &BaseProducer<DefaultProducerContext>) {
    let deadline = Instant::now() + OPERATION_TIMEOUT;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        pause(producer);
    }
}

/// Serves what is ready, then sleeps a millisecond. rdkafka's `poll` with a timeout under a
/// few milliseconds spins (it hands librdkafka whole milliseconds left, often zero), so a
/// short wait is a sleep instead. An acknowledgement takes tens of milliseconds: a
/// millisecond adds half of one to a transaction on average, and the thread switches a
/// third as often as with 200 µs (see benches/RESULTS.md, tenth sitting).
fn pause(producer: &BaseProducer<DefaultProducerContext>) {
    producer.poll(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1));
}

/// Aborts the current transaction, if any, so that the next one can begin.
fn abort(producer: &BaseProducer<DefaultProducerContext>, failing: &FailingSince) {
    if let Err(error) = retry_in_place(failing, || producer.abort_transaction(OPERATION_TIMEOUT)) {
        warn!(%error, "aborting the output transaction failed");
    }
}

/// Runs a transaction operation again while librdkafka says that it may be retried as it
/// is (a timeout, a coordinator that moved) and the step may still be retried.
fn retry_in_place(
    failing: &FailingSince,
    operation: impl Fn() -> Result<(), RdKafkaError>,
) -> Result<(), RdKafkaError> {
    loop {
        match operation() {
            Err(error) if is_retriable(&error) && failing.may_retry() => {
                warn!(%error, "output transaction operation failed; retrying it");
                std::thread::sleep(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

fn is_retriable(error: &RdKafkaError) -> bool {
    match error {
        RdKafkaError::Transaction(cause) => cause.is_retriable(),
        // `commit_transaction` flushes first; a flush that timed out can be tried again.
        RdKafkaError::Flush(_) => true,
        _ => false,
    }
}

fn is_fatal(error: &RdKafkaError) -> bool {
    matches!(error, RdKafkaError::Transaction(cause) if cause.is_fatal())
}

fn output_error(source: RdKafkaError) -> KafkaError {
    KafkaError::Client {
        what: "output transaction",
        source,
    }
}

/// The records that one transaction of `steps`, in order, writes (see the module
/// documentation).
pub fn transaction_records(steps: Vec<Step>, retention_ms: u64) -> Vec<OutputRecord> {
    let mut page_views = Vec::new();
    let mut alerts = Vec::new();
    for step in steps {
        page_views.extend(step.page_views);
        alerts.extend(alert_records(&step.alerts, retention_ms));
    }
    let mut records: Vec<OutputRecord> =
        changed_rows(&page_views, |row| (row.page.clone(), row.window_start))
            .into_iter()
            .map(|row| OutputRecord {
                alert: false,
                key: row.page.to_string(),
                value: page_view_value(&row),
            })
            .collect();
    records.extend(alerts);
    records
}

/// The records of the alert transitions in one step's `updates`.
fn alert_records(updates: &[(AlertRow, Time, isize)], retention_ms: u64) -> Vec<OutputRecord> {
    let mut records = Vec::new();
    for AlertTransition { row, state, .. } in alert_transitions(updates, retention_ms) {
        let state = match state {
            AlertState::Fired => "fired",
            AlertState::Cleared => "cleared",
        };
        records.push(OutputRecord {
            alert: true,
            key: format!(
                "{}|{}|{}",
                row.rule,
                row.page,
                format_iso8601_instant(row.window_start)
            ),
            value: json_value(&AlertValue {
                alert: &row.rule,
                page: &row.page,
                count: row.value,
                window_start: format_iso8601_instant(row.window_start),
                window_end: format_iso8601_instant(row.window_end),
                state,
            }),
        });
    }
    records
}

/// The JSON value of a page-view count record.
pub fn page_view_value(row: &PageViewRow) -> String {
    json_value(&PageViewValue {
        page: &row.page,
        count: row.view_count,
        unique_users: row.unique_users,
        window_start: format_iso8601_instant(row.window_start),
        window_end: format_iso8601_instant(row.window_end),
    })
}

/// The value of a `page-view-counts` record, in the spec's field order.
#[derive(Serialize)]
struct PageViewValue<'a> {
    page: &'a str,
    count: u64,
    unique_users: u64,
    window_start: String,
    window_end: String,
}

/// The value of an `alerts` record, in the spec's field order.
#[derive(Serialize)]
struct AlertValue<'a> {
    alert: &'a str,
    page: &'a str,
    count: u64,
    window_start: String,
    window_end: String,
    state: &'static str,
}

/// `value` as JSON; written straight from the struct, with no intermediate map.
fn json_value(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("a struct of strings and integers serializes")
}

#[cfg(test)]
mod tests {
    use rdkafka::error::RDKafkaErrorCode;

    use super::*;

    /// An operation that fails with a retriable error `failures` times, then succeeds;
    /// counts its calls.
    fn failing_times(
        failures: usize,
        calls: &Cell<usize>,
    ) -> impl Fn() -> Result<(), RdKafkaError> {
        move || {
            calls.set(calls.get() + 1);
            if calls.get() <= failures {
                Err(RdKafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn an_operation_is_retried_in_place_while_its_step_may_be_retried() {
        let calls = Cell::new(0);
        let fresh = FailingSince::default();
        assert!(retry_in_place(&fresh, failing_times(2, &calls)).is_ok());
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn retries_in_place_stop_when_the_step_has_failed_for_the_retry_window() {
        let failing = FailingSince {
            window: Duration::from_millis(50),
            ..FailingSince::default()
        };
        // An earlier attempt of the step failed, a retry window ago.
        assert!(failing.may_retry());
        std::thread::sleep(Duration::from_millis(60));
        let calls = Cell::new(0);
        assert!(retry_in_place(&failing, failing_times(1, &calls)).is_err());
        assert_eq!(calls.get(), 1);
    }

    fn page_view(page: &str, count: u64) -> PageViewRow {
        PageViewRow {
            page: page.into(),
            window_start: 60_000,
            window_end: 120_000,
            view_count: count,
            unique_users: 1,
        }
    }

    fn alert(value: u64) -> AlertRow {
        AlertRow {
            rule: "high_traffic".into(),
            page: "/a".into(),
            window_start: 60_000,
            window_end: 120_000,
            value,
            threshold: 1,
        }
    }

    fn step(
        page_views: Vec<(PageViewRow, Time, isize)>,
        alerts: Vec<(AlertRow, Time, isize)>,
    ) -> Step {
        Step {
            from: 0,
            to: Some(1_000_000),
            page_views,
            alerts,
        }
    }

    fn step_records(step: Step, retention_ms: u64) -> Vec<OutputRecord> {
        transaction_records(vec![step], retention_ms)
    }

    /// What `field` takes from each record and its parsed JSON value.
    fn fields(
        records: Vec<OutputRecord>,
        field: impl Fn(OutputRecord, serde_json::Value) -> (String, serde_json::Value),
    ) -> Vec<(String, serde_json::Value)> {
        records
            .into_iter()
            .map(|record| {
                let value = serde_json::from_str(&record.value).unwrap();
                field(record, value)
            })
            .collect()
    }

    #[test]
    fn a_transaction_takes_whole_steps_until_they_reach_the_most_updates() {
        let (sender, receiver) = sync_channel(8);
        let updates = |n: u64| (0..n).map(|i| (page_view("/a", i), i, 1)).collect();
        for (views, alerts) in [(3, 0), (0, 4), (5, 0), (2, 0)] {
            sender
                .send(step(
                    updates(views),
                    (0..alerts).map(|i| (alert(i), i, 1)).collect(),
                ))
                .unwrap();
        }
        drop(sender);
        let sizes = |steps: Vec<Step>| -> Vec<usize> { steps.iter().map(step_updates).collect() };
        let first = receiver.recv().unwrap();
        // 3 + 4 is under 8, so the third step is taken too: 12 reach the most.
        assert_eq!(sizes(next_transaction(first, &receiver, 8)), vec![3, 4, 5]);
        let first = receiver.recv().unwrap();
        assert_eq!(sizes(next_transaction(first, &receiver, 8)), vec![2]);
        assert!(receiver.recv().is_err());
    }

    #[test]
    fn a_step_writes_the_final_value_of_each_changed_window_only() {
        let records = step_records(
            step(
                vec![
                    (page_view("/a", 1), 5, 1),
                    (page_view("/a", 1), 6, -1),
                    (page_view("/a", 2), 6, 1),
                    (page_view("/b", 1), 6, 1),
                ],
                vec![],
            ),
            100,
        );
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key, "/a");
        let value: serde_json::Value = serde_json::from_str(&records[0].value).unwrap();
        assert_eq!(value["count"], 2);
        assert_eq!(value["window_start"], "1970-01-01T00:01:00Z");
        assert_eq!(value["window_end"], "1970-01-01T00:02:00Z");
        assert_eq!(records[1].key, "/b");
        assert_eq!(
            records[1].value,
            r#"{"page":"/b","count":1,"unique_users":1,"window_start":"1970-01-01T00:01:00Z","window_end":"1970-01-01T00:02:00Z"}"#,
            "the spec's fields, in its order"
        );
    }

    #[test]
    fn expiry_writes_nothing() {
        let records = step_records(
            step(
                vec![(page_view("/a", 3), 120_100, -1)],
                vec![(alert(3), 120_100, -1)],
            ),
            100,
        );
        assert_eq!(records, vec![]);
    }

    #[test]
    fn a_window_that_changes_and_expires_within_a_step_writes_its_last_value() {
        let counts = |records| {
            fields(records, |record, value| {
                (record.key, value["count"].clone())
            })
        };
        let created_and_expired = vec![
            (page_view("/a", 1), 5, 1),
            (page_view("/a", 1), 6, -1),
            (page_view("/a", 2), 6, 1),
            (page_view("/a", 2), 120_100, -1),
        ];
        let grown_and_expired = vec![
            (page_view("/b", 4), 6, -1),
            (page_view("/b", 5), 6, 1),
            (page_view("/b", 5), 120_100, -1),
        ];
        for (updates, last) in [
            (created_and_expired, ("/a", 2)),
            (grown_and_expired, ("/b", 5)),
        ] {
            let written = counts(step_records(step(updates, vec![]), 100));
            assert_eq!(written, vec![(last.0.to_owned(), last.1.into())]);
        }
    }

    #[test]
    fn an_alert_that_fires_and_then_clears_or_expires_within_a_step_is_written() {
        let states = |records| {
            fields(records, |_, value| {
                (
                    value["state"].as_str().unwrap().to_owned(),
                    value["count"].clone(),
                )
            })
        };
        let fired_and_cleared = step_records(
            step(
                vec![],
                vec![
                    (alert(2), 5, 1),
                    (alert(2), 6, -1),
                    (alert(3), 6, 1),
                    (alert(3), 7, -1),
                ],
            ),
            100,
        );
        assert_eq!(
            states(fired_and_cleared),
            vec![("fired".into(), 2.into()), ("cleared".into(), 3.into())],
            "fired with the value that crossed the threshold"
        );
        let fired_and_expired = step_records(
            step(vec![], vec![(alert(2), 5, 1), (alert(2), 120_100, -1)]),
            100,
        );
        assert_eq!(states(fired_and_expired), vec![("fired".into(), 2.into())]);
    }

    #[test]
    fn alerts_are_written_when_they_fire_and_clear_but_not_when_their_value_changes() {
        let fired = step_records(step(vec![], vec![(alert(2), 5, 1)]), 100);
        assert_eq!(fired.len(), 1);
        assert!(
            fired[0].value.contains("\"state\":\"fired\""),
            "{}",
            fired[0].value
        );
        assert!(fired[0].value.contains("\"count\":2"));
        assert_eq!(fired[0].key, "high_traffic|/a|1970-01-01T00:01:00Z");
        let grew = step_records(step(vec![], vec![(alert(2), 6, -1), (alert(3), 6, 1)]), 100);
        assert_eq!(grew, vec![]);
        let cleared = step_records(step(vec![], vec![(alert(3), 7, -1)]), 100);
        assert!(cleared[0].value.contains("\"state\":\"cleared\""));
    }

    #[test]
    fn a_transaction_writes_each_window_once_with_its_last_value_and_every_alert_transition() {
        let records = transaction_records(
            vec![
                step(
                    vec![(page_view("/a", 1), 5, 1), (page_view("/b", 1), 5, 1)],
                    vec![(alert(2), 5, 1)],
                ),
                step(
                    vec![(page_view("/a", 1), 6, -1), (page_view("/a", 2), 6, 1)],
                    vec![(alert(2), 6, -1)],
                ),
                step(
                    vec![(page_view("/a", 2), 7, -1), (page_view("/a", 3), 7, 1)],
                    vec![],
                ),
            ],
            100_000,
        );
        let written: Vec<(bool, &str, serde_json::Value)> = records
            .iter()
            .map(|record| {
                let value = serde_json::from_str(&record.value).unwrap();
                (record.alert, record.key.as_str(), value)
            })
            .collect();
        let [
            (false, "/a", a),
            (false, "/b", b),
            (true, _, fired),
            (true, _, cleared),
        ] = written.as_slice()
        else {
            panic!("{records:?}");
        };
        assert_eq!((&a["count"], &b["count"]), (&3.into(), &1.into()));
        assert_eq!(
            (&fired["state"], &cleared["state"]),
            (&"fired".into(), &"cleared".into())
        );
    }
}
