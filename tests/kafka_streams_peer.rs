//! clickflow against the system it replaces: the reference pipeline's Kafka Streams job
//! (`benches/kafka-streams/ReferenceJob.java`, views per page per minute), run on the same
//! input topic of a real Apache Kafka. Every window's count in clickflow's
//! `page-view-counts` topic must equal the job's, with its bounds written the same way. The job's class path comes from
//! `CLICKFLOW_KAFKA_STREAMS_CLASSPATH`, which `scripts/test` sets with
//! `scripts/kafka-streams-build`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use clickflow_benches::harness::peer::{CAUGHT_UP, ReferenceJob, ReferenceJobSettings};
use clickflow_ingest::admin::ReferenceTopics;

use serde_json::Value;
use support::kafka::{ConsumedRecord, bootstrap, consume_all, create_topic, unique_topic};
use support::pipeline::{Topics, batch, generate_with_malformed, produce_lines, settled_counts};
use support::run::TempDir;
use support::serve::Serve;

/// Where `scripts/test` puts the job's class path.
const CLASSPATH_ENV: &str = "CLICKFLOW_KAFKA_STREAMS_CLASSPATH";

/// How long the job may take to start and count everything.
const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// Each window's count and end, by page and start, as a page-view-counts topic's records
/// write them (the bounds as strings): the last record of each window.
fn windows(records: &[ConsumedRecord]) -> BTreeMap<(String, String), (u64, String)> {
    records
        .iter()
        .map(|record| {
            let value: Value = serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
            let text = |field: &str| value[field].as_str().unwrap().to_owned();
            let count = value["count"].as_u64().unwrap();
            (
                (text("page"), text("window_start")),
                (count, text("window_end")),
            )
        })
        .collect()
}

/// The number of events the windows of `records` count.
fn counted(records: &[ConsumedRecord]) -> u64 {
    windows(records).values().map(|(count, _)| count).sum()
}

#[test]
fn clickflow_counts_every_window_as_the_reference_kafka_streams_job_does() {
    let bootstrap = bootstrap();
    let dir = TempDir::new("kafka-streams-peer").unwrap();
    let topics = Topics::create(&bootstrap, "peer");
    // Every record countable by both systems: in order or up to five minutes behind, none
    // late, in the future or malformed (the two refuse those by different rules).
    let lines = generate_with_malformed(&dir, 23, 5_000, 0.0);
    produce_lines(&bootstrap, &topics.input, &lines);

    let expected = batch(&dir, &lines);
    let serve = Serve::start(&["-w", "2"], &topics.serve_settings(&bootstrap));
    settled_counts(&bootstrap, &topics.counts, &expected.counts);
    let (_, log) = serve.stop();
    let events = lines.len() as u64;
    let written = consume_all(
        &bootstrap,
        &topics.counts,
        true,
        |records| counted(records) == events,
        Duration::from_secs(30),
    );
    assert_eq!(
        counted(&written),
        events,
        "clickflow did not count every event:\n{log}"
    );
    let clickflow = windows(&written);

    let (peer_counts, peer_alerts) = (unique_topic("peer-counts"), unique_topic("peer-alerts"));
    create_topic(&bootstrap, &peer_counts, 1, true);
    create_topic(&bootstrap, &peer_alerts, 1, true);
    let classpath = std::env::var(CLASSPATH_ENV).unwrap_or_else(|_| {
        panic!(
            "{CLASSPATH_ENV} is not set, and this test runs the reference Kafka Streams job. \
             Run the whole suite with `scripts/test`, or `export \
             {CLASSPATH_ENV}=$(scripts/kafka-streams-build)`."
        )
    });
    let mut job = ReferenceJob::start(&ReferenceJobSettings {
        classpath: &classpath,
        bootstrap: &bootstrap,
        topics: &ReferenceTopics {
            input: topics.input.clone(),
            counts: peer_counts.clone(),
            alerts: peer_alerts,
            ..ReferenceTopics::default()
        },
        application_id: &unique_topic("peer-app"),
        state_dir: &dir.path().join("state"),
        threads: 2,
        log: &dir.path().join("kafka-streams.log"),
    })
    .unwrap();
    job.wait_for(CAUGHT_UP, JOB_TIMEOUT).unwrap();
    let records = consume_all(
        &bootstrap,
        &peer_counts,
        true,
        |records| windows(records) == clickflow,
        Duration::from_secs(120),
    );
    drop(job);
    let peer = windows(&records);
    if peer != clickflow {
        let differing: Vec<_> = clickflow
            .iter()
            .filter(|(window, value)| peer.get(*window) != Some(*value))
            .map(|(window, value)| (window, Some(value), peer.get(window)))
            .chain(
                peer.iter()
                    .filter(|(window, _)| !clickflow.contains_key(*window))
                    .map(|(window, value)| (window, None, Some(value))),
            )
            .collect();
        let log = std::fs::read_to_string(dir.path().join("kafka-streams.log")).unwrap_or_default();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .take(40)
            .collect();
        panic!(
            "windows differ, as (window, clickflow's value, the job's value): {differing:?}\n\
             the job's warnings and errors:\n{}",
            warnings.join("\n")
        );
    }
}
