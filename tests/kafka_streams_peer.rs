//! clickflow against the system it replaces: the reference pipeline's Kafka Streams job
//! (`benches/kafka-streams/ReferenceJob.java`, views per page per minute), run on the same
//! input topic of a real Apache Kafka. Every window's count in clickflow's
//! `page-view-counts` topic must equal the job's. The job's class path comes from
//! `CLICKFLOW_KAFKA_STREAMS_CLASSPATH`, which `scripts/test` sets with
//! `scripts/kafka-streams-build`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use support::kafka::{bootstrap, consume_all, create_topic, unique_topic};
use support::pipeline::{
    Topics, batch, generate_with_malformed, produce_lines, settled_counts, upserts,
};
use support::run::TempDir;
use support::serve::Serve;

/// Where `scripts/test` puts the job's class path.
const CLASSPATH_ENV: &str = "CLICKFLOW_KAFKA_STREAMS_CLASSPATH";

/// How long the job may take to start and count everything.
const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// The Kafka Streams job as a child process, its standard output line by line.
struct Job {
    child: Child,
    lines: Receiver<String>,
    log: std::path::PathBuf,
}

impl Job {
    fn start(dir: &TempDir, input: &str, counts: &str, alerts: &str) -> Job {
        let classpath = std::env::var(CLASSPATH_ENV).unwrap_or_else(|_| {
            panic!(
                "{CLASSPATH_ENV} is not set, and this test runs the reference Kafka Streams \
                 job. Run the whole suite with `scripts/test`, or `export \
                 {CLASSPATH_ENV}=$(scripts/kafka-streams-build)`."
            )
        });
        let log = dir.path().join("kafka-streams.log");
        let mut child = Command::new("java")
            .args(["-cp", &classpath, "ReferenceJob", &bootstrap()])
            .args([input, counts, alerts, &unique_topic("peer-app")])
            .arg(dir.path().join("state"))
            .arg("2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("cannot start java");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Job { child, lines, log }
    }

    /// Waits until the job prints `wanted`.
    fn wait_for(&self, wanted: &str) {
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == wanted => return,
                Ok(_) => {}
                Err(error) => panic!(
                    "the Kafka Streams job did not print {wanted:?} ({error}); its log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each window's count, from a page-view-counts topic's final upserts.
fn counts(upserts: BTreeMap<(String, u64), serde_json::Value>) -> BTreeMap<(String, u64), u64> {
    upserts
        .into_iter()
        .map(|(window, value)| (window, value["count"].as_u64().unwrap()))
        .collect()
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
    let clickflow = counts(settled_counts(&bootstrap, &topics.counts, &expected.counts));
    let (_, log) = serve.stop();
    assert_eq!(
        clickflow.values().sum::<u64>(),
        lines.len() as u64,
        "clickflow did not count every event:\n{log}"
    );

    let (peer_counts, peer_alerts) = (unique_topic("peer-counts"), unique_topic("peer-alerts"));
    create_topic(&bootstrap, &peer_counts, 1, true);
    create_topic(&bootstrap, &peer_alerts, 1, true);
    let job = Job::start(&dir, &topics.input, &peer_counts, &peer_alerts);
    job.wait_for("caught up");
    let records = consume_all(
        &bootstrap,
        &peer_counts,
        true,
        |records| counts(upserts(records)) == clickflow,
        Duration::from_secs(60),
    );
    drop(job);
    assert_eq!(counts(upserts(&records)), clickflow);
}
