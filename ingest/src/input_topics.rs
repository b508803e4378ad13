//! The input topics' partitions, looked up from a thread of the process's own, so that no
//! worker waits for the broker to answer a lookup while the dataflow runs.
//!
//! Every `METADATA_REFRESH` the watcher reads each input topic's metadata: the partitions
//! it has now, so that partitions added later are picked up. At a topic's first read, it
//! also resolves where the partitions found then start: `latest` becomes each partition's
//! end offset (its last stable offset, as a `read_committed` consumer reads), and a
//! timestamp the first offset at or after it, or the end where no record is that recent.
//! Partitions added later start at their beginning. A topic that does not exist yet counts
//! as read, with no partitions; a lookup that fails leaves the topic to the next round.
//!
//! Each worker's source takes the latest round's findings when it runs and assigns its own
//! partitions among them (see [`crate::partitions::owner`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tracing::{debug, warn};

use crate::KafkaError;
use crate::repeating::Repeating;
use crate::source::{SourceConfig, StartPosition, consumer_config};
use crate::status::lock;

/// How often partition metadata is re-read to find new partitions.
const METADATA_REFRESH: Duration = Duration::from_secs(5);

/// How long a metadata or offset lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the watcher found of one input topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicPartitions {
    /// The partitions of the last read that found the topic.
    pub partitions: Vec<i32>,
    /// Where the partitions found at the topic's first read start, when not at their
    /// beginning.
    starts: BTreeMap<i32, Offset>,
}

impl TopicPartitions {
    /// Where reading `partition` starts.
    pub fn start(&self, partition: i32) -> Offset {
        self.starts
            .get(&partition)
            .copied()
            .unwrap_or(Offset::Beginning)
    }
}

/// What the watcher found in its latest round: every input topic read so far (a topic
/// whose every lookup failed is not in it).
pub type FoundTopics = BTreeMap<String, TopicPartitions>;

struct Shared {
    found: Mutex<Arc<FoundTopics>>,
    /// Rounds completed: each one publishes `found` anew.
    rounds: AtomicU64,
}

/// Reads the input topics' partitions from a thread of its own until dropped.
pub struct TopicWatcher {
    shared: Arc<Shared>,
    _thread: Repeating,
}

impl TopicWatcher {
    /// Starts watching `config`'s input topics; the first round starts at once.
    pub fn start(config: &SourceConfig) -> Result<Self, KafkaError> {
        // It reads no records: no statistics either.
        let consumer: BaseConsumer = consumer_config(config, "clickflow-topics")
            .set("statistics.interval.ms", "0")
            .create()
            .map_err(|source| KafkaError::Client {
                what: "input topic watcher",
                source,
            })?;
        let shared = Arc::new(Shared {
            found: Mutex::default(),
            rounds: AtomicU64::new(0),
        });
        let published = Arc::clone(&shared);
        let (topics, start) = (config.topics.clone(), config.start);
        let mut found = FoundTopics::new();
        let thread = Repeating::start("clickflow-topics", METADATA_REFRESH, move || {
            // Client errors (a broker down) queue up unless served; the lookups below
            // report what they cost.
            while let Some(served) = consumer.poll(Duration::ZERO) {
                if let Err(error) = served {
                    debug!(%error, "input topic watcher client error");
                }
            }
            for topic in &topics {
                read_topic(&consumer, start, topic, &mut found);
            }
            *lock(&published.found) = Arc::new(found.clone());
            published.rounds.fetch_add(1, Ordering::Release);
        })?;
        Ok(Self {
            shared,
            _thread: thread,
        })
    }

    /// What the sources read the findings through.
    pub fn partitions(&self) -> InputPartitions {
        InputPartitions {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The watcher's findings, for the sources. Cloning shares them.
#[derive(Clone)]
pub struct InputPartitions {
    shared: Arc<Shared>,
}

impl InputPartitions {
    /// The latest round's findings and its number, if that is after round `seen` (rounds
    /// count from 1).
    pub fn newer_than(&self, seen: u64) -> Option<(u64, Arc<FoundTopics>)> {
        let round = self.shared.rounds.load(Ordering::Acquire);
        (round > seen).then(|| (round, Arc::clone(&lock(&self.shared.found))))
    }
}

/// Reads `topic`'s partitions into `found`, and at its first read where they start.
fn read_topic(consumer: &BaseConsumer, start: StartPosition, topic: &str, found: &mut FoundTopics) {
    let metadata = match consumer.fetch_metadata(Some(topic), LOOKUP_TIMEOUT) {
        Ok(metadata) => metadata,
        Err(error) => {
            warn!(topic, %error, "cannot read input topic metadata; retrying");
            return;
        }
    };
    let Some(topic_metadata) = metadata.topics().iter().find(|read| read.name() == topic) else {
        warn!(
            topic,
            "input topic metadata has no entry for the topic; retrying"
        );
        return;
    };
    let partitions = match topic_metadata.error() {
        None => topic_metadata.partitions().iter().map(|p| p.id()).collect(),
        // A topic created later has no partitions at the start: all of its partitions
        // start at their beginning.
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
            warn!(topic, "input topic does not exist yet; looking again later");
            Vec::new()
        }
        Some(error) => {
            warn!(topic, error = ?error, "input topic is not available yet; retrying");
            return;
        }
    };
    if let Some(known) = found.get_mut(topic) {
        known.partitions = partitions;
        return;
    }
    match start_offsets(consumer, start, topic, &partitions) {
        Ok(starts) => {
            found.insert(topic.to_owned(), TopicPartitions { partitions, starts });
        }
        Err(error) => warn!(topic, %error, "cannot look up input start offsets; retrying"),
    }
}

/// Where `partitions` of `topic` start from `start`; none for `earliest`.
fn start_offsets(
    consumer: &BaseConsumer,
    start: StartPosition,
    topic: &str,
    partitions: &[i32],
) -> KafkaResult<BTreeMap<i32, Offset>> {
    let at = match start {
        _ if partitions.is_empty() => return Ok(BTreeMap::new()),
        StartPosition::Earliest => return Ok(BTreeMap::new()),
        StartPosition::Latest => Offset::End,
        StartPosition::Timestamp(ms) => Offset::Offset(i64::try_from(ms).unwrap_or(i64::MAX)),
    };
    let mut starts = list_offsets(consumer, topic, partitions, at)?;
    // No record at or after the time: the partition's end.
    let at_end: Vec<i32> = starts
        .iter()
        .filter(|(_, offset)| !matches!(offset, Offset::Offset(_)))
        .map(|(&partition, _)| partition)
        .collect();
    if at != Offset::End && !at_end.is_empty() {
        starts.extend(list_offsets(consumer, topic, &at_end, Offset::End)?);
    }
    Ok(starts)
}

/// Each partition's offset for `at`: a timestamp, or [`Offset::End`] for the end.
fn list_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    at: Offset,
) -> KafkaResult<BTreeMap<i32, Offset>> {
    let mut request = TopicPartitionList::new();
    for &partition in partitions {
        request.add_partition_offset(topic, partition, at)?;
    }
    let answer = consumer.offsets_for_times(request, LOOKUP_TIMEOUT)?;
    answer
        .elements()
        .iter()
        .map(|element| {
            element.error()?;
            Ok((element.partition(), element.offset()))
        })
        .collect()
}
