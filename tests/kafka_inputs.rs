//! `clickflow serve`'s inputs and operations against a real Apache Kafka: several input
//! topics with fewer partitions than workers, partitions added while running, late records
//! on a worker that was idle, the last events of a burst, a partition read slowly, the
//! start positions, two processes, the metrics endpoint, clear failures, and the demo
//! (which needs no Kafka at all).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::Config;
use support::kafka::{
    ConsumedRecord, add_partitions, bootstrap, consume_all, create_topic, limit_consumer_rate,
    produce_to_partition, unique_topic, watermarks,
};
use support::metrics::{free_port, scrape};
use support::pipeline::{
    SETTLE, Topics, assert_counts_equal, await_first_output, batch, counts_of, generate,
    produce_and_await_counts, produce_lines, settled_counts,
};
use support::reference::reference;
use support::run::{TempDir, binary, stdout_of};
use support::serve::{Serve, local_hostfile};
use support::timestamp::parse_iso;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Waits until `serve`'s log says that it reads `partitions` input partitions.
fn wait_for_assignment(serve: &Serve, partitions: usize) {
    serve.await_log("reading input partition", partitions, SETTLE);
}

#[test]
fn several_topics_fewer_partitions_than_workers_and_partitions_added_while_running() {
    let bootstrap = bootstrap();
    let dir = TempDir::new("kafka-inputs").unwrap();
    let topics = Topics::create(&bootstrap, "inputs");
    let single = unique_topic("inputs-single");
    create_topic(&bootstrap, &single, 1, false);
    let lines = generate(&dir, 3, 4_000);
    let expected = batch(&dir, &lines);
    let (first, second) = lines.split_at(lines.len() / 2);
    let (to_single, to_other) = first.split_at(first.len() / 2);

    let mut settings = topics.serve_settings(&bootstrap);
    settings.push(format!(
        "kafka.input_topics=[\"{single}\",\"{}\"]",
        topics.input
    ));
    let serve = Serve::start(&["-w", "3"], &settings);
    produce_lines(&bootstrap, &single, to_single);
    produce_lines(&bootstrap, &topics.input, to_other);
    await_first_output(&bootstrap, &topics.counts, || serve.log());

    // The single-partition topic grows to three; the new partitions hold the rest.
    add_partitions(&bootstrap, &single, 3);
    for (partition, chunk) in (1..).zip(second.chunks(second.len() / 2 + 1)) {
        let records: Vec<_> = chunk.iter().map(|line| (None, line.clone())).collect();
        produce_to_partition(&bootstrap, &single, partition, &records);
    }
    let counts = settled_counts(&bootstrap, &topics.counts, &expected.counts);
    let (_, log) = serve.stop();
    assert_counts_equal(&counts, &expected.counts, &log);
    assert_eq!(
        log.matches("reading input partition").count(),
        3 + 4,
        "{log}"
    );
}

#[test]
fn records_read_by_a_worker_after_it_followed_the_others_while_idle_are_published() {
    let bootstrap = bootstrap();
    let dir = TempDir::new("kafka-idle-worker").unwrap();
    let topics = Topics::create(&bootstrap, "idle-worker");
    let lines = generate(&dir, 11, 4_000);
    let expected = batch(&dir, &lines);
    let (first, second) = lines.split_at(lines.len() / 2);
    let serve = Serve::start(&["-w", "2"], &topics.serve_settings(&bootstrap));
    produce_and_await_counts(&bootstrap, &topics, &dir, first, &serve);
    // Partition 0 (one worker) gets the newest event and every odd line. The other worker,
    // idle meanwhile, follows its watermark; then partition 1 (that worker's) gets the
    // rest, all older than where it now is. No later event ever comes.
    let event_time = |line: &Vec<u8>| {
        serde_json::from_slice::<Value>(line)
            .ok()
            .and_then(|event| event["timestamp"].as_str().and_then(parse_iso))
    };
    let newest = (0..second.len())
        .max_by_key(|&index| event_time(&second[index]))
        .unwrap();
    let (early, late): (Vec<usize>, Vec<usize>) =
        (0..second.len()).partition(|&index| index % 2 == 1 || index == newest);
    let unkeyed = |indices: Vec<usize>| -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        indices
            .into_iter()
            .map(|index| (None, second[index].clone()))
            .collect()
    };
    produce_to_partition(&bootstrap, &topics.input, 0, &unkeyed(early));
    std::thread::sleep(Duration::from_secs(3));
    produce_to_partition(&bootstrap, &topics.input, 1, &unkeyed(late));
    let counts = settled_counts(&bootstrap, &topics.counts, &expected.counts);
    let (_, log) = serve.stop();
    assert_counts_equal(&counts, &expected.counts, &log);
}

/// Once the input goes quiet, a worker's time reaches its least watermark itself rather
/// than the start of that watermark's tick, so the last events of a burst are published
/// at once. The input spans ten minutes from a whole hour, so with ticks of an hour it is
/// all one tick, and with an idle timeout of an hour nothing else would publish it: both
/// halves, the second read at the time the first half left the worker at, reach the
/// output.
#[test]
fn the_last_events_of_a_burst_are_published_without_waiting_for_the_idle_timeout() {
    let bootstrap = bootstrap();
    let dir = TempDir::new("kafka-quiet").unwrap();
    let topics = Topics::create(&bootstrap, "quiet");
    let lines = generate(&dir, 13, 2_000);
    let (first, second) = lines.split_at(lines.len() / 2);
    let mut settings = topics.serve_settings(&bootstrap);
    settings.extend([
        "kafka.idle_timeout_ms=3600000".to_owned(),
        "kafka.tick_ms=3600000".to_owned(),
    ]);
    let serve = Serve::start(&["-w", "2"], &settings);
    produce_and_await_counts(&bootstrap, &topics, &dir, first, &serve);
    produce_lines(&bootstrap, &topics.input, second);
    let expected = batch(&dir, &lines);
    let counts = settled_counts(&bootstrap, &topics.counts, &expected.counts);
    let (_, log) = serve.stop();
    assert_counts_equal(&counts, &expected.counts, &log);
}

/// A partition that receives nothing but refused records goes idle like a silent one:
/// while malformed records keep arriving on partition 0 (far more often than the idle
/// timeout), its watermark stays where its last event put it, yet the frontier follows
/// partition 1, and a window ten minutes later reaches the output topic.
#[test]
fn a_partition_that_receives_only_refused_records_does_not_hold_back_the_frontier() {
    let bootstrap = bootstrap();
    let topics = Topics::create(&bootstrap, "refused-only");
    let mut settings = topics.serve_settings(&bootstrap);
    settings.push("kafka.idle_timeout_ms=3000".to_owned());
    let serve = Serve::start(&["-w", "1"], &settings);
    wait_for_assignment(&serve, 4);
    let start = now_ms() - 30 * 60_000;
    let event = |page: &str, time: u128| {
        let line = format!(r#"{{"user_id":"u1","page":"{page}","timestamp":{time}}}"#);
        vec![(None, line.into_bytes())]
    };
    produce_to_partition(&bootstrap, &topics.input, 0, &event("/first", start));
    produce_to_partition(&bootstrap, &topics.input, 1, &event("/first", start));
    await_first_output(&bootstrap, &topics.counts, || serve.log());

    let shows_later = |record: &ConsumedRecord| {
        record
            .value
            .as_deref()
            .is_some_and(|value| String::from_utf8_lossy(value).contains(r#""page":"/later""#))
    };
    let stop = AtomicBool::new(false);
    let (published, while_malformed) = std::thread::scope(|scope| {
        let malformed = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                produce_to_partition(&bootstrap, &topics.input, 0, &[(None, b"{".to_vec())]);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        std::thread::sleep(Duration::from_secs(5));
        produce_to_partition(
            &bootstrap,
            &topics.input,
            1,
            &event("/later", start + 600_000),
        );
        let written = consume_all(
            &bootstrap,
            &topics.counts,
            true,
            |records| records.iter().any(shows_later),
            Duration::from_secs(30),
        );
        let while_malformed = !malformed.is_finished();
        stop.store(true, Ordering::Relaxed);
        (written.iter().any(shows_later), while_malformed)
    });
    let (_, log) = serve.stop();
    assert!(
        published && while_malformed,
        "the later window was not published while partition 0 got malformed records:\n{log}"
    );
}

/// A partition with records left to read is not idle, however long its next fetch takes.
/// A client quota makes the broker hold the source's fetches back for seconds once it has
/// sent about 150 kB: partition 1 (small records) is read in the first fetch, partition 0
/// (hardly compressible 8 kB records, one 64 kB batch a fetch) over several, the last of
/// them after such pauses. The frontier waits for partition 0 instead of following
/// partition 1, so every record of it is counted; none is refused as older than the
/// frontier minus the one-minute retention, and every window reaches the output topic.
#[test]
fn a_partition_read_slowly_holds_the_frontier_while_it_has_records_left() {
    let bootstrap = bootstrap();
    let topics = Topics::create(&bootstrap, "slow-partition");
    let start: u64 = 1_790_000_040_000;
    let mut noise = 0x9e37_79b9_7f4a_7c15_u64;
    let mut padding = |bytes: usize| -> String {
        (0..bytes / 16)
            .map(|_| {
                noise = noise
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                format!("{noise:016x}")
            })
            .collect()
    };
    // Ten minutes of event time in each partition, in order.
    let mut records = |count: u64, page: &str, bytes: usize| -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        (0..count)
            .map(|i| {
                let event = serde_json::json!({
                    "user_id": format!("{page}-user{}", i % 10),
                    "page": page,
                    "timestamp": start + i * (600_000 / count),
                    "padding": padding(bytes),
                });
                (None, serde_json::to_vec(&event).unwrap())
            })
            .collect()
    };
    let small = records(500, "/small", 0);
    let large = records(60, "/large", 8_000);
    produce_to_partition(&bootstrap, &topics.input, 1, &small);
    produce_to_partition(&bootstrap, &topics.input, 0, &large);
    let client = unique_topic("slow-reader");
    limit_consumer_rate(&bootstrap, &client, 15_000);
    let mut settings = topics.serve_settings(&bootstrap);
    settings.extend([
        "kafka.idle_timeout_ms=100".to_owned(),
        "views.retention_ms=60000".to_owned(),
        format!(r#"kafka.consumer={{"client.id"="{client}","max.partition.fetch.bytes"="1"}}"#),
    ]);
    let serve = Serve::start(&["-w", "1"], &settings);
    let records = small.len() + large.len();
    let status = status_reflecting(&serve.api_address(), records);
    // Every window reaches the output topic with its final count, even one that was
    // created and left the one-minute retention within one published step: the reference
    // with the default day of retention keeps every window.
    let input: Vec<&[u8]> = small
        .iter()
        .chain(&large)
        .map(|(_, value)| value.as_slice())
        .collect();
    let expected = counts_of(reference(&input.join(&b'\n'), &Config::default()).page_views);
    let published = settled_counts(&bootstrap, &topics.counts, &expected);
    let (_, log) = serve.stop();
    assert_counts_equal(&published, &expected, &log);
    let refused: BTreeMap<&String, &Value> = status["dead_letters"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, count)| count.as_u64() != Some(0))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}\n{status}\n{log}");
    assert_eq!(
        status["events_counted"].as_u64(),
        Some(records as u64),
        "{status}\n{log}"
    );
}

#[test]
fn reading_starts_at_a_timestamp_or_at_the_end() {
    let bootstrap = bootstrap();
    let dir = TempDir::new("kafka-start").unwrap();
    let topics = Topics::create(&bootstrap, "start");
    let lines = generate(&dir, 5, 3_000);
    let (early, late) = lines.split_at(lines.len() / 2);
    let expected = batch(&dir, late);
    produce_lines(&bootstrap, &topics.input, early);
    std::thread::sleep(Duration::from_millis(1_100));
    let boundary = now_ms();
    std::thread::sleep(Duration::from_millis(100));
    produce_lines(&bootstrap, &topics.input, late);

    let mut settings = topics.serve_settings(&bootstrap);
    settings.push(format!("kafka.start=\"{boundary}\""));
    let serve = Serve::start(&["-w", "2"], &settings);
    let counts = settled_counts(&bootstrap, &topics.counts, &expected.counts);
    let (_, log) = serve.stop();
    assert_counts_equal(&counts, &expected.counts, &log);

    // From the end: only what is produced after the start counts.
    let (counts_topic, alerts_topic) = (unique_topic("start-counts"), unique_topic("start-alerts"));
    create_topic(&bootstrap, &counts_topic, 1, true);
    create_topic(&bootstrap, &alerts_topic, 1, true);
    let mut settings = topics.settings(
        &bootstrap,
        &counts_topic,
        &alerts_topic,
        &unique_topic("txn"),
    );
    settings.push("kafka.start=\"latest\"".to_owned());
    let port = free_port();
    settings.push(format!("metrics.listen=\"127.0.0.1:{port}\""));
    let serve = Serve::start(&["-w", "2"], &settings);
    wait_for_assignment(&serve, 4);
    // Before its first record, a partition read from its end shows that end as its next
    // offset, and no lag.
    let metrics = scrape(port);
    for (partition, (_, end)) in watermarks(&bootstrap, &topics.input) {
        let labels = format!("{{topic=\"{}\",partition=\"{partition}\"}}", topics.input);
        assert!(end > 0, "partition {partition} is empty");
        assert_eq!(
            metrics.get(&format!("clickflow_partition_next_offset{labels}")),
            Some(&(end as f64)),
            "partition {partition}: {metrics:?}"
        );
    }
    produce_lines(&bootstrap, &topics.input, late);
    let counts = settled_counts(&bootstrap, &counts_topic, &expected.counts);
    let (_, log) = serve.stop();
    assert_counts_equal(&counts, &expected.counts, &log);
}

#[test]
fn two_processes_give_the_same_output_as_batch() {
    let bootstrap = bootstrap();
    let dir = TempDir::new("kafka-processes").unwrap();
    let topics = Topics::create(&bootstrap, "processes");
    let lines = generate(&dir, 13, 3_000);
    let expected = batch(&dir, &lines);
    produce_lines(&bootstrap, &topics.input, &lines);
    let hostfile = local_hostfile(&dir, 2);
    let hostfile = hostfile.as_str();
    let settings = topics.serve_settings(&bootstrap);
    let first = Serve::start(
        &["-n", "2", "-p", "0", "-w", "2", "-h", hostfile],
        &settings,
    );
    let second = Serve::start(
        &["-n", "2", "-p", "1", "-w", "2", "-h", hostfile],
        &settings,
    );
    let counts = settled_counts(&bootstrap, &topics.counts, &expected.counts);
    let status = status_reflecting(&first.api_address(), lines.len());
    let (_, second_log) = second.stop();
    let (_, log) = first.stop();
    assert_counts_equal(
        &counts,
        &expected.counts,
        &format!("{log}\nprocess 1:\n{second_log}"),
    );
    // Process 0's status and `as_of` cover the partitions that process 1 reads too.
    let partitions = status["partitions"].as_array().unwrap();
    let workers: BTreeSet<u64> = partitions
        .iter()
        .map(|partition| partition["worker"].as_u64().unwrap())
        .collect();
    assert_eq!(workers, BTreeSet::from([0, 1, 2, 3]), "{status}");
    assert_eq!(
        sum_of(&status["partitions"], "next_offset"),
        lines.len() as i64,
        "{status}"
    );
    assert_eq!(
        status["as_of"]["offsets"].as_array().unwrap().len(),
        4,
        "{status}"
    );
    let dead_letters: u64 = status["dead_letters"]
        .as_object()
        .unwrap()
        .values()
        .map(|count| count.as_u64().unwrap())
        .sum();
    assert_eq!(
        status["events_counted"].as_u64().unwrap() + dead_letters,
        lines.len() as u64,
        "{status}"
    );
    let read = |log: &str| log.matches("reading input partition").count();
    assert_eq!(
        (read(&log), read(&second_log)),
        (2, 2),
        "each process reads half:\n{log}\n{second_log}"
    );
}

/// `clickflow status --json` from `server`, once its `as_of` offsets add up to `records`
/// (waits up to 30 s, then returns the last answer).
fn status_reflecting(server: &str, records: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = stdout_of(
            Command::new(binary()).args(["status", "--server", server, "--json"]),
            "clickflow status",
        );
        let status: Value = serde_json::from_slice(&output).unwrap();
        if sum_of(&status["as_of"]["offsets"], "next_offset") == records as i64
            || Instant::now() > deadline
        {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sum of `field` over the objects of a JSON array.
fn sum_of(list: &Value, field: &str) -> i64 {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_i64().unwrap())
        .sum()
}

#[test]
fn metrics_show_lag_per_partition_events_and_dead_letters_by_reason() {
    let bootstrap = bootstrap();
    let dir = TempDir::new("kafka-metrics").unwrap();
    let topics = Topics::create(&bootstrap, "metrics");
    let lines = generate(&dir, 17, 3_000);
    let expected = batch(&dir, &lines);
    produce_lines(&bootstrap, &topics.input, &lines);
    let port = free_port();
    let mut settings = topics.serve_settings(&bootstrap);
    settings.push(format!("metrics.listen=\"127.0.0.1:{port}\""));
    let serve = Serve::start(&["-w", "2"], &settings);
    let counts = settled_counts(&bootstrap, &topics.counts, &expected.counts);
    assert_counts_equal(&counts, &expected.counts, &serve.log());

    let counted = (lines.len() - expected.dead_letters.len()) as f64;
    let lags = |metrics: &BTreeMap<String, f64>| -> Vec<(String, f64)> {
        metrics
            .iter()
            .filter(|(name, _)| name.starts_with("clickflow_consumer_lag_records{"))
            .map(|(name, lag)| (name.clone(), *lag))
            .collect()
    };
    // Lag comes from librdkafka's statistics, every second.
    let deadline = Instant::now() + SETTLE;
    let metrics = loop {
        let metrics = scrape(port);
        let caught_up =
            lags(&metrics).len() == 4 && lags(&metrics).iter().all(|(_, lag)| *lag == 0.0);
        if (metrics["clickflow_events_total"] == counted && caught_up) || Instant::now() > deadline
        {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (_, log) = serve.stop();
    assert_eq!(metrics["clickflow_events_total"], counted, "{log}");
    let lag_lines = lags(&metrics);
    assert_eq!(lag_lines.len(), 4, "one lag per partition: {lag_lines:?}");
    assert!(
        lag_lines
            .iter()
            .all(|(name, lag)| name.contains(&topics.input) && *lag == 0.0),
        "{lag_lines:?}"
    );
    for reason in [
        "invalid_json",
        "missing_field",
        "invalid_field",
        "invalid_timestamp",
        "too_large",
        "too_late",
        "future_timestamp",
    ] {
        let expected_count = expected
            .dead_letters
            .iter()
            .filter(|(r, _)| r == reason)
            .count() as f64;
        assert_eq!(
            metrics[&format!("clickflow_dead_letters_total{{reason=\"{reason}\"}}")],
            expected_count,
            "{reason}"
        );
    }
    assert!(metrics["clickflow_output_transactions_total"] >= 1.0);
    assert!(metrics["clickflow_freshness_seconds_count"] >= 1.0);
    assert!(metrics.contains_key("clickflow_frontier_delay_seconds"));
}

#[test]
fn failures_name_their_cause() {
    let run = |args: &[&str]| {
        let output = Command::new(binary()).args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run(&["serve", "--set", "kafka.bootstrapp=x"]).contains("bootstrapp"));
    assert!(
        run(&["serve", "--config", "/nonexistent/clickflow.toml"])
            .contains("/nonexistent/clickflow.toml")
    );
    let port = free_port();
    let unreachable = |rules_topic: &str| {
        run(&[
            "serve",
            "--set",
            &format!("kafka.bootstrap=\"127.0.0.1:{port}\""),
            "--set",
            &format!("kafka.rules_topic=\"{rules_topic}\""),
            "--set",
            "metrics.listen=\"\"",
            "--set",
            "api.listen=\"\"",
        ])
    };
    // Options that need no Kafka are refused before anything waits for it (30 s).
    let started = Instant::now();
    let cluster = run(&[
        "serve",
        "-n",
        "2",
        "-p",
        "2",
        "--set",
        &format!("kafka.bootstrap=\"127.0.0.1:{port}\""),
    ]);
    assert!(
        cluster.contains("--process 2 must be less than --processes 2")
            && started.elapsed() < Duration::from_secs(20),
        "after {:?}: {cluster}",
        started.elapsed()
    );
    let reading_rules = unreachable("rules");
    assert!(
        reading_rules.contains(&format!(
            "alert rules topic rules: cannot reach Kafka at 127.0.0.1:{port}"
        )) && reading_rules.contains("Connection refused"),
        "{reading_rules}"
    );
    let writing_output = unreachable("");
    assert!(
        writing_output.contains("cannot start the output writer")
            && writing_output.contains(&format!(
                "output producer: cannot reach Kafka at 127.0.0.1:{port}"
            )),
        "{writing_output}"
    );
}

#[test]
fn the_demo_runs_with_no_kafka_installed() {
    let output = Command::new(binary())
        .args([
            "demo",
            "--duration-s",
            "6",
            "--rate",
            "1000",
            "-w",
            "1",
            "--refresh-s",
            "1",
            "--set",
            "api.listen=\"127.0.0.1:0\"",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("top pages") && stdout.contains("checkout funnel"),
        "{stdout}"
    );
    let summary = stdout
        .lines()
        .find(|line| line.starts_with("demo: "))
        .unwrap();
    let numbers: Vec<u64> = summary
        .split(' ')
        .filter_map(|word| word.parse().ok())
        .collect();
    assert!(
        numbers[0] > 1_000 && numbers[1] > 1_000 && numbers[1] <= numbers[0],
        "{summary}"
    );
}
