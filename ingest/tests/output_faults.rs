//! Fault injection for the transactional output writer, on librdkafka's in-process mock
//! cluster: a transaction coordinator that is briefly unavailable delays the output but
//! loses nothing, and a producer fenced by another instance stops the writer with the
//! cause, announced as it happens.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clickflow_dataflow::{PageViewRow, Step};
use clickflow_ingest::output::{OutputConfig, OutputWriter, page_view_value};
use clickflow_ingest::status::IngestStatus;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const COUNTS: &str = "page-view-counts";

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(COUNTS, 1, 1).unwrap();
    cluster.create_topic("alerts", 1, 1).unwrap();
    cluster
}

fn config(bootstrap: String) -> OutputConfig {
    OutputConfig {
        bootstrap,
        page_view_counts_topic: COUNTS.to_owned(),
        alerts_topic: "alerts".to_owned(),
        transactional_id: "output-faults".to_owned(),
        retention_ms: 86_400_000,
        properties: Default::default(),
    }
}

/// Step `n`: one new window of page `/p{n}` at time `n`.
fn step(n: u64) -> (Step, PageViewRow) {
    let row = PageViewRow {
        page: format!("/p{n}").into(),
        window_start: n * 60_000,
        window_end: (n + 1) * 60_000,
        view_count: n + 1,
        unique_users: 1,
    };
    let step = Step {
        from: n,
        to: Some(n + 1),
        page_views: vec![(row.clone(), n, 1)],
        alerts: vec![],
    };
    (step, row)
}

/// Every value in the counts topic, read from the beginning until `expected` arrived.
fn read_values(bootstrap: &str, expected: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "output-faults-reader")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(COUNTS, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut values = Vec::new();
    while values.len() < expected && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            values.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        }
    }
    values
}

#[test]
fn an_unavailable_coordinator_delays_the_output_but_loses_nothing() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let status = IngestStatus::default();
    let (writer, sender) =
        OutputWriter::start(config(bootstrap.clone()), status.clone(), || {}).unwrap();
    let busy = RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE;
    cluster.request_errors(RDKafkaApiKey::EndTxn, &[busy, busy, busy]);
    cluster.request_errors(RDKafkaApiKey::AddPartitionsToTxn, &[busy, busy]);
    let mut expected = Vec::new();
    for n in 0..5 {
        let (step, row) = step(n);
        assert!(sender.send(step));
        expected.push(page_view_value(&row));
    }
    drop(sender);
    writer.finish().unwrap();
    assert_eq!(status.published_frontier(), Some(Some(5)));
    assert_eq!(read_values(&bootstrap, expected.len()), expected);
}

#[test]
fn a_fenced_producer_stops_the_writer_with_the_cause() {
    let cluster = cluster();
    let failed = Arc::new(AtomicBool::new(false));
    let on_failure = {
        let failed = Arc::clone(&failed);
        move || failed.store(true, Ordering::SeqCst)
    };
    let (writer, sender) = OutputWriter::start(
        config(cluster.bootstrap_servers()),
        IngestStatus::default(),
        on_failure,
    )
    .unwrap();
    cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    assert!(sender.send(step(0).0));
    // The failure is announced as it happens, not when the next step is sent.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !failed.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the writer's failure was not announced"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let error = writer.finish().unwrap_err().to_string();
    assert!(
        error.contains("output transaction") && error.to_lowercase().contains("fenced"),
        "{error}"
    );
    // The writer is gone: further steps are refused, not buffered.
    assert!(!sender.send(step(1).0));
}
