//! The Kafka side of the benchmarks: fresh topics and their deletion, the load generator,
//! the bare consumer that clickflow is compared with, and the final counts of a
//! `page-view-counts` topic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clickflow_ingest::admin::{Admin, ReferenceTopics, TopicSpec, TopicState};
use clickflow_ingest::generator::GeneratorConfig;
use clickflow_ingest::partitions::owner;
use clickflow_ingest::producer::{DeliverySummary, LoadConfig, LoadProducer};
use clickflow_ingest::source::FETCH_PROPERTIES;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;

/// Partitions of every topic the benchmark creates, as in the reference pipeline.
pub const PARTITIONS: u16 = 12;

/// How long to wait for the cluster (metadata, topic creation, each delivery).
const TIMEOUT: Duration = Duration::from_secs(30);

/// How long a reader of a topic (the bare consumer, the final counts) may go without a
/// record before it gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the producer's progress is shown.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The reference pipeline's topics, named `PREFIX.page-views` and so on: the input and
/// dead letters with [`PARTITIONS`] partitions, the others as `clickflow topics` makes
/// them.
pub fn topic_names(prefix: &str) -> ReferenceTopics {
    ReferenceTopics {
        input: format!("{prefix}.page-views"),
        dead_letters: format!("{prefix}.page-views.dlq"),
        counts: format!("{prefix}.page-view-counts"),
        alerts: format!("{prefix}.alerts"),
        rules: format!("{prefix}.alert-rules"),
        partitions: PARTITIONS,
        ..ReferenceTopics::default()
    }
}

/// Creates the topics of `specs`; fails unless every one of them is new.
pub fn create_topics(bootstrap: &str, specs: &[TopicSpec]) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap, TIMEOUT)?;
    for outcome in admin.create_topics(specs)? {
        match outcome.result {
            Ok(TopicState::Created) => {}
            Ok(exists @ TopicState::Exists { .. }) => {
                bail!("topic {} already exists: {exists:?}", outcome.spec.name)
            }
            Err(error) => {
                return Err(error).with_context(|| format!("creating topic {}", outcome.spec.name));
            }
        }
    }
    Ok(())
}

/// The generated records: the generator's default mix (1% out of order, 0.1% late,
/// 0.05% future, 0.1% malformed, 10% funnel sessions) over 10,000 pages and 1,000,000
/// users, as in the batch benchmark.
pub fn generator(events: u64, start_ms: u64, duration_ms: u64) -> GeneratorConfig {
    GeneratorConfig {
        events,
        pages: 10_000,
        users: 1_000_000,
        start_ms,
        duration_ms,
        ..GeneratorConfig::default()
    }
}

/// Sends the generator's records to `topic` at `rate` records/s (0: as fast as
/// possible) with the reference producer's settings, until all are sent or `stop` is set;
/// fails unless all that were sent were delivered. Records sent at a rate are live: their
/// event times start when the sending does, as [`LoadConfig::start_now`] says. Records
/// sent as fast as possible fill a topic with history: their event times start at the
/// generator's `start_ms`.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    generator: GeneratorConfig,
    rate: u64,
    stop: &AtomicBool,
) -> anyhow::Result<DeliverySummary> {
    let events = generator.events;
    let producer = LoadProducer::new(LoadConfig {
        bootstrap: bootstrap.to_owned(),
        topic: topic.to_owned(),
        generator,
        start_now: rate > 0,
        rate,
        timeout: TIMEOUT,
    })?;
    let mut next_report = Instant::now() + PROGRESS_EVERY;
    let summary = producer.run(|progress| {
        if Instant::now() >= next_report {
            eprintln!(
                "bench-ingest:   {} of {events} delivered",
                progress.delivered
            );
            next_report += PROGRESS_EVERY;
        }
        if stop.load(Ordering::Relaxed) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    if let Some(error) = &summary.first_error {
        bail!(
            "{} of {} records to {topic} were not delivered: {error}",
            summary.failed,
            summary.sent
        );
    }
    Ok(summary)
}

/// Reads every record of `topic` with `workers` threads, each with its own
/// `BaseConsumer` assigned the partitions clickflow would give that worker, and returns
/// the number of records read and the time from the first consumer's creation to the
/// last record.
pub fn bare_consume(
    bootstrap: &str,
    topic: &str,
    workers: usize,
) -> anyhow::Result<(u64, Duration)> {
    let ends = end_offsets(bootstrap, topic)?;
    let started = Instant::now();
    let records = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|worker| {
                let mine: BTreeMap<i32, i64> = ends
                    .iter()
                    .filter(|(partition, _)| owner(topic, **partition, workers) == worker)
                    .map(|(partition, end)| (*partition, *end))
                    .collect();
                scope.spawn(move || consume_partitions(bootstrap, topic, worker, mine))
            })
            .collect();
        threads.into_iter().try_fold(0, |total, thread| {
            let records = thread
                .join()
                .map_err(|_| anyhow::anyhow!("a bare consumer thread panicked"))??;
            anyhow::Ok(total + records)
        })
    })?;
    Ok((records, started.elapsed()))
}

/// The offset after the last record of each partition of `topic`.
fn end_offsets(bootstrap: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer =
        bare_consumer_config(bootstrap, "bench-ingest-offsets").create()?;
    (0..i32::from(PARTITIONS))
        .map(|partition| {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, TIMEOUT)
                .with_context(|| format!("high watermark of {topic}/{partition}"))?;
            Ok((partition, high))
        })
        .collect()
}

/// Reads `partitions` (partition → end offset) from the beginning to their ends; returns
/// the number of records read.
fn consume_partitions(
    bootstrap: &str,
    topic: &str,
    worker: usize,
    mut partitions: BTreeMap<i32, i64>,
) -> anyhow::Result<u64> {
    let consumer: BaseConsumer =
        bare_consumer_config(bootstrap, &format!("bench-ingest-bare-{worker}")).create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in partitions.keys() {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    partitions.retain(|_, end| *end > 0);
    let (mut records, mut bytes) = (0_u64, 0_usize);
    let mut last_record = Instant::now();
    while !partitions.is_empty() {
        // Waits for a record, then takes what is there without waiting: a batch.
        let mut timeout = Duration::from_millis(100);
        while let Some(message) = consumer.poll(timeout) {
            let message = message.context("bare consumer")?;
            timeout = Duration::ZERO;
            records += 1;
            bytes += message.payload_len();
            let partition = message.partition();
            if partitions
                .get(&partition)
                .is_some_and(|end| message.offset() + 1 >= *end)
            {
                partitions.remove(&partition);
            }
            last_record = Instant::now();
        }
        if last_record.elapsed() > STALL_TIMEOUT {
            bail!(
                "bare consumer {worker}: no record for {STALL_TIMEOUT:?}, partitions {partitions:?} unfinished"
            );
        }
    }
    std::hint::black_box(bytes);
    Ok(records)
}

/// Deletes every topic whose name starts with `prefix` (which must not be empty), so that
/// the broker does not keep working on it (compacting it) while later runs are measured.
pub fn delete_topics(bootstrap: &str, prefix: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!prefix.is_empty(), "no prefix of the topics to delete");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, TIMEOUT)
        .context("cluster metadata")?;
    let names: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|topic| topic.name())
        .filter(|name| name.starts_with(prefix))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for result in runtime.block_on(admin.delete_topics(&names, &options))? {
        if let Err((topic, code)) = result {
            bail!("cannot delete topic {topic}: {code}");
        }
    }
    Ok(())
}

/// What a `page-view-counts` topic holds in the end, as a `read_committed` consumer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinalCounts {
    /// Distinct `(page, window_start)` windows.
    pub windows: usize,
    /// The sum of each window's last `count`.
    pub views: u64,
}

/// Reads `topic`, a `page-view-counts` topic whose writers have finished, to its end,
/// keeping the last `count` of each window. Two limits: a transaction left open would end
/// the reading early (`read_committed` stops before it), and the topic must not have been
/// compacted yet, as compaction keeps one record per page, not per window (runs write far
/// less than the broker's 1 GiB segments, and only closed segments are compacted).
pub fn final_counts(bootstrap: &str, topic: &str) -> anyhow::Result<FinalCounts> {
    let mut last_counts: HashMap<(String, String), u64> = HashMap::new();
    read_to_end(bootstrap, topic, "bench-ingest-final-counts", |message| {
        let value: CountValue = serde_json::from_slice(message.payload().unwrap_or(b""))
            .with_context(|| format!("a record of {topic} at offset {}", message.offset()))?;
        last_counts.insert((value.page, value.window_start), value.count);
        Ok(())
    })?;
    Ok(FinalCounts {
        windows: last_counts.len(),
        views: last_counts.values().sum(),
    })
}

/// Reads `topic` to its end as a `read_committed` consumer, passing each record to
/// `each`. A transaction left open ends the reading early (`read_committed` stops before
/// it).
pub fn read_to_end(
    bootstrap: &str,
    topic: &str,
    client_id: &str,
    mut each: impl FnMut(&BorrowedMessage) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut config = bare_consumer_config(bootstrap, client_id);
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create()?;
    let mut unfinished: BTreeSet<i32> = assign_from_beginning(&consumer, topic)?
        .into_iter()
        .collect();
    let mut last_record = Instant::now();
    while !unfinished.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                each(&message)?;
                last_record = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                unfinished.remove(&partition);
            }
            Some(Err(error)) => return Err(error).with_context(|| format!("reading {topic}")),
            None if last_record.elapsed() > STALL_TIMEOUT => {
                bail!(
                    "reading {topic}: no record for {STALL_TIMEOUT:?}, partitions {unfinished:?} unfinished"
                )
            }
            None => {}
        }
    }
    Ok(())
}

/// Assigns every partition of `topic` to `consumer` from its beginning, and returns them.
pub fn assign_from_beginning(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|topic| topic.partitions())
        .map(|partition| partition.id())
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(partitions)
}

/// The fields of a `page-view-counts` value that [`final_counts`] and the follower of
/// `harness::visibility` read.
#[derive(Deserialize)]
pub(crate) struct CountValue {
    pub(crate) page: String,
    pub(crate) window_start: String,
    pub(crate) count: u64,
}

/// The input consumer settings of clickflow's Kafka source (`consumer_config` in
/// `ingest/src/source.rs`, which is private), minus its statistics: explicit assignment,
/// no offset commits, `read_committed`, and the same fetch properties.
pub fn bare_consumer_config(bootstrap: &str, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-ingest-bare")
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    for (key, value) in FETCH_PROPERTIES {
        config.set(*key, *value);
    }
    config
}
