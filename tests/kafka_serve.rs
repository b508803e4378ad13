//! `clickflow serve` against a real Apache Kafka: events produced to the input topic come
//! out in the output topics with exactly the values `clickflow batch` computes for the
//! same events; refused records land in the dead-letter topic with the right reason and
//! headers; a restart that replays from `earliest` reproduces the same output; and a
//! broker restart in mid-stream loses and duplicates nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::kafka::{ConsumedRecord, bootstrap, consume_all, create_topic, produce, unique_topic};
use support::run::{TempDir, binary};
use support::serve::Serve;
use support::timestamp::parse_iso;

/// The `high_traffic` threshold: low, so that the generated load fires alerts.
const THRESHOLD: u64 = 40;

/// How long the output may take to reach the expected values.
const SETTLE: Duration = Duration::from_secs(90);

/// The topics of one test.
struct Topics {
    input: String,
    dead_letters: String,
    counts: String,
    alerts: String,
}

impl Topics {
    fn create(bootstrap: &str, label: &str) -> Topics {
        let topics = Topics {
            input: unique_topic(&format!("{label}-in")),
            dead_letters: unique_topic(&format!("{label}-dlq")),
            counts: unique_topic(&format!("{label}-counts")),
            alerts: unique_topic(&format!("{label}-alerts")),
        };
        create_topic(bootstrap, &topics.input, 4, false);
        create_topic(bootstrap, &topics.dead_letters, 1, false);
        create_topic(bootstrap, &topics.counts, 1, true);
        create_topic(bootstrap, &topics.alerts, 1, true);
        topics
    }

    /// `serve` settings for these topics, writing the output to `counts`/`alerts`.
    fn settings(
        &self,
        bootstrap: &str,
        counts: &str,
        alerts: &str,
        transactional_id: &str,
    ) -> Vec<String> {
        vec![
            format!("kafka.bootstrap=\"{bootstrap}\""),
            format!("kafka.input_topics=[\"{}\"]", self.input),
            format!("kafka.dead_letter_topic=\"{}\"", self.dead_letters),
            format!("kafka.page_view_counts_topic=\"{counts}\""),
            format!("kafka.alerts_topic=\"{alerts}\""),
            format!("kafka.transactional_id=\"{transactional_id}\""),
            "kafka.idle_timeout_ms=500".to_owned(),
            format!("views.high_traffic_threshold={THRESHOLD}"),
        ]
    }
}

/// Generated events (with malformed records) as JSON lines, from the real generator.
fn generate(dir: &TempDir, seed: u64, events: u64) -> Vec<Vec<u8>> {
    let path = dir.path().join("events.jsonl");
    let status = Command::new(binary())
        .args(["generate", "-o"])
        .arg(&path)
        .args(["--seed", &seed.to_string(), "--events", &events.to_string()])
        .args(["--pages", "30", "--users", "300", "--duration-ms", "600000"])
        .args([
            "--out-of-order",
            "0.05",
            "--late",
            "0",
            "--future",
            "0",
            "--malformed",
            "0.02",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(&path)
        .unwrap()
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// What `clickflow batch` computes for `lines`: page-view rows by `(page, window_start)`,
/// the set of alerts, and dead letters as `(reason, raw)`.
struct Expected {
    counts: BTreeMap<(String, u64), Value>,
    alerts: BTreeSet<(String, String, u64)>,
    dead_letters: Vec<(String, String)>,
}

fn batch(dir: &TempDir, lines: &[Vec<u8>]) -> Expected {
    let input = dir.path().join("batch-input.jsonl");
    std::fs::write(&input, lines.join(&b'\n')).unwrap();
    let output = dir.path().join("batch");
    let status = Command::new(binary())
        .args(["batch", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--high-traffic-threshold", &THRESHOLD.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rows = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(output.join(name))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let counts = rows("page_views_per_minute.jsonl")
        .into_iter()
        .map(|row| {
            let key = (
                row["page"].as_str().unwrap().to_owned(),
                row["window_start"].as_u64().unwrap(),
            );
            let value = serde_json::json!({
                "page": row["page"],
                "count": row["view_count"],
                "unique_users": row["unique_users"],
                "window_start": row["window_start"],
                "window_end": row["window_end"],
            });
            (key, value)
        })
        .collect();
    let alerts = rows("alerts.jsonl")
        .into_iter()
        .map(|row| {
            (
                row["rule"].as_str().unwrap().to_owned(),
                row["page"].as_str().unwrap().to_owned(),
                row["window_start"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut dead_letters: Vec<(String, String)> = rows("dead_letters.jsonl")
        .into_iter()
        .map(|row| {
            (
                row["reason"].as_str().unwrap().to_owned(),
                row["raw"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    dead_letters.sort();
    Expected {
        counts,
        alerts,
        dead_letters,
    }
}

/// Produces `lines` to `topic`, keyed by `user_id` where the line has one.
fn produce_lines(bootstrap: &str, topic: &str, lines: &[Vec<u8>]) {
    let records: Vec<(Option<Vec<u8>>, Vec<u8>)> = lines
        .iter()
        .map(|line| {
            let key = serde_json::from_slice::<Value>(line)
                .ok()
                .and_then(|value| {
                    value["user_id"]
                        .as_str()
                        .map(|user| user.as_bytes().to_vec())
                });
            (key, line.clone())
        })
        .collect();
    produce(bootstrap, topic, &records);
}

/// Reads a page-view-counts topic (read_committed) as its final upsert per
/// `(page, window_start)`, with ISO-8601 bounds turned back into epoch milliseconds.
fn upserts(records: &[ConsumedRecord]) -> BTreeMap<(String, u64), Value> {
    let mut latest = BTreeMap::new();
    for record in records {
        let mut value: Value = serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
        let page = value["page"].as_str().unwrap().to_owned();
        assert_eq!(
            record.key.as_deref(),
            Some(page.as_bytes()),
            "keyed by page"
        );
        for bound in ["window_start", "window_end"] {
            let iso = value[bound].as_str().unwrap();
            value[bound] = parse_iso(iso)
                .unwrap_or_else(|| panic!("{bound} {iso} is not ISO-8601"))
                .into();
        }
        latest.insert((page, value["window_start"].as_u64().unwrap()), value);
    }
    latest
}

/// Waits until the page-view-counts topic holds exactly `expected`, and returns what it
/// holds (to compare on failure).
fn settled_counts(
    bootstrap: &str,
    topic: &str,
    expected: &BTreeMap<(String, u64), Value>,
) -> BTreeMap<(String, u64), Value> {
    let records = consume_all(
        bootstrap,
        topic,
        true,
        |records| upserts(records) == *expected,
        SETTLE,
    );
    upserts(&records)
}

/// The alert transitions in an alerts topic: `(rule, page, window_start)` to its states.
fn alert_states(
    bootstrap: &str,
    topic: &str,
    expected: usize,
) -> BTreeMap<(String, String, u64), Vec<String>> {
    let records = consume_all(
        bootstrap,
        topic,
        true,
        |records| records.len() >= expected,
        SETTLE,
    );
    let mut states: BTreeMap<_, Vec<String>> = BTreeMap::new();
    for record in records {
        let value: Value = serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
        assert!(value["count"].as_u64().unwrap() > THRESHOLD, "{value}");
        let key = (
            value["alert"].as_str().unwrap().to_owned(),
            value["page"].as_str().unwrap().to_owned(),
            parse_iso(value["window_start"].as_str().unwrap()).unwrap(),
        );
        states
            .entry(key)
            .or_default()
            .push(value["state"].as_str().unwrap().to_owned());
    }
    states
}

fn assert_counts_equal(
    actual: &BTreeMap<(String, u64), Value>,
    expected: &BTreeMap<(String, u64), Value>,
    log: &str,
) {
    if actual == expected {
        return;
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, v)| actual.get(k) != Some(v))
        .take(5)
        .collect();
    let extra: Vec<_> = actual
        .iter()
        .filter(|(k, v)| expected.get(k) != Some(v))
        .take(5)
        .collect();
    panic!(
        "page-view-counts differ from batch ({} vs {} windows)\nexpected but not found: {missing:#?}\nfound but not expected: {extra:#?}\nserve log:\n{log}",
        actual.len(),
        expected.len()
    );
}

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

    let serve = Serve::start(
        2,
        &topics.settings(
            &bootstrap,
            &topics.counts,
            &topics.alerts,
            &unique_topic("txn"),
        ),
    );
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

    // A restart that replays from the beginning writes the same final values.
    let (counts_again, alerts_again) = (
        unique_topic("serve-counts-again"),
        unique_topic("serve-alerts-again"),
    );
    create_topic(&bootstrap, &counts_again, 1, true);
    create_topic(&bootstrap, &alerts_again, 1, true);
    let serve = Serve::start(
        1,
        &topics.settings(
            &bootstrap,
            &counts_again,
            &alerts_again,
            &unique_topic("txn"),
        ),
    );
    let replayed = settled_counts(&bootstrap, &counts_again, &expected.counts);
    let replayed_alerts = alert_states(&bootstrap, &alerts_again, expected.alerts.len());
    let (_, log) = serve.stop();
    assert_counts_equal(&replayed, &counts, &log);
    assert_eq!(replayed_alerts, alerts);
}

#[test]
fn a_broker_restart_in_mid_stream_loses_and_duplicates_nothing() {
    let port = 19_192;
    let root = env!("CARGO_MANIFEST_DIR");
    let broker = |script: &str, args: &[&str]| {
        let output = Command::new(format!("{root}/scripts/{script}"))
            .arg(port.to_string())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&output.stderr)
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
        2,
        &topics.settings(&bootstrap, &topics.counts, &topics.alerts, "restart-txn"),
    );
    produce_lines(&bootstrap, &topics.input, first);
    // The output is under way (some step committed) when the broker goes down.
    let written = consume_all(
        &bootstrap,
        &topics.counts,
        true,
        |records| !records.is_empty(),
        SETTLE,
    );
    assert!(
        !written.is_empty(),
        "no output before the restart:\n{}",
        serve.log()
    );
    broker("kafka-stop", &[]);
    std::thread::sleep(Duration::from_secs(2));
    broker("kafka-start", &["--keep-data"]);
    produce_lines(&bootstrap, &topics.input, second);
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
