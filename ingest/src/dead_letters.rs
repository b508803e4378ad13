//! The dead-letter topic: every refused record, with its original key and value and
//! headers that say why and where it came from.
//!
//! Headers: `clickflow.reason` (a [`DeadLetterReason`] name), `clickflow.topic`,
//! `clickflow.partition` and `clickflow.offset` (decimal). The producer is idempotent with
//! `acks=all` and delivers in the background; a dead letter that cannot be delivered is
//! logged with its source position and counted, so nothing disappears without a trace.

use std::sync::Arc;
use std::time::Duration;

use clickflow_events::DeadLetterReason;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tracing::error;

use crate::KafkaError;
use crate::status::IngestStatus;

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
    producer: Arc<ThreadedProducer<DeliveryLogger>>,
    topic: Arc<str>,
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
        let producer = config
            .create_with_context(DeliveryLogger { status })
            .map_err(|source| KafkaError::Client {
                what: "dead-letter producer",
                source,
            })?;
        Ok(Self {
            producer: Arc::new(producer),
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
                    record = returned;
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
