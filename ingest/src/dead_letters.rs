//! The dead-letter topic: every refused record, with its original key and value and
//! headers that say why and where it came from.
//!
//! Headers: `clickflow.reason` (a [`DeadLetterReason`] name), `clickflow.topic`,
//! `clickflow.partition` and `clickflow.offset` (decimal). The producer is idempotent with
//! `acks=all` and delivers in the background; a dead letter that cannot be delivered is
//! logged with its source position and counted, so nothing disappears without a trace.
//!
//! A thread of its own serves the delivery reports every `REPORT_INTERVAL`. rdkafka's
//! `ThreadedProducer` would poll with a timeout, and its `poll` spins through the last
//! millisecond of every timeout (it hands librdkafka whole milliseconds left, so zero):
//! about 1% of a core for a service with nothing to do.
//!
//! A source never waits for the producer: a dead letter that finds its queue full (the
//! dead-letter topic has been unavailable for long) waits in the source's
//! [`DeadLetterSender`], and the source reads nothing until it is queued. Its worker goes
//! on with the rest of the dataflow, and the service can still stop.

use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use clickflow_events::DeadLetterReason;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tracing::error;

use crate::KafkaError;
use crate::repeating::Repeating;
use crate::status::IngestStatus;

/// How often delivery reports are served. They only log and count failures; librdkafka
/// delivers meanwhile, and its queue holds far more than arrives in this time.
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// One refused record and where it was read.
#[derive(Clone, Copy, Debug)]
pub struct DeadLetter<'a> {
    /// The record's key.
    pub key: Option<&'a [u8]>,
    /// The record's value; `None` for a record without one, which stays without one.
    pub value: Option<&'a [u8]>,
    /// Why it was refused.
    pub reason: DeadLetterReason,
    /// The input topic.
    pub topic: &'a str,
    /// The input partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
}

impl DeadLetter<'_> {
    fn owned(&self) -> OwnedDeadLetter {
        OwnedDeadLetter {
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            reason: self.reason,
            topic: self.topic.to_owned(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// A dead letter kept until the producer's queue has room for it.
struct OwnedDeadLetter {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    reason: DeadLetterReason,
    topic: String,
    partition: i32,
    offset: i64,
}

impl OwnedDeadLetter {
    fn borrowed(&self) -> DeadLetter<'_> {
        DeadLetter {
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            reason: self.reason,
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// One source's refused records: each is counted and sent as a dead letter, in order,
/// without waiting. Those that find the producer's queue full wait here for
/// [`DeadLetterSender::retry`]; any still waiting when the sender is dropped (the service
/// stops) are logged and counted as not delivered.
pub struct DeadLetterSender {
    producer: DeadLetterProducer,
    waiting: VecDeque<OwnedDeadLetter>,
}

impl DeadLetterSender {
    /// A sender to `producer`, counting refused records in the producer's status.
    pub fn new(producer: DeadLetterProducer) -> Self {
        Self {
            producer,
            waiting: VecDeque::new(),
        }
    }

    /// Counts a refused record and queues its dead letter, or keeps it (after any that
    /// wait already) while the queue is full.
    pub fn refuse(&mut self, dead_letter: &DeadLetter<'_>) {
        self.producer
            .context()
            .status
            .add_dead_letter(dead_letter.reason);
        if !self.waiting.is_empty() || !self.producer.try_send(dead_letter) {
            self.waiting.push_back(dead_letter.owned());
        }
    }

    /// Queues the dead letters that wait, in order, while there is room; says whether
    /// none waits any more.
    pub fn retry(&mut self) -> bool {
        while let Some(waiting) = self.waiting.front() {
            if !self.producer.try_send(&waiting.borrowed()) {
                return false;
            }
            self.waiting.pop_front();
        }
        true
    }

    /// Whether a dead letter waits for room in the queue.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }
}

impl Drop for DeadLetterSender {
    fn drop(&mut self) {
        if self.retry() {
            return;
        }
        for waiting in self.waiting.drain(..) {
            self.producer.report_lost(
                &waiting.borrowed(),
                &"the service stopped while the dead-letter queue was full",
            );
        }
    }
}

/// Writes dead letters to the dead-letter topic. Cloning shares the producer.
#[derive(Clone)]
pub struct DeadLetterProducer {
    producer: Arc<BaseProducer<DeliveryLogger>>,
    topic: Arc<str>,
    /// The thread that serves the producer's delivery reports; the last clone stops it.
    _reports: Arc<Repeating>,
}

/// Serves the producer's delivery reports every `REPORT_INTERVAL`, without waiting in
/// librdkafka, from a thread of its own.
fn serve_reports(producer: Arc<BaseProducer<DeliveryLogger>>) -> Result<Repeating, KafkaError> {
    Repeating::start("clickflow-dead-letters", REPORT_INTERVAL, move || {
        producer.poll(Duration::ZERO);
    })
}

impl DeadLetterProducer {
    /// A producer of dead letters to `topic`.
    pub fn new(
        bootstrap: &str,
        topic: &str,
        status: IngestStatus,
        properties: &[(String, String)],
    ) -> Result<Self, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "clickflow-dead-letters")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        for (key, value) in properties {
            config.set(key, value);
        }
        let producer: Arc<BaseProducer<DeliveryLogger>> = Arc::new(
            config
                .create_with_context(DeliveryLogger { status })
                .map_err(|source| KafkaError::Client {
                    what: "dead-letter producer",
                    source,
                })?,
        );
        Ok(Self {
            _reports: Arc::new(serve_reports(Arc::clone(&producer))?),
            producer,
            topic: topic.into(),
        })
    }

    /// Queues a dead letter for delivery; says false, having queued nothing, when the local
    /// queue is full. A dead letter that cannot be produced at all is logged and counted.
    fn try_send(&self, dead_letter: &DeadLetter<'_>) -> bool {
        let partition = dead_letter.partition.to_string();
        let offset = dead_letter.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(header(
                "clickflow.reason",
                dead_letter.reason.as_str().as_bytes(),
            ))
            .insert(header("clickflow.topic", dead_letter.topic.as_bytes()))
            .insert(header("clickflow.partition", partition.as_bytes()))
            .insert(header("clickflow.offset", offset.as_bytes()));
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(value) = dead_letter.value {
            record = record.payload(value);
        }
        if let Some(key) = dead_letter.key {
            record = record.key(key);
        }
        // Delivered records hold their place in the queue until their reports are served:
        // when it is full, they are served now, rather than at the next interval, and the
        // record is tried once more.
        let mut served = false;
        loop {
            match self.producer.send(record) {
                Ok(()) => return true,
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    if served {
                        return false;
                    }
                    record = returned;
                    self.producer.poll(Duration::ZERO);
                    served = true;
                }
                Err((cause, _)) => {
                    self.report_lost(dead_letter, &cause);
                    return true;
                }
            }
        }
    }

    fn context(&self) -> &DeliveryLogger {
        self.producer.context()
    }

    /// Logs and counts `dead_letter` as not delivered, for `cause`.
    fn report_lost(&self, dead_letter: &DeadLetter<'_>, cause: &dyn Display) {
        self.context().lost(
            dead_letter.topic,
            dead_letter.partition,
            dead_letter.offset,
            cause,
        );
    }

    /// Waits until every queued dead letter is delivered (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer
            .flush(timeout)
            .map_err(|source| KafkaError::Client {
                what: "dead-letter producer flush",
                source,
            })
    }
}

fn header<'a>(key: &'a str, value: &'a [u8]) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value),
    }
}

/// The producer's context: counts refused records, and logs and counts dead letters that
/// could not be delivered.
struct DeliveryLogger {
    status: IngestStatus,
}

impl DeliveryLogger {
    fn lost(&self, topic: &str, partition: i32, offset: i64, cause: &dyn Display) {
        self.status.add_dead_letter_delivery_failure();
        error!(topic, partition, offset, %cause, "dead letter not delivered");
    }
}

impl ClientContext for DeliveryLogger {}

impl ProducerContext for DeliveryLogger {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((cause, message)) = result {
            let origin = |name: &str| {
                message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|header| header.key == name)
                        .and_then(|header| header.value)
                        .and_then(|value| std::str::from_utf8(value).ok())
                        .map(str::to_owned)
                })
            };
            let topic = origin("clickflow.topic").unwrap_or_default();
            let partition = origin("clickflow.partition")
                .and_then(|p| p.parse().ok())
                .unwrap_or(-1);
            let offset = origin("clickflow.offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(-1);
            self.lost(&topic, partition, offset, cause);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A sender to a broker that never answers, whose producer's queue holds `queue`
    /// dead letters, each given up after `timeout_ms`; and that producer.
    fn unreachable(
        queue: usize,
        timeout_ms: u64,
    ) -> (DeadLetterSender, DeadLetterProducer, IngestStatus) {
        let status = IngestStatus::default();
        let properties = [
            ("message.timeout.ms", timeout_ms.to_string()),
            ("queue.buffering.max.messages", queue.to_string()),
        ]
        .map(|(key, value)| (key.to_owned(), value));
        let producer =
            DeadLetterProducer::new("127.0.0.1:1", "page-views.dlq", status.clone(), &properties)
                .unwrap();
        let sender = DeadLetterSender::new(producer.clone());
        (sender, producer, status)
    }

    fn dead_letter(offset: i64) -> DeadLetter<'static> {
        DeadLetter {
            key: None,
            value: Some(b"{"),
            reason: DeadLetterReason::InvalidJson,
            topic: "page-views",
            partition: 3,
            offset,
        }
    }

    fn delivery_failures(status: &IngestStatus) -> u64 {
        let text = status.prometheus_text();
        text.lines()
            .find_map(|line| line.strip_prefix("clickflow_dead_letter_delivery_failures_total "))
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("no delivery failures in {text}"))
    }

    fn await_delivery_failures(status: &IngestStatus, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while delivery_failures(status) < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(delivery_failures(status), count);
    }

    /// Nobody polls the producer but its own thread: the failed delivery is still counted.
    #[test]
    fn a_dead_letter_that_cannot_be_delivered_is_counted() {
        let (mut sender, _producer, status) = unreachable(100, 300);
        sender.refuse(&dead_letter(7));
        assert!(!sender.is_waiting());
        await_delivery_failures(&status, 1);
        assert_eq!(status.dead_letters().iter().sum::<u64>(), 1);
    }

    /// With room for one dead letter in the queue, the second and third wait; once the
    /// first is given up, the second takes its place and the third still waits. Dropping
    /// the sender counts the third as not delivered at once; the second is still queued.
    #[test]
    fn dead_letters_wait_while_the_queue_is_full_and_are_counted_when_given_up() {
        let (mut sender, producer, status) = unreachable(1, 2_000);
        for offset in 1..=3 {
            sender.refuse(&dead_letter(offset));
        }
        assert!(sender.is_waiting());
        assert!(!sender.retry());
        assert_eq!(status.dead_letters().iter().sum::<u64>(), 3);
        await_delivery_failures(&status, 1);
        assert!(!sender.retry(), "the third dead letter has no room");
        drop(sender);
        assert_eq!(delivery_failures(&status), 2, "the third is given up");
        await_delivery_failures(&status, 3);
        drop(producer);
    }
}
