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
    /// The record's value.
    pub value: &'a [u8],
    /// Why it was refused.
    pub reason: DeadLetterReason,
    /// The input topic.
    pub topic: &'a str,
    /// The input partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
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

    /// Queues a dead letter for delivery, waiting while the local queue is full.
    pub fn send(&self, dead_letter: &DeadLetter<'_>) {
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
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic)
            .payload(dead_letter.value)
            .headers(headers);
        if let Some(key) = dead_letter.key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // Delivered records hold their place in the queue until their reports
                    // are served: serve them now rather than at the next interval.
                    record = returned;
                    self.producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((cause, _)) => {
                    self.producer.context().lost(
                        dead_letter.topic,
                        dead_letter.partition,
                        dead_letter.offset,
                        &cause,
                    );
                    return;
                }
            }
        }
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

/// Logs and counts dead letters that could not be delivered.
struct DeliveryLogger {
    status: IngestStatus,
}

impl DeliveryLogger {
    fn lost(&self, topic: &str, partition: i32, offset: i64, cause: &RdKafkaError) {
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

    fn delivery_failures(status: &IngestStatus) -> Option<String> {
        let text = status.prometheus_text();
        let line = text
            .lines()
            .find(|line| line.starts_with("clickflow_dead_letter_delivery_failures_total "))?;
        line.split(' ').nth(1).map(str::to_owned)
    }

    /// Nobody polls the producer but its own thread: the failed delivery is still counted.
    #[test]
    fn a_dead_letter_that_cannot_be_delivered_is_counted() {
        let status = IngestStatus::default();
        let producer = DeadLetterProducer::new(
            "127.0.0.1:1",
            "page-views.dlq",
            status.clone(),
            &[("message.timeout.ms".to_owned(), "300".to_owned())],
        )
        .unwrap();
        producer.send(&DeadLetter {
            key: None,
            value: b"{",
            reason: DeadLetterReason::InvalidJson,
            topic: "page-views",
            partition: 3,
            offset: 7,
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while delivery_failures(&status).as_deref() != Some("1") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(delivery_failures(&status).as_deref(), Some("1"));
    }
}
