//! `clickflow serve` against a real Apache Kafka: events produced to the input topic come
//! out in the output topics with exactly the values `clickflow batch` computes for the
//! same events; refused records land in the dead-letter topic with the right reason and
//! headers; a restart that replays from `earliest` reproduces the same output (also with
//! another tick and a lowered dataflow priority); a record without a value is a dead
//! letter without one; and a broker restart in mid-stream loses and duplicates nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use support::kafka::{bootstrap, consume_all, create_topic, produce_without_value, unique_topic};
use support::pipeline::{
    SETTLE, Topics, alert_states, assert_counts_equal, batch, generate, produce_and_await_counts,
    produce_lines, settled_counts,
};
use support::run::{TempDir, stdout_of};
use support::serve::Serve;

#[test]
fn output_topics_and_dead_letters_match_batch_and_a_replay_reproduces_them() {
    let bootstrap = bootstrap();
    let dir = TempDir::new("kafka-serve").unwrap();
    let topics = Topics::create(&bootstrap, "serve");
    let lines = generate(&dir, 7, 6_000);
    let expected = batch(&dir, &lines);
    assert!(
        !expected.alerts.is_empty() && !expected.dead_letters.is_empty(),
        "the input exercises alerts and dead letters"
    );
    produce_lines(&bootstrap, &topics.input, &lines);

    let serve = Serve::start(&["-w", "2"], &topics.serve_settings(&bootstrap));
    let counts = settled_counts(&bootstrap, &topics.counts, &expected.counts);
    let alerts = alert_states(&bootstrap, &topics.alerts, expected.alerts.len());
    let dead_letters = consume_all(
        &bootstrap,
        &topics.dead_letters,
        true,
        |records| records.len() >= expected.dead_letters.len(),
        SETTLE,
    );
    let (stopped, log) = serve.stop();
    assert_counts_equal(&counts, &expected.counts, &log);
    assert!(stopped, "serve did not stop cleanly on SIGTERM:\n{log}");
    assert_eq!(
        alerts.keys().cloned().collect::<BTreeSet<_>>(),
        expected.alerts,
        "{log}"
    );
    assert!(
        alerts.values().all(|states| states == &["fired"]),
        "each alert fires once: {alerts:?}"
    );

    let mut refused: Vec<(String, String)> = dead_letters
        .iter()
        .map(|record| {
            let header = |name: &str| {
                let value = &record
                    .headers
                    .iter()
                    .find(|(key, _)| key == name)
                    .unwrap_or_else(|| panic!("header {name}"))
                    .1;
                String::from_utf8(value.clone()).unwrap()
            };
            assert_eq!(header("clickflow.topic"), topics.input);
            let partition: i32 = header("clickflow.partition").parse().unwrap();
            let offset: i64 = header("clickflow.offset").parse().unwrap();
            assert!((0..4).contains(&partition) && offset >= 0);
            let value = record.value.clone().unwrap_or_default();
            (
                header("clickflow.reason"),
                String::from_utf8_lossy(&value).into_owned(),
            )
        })
        .collect();
    refused.sort();
    assert_eq!(
        refused, expected.dead_letters,
        "dead letters differ from batch"
    );

    // A restart that replays from the beginning writes the same final values, also with a
    // logical time per watermark (no 50 ms ticks) and the dataflow below the API.
    let (counts_again, alerts_again) = (
        unique_topic("serve-counts-again"),
        unique_topic("serve-alerts-again"),
    );
    create_topic(&bootstrap, &counts_again, 1, true);
    create_topic(&bootstrap, &alerts_again, 1, true);
    let mut settings = topics.settings(
        &bootstrap,
        &counts_again,
        &alerts_again,
        &unique_topic("txn"),
    );
    settings.extend([
        "kafka.tick_ms=1".to_owned(),
        "api.dataflow_nice=3".to_owned(),
    ]);
    let serve = Serve::start(&["-w", "1"], &settings);
    let replayed = settled_counts(&bootstrap, &counts_again, &expected.counts);
    let replayed_alerts = alert_states(&bootstrap, &alerts_again, expected.alerts.len());
    let (_, log) = serve.stop();
    assert_counts_equal(&replayed, &counts, &log);
    assert_eq!(replayed_alerts, alerts);
}

/// A record without a value (a tombstone) is refused, and its dead letter keeps its key
/// and has no value either: not an empty one, which is another record.
#[test]
fn a_record_without_a_value_is_a_dead_letter_without_one() {
    let bootstrap = bootstrap();
    let topics = Topics::create(&bootstrap, "no-value");
    let offset = produce_without_value(&bootstrap, &topics.input, 2, b"u-tombstone");
    let serve = Serve::start(&["-w", "1"], &topics.serve_settings(&bootstrap));
    let dead_letters = consume_all(
        &bootstrap,
        &topics.dead_letters,
        true,
        |records| !records.is_empty(),
        SETTLE,
    );
    let (_, log) = serve.stop();
    let [dead_letter] = dead_letters.as_slice() else {
        panic!("one dead letter expected, got {dead_letters:?}:\n{log}");
    };
    assert_eq!(dead_letter.key.as_deref(), Some(&b"u-tombstone"[..]));
    assert_eq!(dead_letter.value, None, "a value was added");
    let header = |name: &str| {
        dead_letter
            .headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    };
    assert_eq!(header("clickflow.reason").as_deref(), Some("invalid_json"));
    assert_eq!(header("clickflow.partition").as_deref(), Some("2"));
    assert_eq!(header("clickflow.offset"), Some(offset.to_string()));
}

#[test]
fn a_broker_restart_in_mid_stream_loses_and_duplicates_nothing() {
    let port = 19_192;
    let root = env!("CARGO_MANIFEST_DIR");
    let broker = |script: &str, args: &[&str]| {
        stdout_of(
            Command::new(format!("{root}/scripts/{script}"))
                .arg(port.to_string())
                .args(args),
            script,
        );
    };
    broker("kafka-start", &[]);
    let _stop = StopBroker(port);
    let bootstrap = format!("127.0.0.1:{port}");
    let dir = TempDir::new("kafka-restart").unwrap();
    let topics = Topics::create(&bootstrap, "restart");
    let lines = generate(&dir, 11, 4_000);
    let expected = batch(&dir, &lines);
    let (first, second) = lines.split_at(lines.len() / 2);

    let serve = Serve::start(
        &["-w", "2"],
        &topics.settings(&bootstrap, &topics.counts, &topics.alerts, "restart-txn"),
    );
    produce_and_await_counts(&bootstrap, &topics, &dir, first, &serve);
    // The broker goes down between published steps, comes back, and goes down again as
    // soon as the second half is written: while the service reads it and writes output.
    broker("kafka-stop", &[]);
    std::thread::sleep(Duration::from_secs(2));
    broker("kafka-start", &["--keep-data"]);
    produce_lines(&bootstrap, &topics.input, second);
    broker("kafka-stop", &[]);
    std::thread::sleep(Duration::from_secs(2));
    broker("kafka-start", &["--keep-data"]);
    let counts = settled_counts(&bootstrap, &topics.counts, &expected.counts);
    let (_, log) = serve.stop();
    assert_counts_equal(&counts, &expected.counts, &log);
}

/// Stops the test's own broker, however the test ends.
struct StopBroker(u16);

impl Drop for StopBroker {
    fn drop(&mut self) {
        let _ = Command::new(format!("{}/scripts/kafka-stop", env!("CARGO_MANIFEST_DIR")))
            .arg(self.0.to_string())
            .output();
    }
}
