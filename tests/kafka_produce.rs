//! `clickflow topics` and `clickflow produce` against a real Apache Kafka: the reference
//! topics are created with the right partitions and configuration and a second run
//! reports them as existing; the load generator delivers exactly the records asked for,
//! keyed by `user_id`, with event times that follow the wall clock at a rate; and a
//! broker that cannot be reached or a missing topic fails with a clear error, in bounded
//! time.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::fs::{self, File};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::kafka::{
    ConsumedRecord, TIMEOUT, bootstrap, consume_all, create_topic, describe_topic, record_count,
    unique_topic,
};
use support::run::{TempDir, binary};
use support::timestamp::parse_iso;

/// The longest a run of the binary may take before it is killed and the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after its event time a record paced at a low rate may be sent, at the median.
const SEND_SLACK_MS: i64 = 5;

/// A finished run of the binary.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    /// Panics with the run's output unless it succeeded.
    fn assert_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `clickflow ARGS`, killing it (and failing) after [`RUN_TIMEOUT`].
fn clickflow(args: &[&str]) -> Run {
    let dir = TempDir::new("kafka-produce").unwrap();
    let (stdout_path, stderr_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let started = Instant::now();
    let mut child = Command::new(binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`clickflow {}` still running after {RUN_TIMEOUT:?}; stderr:\n{}",
                args.join(" "),
                fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: fs::read_to_string(&stdout_path).unwrap(),
        stderr: fs::read_to_string(&stderr_path).unwrap(),
        elapsed: started.elapsed(),
    }
}

fn now_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(now.as_millis()).unwrap()
}

#[test]
fn topics_creates_the_reference_topics_and_then_reports_them_as_existing() {
    let bootstrap = bootstrap();
    let [input, dead_letters, counts, alerts, rules] = [
        "page-views",
        "page-views.dlq",
        "page-view-counts",
        "alerts",
        "alert-rules",
    ]
    .map(unique_topic);
    let flags = [
        "topics",
        "--bootstrap",
        &bootstrap,
        "--input-topic",
        &input,
        "--dead-letter-topic",
        &dead_letters,
        "--counts-topic",
        &counts,
        "--alerts-topic",
        &alerts,
        "--rules-topic",
        &rules,
    ];

    let first = clickflow(&flags);
    first.assert_success("the first `clickflow topics`");
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{input}: created (12 partitions, cleanup.policy=delete, retention.ms=604800000)"
            ),
            format!(
                "{dead_letters}: created (12 partitions, cleanup.policy=delete, retention.ms=604800000)"
            ),
            format!("{counts}: created (3 partitions, cleanup.policy=compact)"),
            format!("{alerts}: created (3 partitions, cleanup.policy=compact)"),
            format!("{rules}: created (1 partition, cleanup.policy=compact)"),
        ]
    );
    for (topic, partitions, policy, retention) in [
        (&input, 12, "delete", Some("604800000")),
        (&dead_letters, 12, "delete", Some("604800000")),
        (&counts, 3, "compact", None),
        (&alerts, 3, "compact", None),
        (&rules, 1, "compact", None),
    ] {
        let description = describe_topic(&bootstrap, topic).unwrap();
        assert_eq!(description.partitions, partitions, "{topic}");
        let config = |key: &str| description.config.get(key).map(String::as_str);
        assert_eq!(config("cleanup.policy"), Some(policy), "{topic}");
        if let Some(retention) = retention {
            assert_eq!(config("retention.ms"), Some(retention), "{topic}");
        }
    }

    let second = clickflow(&flags);
    second.assert_success("the second `clickflow topics`");
    let lines: Vec<String> = second.stdout.lines().map(String::from).collect();
    let expected: Vec<String> = [
        (&input, 12),
        (&dead_letters, 12),
        (&counts, 3),
        (&alerts, 3),
    ]
    .iter()
    .map(|(topic, partitions)| format!("{topic}: exists ({partitions} partitions)"))
    .chain([format!("{rules}: exists (1 partition)")])
    .collect();
    assert_eq!(lines, expected);

    // Asked for other settings, an existing topic is left as it is, with the difference
    // reported; that is still not an error.
    let third = clickflow(&[&flags[..], &["--partitions", "3"]].concat());
    third.assert_success("`clickflow topics --partitions 3` on existing topics");
    assert!(
        third.stdout.contains(&format!(
            "{input}: exists, left unchanged: 12 partitions, not 3"
        )),
        "{}",
        third.stdout
    );
}

/// Runs `clickflow produce` to a new topic with `flags` and returns the run and the
/// records the topic then holds, once `events` records were read.
fn produce(label: &str, events: u64, flags: &[&str]) -> (Run, Vec<ConsumedRecord>) {
    let bootstrap = bootstrap();
    let topic = unique_topic(label);
    create_topic(&bootstrap, &topic, 4, false);
    let events_text = events.to_string();
    let run = clickflow(
        &[
            &[
                "produce",
                "--bootstrap",
                &bootstrap,
                "--topic",
                &topic,
                "--events",
                &events_text,
            ][..],
            flags,
        ]
        .concat(),
    );
    run.assert_success("`clickflow produce`");
    assert_eq!(
        record_count(&bootstrap, &topic),
        i64::try_from(events).unwrap(),
        "records in {topic}"
    );
    let expected = usize::try_from(events).unwrap();
    let records = consume_all(&bootstrap, &topic, false, |r| r.len() >= expected, TIMEOUT);
    assert_eq!(records.len(), expected, "records read back from {topic}");
    (run, records)
}

/// The JSON value of a record.
fn value(record: &ConsumedRecord) -> Value {
    serde_json::from_slice(record.value.as_deref().unwrap()).unwrap()
}

#[test]
fn produce_delivers_exactly_the_events_keyed_by_user_id() {
    let (run, records) = produce("produce-keyed", 2000, &["--rate", "0", "--malformed", "0"]);
    assert!(
        run.stdout.contains("delivered 2000 of 2000 records to ")
            && run.stdout.contains(", 0 failed;"),
        "summary: {}",
        run.stdout
    );
    let mut partition_of_user = HashMap::new();
    for record in &records {
        let user = value(record)["user_id"].as_str().unwrap().to_owned();
        assert_eq!(
            record.key.as_deref(),
            Some(user.as_bytes()),
            "key of {record:?}"
        );
        let partition = *partition_of_user.entry(user).or_insert(record.partition);
        assert_eq!(
            record.partition, partition,
            "one partition per user: {record:?}"
        );
    }
    let partitions: std::collections::BTreeSet<i32> = partition_of_user.values().copied().collect();
    assert_eq!(partitions.len(), 4, "users spread over every partition");
}

#[test]
fn produce_at_a_rate_gives_event_times_that_follow_the_wall_clock() {
    let (events, rate) = (200, 100);
    let before = now_ms();
    let (run, records) = produce(
        "produce-live",
        events,
        &[
            "--rate",
            &rate.to_string(),
            "--out-of-order",
            "0",
            "--late",
            "0",
            "--future",
            "0",
            "--malformed",
            "0",
        ],
    );
    let after = now_ms();
    // Record i is not sent before i / rate seconds after the start.
    let least = Duration::from_millis((events - 1) * 1000 / rate);
    assert!(
        run.elapsed >= least,
        "took {:?}, less than {least:?}",
        run.elapsed
    );
    let times: Vec<u64> = records
        .iter()
        .map(|record| {
            let value = value(record);
            match &value["timestamp"] {
                Value::String(text) => parse_iso(text).unwrap(),
                other => other.as_u64().unwrap(),
            }
        })
        .collect();
    let (first, last) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    assert!(
        before <= first && last <= after,
        "event times {first}..={last} outside the run {before}..={after}"
    );
    assert!(
        last - first >= least.as_millis() as u64 / 2,
        "event times {first}..={last} do not spread over the run ({least:?})"
    );
    // Each record is sent when the wall clock reaches its event time, not some set-up
    // time later (its Kafka timestamp is the time it was sent).
    let mut behind: Vec<i64> = records
        .iter()
        .zip(&times)
        .map(|(record, &time)| record.timestamp.unwrap() - i64::try_from(time).unwrap())
        .collect();
    behind.sort_unstable();
    let median = behind[behind.len() / 2];
    eprintln!("records sent {median} ms after their event times (median)");
    assert!(
        (0..=SEND_SLACK_MS).contains(&median),
        "records sent {median} ms after their event times (median), not within {SEND_SLACK_MS} ms"
    );
}

#[test]
fn produce_and_topics_fail_with_the_cause_in_bounded_time_when_the_broker_is_unreachable() {
    let unreachable = ["--bootstrap", "127.0.0.1:1", "--timeout-ms", "2000"];
    for command in [&["produce", "--events", "10"][..], &["topics"][..]] {
        let run = clickflow(&[command, &unreachable[..]].concat());
        assert!(
            !run.status.success(),
            "{command:?} succeeded:\n{}",
            run.stdout
        );
        assert!(
            run.stderr
                .contains("cannot reach Kafka at 127.0.0.1:1 within 2s")
                && run.stderr.contains("Connection refused"),
            "{command:?} stderr:\n{}",
            run.stderr
        );
        assert!(
            !run.stderr.contains('\u{1b}'),
            "{command:?}: terminal colours in a pipe:\n{}",
            run.stderr
        );
        assert!(
            run.elapsed < RUN_TIMEOUT,
            "{command:?} took {:?}",
            run.elapsed
        );
        let empty = clickflow(&[command, &["--bootstrap", ""][..]].concat());
        assert!(
            !empty.status.success()
                && empty
                    .stderr
                    .contains("a value is required for '--bootstrap"),
            "{command:?} with an empty bootstrap:\n{}",
            empty.stderr
        );
    }
}

#[test]
fn a_bad_generator_parameter_is_named_once() {
    let run = clickflow(&["produce", "--malformed", "2", "--bootstrap", "127.0.0.1:1"]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("invalid generator parameters"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("malformed must be a fraction").count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn produce_to_a_missing_topic_fails_and_names_it() {
    let bootstrap = bootstrap();
    let topic = unique_topic("produce-missing");
    let run = clickflow(&[
        "produce",
        "--bootstrap",
        &bootstrap,
        "--topic",
        &topic,
        "--events",
        "10",
    ]);
    assert!(!run.status.success(), "succeeded:\n{}", run.stdout);
    assert!(
        run.stderr
            .contains(&format!("topic {topic} does not exist on {bootstrap}")),
        "stderr:\n{}",
        run.stderr
    );
}
