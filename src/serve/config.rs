//! The service's configuration: a TOML file, overridden by environment variables, then
//! by `--set` flags. See `config/clickflow.toml` for every key and its default.
//!
//! Any key can be overridden, by path: the environment variable
//! `CLICKFLOW_<SECTION>__<KEY>` (for example `CLICKFLOW_KAFKA__BOOTSTRAP`) or the flag
//! `--set section.key=value`. A value is read as TOML when it parses (numbers, booleans,
//! arrays such as `["a","b"]`) and as a string otherwise. Unknown keys are errors, so a
//! typo never silently keeps a default.
//!
//! The librdkafka properties under `kafka.consumer` and `kafka.producer` keep their dots
//! (`--set kafka.consumer.fetch.wait.max.ms=10`); in an environment variable's name, which
//! cannot hold a dot, `_` stands for one there
//! (`CLICKFLOW_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS`), and a value given there is passed as
//! written. In the file their values, and `kafka.start` anywhere, may be numbers or
//! booleans as well as strings.
//!
//! A setting that fails is reported with where it came from: the file, a variable or a
//! flag.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use clickflow_ingest::admin::RULES_TOPIC;
use clickflow_ingest::output::OutputConfig;
use clickflow_ingest::source::{SourceConfig, StartPosition};
use rdkafka::config::ClientConfig;
use serde::Deserialize;

use crate::options::ViewArgs;

/// The prefix of environment variables that override configuration keys.
const ENV_PREFIX: &str = "CLICKFLOW_";

/// Everything `serve` needs to know.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Kafka input and output.
    pub kafka: KafkaConfig,
    /// View sizes and admission bounds (the same settings as `batch`'s flags).
    pub views: ViewArgs,
    /// The metrics endpoint.
    pub metrics: MetricsConfig,
    /// The gRPC API.
    pub api: ApiConfig,
}

/// Kafka input and output.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Input topics.
    pub input_topics: Vec<String>,
    /// `earliest`, `latest`, epoch milliseconds or an ISO-8601 time.
    #[serde(deserialize_with = "scalar_text")]
    pub start: String,
    /// A partition with no record for this long stops holding back the frontier, unless
    /// the consumer's statistics show records in it not fetched yet.
    pub idle_timeout_ms: u64,
    /// While records arrive, the frontier advances in ticks of this many milliseconds of
    /// event time.
    pub tick_ms: u64,
    /// Where refused records go.
    pub dead_letter_topic: String,
    /// Output topic of page-view counts.
    pub page_view_counts_topic: String,
    /// Output topic of alert transitions.
    pub alerts_topic: String,
    /// The output producer's transactional id (one running service per id).
    pub transactional_id: String,
    /// The log of alert rules created and deleted at run time; empty keeps them in memory
    /// only.
    pub rules_topic: String,
    /// Extra librdkafka properties for the input consumers.
    #[serde(deserialize_with = "properties")]
    pub consumer: BTreeMap<String, String>,
    /// Extra librdkafka properties for the producers.
    #[serde(deserialize_with = "properties")]
    pub producer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9092".to_owned(),
            input_topics: vec!["page-views".to_owned()],
            start: "earliest".to_owned(),
            idle_timeout_ms: 10_000,
            tick_ms: 25,
            dead_letter_topic: "page-views.dlq".to_owned(),
            page_view_counts_topic: "page-view-counts".to_owned(),
            alerts_topic: "alerts".to_owned(),
            transactional_id: "clickflow-output".to_owned(),
            rules_topic: RULES_TOPIC.to_owned(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the `/metrics` endpoint; empty to serve none.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".to_owned(),
        }
    }
}

/// The gRPC API (served by process 0).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the gRPC API; empty to serve none.
    pub listen: String,
    /// How long (logical ms) every view's updates are kept, so that a subscription can
    /// resume from an `as_of` that recent.
    pub changelog_ms: u64,
    /// Messages buffered per subscriber; a subscriber further behind is cut off.
    pub subscriber_buffer: usize,
    /// Encoded bytes buffered per subscriber; a subscriber further behind is cut off.
    pub subscriber_buffer_bytes: usize,
    /// About the most encoded bytes in one subscription message: larger snapshots and
    /// update batches are split into several messages.
    pub subscription_message_bytes: usize,
    /// How many nice levels (0 to 19) below the API and the view store the dataflow runs:
    /// the timely workers, their Kafka clients and the output writer.
    pub dataflow_nice: i32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".to_owned(),
            changelog_ms: 60_000,
            subscriber_buffer: 1024,
            subscriber_buffer_bytes: 4 << 20,
            subscription_message_bytes: 1 << 20,
            dataflow_nice: 0,
        }
    }
}

impl ServeConfig {
    /// Reads `file` (if any), then applies environment overrides, then `--set` overrides.
    pub fn load(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> anyhow::Result<Self> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--config {}: cannot read", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("--config {}: not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        // Each override's source with the table it left, to name the one a bad key or
        // value came from.
        let mut layers = vec![(
            file.map_or_else(
                || "the defaults".to_owned(),
                |path| format!("--config {}", path.display()),
            ),
            table.clone(),
        )];
        for (name, value) in environment {
            if let Some(path) = name
                .strip_prefix(ENV_PREFIX)
                .filter(|path| path.contains("__"))
            {
                let source = format!("environment variable {name}");
                set(&mut table, &environment_path(path), &value).context(source.clone())?;
                layers.push((source, table.clone()));
            }
        }
        for assignment in sets {
            let (path, value) = assignment
                .split_once('=')
                .with_context(|| format!("--set {assignment:?}: not KEY=VALUE"))?;
            let source = format!("--set {assignment:?}");
            set(&mut table, path.trim(), value).context(source.clone())?;
            layers.push((source, table.clone()));
        }
        let check = |table: &toml::Table| -> anyhow::Result<Self> {
            let config: Self = toml::Value::Table(table.clone()).try_into()?;
            config.validate()?;
            Ok(config)
        };
        check(&table).map_err(|error| {
            // The first layer that brings this very error is where it came from.
            let message = format!("{error:#}");
            let source = layers
                .iter()
                .find(|(_, table)| check(table).is_err_and(|error| format!("{error:#}") == message))
                .map_or("the configuration", |(source, _)| source.as_str());
            error.context(format!("configuration, from {source}"))
        })
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.kafka.input_topics.is_empty() {
            bail!("kafka.input_topics: at least one input topic is needed");
        }
        let mut topics: Vec<&String> = self.kafka.input_topics.iter().collect();
        topics.sort();
        if let Some(twice) = topics.windows(2).find(|pair| pair[0] == pair[1]) {
            bail!("kafka.input_topics: {:?} is listed twice", twice[0]);
        }
        for (key, topic) in [
            ("kafka.dead_letter_topic", &self.kafka.dead_letter_topic),
            (
                "kafka.page_view_counts_topic",
                &self.kafka.page_view_counts_topic,
            ),
            ("kafka.alerts_topic", &self.kafka.alerts_topic),
            ("kafka.rules_topic", &self.kafka.rules_topic),
        ] {
            if self.kafka.input_topics.contains(topic) {
                bail!("{key}: {topic:?} is also an input topic, whose records it would read back");
            }
        }
        for (key, properties) in [
            ("kafka.consumer", &self.kafka.consumer),
            ("kafka.producer", &self.kafka.producer),
        ] {
            let mut client = ClientConfig::new();
            for (property, value) in properties {
                client.set(property, value);
            }
            client
                .create_native_config()
                .with_context(|| format!("{key}: librdkafka refuses a property"))?;
        }
        if self.kafka.bootstrap.trim().is_empty() {
            bail!("kafka.bootstrap: empty");
        }
        if self.kafka.tick_ms == 0 {
            bail!("kafka.tick_ms: at least 1");
        }
        self.start_position()?;
        self.metrics_listen()?;
        self.api_listen()?;
        if self.api.subscriber_buffer < 2 {
            bail!("api.subscriber_buffer: at least 2");
        }
        if self.api.subscriber_buffer_bytes == 0 {
            bail!("api.subscriber_buffer_bytes: at least 1");
        }
        if self.api.subscription_message_bytes == 0 {
            bail!("api.subscription_message_bytes: at least 1");
        }
        if !(0..=19).contains(&self.api.dataflow_nice) {
            bail!("api.dataflow_nice: from 0 to 19");
        }
        self.views.view_config().context("views")?;
        Ok(())
    }

    /// Where reading starts.
    pub fn start_position(&self) -> anyhow::Result<StartPosition> {
        self.kafka
            .start
            .parse()
            .map_err(|message| anyhow::anyhow!("kafka.start: {message}"))
    }

    /// The gRPC address, if any.
    pub fn api_listen(&self) -> anyhow::Result<Option<SocketAddr>> {
        listen_address(&self.api.listen, "api.listen")
    }

    /// The metrics address, if any.
    pub fn metrics_listen(&self) -> anyhow::Result<Option<SocketAddr>> {
        listen_address(&self.metrics.listen, "metrics.listen")
    }

    /// The sources' configuration.
    pub fn source_config(&self) -> anyhow::Result<SourceConfig> {
        Ok(SourceConfig {
            bootstrap: self.kafka.bootstrap.clone(),
            topics: self.kafka.input_topics.clone(),
            start: self.start_position()?,
            idle_timeout: Duration::from_millis(self.kafka.idle_timeout_ms),
            tick_ms: self.kafka.tick_ms,
            max_event_bytes: self.views.max_event_bytes,
            admission: self.views.admission_config(),
            properties: self.kafka.consumer.clone(),
        })
    }

    /// The extra librdkafka properties of every producer.
    pub fn producer_properties(&self) -> Vec<(String, String)> {
        self.kafka
            .producer
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// The output writer's configuration.
    pub fn output_config(&self) -> OutputConfig {
        OutputConfig {
            bootstrap: self.kafka.bootstrap.clone(),
            page_view_counts_topic: self.kafka.page_view_counts_topic.clone(),
            alerts_topic: self.kafka.alerts_topic.clone(),
            transactional_id: self.kafka.transactional_id.clone(),
            retention_ms: self.views.retention_ms,
            properties: self.kafka.producer.clone(),
        }
    }
}

/// A listen address (`""`: none), or an error naming `key`.
fn listen_address(text: &str, key: &str) -> anyhow::Result<Option<SocketAddr>> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        anyhow::anyhow!(
            "{key}: {text:?} is not an IP address and port, such as 127.0.0.1:9000, \
             [::1]:9000 or 0.0.0.0:9000 (every interface); host names are not resolved"
        )
    })
}

/// The librdkafka property maps, whose keys keep their dots.
const PROPERTY_MAPS: [&str; 2] = ["kafka.consumer", "kafka.producer"];

/// A path into a property map as the map's path and the property.
fn property_path(path: &str) -> Option<(&'static str, &str)> {
    PROPERTY_MAPS.iter().find_map(|map| {
        let property = path.strip_prefix(map)?.strip_prefix('.')?;
        Some((*map, property))
    })
}

/// The key path an environment variable's name (after the prefix) stands for: `__`
/// separates the parts, and within a property map `_` stands for `.`.
fn environment_path(name: &str) -> String {
    let path = name.to_ascii_lowercase().replace("__", ".");
    match property_path(&path) {
        Some((map, property)) => format!("{map}.{}", property.replace('_', ".")),
        None => path,
    }
}

/// Sets `path` (dot-separated, but for a property map's keys) in `table` to `value`, read
/// as TOML or else as a string. A librdkafka property's value is kept as it is written
/// (`0x1F` stays `0x1F`), unless it is a quoted string.
fn set(table: &mut toml::Table, path: &str, value: &str) -> anyhow::Result<()> {
    let property = property_path(path);
    let value = format!("value = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut parsed| parsed.remove("value"))
        .filter(|parsed| parsed.is_str() || property.is_none())
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let mut keys: Vec<&str> = match property {
        Some((map, property)) => map.split('.').chain([property]).collect(),
        None => path.split('.').collect(),
    };
    let last = keys
        .pop()
        .filter(|key| !key.is_empty())
        .context("empty key")?;
    let mut current = table;
    for key in keys {
        current = current
            .entry(key)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("{key} is not a section"))?;
    }
    current.insert(last.to_owned(), value);
    Ok(())
}

/// A string, number, boolean or date-time, as the text a string holding it would have.
fn scalar_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match toml::Value::deserialize(deserializer)? {
        toml::Value::String(text) => Ok(text),
        value @ (toml::Value::Integer(_)
        | toml::Value::Float(_)
        | toml::Value::Boolean(_)
        | toml::Value::Datetime(_)) => Ok(value.to_string()),
        value => Err(serde::de::Error::custom(format!(
            "a string, number or boolean, not {}",
            value.type_str()
        ))),
    }
}

/// librdkafka properties, whose values librdkafka takes as strings.
fn properties<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    BTreeMap::<String, toml::Value>::deserialize(deserializer)?
        .into_iter()
        .map(|(key, value)| {
            scalar_text(value)
                .map(|text| (key.clone(), text))
                .map_err(|error| serde::de::Error::custom(format!("{key}: {error}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_reference_pipeline() {
        let config = ServeConfig::load(None, vec![], &[]).unwrap();
        assert_eq!(config.kafka.input_topics, ["page-views"]);
        assert_eq!(config.views.window_ms, 60_000);
        assert_eq!(config.views.high_traffic_threshold, 1000);
        assert_eq!(config.kafka.idle_timeout_ms, 10_000);
    }

    #[test]
    fn the_example_file_loads_and_flags_beat_the_environment_which_beats_the_file() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/clickflow.toml");
        let from_file = ServeConfig::load(Some(&example), vec![], &[]).unwrap();
        assert_eq!(from_file.kafka.dead_letter_topic, "page-views.dlq");
        let defaults = ServeConfig::load(None, vec![], &[]).unwrap();
        assert_eq!(from_file.kafka.tick_ms, defaults.kafka.tick_ms);
        assert_eq!(from_file.api.dataflow_nice, defaults.api.dataflow_nice);
        let config = ServeConfig::load(
            Some(&example),
            env(&[
                ("CLICKFLOW_KAFKA__BOOTSTRAP", "env:1"),
                ("CLICKFLOW_VIEWS__WINDOW_MS", "1000"),
                ("CLICKFLOW_UNRELATED", "x"),
            ]),
            &[
                "kafka.bootstrap=flag:2".into(),
                "kafka.input_topics=[\"a\",\"b\"]".into(),
            ],
        )
        .unwrap();
        assert_eq!(config.kafka.bootstrap, "flag:2");
        assert_eq!(config.views.window_ms, 1000);
        assert_eq!(config.kafka.input_topics, ["a", "b"]);
    }

    #[test]
    fn librdkafka_properties_keep_their_dots_and_numbers_may_be_bare() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/clickflow.toml");
        let config = ServeConfig::load(
            Some(&example),
            env(&[
                ("CLICKFLOW_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS", "10"),
                ("CLICKFLOW_KAFKA__PRODUCER__LINGER_MS", "7"),
                ("CLICKFLOW_KAFKA__START", "1700000000000"),
            ]),
            &[
                "kafka.consumer.enable.partition.eof=true".into(),
                "kafka.producer.compression.type=zstd".into(),
                "kafka.producer.sasl.password=0x1F".into(),
            ],
        )
        .unwrap();
        let properties = |map: &BTreeMap<String, String>| {
            map.iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            properties(&config.kafka.consumer),
            ["enable.partition.eof=true", "fetch.wait.max.ms=10"]
        );
        assert_eq!(
            properties(&config.kafka.producer),
            ["compression.type=zstd", "linger.ms=7", "sasl.password=0x1F"],
            "a flag's value as written, not as the number TOML reads in it"
        );
        let file =
            std::env::temp_dir().join(format!("clickflow-array-{}.toml", std::process::id()));
        std::fs::write(&file, "[kafka.consumer]\n\"fetch.wait.max.ms\" = [1]\n").unwrap();
        let array = ServeConfig::load(Some(&file), vec![], &[]).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert!(
            format!("{:#}", array.root_cause())
                .contains("fetch.wait.max.ms: a string, number or boolean"),
            "{array:#}"
        );
        assert_eq!(
            config.start_position().unwrap(),
            StartPosition::Timestamp(1_700_000_000_000)
        );
        let from_flag = ServeConfig::load(None, vec![], &["kafka.start=1700000000001".into()]);
        assert_eq!(
            from_flag.unwrap().start_position().unwrap(),
            StartPosition::Timestamp(1_700_000_000_001)
        );
    }

    #[test]
    fn a_bad_key_is_reported_with_where_it_came_from() {
        let error = |file: Option<&Path>, environment: &[(&str, &str)], sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            format!(
                "{:#}",
                ServeConfig::load(file, env(environment), &sets).unwrap_err()
            )
        };
        let typo = [("CLICKFLOW_KAFKA__BOOTSTRAPP", "x")];
        let from_environment = error(None, &typo, &["kafka.tick_ms=5"]);
        assert!(
            from_environment.contains("from environment variable CLICKFLOW_KAFKA__BOOTSTRAPP")
                && from_environment.contains("bootstrapp"),
            "{from_environment}"
        );
        // A bad value overridden later is not the one to blame.
        let fixed_then_typo = error(
            None,
            &[("CLICKFLOW_API__LISTEN", "[1]")],
            &["api.listen=\"127.0.0.1:1\"", "kafka.bootstrapp=x"],
        );
        assert!(
            fixed_then_typo.contains("from --set \"kafka.bootstrapp=x\""),
            "{fixed_then_typo}"
        );
        let invalid = error(None, &[], &["kafka.tick_ms=0"]);
        assert!(
            invalid.contains("from --set \"kafka.tick_ms=0\""),
            "{invalid}"
        );
        let from_flag = error(None, &[], &["kafka.tick_ms=5", "api.listen=[1]"]);
        assert!(
            from_flag.contains("from --set \"api.listen=[1]\""),
            "{from_flag}"
        );
        let file = std::env::temp_dir().join(format!("clickflow-typo-{}.toml", std::process::id()));
        std::fs::write(&file, "[views]\nwindow = 5\n").unwrap();
        let from_file = error(Some(&file), &[], &["kafka.tick_ms=5"]);
        std::fs::remove_file(&file).unwrap();
        assert!(
            from_file.contains(&format!("from --config {}", file.display())),
            "{from_file}"
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        // The causes, without the line that says where the setting came from (it quotes
        // the flag, key and all).
        let error = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let error = ServeConfig::load(None, vec![], &sets).unwrap_err();
            error
                .chain()
                .map(ToString::to_string)
                .filter(|cause| !cause.starts_with("configuration, from"))
                .collect::<Vec<_>>()
                .join(": ")
        };
        assert!(error(&["kafka.bootstrapp=x"]).contains("bootstrapp"));
        assert!(error(&["kafka.start=yesterday"]).contains("kafka.start"));
        assert!(error(&["views.window_ms=-1"]).contains("window_ms"));
        assert!(
            error(&["views.funnel_window_ms=0"])
                .contains("views: funnel_window_ms (--funnel-window-ms): at least 1")
        );
        assert!(error(&["metrics.listen=nowhere"]).contains("metrics.listen"));
        assert!(
            error(&["api.listen=localhost:50051"])
                .contains("api.listen: \"localhost:50051\" is not an IP address and port")
        );
        assert!(error(&["views.funnel_steps=a=/x,b=/x"]).contains("more than one step"));
        assert!(error(&["views.funnel_steps=a=/x,a=/y"]).contains("named \"a\""));
        assert!(error(&["kafka"]).contains("KEY=VALUE"));
        assert!(error(&["kafka.tick_ms=0"]).contains("kafka.tick_ms"));
        assert!(
            error(&["kafka.dead_letter_topic=\"page-views\""])
                .contains("kafka.dead_letter_topic: \"page-views\" is also an input topic")
        );
        let refused = error(&["kafka.producer.no.such.property=1"]);
        assert!(
            refused.contains("kafka.producer: librdkafka refuses a property")
                && refused.contains("no.such.property"),
            "{refused}"
        );
        assert!(
            error(&["kafka.input_topics=[\"a\",\"b\",\"a\"]"])
                .contains("kafka.input_topics: \"a\" is listed twice")
        );
        assert!(error(&["api.dataflow_nice=20"]).contains("api.dataflow_nice"));
        assert!(error(&["api.dataflow_nice=-1"]).contains("api.dataflow_nice"));
        assert!(error(&["kafka.start=[1]"]).contains("start"));
    }
}
