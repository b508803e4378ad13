//! The pieces of an end-to-end pipeline test against the real broker: topics, generated
//! events (the real generator), the expected output (the real `clickflow batch`), and
//! readers of the output topics that wait until they settle.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::kafka::{ConsumedRecord, consume_all, create_topic, produce, unique_topic};
use super::run::{TempDir, binary};
use super::serve::Serve;
use super::timestamp::parse_iso;

/// The `high_traffic` threshold: low, so that the generated load fires alerts.
pub const THRESHOLD: u64 = 40;

/// How long the output may take to reach the expected values.
pub const SETTLE: Duration = Duration::from_secs(90);

/// The topics of one test.
pub struct Topics {
    pub input: String,
    pub dead_letters: String,
    pub counts: String,
    pub alerts: String,
    /// The alert rules' log, which `serve` creates.
    pub rules: String,
}

impl Topics {
    pub fn create(bootstrap: &str, label: &str) -> Topics {
        let topics = Topics {
            input: unique_topic(&format!("{label}-in")),
            dead_letters: unique_topic(&format!("{label}-dlq")),
            counts: unique_topic(&format!("{label}-counts")),
            alerts: unique_topic(&format!("{label}-alerts")),
            rules: unique_topic(&format!("{label}-rules")),
        };
        create_topic(bootstrap, &topics.input, 4, false);
        create_topic(bootstrap, &topics.dead_letters, 1, false);
        create_topic(bootstrap, &topics.counts, 1, true);
        create_topic(bootstrap, &topics.alerts, 1, true);
        topics
    }

    /// `serve` settings for these topics, writing the output to their own output topics
    /// with a transactional id no other run uses.
    pub fn serve_settings(&self, bootstrap: &str) -> Vec<String> {
        self.settings(bootstrap, &self.counts, &self.alerts, &unique_topic("txn"))
    }

    /// `serve` settings for these topics, writing the output to `counts`/`alerts`.
    pub fn settings(
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
            format!("kafka.rules_topic=\"{}\"", self.rules),
            format!("kafka.transactional_id=\"{transactional_id}\""),
            "kafka.idle_timeout_ms=500".to_owned(),
            format!("views.high_traffic_threshold={THRESHOLD}"),
        ]
    }
}

/// Generated events (with malformed records) as JSON lines, from the real generator.
pub fn generate(dir: &TempDir, seed: u64, events: u64) -> Vec<Vec<u8>> {
    generate_with_malformed(dir, seed, events, 0.02)
}

/// [`generate`], with a share of `malformed` records (none late or in the future).
pub fn generate_with_malformed(
    dir: &TempDir,
    seed: u64,
    events: u64,
    malformed: f64,
) -> Vec<Vec<u8>> {
    let path = dir.path().join("events.jsonl");
    let status = Command::new(binary())
        .args(["generate", "-o"])
        .arg(&path)
        .args(["--seed", &seed.to_string(), "--events", &events.to_string()])
        .args(["--pages", "30", "--users", "300", "--duration-ms", "600000"])
        .args(["--out-of-order", "0.05", "--late", "0", "--future", "0"])
        .args(["--malformed", &malformed.to_string()])
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
pub struct Expected {
    pub counts: BTreeMap<(String, u64), Value>,
    pub alerts: BTreeSet<(String, String, u64)>,
    pub dead_letters: Vec<(String, String)>,
}

/// `page_views_per_minute` rows (as `batch` writes them) as the `page-view-counts` topic
/// holds them, read by [`upserts`].
pub fn counts_of(rows: Vec<Value>) -> BTreeMap<(String, u64), Value> {
    rows.into_iter()
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
        .collect()
}

pub fn batch(dir: &TempDir, lines: &[Vec<u8>]) -> Expected {
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
    let counts = counts_of(rows("page_views_per_minute.jsonl"));
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
pub fn produce_lines(bootstrap: &str, topic: &str, lines: &[Vec<u8>]) {
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
pub fn upserts(records: &[ConsumedRecord]) -> BTreeMap<(String, u64), Value> {
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
pub fn settled_counts(
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
pub fn alert_states(
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

pub fn assert_counts_equal(
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
        "page-view-counts differ from the expected counts ({} vs {} windows)\nexpected but not found: {missing:#?}\nfound but not expected: {extra:#?}\nserve log:\n{log}",
        actual.len(),
        expected.len()
    );
}

/// Waits until `topic` holds some output (a committed step), and says so with `log` if it
/// never does.
pub fn await_first_output(bootstrap: &str, topic: &str, log: impl Fn() -> String) {
    let written = consume_all(
        bootstrap,
        topic,
        true,
        |records| !records.is_empty(),
        SETTLE,
    );
    assert!(!written.is_empty(), "no output in {topic}:\n{}", log());
}

/// Writes `lines` to the input topic and waits until `serve` has published exactly their
/// counts (`batch`'s) to the counts topic.
pub fn produce_and_await_counts(
    bootstrap: &str,
    topics: &Topics,
    dir: &TempDir,
    lines: &[Vec<u8>],
    serve: &Serve,
) {
    produce_lines(bootstrap, &topics.input, lines);
    let expected = batch(dir, lines);
    let published = settled_counts(bootstrap, &topics.counts, &expected.counts);
    assert_counts_equal(&published, &expected.counts, &serve.log());
}
