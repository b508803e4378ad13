//! The load generator's producer: sends the [`generator`](crate::generator)'s records to a
//! topic with the reference producer's settings ([`reference_producer_config`]), at a
//! fixed rate or as fast as the producer takes them, and counts what was delivered.
//!
//! Each record is keyed by its `user_id` ([`Record::key`]; malformed records have no key
//! and go to any partition). A [`LoadProducer`] drives an rdkafka `BaseProducer` from one
//! thread: it polls for delivery reports between sends, waits (polling) when librdkafka's
//! queue is full, and flushes at the end. Delivery reports are counted in the producer's
//! context; the first failure stops the sending (the records already handed over are still
//! flushed), since a producer whose records time out would otherwise keep queueing more.
//!
//! With a rate of `r` records per second, record `i` is sent `i / r` seconds after the
//! start, or up to a millisecond later: the sender sleeps at least that long, then sends
//! every record that fell due. Starting the generator when the sending starts
//! ([`LoadConfig::start_now`]) with a `duration_ms` of `events / r` seconds makes the event
//! times follow the wall clock, as a live source's would; the records themselves depend
//! only on the generator's configuration and that start.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};

use crate::admin::{MetadataError, topic_leaders};
use crate::generator::{ConfigError, Generator, GeneratorConfig, Record};
use crate::status::now_ms;

/// How often the progress callback is called.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// The shortest wait between paced sends: at tens of thousands of records per second,
/// sleeping until each record is due would wake the thread (and librdkafka's) for every
/// record. Records that fall due during a wait go out back to back after it, well within
/// the producer's `linger.ms`.
const MIN_PACING_SLEEP: Duration = Duration::from_millis(1);
/// How long to poll before retrying a send that found librdkafka's queue full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);
/// How long the final flush may take beyond the delivery timeout.
const FLUSH_MARGIN: Duration = Duration::from_secs(5);
/// How long to wait for the reports of records purged after a failed flush.
const PURGE_WAIT: Duration = Duration::from_secs(1);

/// The reference producer's settings for the cluster at `bootstrap`: `acks=all`,
/// `enable.idempotence=true`, `linger.ms=5`, `batch.size=65536`, `compression.type=zstd`.
pub fn reference_producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.size", "65536")
        .set("compression.type", "zstd");
    config
}

/// What to send, where, and how fast.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub bootstrap: String,
    /// The topic to write to; it must exist.
    pub topic: String,
    /// The records: `generator.events` of them.
    pub generator: GeneratorConfig,
    /// Whether the event times start when the sending does, in place of
    /// `generator.start_ms` if that is earlier: as a live source's, they follow the wall
    /// clock. A start taken before connecting would put every event time behind the
    /// moment its record is sent by the time the set-up took.
    pub start_now: bool,
    /// Records per second; 0 sends as fast as the producer takes them.
    pub rate: u64,
    /// How long to wait for the cluster: for the topic's metadata at the start, and for
    /// each record's delivery (librdkafka's `message.timeout.ms`).
    pub timeout: Duration,
}

/// Why a [`LoadProducer`] could not start. Every variant names the cause.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The generator's configuration is invalid.
    #[error("invalid generator parameters")]
    Generator(#[from] ConfigError),
    /// The producer could not be created (e.g. an invalid setting).
    #[error("cannot create a Kafka producer for {bootstrap}: {cause}")]
    Client {
        /// The bootstrap servers.
        bootstrap: String,
        /// What librdkafka said.
        cause: String,
    },
    /// The cluster did not answer the metadata request in time.
    #[error("cannot reach Kafka at {bootstrap} within {timeout:?}: {cause}")]
    Unreachable {
        /// The bootstrap servers.
        bootstrap: String,
        /// How long the producer waited.
        timeout: Duration,
        /// What librdkafka said, with its first client error.
        cause: String,
    },
    /// The topic does not exist.
    #[error("topic {topic} does not exist on {bootstrap}; create it first (`clickflow topics`)")]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        bootstrap: String,
    },
    /// The cluster's metadata names an error for the topic.
    #[error("topic {topic}: {code}")]
    Topic {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
}

/// Counts of a run so far, passed to the progress callback of [`LoadProducer::run`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Records handed to the producer.
    pub sent: u64,
    /// Records the cluster acknowledged.
    pub delivered: u64,
    /// Records that failed.
    pub failed: u64,
}

/// The outcome of [`LoadProducer::run`]. Once it returns, every record sent was either
/// delivered or failed: `sent == delivered + failed`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliverySummary {
    /// Records handed to the producer.
    pub sent: u64,
    /// Records the cluster acknowledged.
    pub delivered: u64,
    /// Records that failed (including any purged after a flush that timed out).
    pub failed: u64,
    /// The first failure, with the first client error if there was one.
    pub first_error: Option<String>,
    /// Key and value bytes of the delivered records (before compression).
    pub bytes: u64,
    /// From the first send to the end of the flush.
    pub elapsed: Duration,
}

impl DeliverySummary {
    /// Delivered records per second.
    pub fn records_per_second(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Counts delivery reports and remembers the first failure.
#[derive(Debug, Default)]
struct LoadContext {
    /// The first error librdkafka reported for the client as a whole, such as
    /// `Connect to ipv4#127.0.0.1:1 failed: Connection refused`: the cause that a failed
    /// request or record only sums up ("timed out").
    client_error: Mutex<Option<String>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl LoadContext {
    /// Counts one failed record.
    fn fail(&self, error: &KafkaError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.note(|| self.describe(error));
    }

    /// `error`, with the first client error if there was one.
    fn describe(&self, error: &KafkaError) -> String {
        match &*self
            .client_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(cause) => format!("{error} (first client error: {cause})"),
            None => error.to_string(),
        }
    }

    /// Remembers an error, unless there was one already.
    fn note(&self, error: impl FnOnce() -> String) {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(error);
    }

    fn progress(&self, sent: u64) -> Progress {
        Progress {
            sent,
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

impl ClientContext for LoadContext {
    /// Remembers the first error (they come in bursts, each twice; librdkafka's log lines
    /// say the same), and logs it at debug level only.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "kafka client error");
        self.client_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| format!("{error}: {reason}"));
    }
}

impl ProducerContext for LoadContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(message) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                let bytes = message.key_len() + message.payload_len();
                self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            }
            Err((error, _)) => self.fail(error),
        }
    }
}

/// A connected producer with its records, ready to [`run`](Self::run).
pub struct LoadProducer {
    producer: BaseProducer<LoadContext>,
    generator: Generator,
    start_now: bool,
    topic: String,
    rate: u64,
    timeout: Duration,
    partitions: usize,
}

impl std::fmt::Debug for LoadProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadProducer")
            .field("topic", &self.topic)
            .field("rate", &self.rate)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl LoadProducer {
    /// Checks the generator's configuration, creates the producer and checks that the
    /// topic exists (which also checks that the cluster answers within the timeout).
    pub fn new(config: LoadConfig) -> Result<Self, ProduceError> {
        let LoadConfig {
            bootstrap,
            topic,
            generator,
            start_now,
            rate,
            timeout,
        } = config;
        let generator = Generator::new(generator)?;
        let mut client = reference_producer_config(&bootstrap);
        client
            .set("client.id", "clickflow-produce")
            .set("message.timeout.ms", timeout.as_millis().max(1).to_string())
            // A missing topic is an error, not one to create with the broker's defaults.
            .set("allow.auto.create.topics", "false");
        let producer: BaseProducer<LoadContext> = client
            .create_with_context(LoadContext::default())
            .map_err(|e| ProduceError::Client {
                bootstrap: bootstrap.clone(),
                cause: e.to_string(),
            })?;
        let partitions = match topic_leaders(producer.client(), &topic, timeout) {
            Ok(Some(leaders)) => leaders.len(),
            Ok(None) => return Err(ProduceError::UnknownTopic { topic, bootstrap }),
            Err(MetadataError::Request(e)) => {
                // Serves the client's error events, which name the cause.
                producer.poll(Duration::from_millis(100));
                return Err(ProduceError::Unreachable {
                    cause: producer.context().describe(&e),
                    bootstrap,
                    timeout,
                });
            }
            Err(MetadataError::Topic(code)) => return Err(ProduceError::Topic { topic, code }),
        };
        Ok(Self {
            producer,
            generator,
            start_now,
            topic,
            rate,
            timeout,
            partitions,
        })
    }

    /// The number of partitions of the topic.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The number of records to send.
    pub fn events(&self) -> u64 {
        self.generator.config().events
    }

    /// Sends every record (or until the first failure, or until `progress` breaks),
    /// flushes, and sums up. `progress` is called about every 100 ms and once at the end
    /// of the sending.
    pub fn run(self, mut progress: impl FnMut(&Progress) -> ControlFlow<()>) -> DeliverySummary {
        let Self {
            producer,
            mut generator,
            start_now,
            topic,
            rate,
            timeout,
            ..
        } = self;
        let context = producer.context().clone();
        if start_now {
            generator.start_later(u64::try_from(now_ms()).unwrap_or_default());
        }
        let started = Instant::now();
        let mut next_report = started + PROGRESS_INTERVAL;
        let mut report = |sent: u64, last: bool| {
            let now = Instant::now();
            if now < next_report && !last {
                return ControlFlow::Continue(());
            }
            next_report = now + PROGRESS_INTERVAL;
            progress(&context.progress(sent))
        };
        let mut record = Record::new();
        let mut sent = 0;
        'records: while context.failed.load(Ordering::Relaxed) == 0
            && generator.next_record(&mut record).is_some()
        {
            if rate > 0 {
                let due = started + pace(sent, rate);
                loop {
                    let now = Instant::now();
                    if now >= due {
                        break;
                    }
                    // A sleep, not `poll(due - now)`: rdkafka's poll spins through
                    // waits under a millisecond, which at tens of thousands of records per
                    // second would keep a core busy.
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(pacing_sleep(due - now));
                    if report(sent, false).is_break() {
                        break 'records;
                    }
                }
            }
            let mut message = BaseRecord::<[u8], [u8]>::to(&topic).payload(record.value());
            if let Some(key) = record.key() {
                message = message.key(key);
            }
            loop {
                match producer.send(message) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        message = back;
                        producer.poll(QUEUE_FULL_WAIT);
                    }
                    Err((error, _)) => {
                        context.fail(&error);
                        break;
                    }
                }
            }
            sent += 1;
            producer.poll(Duration::ZERO);
            if report(sent, false).is_break() {
                break;
            }
        }
        // The sending is over: whether the callback asks to stop no longer matters.
        let _ = report(sent, true);
        if let Err(error) = producer.flush(timeout + FLUSH_MARGIN) {
            context.note(|| format!("records still undelivered after {timeout:?}: {error}"));
            producer.purge(PurgeConfig::default().queue().inflight());
            // Serves the purged records' reports, which count them as failed.
            let _ = producer.flush(PURGE_WAIT);
        }
        DeliverySummary {
            sent,
            delivered: context.delivered.load(Ordering::Relaxed),
            failed: context.failed.load(Ordering::Relaxed),
            first_error: context
                .first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            bytes: context.bytes.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        }
    }
}

/// When record `index` is due after the start, at `rate` records per second.
fn pace(index: u64, rate: u64) -> Duration {
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How long to sleep when the next record is due in `wait`.
fn pacing_sleep(wait: Duration) -> Duration {
    wait.clamp(MIN_PACING_SLEEP, PROGRESS_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::{MIN_PACING_SLEEP, PROGRESS_INTERVAL, pace, pacing_sleep};
    use std::time::Duration;

    #[test]
    fn records_are_spread_evenly_over_each_second() {
        assert_eq!(pace(0, 3), Duration::ZERO);
        assert_eq!(pace(1, 3), Duration::from_nanos(333_333_333));
        assert_eq!(pace(3, 3), Duration::from_secs(1));
        assert_eq!(pace(u64::MAX, 1), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn paced_sends_sleep_at_least_a_millisecond_and_report_progress_in_between() {
        assert_eq!(pacing_sleep(Duration::from_micros(20)), MIN_PACING_SLEEP);
        assert_eq!(
            pacing_sleep(Duration::from_millis(7)),
            Duration::from_millis(7)
        );
        assert_eq!(pacing_sleep(Duration::from_secs(5)), PROGRESS_INTERVAL);
    }
}
