//! Kafka cluster administration: the reference pipeline's topics, and creating and
//! describing topics with rdkafka's `AdminClient`.
//!
//! [`ReferenceTopics`] describes the topics of the reference pipeline (input, dead
//! letters, page-view counts, alerts) and clickflow's log of alert rules, and [`Admin`]
//! creates them. Creating a topic that already exists is not an error: its outcome is
//! [`TopicState::Exists`], with the ways in which the existing topic differs from what was
//! asked for. A cluster that does not answer is warned about after a second and is an
//! error after the configured timeout, either naming why a connection fails.

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The input topic of the reference pipeline.
pub const INPUT_TOPIC: &str = "page-views";
/// The dead-letter topic of the reference pipeline.
pub const DEAD_LETTER_TOPIC: &str = "page-views.dlq";
/// The per-page, per-window counts output topic.
pub const COUNTS_TOPIC: &str = "page-view-counts";
/// The alerts output topic.
pub const ALERTS_TOPIC: &str = "alerts";
/// The log of alert rules created and deleted at run time (see [`crate::rule_log`]).
pub const RULES_TOPIC: &str = "clickflow-alert-rules";
/// Partitions of the reference input topic.
pub const REFERENCE_PARTITIONS: u16 = 12;
/// Partitions of the counts and alerts topics. Every output transaction writes to most of
/// them, and librdkafka sends one produce request per partition, which the broker answers
/// one after another; at 50,000 events/s, 3 partitions instead of 12 acknowledge a
/// transaction in 9 ms instead of 21 and leave the broker 0.1 cores more (see
/// `benches/RESULTS.md`, seventeenth sitting). Three still let three consumers share them.
pub const OUTPUT_PARTITIONS: u16 = 3;
/// Retention of the reference input topic: 7 days.
pub const REFERENCE_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// How often readiness of new topics is checked.
const READY_POLL: Duration = Duration::from_millis(50);

/// Why an administrative operation failed. Every variant names the cluster or topic and
/// the cause.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The client could not be created (e.g. an invalid setting).
    #[error("cannot create a Kafka client for {bootstrap}: {cause}")]
    Client {
        /// The bootstrap servers.
        bootstrap: String,
        /// What librdkafka said.
        cause: String,
    },
    /// The cluster did not answer in time.
    #[error("cannot reach Kafka at {bootstrap} within {timeout:?}: {cause}")]
    Unreachable {
        /// The bootstrap servers.
        bootstrap: String,
        /// How long the client waited.
        timeout: Duration,
        /// What librdkafka said.
        cause: String,
    },
    /// The runtime that waits for admin requests could not be started.
    #[error("cannot start the admin client's runtime: {0}")]
    Runtime(std::io::Error),
    /// A request failed as a whole.
    #[error("{operation} on {bootstrap} failed: {cause}")]
    Request {
        /// What was asked.
        operation: &'static str,
        /// The bootstrap servers.
        bootstrap: String,
        /// What librdkafka said.
        cause: String,
    },
    /// The broker refused the operation on one topic.
    #[error("topic {topic}: {code}")]
    Topic {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// A created topic did not get a leader for every partition in time.
    #[error("topic {topic} was created but has no leader for every partition after {timeout:?}")]
    NotReady {
        /// The topic.
        topic: String,
        /// How long the client waited.
        timeout: Duration,
    },
}

/// librdkafka's `error`, with why connecting to the first bootstrap server that cannot be
/// reached fails (a name that does not resolve, a refused connection), which librdkafka's
/// error only sums up as a transport failure.
fn with_connection_failure(error: KafkaError, bootstrap: &str) -> String {
    match bootstrap.split(',').find_map(connection_failure) {
        Some(failure) => format!("{error} ({failure})"),
        None => error.to_string(),
    }
}

/// Why no TCP connection to `server` (`[scheme://]host:port`) can be made; `None` if one
/// can.
fn connection_failure(server: &str) -> Option<String> {
    let server = server.trim();
    let address = server.rsplit("://").next().unwrap_or(server);
    // Without a port, librdkafka connects to 9092.
    let resolved = match address.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => address.to_socket_addrs(),
        _ => (address, 9092).to_socket_addrs(),
    };
    let addresses = match resolved {
        Ok(addresses) => addresses,
        Err(error) => return Some(format!("{server}: cannot resolve: {error}")),
    };
    let mut failure = format!("{server}: resolves to no address");
    for resolved in addresses {
        match TcpStream::connect_timeout(&resolved, Duration::from_secs(1)) {
            Ok(_) => return None,
            Err(error) if resolved.to_string() == address => {
                failure = format!("{server}: {error}");
            }
            Err(error) => failure = format!("{server} ({resolved}): {error}"),
        }
    }
    Some(failure)
}

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic name.
    pub name: String,
    /// The number of partitions.
    pub partitions: u16,
    /// The replication factor; `None` uses the broker's `default.replication.factor`.
    pub replication_factor: Option<u16>,
    /// Topic-level configuration, e.g. `("cleanup.policy", "compact")`.
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    /// A topic with `cleanup.policy=compact`.
    pub fn compacted(name: &str, partitions: u16, replication_factor: Option<u16>) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor,
            config: vec![("cleanup.policy".into(), "compact".into())],
        }
    }
}

/// The reference pipeline's topics: names, partitions, replication and retention.
///
/// - the input topic, `retention.ms` = [`retention_ms`](Self::retention_ms) (7 days);
/// - the dead-letter topic, with the input's partitions and retention, so that dead
///   letters (keyed by the original key) spread like the input and can be inspected and
///   replayed for as long as the input itself;
/// - the counts and alerts topics, `cleanup.policy=compact`: they hold upserts, of which
///   compaction keeps the latest per key;
/// - the alert rules' log, compacted, with one partition: it holds one record per rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceTopics {
    /// The input topic (default [`INPUT_TOPIC`]).
    pub input: String,
    /// The dead-letter topic (default [`DEAD_LETTER_TOPIC`]).
    pub dead_letters: String,
    /// The page-view counts topic (default [`COUNTS_TOPIC`]).
    pub counts: String,
    /// The alerts topic (default [`ALERTS_TOPIC`]).
    pub alerts: String,
    /// The alert rules' log (default [`RULES_TOPIC`]).
    pub rules: String,
    /// Partitions of the input and dead-letter topics.
    pub partitions: u16,
    /// Partitions of the counts and alerts topics.
    pub output_partitions: u16,
    /// Replication factor of every topic; `None` uses the broker's default.
    pub replication_factor: Option<u16>,
    /// `retention.ms` of the input and dead-letter topics.
    pub retention_ms: u64,
}

impl Default for ReferenceTopics {
    fn default() -> Self {
        Self {
            input: INPUT_TOPIC.into(),
            dead_letters: DEAD_LETTER_TOPIC.into(),
            counts: COUNTS_TOPIC.into(),
            alerts: ALERTS_TOPIC.into(),
            rules: RULES_TOPIC.into(),
            partitions: REFERENCE_PARTITIONS,
            output_partitions: OUTPUT_PARTITIONS,
            replication_factor: None,
            retention_ms: REFERENCE_RETENTION_MS,
        }
    }
}

impl ReferenceTopics {
    /// The five topics to create: input, dead letters, counts, alerts, rules.
    pub fn specs(&self) -> Vec<TopicSpec> {
        let retained = |name: &str| TopicSpec {
            name: name.into(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            config: vec![
                ("cleanup.policy".into(), "delete".into()),
                ("retention.ms".into(), self.retention_ms.to_string()),
            ],
        };
        let output = |name: &str| {
            TopicSpec::compacted(name, self.output_partitions, self.replication_factor)
        };
        vec![
            retained(&self.input),
            retained(&self.dead_letters),
            output(&self.counts),
            output(&self.alerts),
            TopicSpec::compacted(&self.rules, 1, self.replication_factor),
        ]
    }
}

/// A topic as the cluster describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    /// The number of partitions.
    pub partitions: usize,
    /// Every topic-level configuration value, defaults included.
    pub config: BTreeMap<String, String>,
}

/// What became of a topic that [`Admin::create_topics`] was asked to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicState {
    /// Created as specified, and every partition has a leader.
    Created,
    /// The topic already existed; it was left as it is.
    Exists {
        /// Its number of partitions.
        partitions: usize,
        /// The ways it differs from the spec, e.g. `"12 partitions, not 3"` or
        /// `"retention.ms=86400000, not 604800000"`.
        differences: Vec<String>,
    },
}

/// The outcome of creating one topic.
#[derive(Debug)]
pub struct TopicOutcome {
    /// The topic that was to be created.
    pub spec: TopicSpec,
    /// What became of it, or why it failed.
    pub result: Result<TopicState, AdminError>,
}

/// A connection to a Kafka cluster for administrative requests. Requests block the
/// calling thread; each waits at most the timeout given to [`Admin::connect`].
pub struct Admin {
    client: AdminClient<DefaultClientContext>,
    /// Waits for the client's futures (which rdkafka's own thread completes).
    runtime: tokio::runtime::Runtime,
    bootstrap: String,
    timeout: Duration,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("bootstrap", &self.bootstrap)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// Connects to the cluster at `bootstrap` (`host:port[,host:port...]`) and checks
    /// that it answers within `timeout`.
    pub fn connect(bootstrap: &str, timeout: Duration) -> Result<Self, AdminError> {
        let client: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .map_err(|e| AdminError::Client {
                bootstrap: bootstrap.into(),
                cause: e.to_string(),
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(AdminError::Runtime)?;
        let admin = Self {
            client,
            runtime,
            bootstrap: bootstrap.into(),
            timeout,
        };
        // A metadata request: every broker answers it, whatever the client may do. Asked
        // again every second, so that a cluster that does not answer is reported at once.
        let deadline = Instant::now() + timeout;
        let mut warned = false;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let Err(error) = admin
                .client
                .inner()
                .fetch_metadata(None, wait.min(Duration::from_secs(1)))
            else {
                return Ok(admin);
            };
            if Instant::now() >= deadline {
                return Err(AdminError::Unreachable {
                    bootstrap: bootstrap.into(),
                    timeout,
                    cause: with_connection_failure(error, bootstrap),
                });
            }
            if !warned {
                warned = true;
                tracing::warn!(
                    bootstrap,
                    cause = with_connection_failure(error, bootstrap),
                    ?timeout,
                    "Kafka does not answer yet; still trying"
                );
            }
        }
    }

    /// Creates `specs`: one outcome per spec, in the same order. A topic that exists is
    /// described and compared with its spec instead; a created topic is waited for until
    /// every partition has a leader. Fails as a whole only if the request cannot be made.
    pub fn create_topics(&self, specs: &[TopicSpec]) -> Result<Vec<TopicOutcome>, AdminError> {
        let new_topics: Vec<NewTopic<'_>> = specs
            .iter()
            .map(|spec| NewTopic {
                name: &spec.name,
                num_partitions: i32::from(spec.partitions),
                replication: TopicReplication::Fixed(spec.replication_factor.map_or(-1, i32::from)),
                config: spec
                    .config
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            })
            .collect();
        let options = self
            .options()
            // The broker answers once the topics are created (or the timeout passed).
            .operation_timeout(Some(self.timeout));
        let results = self
            .runtime
            .block_on(self.client.create_topics(&new_topics, &options))
            .map_err(|e| self.request_error("creating topics", &e))?;
        let codes: HashMap<String, Option<RDKafkaErrorCode>> = results
            .into_iter()
            .map(|result| match result {
                Ok(name) => (name, None),
                Err((name, code)) => (name, Some(code)),
            })
            .collect();
        let deadline = Instant::now() + self.timeout;
        Ok(specs
            .iter()
            .map(|spec| {
                let result = match codes.get(&spec.name) {
                    Some(None) => self.wait_until_ready(spec, deadline),
                    Some(Some(RDKafkaErrorCode::TopicAlreadyExists)) => self.compare(spec),
                    Some(Some(code)) => Err(AdminError::Topic {
                        topic: spec.name.clone(),
                        code: *code,
                    }),
                    None => Err(self.request_error_text(
                        "creating topics",
                        format!("no result for topic {}", spec.name),
                    )),
                };
                TopicOutcome {
                    spec: spec.clone(),
                    result,
                }
            })
            .collect())
    }

    /// Describes the topic `name`, or `None` if it does not exist.
    pub fn describe_topic(&self, name: &str) -> Result<Option<TopicDescription>, AdminError> {
        let Some(partitions) = self.partition_leaders(name)?.map(|leaders| leaders.len()) else {
            return Ok(None);
        };
        let resources = [ResourceSpecifier::Topic(name)];
        let mut results = self
            .runtime
            .block_on(self.client.describe_configs(&resources, &self.options()))
            .map_err(|e| self.request_error("describing topic configs", &e))?;
        let resource = match results.pop() {
            Some(Ok(resource)) => resource,
            Some(Err(code)) => {
                return Err(AdminError::Topic {
                    topic: name.into(),
                    code,
                });
            }
            None => {
                return Err(self.request_error_text(
                    "describing topic configs",
                    format!("no result for topic {name}"),
                ));
            }
        };
        let config = resource
            .entries
            .into_iter()
            .filter_map(|entry| Some((entry.name, entry.value?)))
            .collect();
        Ok(Some(TopicDescription { partitions, config }))
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new().request_timeout(Some(self.timeout))
    }

    fn request_error(&self, operation: &'static str, error: &KafkaError) -> AdminError {
        self.request_error_text(operation, error.to_string())
    }

    fn request_error_text(&self, operation: &'static str, cause: String) -> AdminError {
        AdminError::Request {
            operation,
            bootstrap: self.bootstrap.clone(),
            cause,
        }
    }

    /// The leader of each partition of `topic`, or `None` if the topic does not exist.
    fn partition_leaders(&self, topic: &str) -> Result<Option<Vec<i32>>, AdminError> {
        topic_leaders(self.client.inner(), topic, self.timeout).map_err(|e| match e {
            MetadataError::Request(e) => self.request_error("fetching metadata", &e),
            MetadataError::Topic(code) => AdminError::Topic {
                topic: topic.into(),
                code,
            },
        })
    }

    /// Waits until the metadata shows every partition of a created topic with a leader.
    fn wait_until_ready(
        &self,
        spec: &TopicSpec,
        deadline: Instant,
    ) -> Result<TopicState, AdminError> {
        loop {
            if let Some(leaders) = self.partition_leaders(&spec.name)?
                && leaders.len() == usize::from(spec.partitions)
                && leaders.iter().all(|leader| *leader >= 0)
            {
                return Ok(TopicState::Created);
            }
            if Instant::now() >= deadline {
                return Err(AdminError::NotReady {
                    topic: spec.name.clone(),
                    timeout: self.timeout,
                });
            }
            thread::sleep(READY_POLL);
        }
    }

    /// Describes an existing topic and lists how it differs from `spec`.
    fn compare(&self, spec: &TopicSpec) -> Result<TopicState, AdminError> {
        let description = self.describe_topic(&spec.name)?.ok_or(AdminError::Topic {
            // It existed a moment ago: deleted since.
            topic: spec.name.clone(),
            code: RDKafkaErrorCode::UnknownTopicOrPartition,
        })?;
        let mut differences = Vec::new();
        if description.partitions != usize::from(spec.partitions) {
            differences.push(format!(
                "{} partitions, not {}",
                description.partitions, spec.partitions
            ));
        }
        for (key, wanted) in &spec.config {
            let actual = description.config.get(key).map_or("unset", String::as_str);
            if actual != wanted {
                differences.push(format!("{key}={actual}, not {wanted}"));
            }
        }
        Ok(TopicState::Exists {
            partitions: description.partitions,
            differences,
        })
    }
}

/// Why [`topic_leaders`] failed.
#[derive(Debug)]
pub(crate) enum MetadataError {
    /// The metadata request failed (typically: the cluster is unreachable).
    Request(KafkaError),
    /// The metadata names an error for the topic, other than "unknown topic".
    Topic(RDKafkaErrorCode),
}

/// The leader of each partition of `topic` (-1 where there is none), or `None` if the
/// topic does not exist, from metadata fetched within `timeout`.
pub(crate) fn topic_leaders<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<Vec<i32>>, MetadataError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(MetadataError::Request)?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match found.error().map(RDKafkaErrorCode::from) {
        None => Ok(Some(
            found.partitions().iter().map(|p| p.leader()).collect(),
        )),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
        Some(code) => Err(MetadataError::Topic(code)),
    }
}
