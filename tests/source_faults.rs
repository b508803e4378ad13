//! Fault injection for `clickflow serve`'s Kafka source, on librdkafka's in-process mock
//! cluster: an input topic that is not available when the service starts keeps the
//! configured start position until it is.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use serde_json::Value;
use support::kafka::produce_to_partition;
use support::serve::Serve;

/// The run's input, dead-letter and output topics, created on `cluster`.
fn topics(cluster: &MockCluster<'static, DefaultProducerContext>) -> [&'static str; 4] {
    let names = ["in", "in.dlq", "counts", "alerts"];
    for name in names {
        let partitions = if name == "in" { 2 } else { 1 };
        cluster.create_topic(name, partitions, 1).unwrap();
    }
    names
}

/// One page view of `page` a minute ago, as a record for a partition.
fn view(page: &str) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 60_000;
    let line = format!(r#"{{"user_id":"u1","page":"{page}","timestamp":{time}}}"#);
    vec![(None, line.into_bytes())]
}

/// The pages of the records in `counts` (one partition), read until one of `wanted` comes
/// (or a minute passes).
fn pages_in(bootstrap: &str, counts: &str, wanted: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "source-faults-reader")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(counts, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pages = Vec::new();
    while !pages.iter().any(|page| page == wanted) && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
            pages.push(value["page"].as_str().unwrap().to_owned());
        }
    }
    pages
}

/// With `kafka.start = "latest"`, a record written before the start is not read, also
/// when the topic's metadata reported an error at the start (leader not available): the
/// partitions are assigned at their end once the topic is readable, not at their
/// beginning as partitions added while running are.
#[test]
fn a_topic_unavailable_at_the_start_keeps_the_configured_start_position() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let [input, dead_letters, counts, alerts] = topics(&cluster);
    produce_to_partition(&bootstrap, input, 0, &view("/before-start"));
    cluster
        .topic_error(
            input,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        )
        .unwrap();
    let settings = [
        format!("kafka.bootstrap=\"{bootstrap}\""),
        format!("kafka.input_topics=[\"{input}\"]"),
        format!("kafka.dead_letter_topic=\"{dead_letters}\""),
        format!("kafka.page_view_counts_topic=\"{counts}\""),
        format!("kafka.alerts_topic=\"{alerts}\""),
        // No rules' log: the rules are the built-in one.
        "kafka.rules_topic=\"\"".to_owned(),
        "kafka.transactional_id=\"source-faults\"".to_owned(),
        "kafka.start=\"latest\"".to_owned(),
        "kafka.idle_timeout_ms=500".to_owned(),
    ];
    let serve = Serve::start(&["-w", "1"], &settings);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serve.log().contains("input topic is not available yet") {
        assert!(
            Instant::now() < deadline,
            "no metadata error:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster
        .topic_error(input, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while serve.log().matches("reading input partition").count() < 2 {
        assert!(Instant::now() < deadline, "not assigned:\n{}", serve.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The consumer looks the end offsets up once the partitions are assigned.
    std::thread::sleep(Duration::from_secs(1));
    produce_to_partition(&bootstrap, input, 0, &view("/after-start"));
    let pages = pages_in(&bootstrap, counts, "/after-start");
    let (_, log) = serve.stop();
    assert_eq!(pages, vec!["/after-start".to_owned()], "{log}");
}
