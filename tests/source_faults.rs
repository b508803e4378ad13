//! Fault injection for `clickflow serve`'s Kafka source, on librdkafka's in-process mock
//! cluster: an input topic that is not available when the service starts keeps the
//! configured start position until it is, and holds the frontier back meanwhile; the
//! sources pause while the output writer cannot write, or while the dead-letter queue is
//! full, and the service still stops when asked; and dead letters still queued when the
//! writer fails are delivered before the service exits.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::Value;
use support::kafka::produce_to_partition;
use support::metrics::{free_port, scrape};
use support::run::TempDir;
use support::serve::{Serve, local_hostfile};

const INPUT: &str = "in";
const DEAD_LETTERS: &str = "in.dlq";
const COUNTS: &str = "counts";
const ALERTS: &str = "alerts";

/// Creates the input topic (2 partitions), the dead-letter topic and the output topics
/// on `cluster`.
fn topics(cluster: &MockCluster<'static, DefaultProducerContext>) {
    cluster.create_topic(INPUT, 2, 1).unwrap();
    for name in [DEAD_LETTERS, COUNTS, ALERTS] {
        cluster.create_topic(name, 1, 1).unwrap();
    }
}

/// Which of two brokers leads what (the input is on broker 1).
struct Brokers {
    /// The output topics, and the coordinator of the writer's transactions.
    output: i32,
    /// The dead-letter topic.
    dead_letters: i32,
}

/// The output on broker 2, all else on broker 1.
const OUTPUT_ON_2: Brokers = Brokers {
    output: 2,
    dead_letters: 1,
};

/// The dead-letter topic on broker 2, all else on broker 1.
const DEAD_LETTERS_ON_2: Brokers = Brokers {
    output: 1,
    dead_letters: 2,
};

/// A cluster of two brokers with the topics of [`topics`], placed as `brokers` says, for
/// a writer with `transactional_id`.
fn two_brokers(
    transactional_id: &str,
    brokers: Brokers,
) -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(2).unwrap();
    topics(&cluster);
    for partition in [0, 1] {
        cluster.partition_leader(INPUT, partition, Some(1)).unwrap();
    }
    cluster
        .partition_leader(DEAD_LETTERS, 0, Some(brokers.dead_letters))
        .unwrap();
    for output in [COUNTS, ALERTS] {
        cluster
            .partition_leader(output, 0, Some(brokers.output))
            .unwrap();
    }
    let coordinator = MockCoordinator::Transaction(transactional_id.to_owned());
    cluster.coordinator(coordinator, brokers.output).unwrap();
    // The consumers' group is never joined, but librdkafka keeps its coordinator connected.
    let group = MockCoordinator::Group("clickflow".to_owned());
    cluster.coordinator(group, 1).unwrap();
    cluster
}

/// Makes broker 2 of `cluster` answer nothing for ten minutes, or (with `answering`) at
/// once again, including the answers it held back. Unlike a broker taken down, its
/// connections stay open: its clients wait, with nothing to reconnect.
fn broker_2_answers(cluster: &MockCluster<'static, DefaultProducerContext>, answering: bool) {
    let round_trip = if answering {
        Duration::ZERO
    } else {
        Duration::from_secs(600)
    };
    cluster.broker_round_trip_time(2, round_trip).unwrap();
}

/// `serve` settings for the topics of [`topics`] on `bootstrap`, with no rules' log (the
/// rules are the built-in one).
fn settings(bootstrap: &str, transactional_id: &str) -> Vec<String> {
    vec![
        format!("kafka.bootstrap=\"{bootstrap}\""),
        format!("kafka.input_topics=[\"{INPUT}\"]"),
        format!("kafka.dead_letter_topic=\"{DEAD_LETTERS}\""),
        format!("kafka.page_view_counts_topic=\"{COUNTS}\""),
        format!("kafka.alerts_topic=\"{ALERTS}\""),
        "kafka.rules_topic=\"\"".to_owned(),
        format!("kafka.transactional_id=\"{transactional_id}\""),
        "kafka.idle_timeout_ms=500".to_owned(),
    ]
}

/// One page view of `page` a minute ago, as a record for a partition.
fn view(page: &str) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    view_minutes_ago(page, 1)
}

/// One page view of `page` `minutes` ago, as a record for a partition.
fn view_minutes_ago(page: &str, minutes: u128) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - minutes * 60_000;
    let line = format!(r#"{{"user_id":"u1","page":"{page}","timestamp":{time}}}"#);
    vec![(None, line.into_bytes())]
}

/// Reads `topic` (one partition) from its beginning, passing each record's value to
/// `read` until it returns true or `timeout` passes.
fn read_values(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    mut read: impl FnMut(&[u8]) -> bool,
) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "source-faults-reader")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100))
            && read(message.payload().unwrap_or_default())
        {
            return;
        }
    }
}

/// Reads the counts topic as [`read_values`] does, each value as JSON.
fn read_counts(bootstrap: &str, timeout: Duration, mut read: impl FnMut(Value) -> bool) {
    read_values(bootstrap, COUNTS, timeout, |value| {
        read(serde_json::from_slice(value).unwrap())
    });
}

/// The pages of the records in the counts topic, read until one of `wanted` comes (or
/// `timeout` passes).
fn pages_in(bootstrap: &str, wanted: &str, timeout: Duration) -> Vec<String> {
    let mut pages = Vec::new();
    read_counts(bootstrap, timeout, |value| {
        let page = value["page"].as_str().unwrap().to_owned();
        let done = page == wanted;
        pages.push(page);
        done
    });
    pages
}

/// Writes a view of `/first` to each of the input's `partitions`, and waits until the
/// counts topic shows that page (and no other before it).
fn await_first_view(bootstrap: &str, partitions: &[i32]) {
    for &partition in partitions {
        produce_to_partition(bootstrap, INPUT, partition, &view("/first"));
    }
    assert_eq!(
        pages_in(bootstrap, "/first", Duration::from_secs(60)),
        vec!["/first"]
    );
}

/// The pages of the start-position test: written before and after the service starts.
const BEFORE: &str = "/1-written-before-the-start";
const AFTER: &str = "/2-written-after-the-start";

/// With `kafka.start = "latest"`, a record written before the start is not read, also
/// when the topic's metadata reported an error at the start (leader not available): the
/// partitions are assigned at their end once the topic is readable, not at their
/// beginning as partitions added while running are.
#[test]
fn a_topic_unavailable_at_the_start_keeps_the_configured_start_position() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    topics(&cluster);
    produce_to_partition(&bootstrap, INPUT, 0, &view(BEFORE));
    cluster
        .topic_error(
            INPUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        )
        .unwrap();
    let mut settings = settings(&bootstrap, "source-faults-start");
    settings.push("kafka.start=\"latest\"".to_owned());
    let serve = Serve::start(&["-w", "1"], &settings);
    await_unavailable_topic(&serve);
    cluster
        .topic_error(INPUT, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    await_assignment(&serve);
    // The end offsets were looked up before the partitions were assigned: a record written
    // now is read.
    produce_to_partition(&bootstrap, INPUT, 0, &view(AFTER));
    let pages = pages_in(&bootstrap, AFTER, Duration::from_secs(30));
    let (_, log) = serve.stop();
    // A record counted from before the start would come first: it is earlier in the
    // partition, and sorts first within a step.
    assert!(
        !pages.is_empty() && pages.iter().all(|page| page == AFTER),
        "{pages:?}\n{log}"
    );
}

/// Waits until `serve`'s log shows the metadata error of a topic that is not available.
fn await_unavailable_topic(serve: &Serve) {
    serve.await_log(
        "input topic is not available yet",
        1,
        Duration::from_secs(30),
    );
}

/// Waits until `serve`'s log says that it reads both input partitions.
fn await_assignment(serve: &Serve) {
    serve.await_log("reading input partition", 2, Duration::from_secs(30));
}

/// A worker holds its time until it has read every input topic. Here a second topic is
/// not available at the start; the first one's records are ten minutes later than the
/// second one's, and retention is a minute. Were the time to follow the first topic, the
/// second one's records would be past retention when read, refused as `too_late`, and
/// never counted.
#[test]
fn the_frontier_waits_for_an_input_topic_not_available_at_the_start() {
    const HELD: &str = "in-held";
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    topics(&cluster);
    cluster.create_topic(HELD, 1, 1).unwrap();
    for partition in 0..2 {
        produce_to_partition(&bootstrap, INPUT, partition, &view(AFTER));
    }
    produce_to_partition(&bootstrap, HELD, 0, &view_minutes_ago(BEFORE, 11));
    cluster
        .topic_error(HELD, RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
        .unwrap();
    let mut settings: Vec<String> = settings(&bootstrap, "source-faults-held")
        .into_iter()
        .filter(|setting| {
            !setting.starts_with("kafka.idle_timeout_ms")
                && !setting.starts_with("kafka.input_topics")
        })
        .collect();
    settings.extend([
        format!("kafka.input_topics=[\"{INPUT}\", \"{HELD}\"]"),
        "kafka.idle_timeout_ms=60000".to_owned(),
        "views.retention_ms=60000".to_owned(),
    ]);
    let serve = Serve::start(&["-w", "1"], &settings);
    await_unavailable_topic(&serve);
    // Time for the first topic's records to be read meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    cluster
        .topic_error(HELD, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    let pages = pages_in(&bootstrap, BEFORE, Duration::from_secs(30));
    let (_, log) = serve.stop();
    assert!(pages.iter().any(|page| page == BEFORE), "{pages:?}\n{log}");
}

/// When the output writer fails (here fenced), the service stops at once, but the dead
/// letters it has refused and not yet delivered (the broker that leads the dead-letter
/// topic answers nothing until the writer has failed) are delivered before it exits: none
/// is purged from the producer's queue.
#[test]
fn dead_letters_queued_when_the_writer_fails_are_delivered_before_the_exit() {
    let transactional_id = "source-faults-fenced";
    let cluster = two_brokers(transactional_id, DEAD_LETTERS_ON_2);
    let bootstrap = cluster.bootstrap_servers();
    let mut serve = Serve::start(&["-w", "1"], &settings(&bootstrap, transactional_id));
    await_first_view(&bootstrap, &[0]);

    broker_2_answers(&cluster, false);
    cluster.request_errors(
        RDKafkaApiKey::AddPartitionsToTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let refused = refuse_to_partition_0(&bootstrap, 5);
    // A step for the writer, whose transaction is refused.
    produce_to_partition(&bootstrap, INPUT, 0, &view("/second"));
    serve.await_log("output writer stopped", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    broker_2_answers(&cluster, true);
    let deadline = Instant::now() + Duration::from_secs(60);
    while serve.running() {
        assert!(Instant::now() < deadline, "still running:\n{}", serve.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = serve.log();
    assert!(log.to_lowercase().contains("fenced"), "{log}");
    assert_eq!(dead_letters(&bootstrap, refused.len()), refused, "{log}");
}

/// Writes `count` records that are not JSON to the input's partition 0; returns their
/// values.
fn refuse_to_partition_0(bootstrap: &str, count: usize) -> Vec<String> {
    let refused: Vec<String> = (0..count).map(|n| format!("not json {n}")).collect();
    let records: Vec<_> = refused
        .iter()
        .map(|value| (None, value.clone().into_bytes()))
        .collect();
    produce_to_partition(bootstrap, INPUT, 0, &records);
    refused
}

/// The values in the dead-letter topic, read from its beginning until there are `count`
/// (or 30 s pass).
fn dead_letters(bootstrap: &str, count: usize) -> Vec<String> {
    let mut delivered = Vec::new();
    read_values(bootstrap, DEAD_LETTERS, Duration::from_secs(30), |value| {
        delivered.push(String::from_utf8_lossy(value).into_owned());
        delivered.len() == count
    });
    delivered
}

/// The gauge of sources paused because a dead letter waits for room.
const PAUSED_FOR_DEAD_LETTERS: &str = r#"clickflow_sources_paused{reason="dead_letters"}"#;

/// A service whose dead-letter producer's queue holds two records, with its metrics on
/// `port`, after a first view was counted and five records that are not JSON (`refused`)
/// were written while the dead-letter broker answers nothing.
struct RefusedWhileStalled {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
    serve: Serve,
    port: u16,
    refused: Vec<String>,
}

fn refused_while_stalled(transactional_id: &str) -> RefusedWhileStalled {
    let cluster = two_brokers(transactional_id, DEAD_LETTERS_ON_2);
    let bootstrap = cluster.bootstrap_servers();
    let port = free_port();
    let mut settings = settings(&bootstrap, transactional_id);
    settings.extend([
        format!("metrics.listen=\"127.0.0.1:{port}\""),
        r#"kafka.producer={"queue.buffering.max.messages"="2"}"#.to_owned(),
    ]);
    let serve = Serve::start(&["-w", "1"], &settings);
    await_first_view(&bootstrap, &[0]);
    broker_2_answers(&cluster, false);
    let refused = refuse_to_partition_0(&bootstrap, 5);
    RefusedWhileStalled {
        cluster,
        bootstrap,
        serve,
        port,
        refused,
    }
}

/// Waits until the metric `name` on `port` is `value`; panics with the log after 60 s.
fn await_metric(port: u16, name: &str, value: f64, serve: &Serve) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while scrape(port).get(name) != Some(&value) {
        assert!(
            Instant::now() < deadline,
            "{name} is not {value}:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// While the dead-letter topic cannot be written (its broker answers nothing) and the
/// dead-letter producer's queue is full, the source pauses, and shows why, instead of
/// waiting inside its worker. Once the broker answers, every refused record reaches the
/// dead-letter topic in order, the record after them is counted, and the source reads
/// again.
#[test]
fn a_full_dead_letter_queue_pauses_the_source_and_loses_nothing() {
    let RefusedWhileStalled {
        cluster,
        bootstrap,
        serve,
        port,
        refused,
    } = refused_while_stalled("source-faults-dead-letters-full");
    produce_to_partition(&bootstrap, INPUT, 0, &view("/after"));
    await_metric(port, PAUSED_FOR_DEAD_LETTERS, 1.0, &serve);
    broker_2_answers(&cluster, true);

    assert_eq!(
        dead_letters(&bootstrap, refused.len()),
        refused,
        "{}",
        serve.log()
    );
    let pages = pages_in(&bootstrap, "/after", Duration::from_secs(60));
    assert_eq!(
        pages.last().map(String::as_str),
        Some("/after"),
        "{}",
        serve.log()
    );
    await_metric(port, PAUSED_FOR_DEAD_LETTERS, 0.0, &serve);
    let (stopped, log) = serve.stop();
    assert!(stopped, "{log}");
}

/// A service whose source waits for room in the dead-letter queue still stops when asked,
/// while the dead-letter broker answers nothing for good: within the dead letters' flush
/// timeout at shutdown (30 s), not once librdkafka gives up the queued ones (5 minutes).
/// The dead letter that never found room is logged, with its offset, as not delivered.
#[test]
fn the_service_stops_while_a_dead_letter_waits_for_room() {
    // The cluster lives until the end of the test.
    let RefusedWhileStalled {
        cluster: _cluster,
        serve,
        port,
        ..
    } = refused_while_stalled("source-faults-dead-letters-stop");
    // Two dead letters fill the queue; the third is refused, and finds no room.
    let refused = r#"clickflow_dead_letters_total{reason="invalid_json"}"#;
    await_metric(port, refused, 3.0, &serve);
    let (exited, log) = serve.stop_within(Duration::from_secs(60));
    assert!(
        exited.is_some(),
        "still running a minute after SIGTERM:\n{log}"
    );
    // The view of /first is offset 0; the third record refused (offset 3) found no room.
    let given_up = log.lines().find(|line| {
        line.contains("dead letter not delivered")
            && line.contains("the service stopped while the dead-letter queue was full")
    });
    assert!(
        given_up.is_some_and(|line| line.contains("offset=3")),
        "{log}"
    );
}

/// Sends page views of `/steady` (event time now) to the input's two partitions in turn,
/// about one a millisecond, until `stop`; counts them in `sent`.
fn send_steadily(bootstrap: &str, stop: &AtomicBool, sent: &AtomicU64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    for n in 0_u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let line = format!(r#"{{"user_id":"u{n}","page":"/steady","timestamp":{time}}}"#);
        let partition = i32::from(n % 2 == 1);
        let record = BaseRecord::<(), _>::to(INPUT)
            .partition(partition)
            .payload(&line);
        if producer.send(record).is_ok() {
            sent.fetch_add(1, Ordering::SeqCst);
        }
        producer.poll(Duration::from_millis(1));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The next offsets of the input's two partitions, as the metrics on `port` show them.
fn next_offsets(port: u16) -> [f64; 2] {
    let metrics = scrape(port);
    [0, 1].map(|partition| {
        let name = format!(
            "clickflow_partition_next_offset{{topic=\"{INPUT}\",partition=\"{partition}\"}}"
        );
        metrics.get(&name).copied().unwrap_or(-1.0)
    })
}

/// The sum of the last count of each `/steady` window in the counts topic, read from the
/// beginning until it reaches `expected` (or two minutes pass).
fn steady_views(bootstrap: &str, expected: u64) -> u64 {
    let mut last_counts = BTreeMap::new();
    read_counts(bootstrap, Duration::from_secs(120), |value| {
        if value["page"] == "/steady" {
            let window = value["window_start"].as_str().unwrap().to_owned();
            last_counts.insert(window, value["count"].as_u64().unwrap());
        }
        last_counts.values().sum::<u64>() == expected
    });
    last_counts.values().sum()
}

/// Sends steadily to the input while broker 2 (the output's, see [`two_brokers`]) is down,
/// until the next offsets on the metrics endpoint `port` stand still for 3 s while at
/// least 100 records arrive (or a minute passes); brings the broker back. Returns the
/// metrics then, if they stood still, and how many records were sent.
fn read_while_the_output_broker_is_down(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    port: u16,
) -> (Option<BTreeMap<String, f64>>, u64) {
    let bootstrap = cluster.bootstrap_servers();
    let (stop, sent) = (AtomicBool::new(false), AtomicU64::new(0));
    let paused = std::thread::scope(|scope| {
        scope.spawn(|| send_steadily(&bootstrap, &stop, &sent));
        cluster.broker_down(2).unwrap();
        // (when, both next offsets, records sent by then), every 200 ms.
        let mut seen: Vec<(Instant, [f64; 2], u64)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let paused = loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = (
                Instant::now(),
                next_offsets(port),
                sent.load(Ordering::SeqCst),
            );
            let still = seen.iter().find(|(at, offsets, sent)| {
                now.0 - *at >= Duration::from_secs(3) && *offsets == now.1 && now.2 >= sent + 100
            });
            if still.is_some() {
                break Some(scrape(port));
            }
            seen.push(now);
            if Instant::now() > deadline {
                break None;
            }
        };
        cluster.broker_up(2).unwrap();
        stop.store(true, Ordering::SeqCst);
        paused
    });
    (paused, sent.load(Ordering::SeqCst))
}

/// While the output writer cannot write (the broker that leads the output topics and
/// coordinates its transactions is down), worker 0 waits once the writer's queue is full,
/// and the other worker's source pauses too instead of reading on into memory: neither
/// partition's next offset moves for seconds while records keep arriving. Once the broker
/// is back, every record is counted.
#[test]
fn sources_pause_while_the_output_writer_cannot_keep_up_and_nothing_is_lost() {
    let transactional_id = "source-faults-backpressure";
    let cluster = two_brokers(transactional_id, OUTPUT_ON_2);
    let bootstrap = cluster.bootstrap_servers();
    let port = free_port();
    let mut settings = settings(&bootstrap, transactional_id);
    settings.extend([
        format!("metrics.listen=\"127.0.0.1:{port}\""),
        // A new logical time, and so a step for the writer, every millisecond of input.
        "kafka.tick_ms=1".to_owned(),
    ]);
    let serve = Serve::start(&["-w", "2"], &settings);
    await_assignment(&serve);
    await_first_view(&bootstrap, &[0]);

    let (paused, sent) = read_while_the_output_broker_is_down(&cluster, port);
    let counted = steady_views(&bootstrap, sent);
    let (_, log) = serve.stop();
    let Some(metrics) = paused else {
        panic!("the sources went on reading while the writer could not write:\n{log}");
    };
    // Worker 0 waits in the step it publishes; worker 1's source shows its pause.
    assert_eq!(
        metrics[r#"clickflow_sources_paused{reason="output_writer"}"#], 1.0,
        "{log}"
    );
    assert_eq!(counted, sent, "{log}");
}

/// With two processes, the output writer is in process 0; process 1 learns that it cannot
/// write only from the views' frontier, which stops where process 0's worker waits. Once
/// that frontier has stood still for longer than the idle timeout, process 1's source
/// pauses too instead of sending on what process 0 cannot take: its partition's next
/// offset stands still while records keep arriving. Once the broker is back, every record
/// is counted.
#[test]
fn other_processes_pause_while_the_output_writer_cannot_keep_up() {
    let transactional_id = "source-faults-processes";
    let cluster = two_brokers(transactional_id, OUTPUT_ON_2);
    let bootstrap = cluster.bootstrap_servers();
    let dir = TempDir::new("source-faults-processes").unwrap();
    let hostfile = local_hostfile(&dir, 2);
    let hostfile = hostfile.as_str();
    let mut settings = settings(&bootstrap, transactional_id);
    settings.push("kafka.tick_ms=1".to_owned());
    let start = |process: &str, port: u16| {
        let mut settings = settings.clone();
        settings.push(format!("metrics.listen=\"127.0.0.1:{port}\""));
        Serve::start(
            &["-n", "2", "-p", process, "-w", "1", "-h", hostfile],
            &settings,
        )
    };
    let first = start("0", free_port());
    let second_port = free_port();
    let second = start("1", second_port);
    await_first_view(&bootstrap, &[0, 1]);

    let (paused, sent) = read_while_the_output_broker_is_down(&cluster, second_port);
    let counted = steady_views(&bootstrap, sent);
    let (_, second_log) = second.stop();
    let (_, log) = first.stop();
    let logs = format!("{log}\nprocess 1:\n{second_log}");
    let Some(metrics) = paused else {
        panic!("process 1 went on reading while the writer could not write:\n{logs}");
    };
    assert_eq!(
        metrics[r#"clickflow_sources_paused{reason="frontier"}"#], 1.0,
        "{logs}"
    );
    assert!(second_log.contains("pausing the input"), "{logs}");
    assert_eq!(counted, sent, "{logs}");
}
