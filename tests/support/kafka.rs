//! Helpers for integration tests against a real Apache Kafka: where it is
//! ([`bootstrap`]), fresh topic names ([`unique_topic`]), creating and describing topics,
//! producing records and waiting for their delivery ([`produce`]), reading a topic from
//! the beginning ([`consume_all`]), and client quotas ([`limit_consumer_rate`]).
//!
//! The broker is the one `scripts/test` starts (or `scripts/kafka-start`), found through
//! the environment variable [`BOOTSTRAP_ENV`]. A test that needs Kafka and finds none
//! panics with instructions: it never passes silently. Every helper panics with a message
//! that names the topic and the cause when Kafka refuses or does not answer in time.

use std::collections::BTreeMap;
use std::env;
use std::process;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clickflow_ingest::admin::{Admin, TopicDescription, TopicSpec, TopicState};
use clickflow_ingest::producer::reference_producer_config;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::run::stdout_of;

/// The environment variable that holds the test broker's bootstrap address.
pub const BOOTSTRAP_ENV: &str = "CLICKFLOW_KAFKA_BOOTSTRAP";

/// How long a helper waits for the broker (per request, and for deliveries).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The most records [`consume_all`] reads between two checks of its `stop` condition.
const CONSUME_BATCH: usize = 10_000;

/// The test broker's bootstrap address, from [`BOOTSTRAP_ENV`]. Panics, saying how to
/// start Kafka, if it is not set.
pub fn bootstrap() -> String {
    match env::var(BOOTSTRAP_ENV) {
        Ok(address) if !address.trim().is_empty() => address,
        _ => panic!(
            "{BOOTSTRAP_ENV} is not set, and this test needs a real Apache Kafka. Run the \
             whole suite with `scripts/test` (it starts and stops one), or start one with \
             `scripts/kafka-start` and `export {BOOTSTRAP_ENV}=<the address it prints>` \
             (127.0.0.1:19092 by default)."
        ),
    }
}

/// A topic name that no other test, run or process uses: `prefix` (letters, digits, `.`,
/// `_` and `-` only), the process id, a counter and the time in milliseconds.
pub fn unique_topic(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{prefix}-{}-{n}-{millis}", process::id())
}

/// An admin connection to the broker at `bootstrap`.
pub fn admin(bootstrap: &str) -> Admin {
    Admin::connect(bootstrap, TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// Creates the new topic `name` with `partitions` partitions and the broker's default
/// replication, `cleanup.policy=compact` if `compacted`, and waits until every partition
/// has a leader. Panics if the topic exists or cannot be created.
pub fn create_topic(bootstrap: &str, name: &str, partitions: u16, compacted: bool) {
    let policy = if compacted { "compact" } else { "delete" };
    let spec = TopicSpec {
        name: name.into(),
        partitions,
        replication_factor: None,
        config: vec![("cleanup.policy".into(), policy.into())],
    };
    let outcomes = admin(bootstrap)
        .create_topics(&[spec])
        .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
    match outcomes.into_iter().next().map(|outcome| outcome.result) {
        Some(Ok(TopicState::Created)) => {}
        Some(Ok(exists)) => panic!("topic {name} exists already: {exists:?}"),
        Some(Err(e)) => panic!("creating topic {name}: {e}"),
        None => panic!("creating topic {name}: no outcome"),
    }
}

/// Grows topic `name` to `total` partitions.
pub fn add_partitions(bootstrap: &str, name: &str, total: usize) {
    let client: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("admin client: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let results = runtime
        .block_on(client.create_partitions(
            &[NewPartitions::new(name, total)],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        ))
        .unwrap_or_else(|e| panic!("adding partitions to {name}: {e}"));
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("adding partitions to {topic}: {code}"));
    }
}

/// The partitions and configuration of topic `name`, or `None` if it does not exist.
pub fn describe_topic(bootstrap: &str, name: &str) -> Option<TopicDescription> {
    admin(bootstrap)
        .describe_topic(name)
        .unwrap_or_else(|e| panic!("describing topic {name}: {e}"))
}

/// Produces `records` (`(key, value)`) to `topic` in order, partitioned by key (records
/// without a key go to any partition), with the reference producer's settings; waits
/// until every record is delivered and returns the `(partition, offset)` of each.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
) -> Vec<(i32, i64)> {
    produce_records(bootstrap, topic, None, &with_values(records))
}

/// Limits what the broker sends consumers with `client.id` `client` to
/// `bytes_per_second` (a client quota, set with Kafka's own `ConfigCommand`). The broker
/// counts the bytes as fetched (compressed), and lets about ten seconds' worth through
/// before it holds a client's fetches back.
pub fn limit_consumer_rate(bootstrap: &str, client: &str, bytes_per_second: u64) {
    let root = env!("CARGO_MANIFEST_DIR");
    let lib = stdout_of(
        &mut process::Command::new(format!("{root}/scripts/kafka-fetch")),
        "scripts/kafka-fetch",
    );
    let lib = String::from_utf8_lossy(&lib).trim().to_owned();
    stdout_of(
        process::Command::new("java")
            .arg("-cp")
            .arg(format!("{lib}/*"))
            .args(["kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap])
            .args([
                "--alter",
                "--entity-type",
                "clients",
                "--entity-name",
                client,
            ])
            .args([
                "--add-config",
                &format!("consumer_byte_rate={bytes_per_second}"),
            ]),
        &format!("setting the quota of {client}"),
    );
}

/// [`produce`], with every record to `partition`.
pub fn produce_to_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
) -> Vec<(i32, i64)> {
    produce_records(bootstrap, topic, Some(partition), &with_values(records))
}

/// Produces one record with `key` and no value (a tombstone) to `partition` of `topic`, as
/// [`produce`] does; returns its offset.
pub fn produce_without_value(bootstrap: &str, topic: &str, partition: i32, key: &[u8]) -> i64 {
    produce_records(bootstrap, topic, Some(partition), &[(Some(key), None)])[0].1
}

/// A record to produce: its key and its value, either of which may be absent.
type RecordRef<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// `(key, value)` records, borrowed, each with its value.
fn with_values(records: &[(Option<Vec<u8>>, Vec<u8>)]) -> Vec<RecordRef<'_>> {
    records
        .iter()
        .map(|(key, value)| (key.as_deref(), Some(value.as_slice())))
        .collect()
}

/// Where a record was written, or why it was not.
type Report = Result<(i32, i64), String>;

/// The delivery report of each record, by index (`None` until it comes).
#[derive(Default)]
struct Deliveries(Mutex<Vec<Option<Report>>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let report = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.to_string()),
        };
        self.0.lock().unwrap_or_else(PoisonError::into_inner)[index] = Some(report);
    }
}

fn produce_records(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
    records: &[RecordRef<'_>],
) -> Vec<(i32, i64)> {
    let deliveries = Deliveries(Mutex::new(vec![None; records.len()]));
    let producer: BaseProducer<Deliveries> = reference_producer_config(bootstrap)
        .set("message.timeout.ms", TIMEOUT.as_millis().to_string())
        .create_with_context(deliveries)
        .unwrap_or_else(|e| panic!("creating a producer for {bootstrap}: {e}"));
    for (index, (key, value)) in records.iter().enumerate() {
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, index);
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("producing record {index} to {topic}: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(TIMEOUT)
        .unwrap_or_else(|e| panic!("flushing records to {topic}: {e}"));
    let reports = producer
        .context()
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    reports
        .into_iter()
        .enumerate()
        .map(|(index, report)| match report {
            Some(Ok(position)) => position,
            Some(Err(e)) => panic!("record {index} to {topic} was not delivered: {e}"),
            None => panic!("record {index} to {topic}: no delivery report after the flush"),
        })
        .collect()
}

/// A record read by [`consume_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset in the partition.
    pub offset: i64,
    /// The key, if any.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The headers in order; a header with a null value has an empty one here.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's timestamp in epoch milliseconds, if it has one.
    pub timestamp: Option<i64>,
}

impl ConsumedRecord {
    fn new(message: &BorrowedMessage<'_>) -> Self {
        let headers = message.headers().map_or_else(Vec::new, |headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        });
        ConsumedRecord {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: message.timestamp().to_millis(),
        }
    }
}

/// Reads every partition of `topic` from the beginning (explicitly assigned, no consumer
/// group, nothing committed), `read_committed` or not, until `stop` holds for the records
/// read so far or `timeout` passes, and returns the records in the order read (per
/// partition, in offset order). `stop` is checked before the first poll and after each
/// batch of records, not after each record. Transient consumer errors are printed and
/// the reading goes on; on timeout the caller gets what was read, to compare.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    read_committed: bool,
    stop: impl Fn(&[ConsumedRecord]) -> bool,
    timeout: Duration,
) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + timeout;
    let isolation = if read_committed {
        "read_committed"
    } else {
        "read_uncommitted"
    };
    let consumer = consumer(bootstrap, isolation);
    let mut assignment = TopicPartitionList::new();
    for partition in partitions(bootstrap, topic) {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap_or_else(|e| panic!("assigning {topic}/{partition}: {e}"));
    }
    consumer
        .assign(&assignment)
        .unwrap_or_else(|e| panic!("assigning {topic}: {e}"));
    let mut records = Vec::new();
    while !stop(&records) && Instant::now() < deadline {
        let mut wait = Duration::from_millis(100);
        // What is available now (up to a batch), then `stop` once.
        for _ in 0..CONSUME_BATCH {
            let Some(result) = consumer.poll(wait) else {
                break;
            };
            match result {
                Ok(message) => records.push(ConsumedRecord::new(&message)),
                Err(e @ KafkaError::MessageConsumptionFatal(_)) => panic!("reading {topic}: {e}"),
                Err(e) => eprintln!("reading {topic}: {e} (going on)"),
            }
            wait = Duration::ZERO;
        }
    }
    records
}

/// The number of records in `topic` now: the sum over its partitions of the high minus
/// the low watermark (with transactions, commit markers count too).
pub fn record_count(bootstrap: &str, topic: &str) -> i64 {
    watermarks(bootstrap, topic)
        .values()
        .map(|(low, high)| high - low)
        .sum()
}

/// Each partition's low and high watermark in `topic` now.
pub fn watermarks(bootstrap: &str, topic: &str) -> BTreeMap<i32, (i64, i64)> {
    let consumer = consumer(bootstrap, "read_uncommitted");
    partitions(bootstrap, topic)
        .map(|partition| {
            let watermarks = consumer
                .fetch_watermarks(topic, partition, TIMEOUT)
                .unwrap_or_else(|e| panic!("watermarks of {topic}/{partition}: {e}"));
            (partition, watermarks)
        })
        .collect()
}

/// A consumer that commits nothing, reading with `isolation` (`read_committed` or
/// `read_uncommitted`).
fn consumer(bootstrap: &str, isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "clickflow-tests")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap_or_else(|e| panic!("creating a consumer for {bootstrap}: {e}"))
}

/// The partition numbers of `topic`; panics if it does not exist.
fn partitions(bootstrap: &str, topic: &str) -> impl Iterator<Item = i32> {
    let count = describe_topic(bootstrap, topic)
        .unwrap_or_else(|| panic!("topic {topic} does not exist"))
        .partitions;
    0..i32::try_from(count).expect("partition count")
}
