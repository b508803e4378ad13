//! The Kafka source: every worker reads its own input partitions into the dataflow.
//!
//! Each worker owns a deterministic set of partitions ([`crate::partitions::owner`]),
//! assigned explicitly to its own `BaseConsumer` (no consumer group, no offset commits:
//! state is rebuilt by replaying the retention horizon), among the partitions that the
//! process's [`crate::input_topics::TopicWatcher`] finds: partitions added later are
//! picked up, and once the dataflow runs, no worker waits for a metadata or offset
//! lookup. Until a worker has its partitions of every input topic (for at most the idle
//! timeout), its time stays where it is. librdkafka fetches in the background; the source
//! polls its consumer without blocking, a batch at a time, when librdkafka's queue becomes
//! non-empty, every `POLL_INTERVAL` (to notice idle partitions and follow the other
//! workers), and at once again while batches come full.
//! With the fetch settings of [`FETCH_PROPERTIES`], a live rate brings a fetch response
//! every `fetch.wait.max.ms` (10 ms), so the wake-ups come about as often as the timer.
//!
//! Records are decoded and admitted against their partition's own watermark; refused
//! records go to the dead-letter topic with the spec's headers (the source pauses while
//! one waits for room in the dead-letter producer's queue). Admitted events enter at
//! the worker's current logical time, which then advances to the least watermark of its
//! active partitions. A worker whose partitions are all idle (no record for the idle
//! timeout, and none left to fetch as far as librdkafka's statistics show), or that owns
//! none, follows the largest watermark announced by any worker, so it never stalls the
//! frontier; events that arrive later on an idle partition enter at the worker's time and
//! are too late only if that time has passed their retention.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickflow_dataflow::{ArrivedEvent, Time, ViewStore};
use clickflow_events::{AdmissionConfig, decode_event, parse_iso8601};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::{ProbeHandle, Scope, Stream};
use tracing::{info, warn};

use crate::KafkaError;
use crate::dead_letters::{DeadLetter, DeadLetterProducer, DeadLetterSender};
use crate::input_topics::InputPartitions;
use crate::output::Backpressure;
use crate::partitions::{OwnedPartition, TimePolicy, input_time, owner};
use crate::stall::FrontierStall;
use crate::status::{
    DeadLetterCounts, IngestStatus, PartitionStatus, PauseReason, StatusReport, lock, now_ms,
};

/// Records polled per activation at most; the source re-activates itself when it stops
/// here with records left.
const MAX_BATCH: usize = 65_536;

/// How often the source runs when no record wakes it: to notice idle partitions, and to
/// follow the largest watermark the other workers announced while its own are idle.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long the source's partitions stay without records before its time advances to their
/// least watermark rather than a tick (see [`input_time`]): two polls that found nothing.
const QUIET_AFTER: Duration = POLL_INTERVAL.saturating_mul(2);

/// How long a worker may wait for its input topics' metadata as it starts (see
/// [`learn_leaders`]).
const LEADERS_TIMEOUT: Duration = Duration::from_secs(2);

/// How much longer than the idle timeout the views' frontier stands still before the
/// sources ahead of it pause (see [`crate::stall`]).
const STALL_BEYOND_IDLE: Duration = Duration::from_secs(5);

/// How long a worker waits before it assigns partitions again after an assignment failed.
const ASSIGN_RETRY: Duration = Duration::from_secs(5);

/// How the source's consumers fetch (librdkafka properties; `kafka.consumer` in the
/// configuration overrides them):
/// - `fetch.wait.max.ms` 10 and `fetch.min.bytes` 1 MiB: the broker holds a fetch for up
///   to 10 ms rather than answering with the first record; under load, fewer and larger
///   fetch responses cost the broker and librdkafka less CPU, and wake the source less
///   often.
/// - `fetch.queue.backoff.ms` 10 (librdkafka's default is 1000): once a consumer has
///   prefetched its queue's limits (`queued.max.messages.kbytes`, 64 MiB, or
///   `queued.min.messages`, 100,000 records a partition), it fetches again 10 ms after the
///   source has read below them, not a second later. While catching up, the workers
///   drained the queue in well under a second and then waited for the rest of it.
pub const FETCH_PROPERTIES: &[(&str, &str)] = &[
    ("fetch.wait.max.ms", "10"),
    ("fetch.min.bytes", "1048576"),
    ("fetch.queue.backoff.ms", "10"),
];

/// Where reading starts in partitions found at startup; partitions added later are read
/// from their beginning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record still in the partition.
    Earliest,
    /// Only records written after the start.
    Latest,
    /// The first record with a Kafka timestamp at or after this time (epoch ms).
    Timestamp(u64),
}

impl FromStr for StartPosition {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            _ => text
                .parse()
                .ok()
                .or_else(|| parse_iso8601(text))
                .map(Self::Timestamp)
                .ok_or_else(|| {
                    format!(
                        "`{text}` is not `earliest`, `latest`, epoch milliseconds or an ISO-8601 time"
                    )
                }),
        }
    }
}

/// What the source reads and how it admits it.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Input topics.
    pub topics: Vec<String>,
    /// Where reading starts.
    pub start: StartPosition,
    /// A partition with no record for this long stops holding back the frontier, unless
    /// the consumer's statistics show records in it not fetched yet.
    pub idle_timeout: Duration,
    /// While records arrive, the logical time advances by whole ticks of this many
    /// milliseconds of event time (see [`crate::partitions::input_time`]).
    pub tick_ms: Time,
    /// Records larger than this are `too_large`.
    pub max_event_bytes: usize,
    /// Retention and the future bound, per partition watermark.
    pub admission: AdmissionConfig,
    /// Extra librdkafka consumer properties.
    pub properties: BTreeMap<String, String>,
}

/// What a source shares with the rest of its process.
#[derive(Clone)]
pub struct SourceContext {
    /// Offsets, watermarks and counters.
    pub status: IngestStatus,
    /// Where refused records go.
    pub dead_letters: DeadLetterProducer,
    /// Whether this process publishes the output, and so measures freshness.
    pub measure_freshness: bool,
    /// This process's index: the workers of every other process than 0 report their
    /// partitions to process 0 (see [`SourceStreams::report_to`]).
    pub process: usize,
    /// While on, the source reads nothing (the output writer is behind).
    pub backpressure: Backpressure,
    /// The input partitions, as this process's [`crate::input_topics::TopicWatcher`]
    /// finds them.
    pub inputs: InputPartitions,
}

/// The updates a source feeds the dataflow: `(event, time, +1)`.
pub type EventUpdates = Vec<(ArrivedEvent, Time, isize)>;

/// A source's streams, and what it hears from the other workers.
pub struct SourceStreams<'s> {
    /// Admitted events, ready for `as_collection`.
    pub events: Stream<'s, Time, EventUpdates>,
    /// The sources' progress: each worker's largest watermark when it grows; the same
    /// frontier as `events`. For inputs that must follow the sources (alert rules).
    pub progress: Stream<'s, Time, Vec<Time>>,
    /// The reports of the workers outside process 0, at the times their records entered.
    reports: Stream<'s, Time, Vec<StatusReport>>,
    announced: Rc<Cell<Option<Time>>>,
}

impl<'s> SourceStreams<'s> {
    /// Lets every worker's source hear `announcements` (times that the frontier should
    /// pass): pass [`Self::progress`], concatenated with the times of any other input
    /// (such as rule changes) that must take effect while every partition is idle.
    pub fn hear(&self, announcements: Stream<'s, Time, Vec<Time>>) {
        let heard = Rc::clone(&self.announced);
        announcements
            .broadcast()
            .sink(Pipeline, "Announcements", move |(input, _)| {
                input.for_each(|_, times| {
                    let largest = times.iter().copied().max();
                    heard.set(heard.get().max(largest));
                });
            });
    }

    /// Takes the other processes' reports into process 0's `status`, and holds `store`'s
    /// `as_of` at their frontier, so that an answer's `as_of` offsets cover every
    /// partition of the cluster up to its frontier.
    pub fn report_to(&self, status: IngestStatus, store: ViewStore) {
        let keeper = (self.reports.scope().index() == 0).then(|| {
            store.hold(Some(0));
            (status, store)
        });
        self.reports.clone().sink(
            Exchange::new(|_| 0),
            "StatusReports",
            move |(input, frontier)| {
                let Some((status, store)) = &keeper else {
                    return;
                };
                input.for_each(|capability, reports| {
                    // Reports always travel with a capability, at one time.
                    if let Some(&time) = capability.least() {
                        for report in reports.drain(..) {
                            status.apply_report(time, report);
                        }
                    }
                });
                store.hold(frontier.frontier().first().copied());
            },
        );
    }
}

/// Builds this worker's Kafka source; `views` is to probe the frontier of every view (see
/// [`crate::stall`]).
pub fn kafka_source<'s>(
    scope: Scope<'s, Time>,
    config: Arc<SourceConfig>,
    context: SourceContext,
    views: ProbeHandle<Time>,
) -> Result<SourceStreams<'s>, KafkaError> {
    let worker = scope.index();
    let peers = scope.peers();
    let mut consumer: BaseConsumer<StatsContext> =
        consumer_config(&config, &format!("clickflow-source-{worker}"))
            .create_with_context(StatsContext {
                status: context.status.clone(),
                unfetched: Mutex::default(),
            })
            .map_err(|source| KafkaError::Client {
                what: "input consumer",
                source,
            })?;
    learn_leaders(&consumer, &config.topics);

    let mut builder =
        OperatorBuilder::new(format!("KafkaSource({})", config.topics.join(",")), scope);
    let info = builder.operator_info();
    let (events_output, events) = builder.new_output::<EventUpdates>();
    let (watermark_output, watermarks) = builder.new_output::<Vec<Time>>();
    let (report_output, reports) = builder.new_output::<Vec<StatusReport>>();
    let mut events_output =
        OutputBuilder::<_, CapacityContainerBuilder<EventUpdates>>::from(events_output);
    let mut watermark_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Time>>>::from(watermark_output);
    let mut report_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<StatusReport>>>::from(report_output);

    let activator = scope.activator_for(Rc::clone(&info.address));
    // librdkafka calls this from its own thread when the consumer's queue becomes
    // non-empty; an error means the worker has gone, and then there is nothing to wake.
    let wake = scope.worker().sync_activator_for(info.address.to_vec());
    consumer.set_nonempty_callback(move || {
        let _ = wake.activate();
    });
    // When the pending timed activation is due: a source woken by records before it does
    // not add another, so the timer runs every POLL_INTERVAL whatever the wake-ups.
    let mut timer_due = Instant::now();

    // What the workers announce (see `SourceStreams::hear`), for idle workers to follow.
    let announced = Rc::new(Cell::new(None::<Time>));

    let heard = Rc::clone(&announced);
    let stall = FrontierStall::new(config.idle_timeout + STALL_BEYOND_IDLE, Instant::now());
    let mut reader = Reader {
        config,
        consumer,
        worker,
        peers,
        partitions: Vec::new(),
        seen_round: 0,
        every_topic_found: false,
        started: Instant::now(),
        assign_after: Instant::now(),
        polled_at: Instant::now(),
        paused_since: None,
        views,
        stall,
        pause: None,
        dead_letters: DeadLetterSender::new(context.dead_letters.clone()),
        context,
        updates: Vec::new(),
        record_timestamps: Vec::new(),
        largest_announced: None,
        reported: BTreeMap::new(),
        reported_counters: (0, DeadLetterCounts::default()),
    };
    builder.build(move |capabilities| {
        let [
            mut events_capability,
            mut watermark_capability,
            mut report_capability,
        ] = <[_; 3]>::try_from(capabilities).unwrap_or_else(|_| unreachable!("three outputs"));
        move |_frontiers| {
            let time = *events_capability.time();
            let full = reader.unpaused(time) && reader.read_batch(time);
            let entered = (!reader.updates.is_empty()).then_some(time);
            if entered.is_some() {
                events_output
                    .activate()
                    .session(&events_capability)
                    .give_container(&mut std::mem::take(&mut reader.updates));
            }
            if let Some(watermark) = reader.new_announcement(entered) {
                watermark_output
                    .activate()
                    .session(&watermark_capability)
                    .give(watermark);
            }
            reader.publish_status();
            if let Some(report) = reader.new_report() {
                report_output
                    .activate()
                    .session(&report_capability)
                    .give(report);
            }
            let next = if reader.holds_time() {
                time
            } else {
                input_time(
                    time,
                    &reader.partitions,
                    reader.polled_at,
                    reader.time_policy(),
                    heard.get().max(reader.largest_announced),
                )
            };
            events_capability.downgrade(&next);
            watermark_capability.downgrade(&next);
            report_capability.downgrade(&next);
            if full {
                activator.activate();
            }
            let now = Instant::now();
            if now >= timer_due {
                activator.activate_after(POLL_INTERVAL);
                timer_due = now + POLL_INTERVAL;
            }
        }
    });
    Ok(SourceStreams {
        events,
        progress: watermarks,
        reports,
        announced,
    })
}

/// One worker's consumer and partitions.
struct Reader {
    config: Arc<SourceConfig>,
    consumer: BaseConsumer<StatsContext>,
    worker: usize,
    peers: usize,
    partitions: Vec<OwnedPartition>,
    /// The watcher's last round whose partitions of this worker are all assigned.
    seen_round: u64,
    /// Whether every input topic was in that round (read, or found not to exist yet).
    every_topic_found: bool,
    /// When the source was built.
    started: Instant,
    /// When to try again after an assignment failed.
    assign_after: Instant,
    /// When the last batch was polled: partitions' silence is measured up to then.
    polled_at: Instant,
    /// Since when the source has been paused, if it is.
    paused_since: Option<Instant>,
    /// The frontier of every view.
    views: ProbeHandle<Time>,
    /// Whether that frontier has stood still behind this source for long.
    stall: FrontierStall,
    /// Why the source is paused, if it is.
    pause: Option<PauseReason>,
    /// Where refused records go; while one waits there, the source reads nothing.
    dead_letters: DeadLetterSender,
    context: SourceContext,
    updates: EventUpdates,
    record_timestamps: Vec<i64>,
    largest_announced: Option<Time>,
    /// Outside process 0: the partitions as last reported to process 0.
    reported: BTreeMap<(String, i32), PartitionStatus>,
    /// Outside process 0: the process's counters as last reported.
    reported_counters: (u64, DeadLetterCounts),
}

impl Reader {
    /// How this worker's time advances (see [`input_time`]).
    fn time_policy(&self) -> TimePolicy {
        TimePolicy {
            idle_timeout: self.config.idle_timeout,
            tick: self.config.tick_ms,
            quiet_after: QUIET_AFTER,
        }
    }

    /// Whether the worker's time stays where it is, rather than following its partitions
    /// or the other workers: until it has assigned its partitions of every input topic,
    /// for at most the idle timeout. Records of a partition assigned later would otherwise
    /// enter at a time later than their own, past retention in a replay. A topic that
    /// cannot be read for the idle timeout stops holding back the frontier, as an idle
    /// partition does.
    fn holds_time(&self) -> bool {
        !self.every_topic_found && self.started.elapsed() < self.config.idle_timeout
    }

    /// Whether the source may read now, at `time`: not while [`Backpressure`] is on, nor
    /// while a dead letter waits for room in the dead-letter queue (it is offered again
    /// here), nor while the views' frontier has stood still behind it for long (see
    /// [`crate::stall`]). A paused source polls nothing, and the pause does not count as
    /// its partitions' silence: once it reads again, each partition is as close to going
    /// idle as when it paused.
    fn unpaused(&mut self, time: Time) -> bool {
        let frontier = self
            .views
            .with_frontier(|frontier| frontier.first().copied());
        let stalled = self.stall.holds_back(frontier, time, Instant::now());
        let dead_letters_queued = self.dead_letters.retry();
        let pause = if self.context.backpressure.is_on() {
            Some(PauseReason::OutputWriter)
        } else if !dead_letters_queued {
            Some(PauseReason::DeadLetters)
        } else {
            stalled.then_some(PauseReason::Frontier)
        };
        if pause != self.pause {
            let worker = self.worker;
            match (self.pause, pause) {
                (_, Some(PauseReason::Frontier)) => warn!(
                    worker,
                    frontier, time, "the views' frontier stands still; pausing the input"
                ),
                (_, Some(PauseReason::DeadLetters)) => warn!(
                    worker,
                    "the dead-letter producer's queue is full; pausing the input"
                ),
                (Some(PauseReason::Frontier), None) => {
                    info!(worker, "the views' frontier moves; resuming the input");
                }
                (Some(PauseReason::DeadLetters), None) => {
                    info!(worker, "the dead letters are queued; resuming the input");
                }
                _ => {}
            }
            self.context.status.change_pause(self.pause, pause);
            self.pause = pause;
        }
        if pause.is_some() {
            self.paused_since.get_or_insert_with(Instant::now);
            return false;
        }
        if let Some(since) = self.paused_since.take() {
            let pause = since.elapsed();
            for partition in &mut self.partitions {
                partition.excuse_silence(pause);
            }
        }
        true
    }

    /// Polls up to a batch of records into `updates` at `time`; says whether it stopped
    /// because the batch was full.
    fn read_batch(&mut self, time: Time) -> bool {
        self.follow_partitions();
        let mut polled = 0;
        // One clock reading per batch: a partition's last record is the batch's time, and
        // its silence is measured from there (a full batch takes milliseconds to poll).
        let now = Instant::now();
        self.polled_at = now;
        while polled < MAX_BATCH && !self.dead_letters.is_waiting() {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(error)) => warn!(%error, "kafka consumer error"),
                Some(Ok(message)) => {
                    polled += 1;
                    let admitted = admit(
                        &mut self.partitions,
                        &mut self.updates,
                        &self.config,
                        &mut self.dead_letters,
                        &message,
                        time,
                        now,
                    );
                    if let Some(record_timestamp) =
                        admitted.filter(|_| self.context.measure_freshness)
                    {
                        self.record_timestamps.push(record_timestamp);
                    }
                }
            }
        }
        self.note_unfetched();
        let counted = self.updates.len() as u64;
        self.context.status.add_events_counted(counted);
        if polled > 0 {
            for owned in &self.partitions {
                self.context.status.record_offset(
                    &owned.topic,
                    owned.partition,
                    time,
                    owned.next_offset,
                );
            }
        }
        if !self.record_timestamps.is_empty() {
            self.context
                .status
                .await_publication(time, std::mem::take(&mut self.record_timestamps));
        }
        polled == MAX_BATCH
    }

    /// Takes from the consumer's last statistics which partitions have records not fetched
    /// yet (partitions not in them yet keep what they had).
    fn note_unfetched(&mut self) {
        let unfetched = lock(&self.consumer.context().unfetched);
        for owned in &mut self.partitions {
            if let Some(&behind) = unfetched
                .get(&owned.topic)
                .and_then(|partitions| partitions.get(&owned.partition))
            {
                owned.unfetched = behind;
            }
        }
    }

    /// What this worker announces, if it grew since last announced: the largest watermark
    /// of its partitions, or the time at which events just `entered`, if that is larger.
    ///
    /// Events enter beyond every watermark when this worker followed the others while its
    /// partitions were idle and then read older records. Announcing their time moves every
    /// worker that is idle past it, so that the step holding them completes even if no
    /// larger watermark ever comes.
    fn new_announcement(&mut self, entered: Option<Time>) -> Option<Time> {
        let largest = self
            .partitions
            .iter()
            .filter_map(|partition| partition.admission.watermark())
            .max()
            .max(entered);
        (largest > self.largest_announced).then(|| {
            self.largest_announced = largest;
            largest
        })?
    }

    /// Assigns this worker's partitions that the watcher has found since its last round and
    /// that it does not read yet, each at its start; after a failure, none of them is
    /// assigned, and the worker tries again `ASSIGN_RETRY` later.
    fn follow_partitions(&mut self) {
        if Instant::now() < self.assign_after {
            return;
        }
        let Some((round, found)) = self.context.inputs.newer_than(self.seen_round) else {
            return;
        };
        let mut new = TopicPartitionList::new();
        for (topic, read) in found.iter() {
            for &id in &read.partitions {
                let known = self
                    .partitions
                    .iter()
                    .any(|owned| owned.partition == id && &owned.topic == topic);
                if !known && owner(topic, id, self.peers) == self.worker {
                    let _ = new.add_partition_offset(topic, id, read.start(id));
                }
            }
        }
        if new.count() > 0
            && let Err(error) = self.consumer.incremental_assign(&new)
        {
            warn!(%error, "cannot assign input partitions; retrying");
            self.assign_after = Instant::now() + ASSIGN_RETRY;
            return;
        }
        self.seen_round = round;
        self.every_topic_found = self
            .config
            .topics
            .iter()
            .all(|topic| found.contains_key(topic));
        for element in new.elements() {
            self.own(element.topic(), element.partition(), element.offset());
        }
    }

    /// Starts keeping `partition` of `topic`, just assigned at `start`.
    fn own(&mut self, topic: &str, partition: i32, start: Offset) {
        let next_offset = match start {
            Offset::Offset(offset) => offset,
            _ => 0,
        };
        self.partitions.push(OwnedPartition::new(
            topic,
            partition,
            self.config.admission,
            next_offset,
        ));
        self.context.status.set_partition(
            topic,
            partition,
            PartitionStatus {
                worker: self.worker,
                next_offset,
                ..PartitionStatus::default()
            },
        );
        info!(
            topic,
            partition,
            worker = self.worker,
            next_offset,
            "reading input partition"
        );
    }

    /// Outside process 0: what changed in this worker's partitions since its last report,
    /// with its process's counters; `None` when nothing did, and in process 0.
    fn new_report(&mut self) -> Option<StatusReport> {
        if self.context.process == 0 {
            return None;
        }
        let status = &self.context.status;
        let partitions: Vec<_> = status
            .partitions()
            .into_iter()
            .filter(|(key, partition)| {
                partition.worker == self.worker && self.reported.get(key) != Some(partition)
            })
            .collect();
        let (events_counted, dead_letters) = (status.events_counted(), status.dead_letters());
        if partitions.is_empty() && self.reported_counters == (events_counted, dead_letters) {
            return None;
        }
        self.reported.extend(partitions.iter().cloned());
        self.reported_counters = (events_counted, dead_letters);
        Some(StatusReport {
            process: self.context.process,
            partitions,
            events_counted,
            dead_letters,
        })
    }

    /// Publishes this worker's partitions to the shared status.
    fn publish_status(&self) {
        for owned in &self.partitions {
            // As `input_time` sees it: silence up to the last poll.
            let idle = owned.is_idle(self.polled_at, self.config.idle_timeout);
            self.context
                .status
                .update_partition(&owned.topic, owned.partition, |status| {
                    status.next_offset = owned.next_offset;
                    status.watermark = owned.admission.watermark();
                    status.idle = idle;
                });
        }
    }
}

/// Decodes and admits one record, read `now`, at logical time `time`; returns its Kafka
/// timestamp when it was counted.
fn admit(
    partitions: &mut [OwnedPartition],
    updates: &mut EventUpdates,
    config: &SourceConfig,
    dead_letters: &mut DeadLetterSender,
    message: &BorrowedMessage<'_>,
    time: Time,
    now: Instant,
) -> Option<i64> {
    let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
    let Some(owned) = partitions
        .iter_mut()
        .find(|owned| owned.partition == partition && owned.topic == topic)
    else {
        warn!(
            topic,
            partition, offset, "record from a partition this worker does not own"
        );
        return None;
    };
    owned.next_offset = offset + 1;
    let admitted = decode_event(
        message.payload().unwrap_or_default(),
        config.max_event_bytes,
    )
    .and_then(|event| owned.admission.admit_at(event.time, time).map(|()| event));
    match admitted {
        Ok(event) => {
            // Only admitted records count as activity: a partition that receives nothing
            // but refused records goes idle and does not hold back the frontier.
            owned.last_record = now;
            updates.push((
                ArrivedEvent {
                    event,
                    arrival: offset.unsigned_abs(),
                },
                time,
                1,
            ));
            Some(message.timestamp().to_millis().unwrap_or_else(now_ms))
        }
        Err(reason) => {
            dead_letters.refuse(&DeadLetter {
                key: message.key(),
                value: message.payload(),
                reason,
                topic,
                partition,
                offset,
            });
            None
        }
    }
}

/// Reads the metadata of `topics` into `consumer` (before the dataflow runs), so that it
/// knows their partitions' leaders when the partitions are assigned and fetches at once;
/// otherwise it would look them up at its next scan of topics, up to a second later. A
/// failure costs only that wait.
fn learn_leaders(consumer: &BaseConsumer<StatsContext>, topics: &[String]) {
    for topic in topics {
        if let Err(error) = consumer.fetch_metadata(Some(topic), LEADERS_TIMEOUT) {
            warn!(topic, %error, "cannot read input topic metadata before the start");
        }
    }
}

/// A consumer of the input topics' configuration, with `client_id`.
pub(crate) fn consumer_config(config: &SourceConfig, client_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap)
        .set("group.id", "clickflow")
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("statistics.interval.ms", "1000");
    for (key, value) in FETCH_PROPERTIES {
        client.set(*key, *value);
    }
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

/// Reads partition high watermarks from librdkafka's statistics (every second) into the
/// status, and notes which partitions have records that the consumer has not fetched.
struct StatsContext {
    status: IngestStatus,
    /// Per topic and partition, whether the last statistics showed records not fetched.
    unfetched: Mutex<BTreeMap<String, BTreeMap<i32, bool>>>,
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        let mut unfetched = lock(&self.unfetched);
        for (topic, topic_statistics) in &statistics.topics {
            for (&partition, partition_statistics) in &topic_statistics.partitions {
                if partition < 0 {
                    continue;
                }
                if partition_statistics.hi_offset >= 0 {
                    self.status.update_partition(topic, partition, |status| {
                        status.high_watermark = Some(partition_statistics.hi_offset);
                    });
                }
                unfetched
                    .entry(topic.clone())
                    .or_default()
                    .insert(partition, has_unfetched(partition_statistics));
            }
        }
    }
}

/// Whether a partition's statistics show records not fetched yet: the fetch position
/// (which moves past transaction markers and aborted records) is before the partition's
/// end, its last stable offset for a `read_committed` consumer. An unknown position or
/// end shows none. Records fetched and not yet polled are not counted: the source polls
/// them within its next activation.
fn has_unfetched(statistics: &rdkafka::statistics::Partition) -> bool {
    let end = if statistics.ls_offset >= 0 {
        statistics.ls_offset
    } else {
        statistics.hi_offset
    };
    statistics.next_offset >= 0 && end >= 0 && statistics.next_offset < end
}

impl ConsumerContext for StatsContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_not_fetched_are_those_before_the_last_stable_offset() {
        let statistics = |next_offset, ls_offset, hi_offset| rdkafka::statistics::Partition {
            next_offset,
            ls_offset,
            hi_offset,
            ..Default::default()
        };
        assert!(has_unfetched(&statistics(16, 160, 160)));
        assert!(!has_unfetched(&statistics(160, 160, 160)));
        // Past a transaction marker the fetch position reaches the end: nothing left.
        assert!(!has_unfetched(&statistics(161, 161, 161)));
        // An open transaction holds the last stable offset back: nothing readable left.
        assert!(!has_unfetched(&statistics(100, 100, 150)));
        assert!(
            has_unfetched(&statistics(100, -1, 150)),
            "no stable offset known"
        );
        assert!(
            !has_unfetched(&statistics(-1001, 160, 160)),
            "no position yet"
        );
    }

    #[test]
    fn start_positions_parse_names_milliseconds_and_iso_times() {
        assert_eq!("earliest".parse(), Ok(StartPosition::Earliest));
        assert_eq!("latest".parse(), Ok(StartPosition::Latest));
        assert_eq!("1000".parse(), Ok(StartPosition::Timestamp(1000)));
        assert_eq!(
            "1970-01-01T00:00:01Z".parse(),
            Ok(StartPosition::Timestamp(1000))
        );
        assert!(
            "yesterday"
                .parse::<StartPosition>()
                .unwrap_err()
                .contains("yesterday")
        );
    }
}
