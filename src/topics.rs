//! `clickflow topics`: creates the reference pipeline's topics and the alert rules' log with
//! [`clickflow_ingest::admin`] and prints one line per topic: created, exists (with any
//! difference from what would have been created), or failed (with the cause).

use std::time::Duration;

use anyhow::{Context, bail};
use clickflow_ingest::admin::{
    ALERTS_TOPIC, Admin, COUNTS_TOPIC, DEAD_LETTER_TOPIC, INPUT_TOPIC, OUTPUT_PARTITIONS,
    REFERENCE_PARTITIONS, REFERENCE_RETENTION_MS, RULES_TOPIC, ReferenceTopics, TopicState,
};

/// Arguments of `clickflow topics`.
#[derive(Debug, clap::Args)]
pub struct TopicsArgs {
    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    #[arg(long, value_name = "HOST:PORT", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    bootstrap: String,
    /// The input topic (`retention.ms` = --input-retention-ms).
    #[arg(long, default_value = INPUT_TOPIC)]
    input_topic: String,
    /// The dead-letter topic (partitions and retention as the input's).
    #[arg(long, default_value = DEAD_LETTER_TOPIC)]
    dead_letter_topic: String,
    /// The page-view counts topic (`cleanup.policy=compact`).
    #[arg(long, default_value = COUNTS_TOPIC)]
    counts_topic: String,
    /// The alerts topic (`cleanup.policy=compact`).
    #[arg(long, default_value = ALERTS_TOPIC)]
    alerts_topic: String,
    /// The log of alert rules created and deleted at run time (`cleanup.policy=compact`,
    /// one partition).
    #[arg(long, default_value = RULES_TOPIC)]
    rules_topic: String,
    /// Partitions of the input and dead-letter topics.
    #[arg(long, default_value_t = REFERENCE_PARTITIONS, value_parser = clap::value_parser!(u16).range(1..))]
    partitions: u16,
    /// Partitions of the counts and alerts topics.
    #[arg(long, default_value_t = OUTPUT_PARTITIONS, value_parser = clap::value_parser!(u16).range(1..))]
    output_partitions: u16,
    /// Replication factor of every topic [default: the broker's default.replication.factor].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    replication_factor: Option<u16>,
    /// `retention.ms` of the input and dead-letter topics (default 7 days).
    #[arg(long, default_value_t = REFERENCE_RETENTION_MS)]
    input_retention_ms: u64,
    /// How long to wait for the cluster, per request, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
}

/// Creates the topics, prints one line per topic on stdout, and fails if any failed.
pub fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let topics = ReferenceTopics {
        input: args.input_topic,
        dead_letters: args.dead_letter_topic,
        counts: args.counts_topic,
        alerts: args.alerts_topic,
        rules: args.rules_topic,
        partitions: args.partitions,
        output_partitions: args.output_partitions,
        replication_factor: args.replication_factor,
        retention_ms: args.input_retention_ms,
    };
    let admin = Admin::connect(&args.bootstrap, Duration::from_millis(args.timeout_ms))?;
    let outcomes = admin
        .create_topics(&topics.specs())
        .context("cannot create the topics")?;
    let mut failed = Vec::new();
    for outcome in &outcomes {
        let name = &outcome.spec.name;
        match &outcome.result {
            Ok(TopicState::Created) => {
                let config: Vec<String> = outcome
                    .spec
                    .config
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                println!(
                    "{name}: created ({}, {})",
                    partitions(usize::from(outcome.spec.partitions)),
                    config.join(", ")
                );
            }
            Ok(TopicState::Exists {
                partitions,
                differences,
            }) if differences.is_empty() => {
                println!("{name}: exists ({})", self::partitions(*partitions));
            }
            Ok(TopicState::Exists { differences, .. }) => {
                println!("{name}: exists, left unchanged: {}", differences.join("; "));
            }
            Err(error) => {
                println!("{name}: failed: {error}");
                failed.push(name.as_str());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} topics failed: {}",
            failed.len(),
            outcomes.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// "1 partition", "12 partitions".
fn partitions(count: usize) -> String {
    match count {
        1 => "1 partition".to_owned(),
        _ => format!("{count} partitions"),
    }
}
