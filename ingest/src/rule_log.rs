//! The alert rules' log: every rule created or deleted at run time, kept in a compacted
//! topic (by default `clickflow-alert-rules`), so that a restarted service has the same
//! rules again, as ksqlDB keeps its statements in its command topic.
//!
//! One record per change, keyed by rule id, so that compaction keeps each rule's latest
//! state. The value is JSON: `{"created": RULE}` (the rule's fields as [`AlertRule`]
//! serializes them) or `"deleted"`. A deletion is a record rather than a tombstone:
//! compaction drops tombstones after `delete.retention.ms`, and a deleted built-in rule
//! would then come back.
//!
//! At start-up the service reads every partition up to its end and takes each id's last
//! record; a record it cannot read stops the start with its position and cause, since
//! skipping it would bring back a deleted rule or lose a created one. A change is written,
//! and acknowledged by every in-sync replica, before it takes effect.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use clickflow_dataflow::AlertRule;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::admin::{Admin, TopicSpec};

/// How long reading the log at start-up, and writing one change, may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How long one poll of the log waits for a record.
const POLL: Duration = Duration::from_millis(100);

/// Why the rules' log could not be read or written; names the topic and the cause.
#[derive(Debug, thiserror::Error)]
#[error("alert rules topic {topic}: {message}")]
pub struct RuleLogError {
    /// The topic.
    pub topic: String,
    /// What went wrong.
    pub message: String,
}

/// The latest state of every rule id in the log: the rule, or `None` once deleted.
pub type LoggedRules = BTreeMap<String, Option<AlertRule>>;

/// One change, as a record's value.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Change {
    Created(AlertRule),
    Deleted,
}

/// Writes rule changes to the log, one at a time, each acknowledged before the next.
pub struct RuleLog {
    producer: Mutex<BaseProducer<DeliveryReport>>,
    topic: String,
}

impl RuleLog {
    /// Creates `topic` if it is missing (compacted, one partition), reads it to its end,
    /// and returns the writer with the rules it holds. `properties` are extra librdkafka
    /// properties for the producer.
    pub fn open(
        bootstrap: &str,
        topic: &str,
        properties: &[(String, String)],
    ) -> Result<(Self, LoggedRules), RuleLogError> {
        let error = |message: String| RuleLogError {
            topic: topic.to_owned(),
            message,
        };
        let admin = Admin::connect(bootstrap, TIMEOUT).map_err(|e| error(e.to_string()))?;
        let spec = TopicSpec::compacted(topic, 1, None);
        for outcome in admin
            .create_topics(&[spec])
            .map_err(|e| error(e.to_string()))?
        {
            outcome.result.map_err(|e| error(e.to_string()))?;
        }
        let rules = read_to_end(bootstrap, topic).map_err(error)?;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "clickflow-alert-rules")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", TIMEOUT.as_millis().to_string());
        for (key, value) in properties {
            config.set(key, value);
        }
        let producer = config
            .create_with_context(DeliveryReport::default())
            .map_err(|e| error(format!("cannot create a producer: {e}")))?;
        let log = Self {
            producer: Mutex::new(producer),
            topic: topic.to_owned(),
        };
        Ok((log, rules))
    }

    /// Writes that rule `id` is now `rule` (`None`: deleted), and waits until the broker
    /// has acknowledged it.
    pub fn record(&self, id: &str, rule: Option<&AlertRule>) -> Result<(), RuleLogError> {
        let change = match rule {
            Some(rule) => Change::Created(rule.clone()),
            None => Change::Deleted,
        };
        let value = serde_json::to_vec(&change).map_err(|e| self.error(e.to_string()))?;
        let producer = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        producer.context().take();
        producer
            .send(BaseRecord::to(&self.topic).key(id).payload(&value))
            .map_err(|(e, _)| self.error(format!("cannot write rule {id:?}: {e}")))?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            producer.poll(POLL);
            if let Some(delivered) = producer.context().take() {
                return delivered
                    .map_err(|cause| self.error(format!("rule {id:?} was not written: {cause}")));
            }
            if Instant::now() >= deadline {
                return Err(self.error(format!(
                    "rule {id:?} was not acknowledged within {TIMEOUT:?}"
                )));
            }
        }
    }

    fn error(&self, message: String) -> RuleLogError {
        RuleLogError {
            topic: self.topic.clone(),
            message,
        }
    }
}

/// Reads every partition of `topic` from its start to its current end.
fn read_to_end(bootstrap: &str, topic: &str) -> Result<LoggedRules, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "clickflow-alert-rules")
        .set("group.id", "clickflow-alert-rules")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let rules = read_with(&consumer, topic);
    // Closing a consumer with a group id waits for its group coordinator: up to 100 ms of
    // the service's start-up in half of the starts. Nothing needs to wait for that.
    let closing = std::thread::Builder::new().name("clickflow-rules-close".to_owned());
    if let Err(error) = closing.spawn(move || drop(consumer)) {
        tracing::debug!(%error, "closing the rules' consumer in place");
    }
    rules
}

/// Reads every partition of `topic` with `consumer` up to its end (see [`read_to_end`]).
fn read_with(consumer: &BaseConsumer, topic: &str) -> Result<LoggedRules, String> {
    let deadline = Instant::now() + TIMEOUT;
    // A topic created a moment ago may not have a leader everywhere yet.
    let partitions = retried(deadline, "cannot read its metadata", || {
        let metadata = consumer.fetch_metadata(Some(topic), POLL)?;
        let topics = metadata.topics();
        match topics.first().map(|t| (t.error(), t.partitions())) {
            Some((None, partitions)) if !partitions.is_empty() => {
                Ok(partitions.iter().map(|p| p.id()).collect::<Vec<_>>())
            }
            Some((Some(code), _)) => Err(KafkaError::MetadataFetch(code.into())),
            _ => Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownPartition,
            )),
        }
    })?;
    let mut assignment = TopicPartitionList::new();
    // Per partition: the offset up to which records are still to be read.
    let mut ends = BTreeMap::new();
    for partition in partitions {
        let (low, high) = retried(deadline, "cannot read its offsets", || {
            consumer.fetch_watermarks(topic, partition, POLL)
        })
        .map_err(|e| format!("partition {partition}: {e}"))?;
        if high > low {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(|e| e.to_string())?;
            ends.insert(partition, high);
        }
    }
    let mut rules = LoggedRules::new();
    if ends.is_empty() {
        return Ok(rules);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("cannot assign its partitions: {e}"))?;
    let mut last_error = None;
    while !ends.is_empty() {
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                let (partition, offset) = (message.partition(), message.offset());
                let (id, change) = decode(message.key(), message.payload()).map_err(|cause| {
                    format!("the record at partition {partition}, offset {offset}: {cause}")
                })?;
                rules.insert(
                    id,
                    match change {
                        Change::Created(rule) => Some(rule),
                        Change::Deleted => None,
                    },
                );
                if ends.get(&partition).is_some_and(|&end| offset + 1 >= end) {
                    ends.remove(&partition);
                }
            }
            // Errors the consumer reports may pass (a broker restarting).
            Some(Err(e)) => last_error = Some(e),
            None => {
                // Offsets up to the end may be missing (compacted away): the consumer's
                // position tells when a partition is read.
                let positions = consumer.position().map_err(|e| e.to_string())?;
                ends.retain(|&partition, &mut end| {
                    positions
                        .find_partition(topic, partition)
                        .and_then(|element| element.offset().to_raw())
                        .is_none_or(|position| position < end)
                });
            }
        }
        if !ends.is_empty() && Instant::now() >= deadline {
            let cause = last_error.map_or_else(String::new, |e| format!(" (last error: {e})"));
            return Err(format!("not read to its end within {TIMEOUT:?}{cause}"));
        }
    }
    Ok(rules)
}

/// `request`'s answer, asked again until it succeeds or `deadline` passes; then `what`
/// with the last error.
fn retried<T>(
    deadline: Instant,
    what: &str,
    mut request: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, String> {
    loop {
        match request() {
            Ok(answer) => return Ok(answer),
            Err(e) if Instant::now() >= deadline => return Err(format!("{what}: {e}")),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// A record's rule id and change; the id of a created rule must be the record's key.
fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(String, Change), String> {
    let id = key
        .map(std::str::from_utf8)
        .ok_or("no key")?
        .map_err(|_| "the key is not UTF-8")?;
    let change: Change = serde_json::from_slice(value.ok_or("no value")?)
        .map_err(|e| format!("not a rule change: {e}"))?;
    if let Change::Created(rule) = &change
        && rule.rule_id != id
    {
        return Err(format!(
            "the key is {id:?} but the rule's id {:?}",
            rule.rule_id
        ));
    }
    Ok((id.to_owned(), change))
}

/// Keeps the delivery report of the last record sent.
#[derive(Default)]
struct DeliveryReport {
    last: Mutex<Option<Result<(), String>>>,
}

impl DeliveryReport {
    fn take(&self) -> Option<Result<(), String>> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl ClientContext for DeliveryReport {}

impl ProducerContext for DeliveryReport {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string());
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_back_as_written_and_a_mismatched_key_is_refused() {
        let rule = AlertRule::high_traffic(7);
        let created = serde_json::to_vec(&Change::Created(rule.clone())).unwrap();
        let deleted = serde_json::to_vec(&Change::Deleted).unwrap();
        assert_eq!(
            decode(Some(b"high_traffic"), Some(&created)),
            Ok(("high_traffic".to_owned(), Change::Created(rule)))
        );
        assert_eq!(
            decode(Some(b"gone"), Some(&deleted)),
            Ok(("gone".to_owned(), Change::Deleted))
        );
        assert_eq!(deleted, b"\"deleted\"");
        assert!(
            decode(Some(b"other"), Some(&created))
                .unwrap_err()
                .contains("the key is \"other\"")
        );
        assert_eq!(decode(None, Some(&deleted)), Err("no key".to_owned()));
        assert_eq!(decode(Some(b"x"), None), Err("no value".to_owned()));
        assert!(
            decode(Some(b"x"), Some(b"{\"created\":1}"))
                .unwrap_err()
                .starts_with("not a rule change")
        );
    }
}
