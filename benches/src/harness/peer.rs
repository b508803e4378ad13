//! The peer of the ingest benchmark: the reference pipeline's Kafka Streams job
//! (`benches/kafka-streams/ReferenceJob.java`, built by `scripts/kafka-streams-build`) as a
//! child JVM. It announces on its standard output when it runs, its first record, and the
//! moment every record of a filled topic has its output committed; the harness times those
//! lines, and ends the process when it is done with it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clickflow_ingest::admin::ReferenceTopics;

use crate::harness::process::{cpu_seconds, log_tail, peak_rss_bytes};

/// What the job prints when its threads first have their partitions.
pub const RUNNING: &str = "running";

/// What the job prints when it has read its first record.
pub const FIRST_RECORD: &str = "first record";

/// What the job prints when the output of every record is committed.
pub const CAUGHT_UP: &str = "caught up";

/// Where and how to run the job.
pub struct ReferenceJobSettings<'a> {
    /// The Java class path that `scripts/kafka-streams-build` printed.
    pub classpath: &'a str,
    /// Kafka bootstrap servers.
    pub bootstrap: &'a str,
    /// Its input topic and output topics (`counts`, `alerts`), which must exist.
    pub topics: &'a ReferenceTopics,
    /// Its application id, which names its consumer group and internal topics; a fresh one
    /// makes it read the input from the earliest offsets.
    pub application_id: &'a str,
    /// A directory of its own for its state stores.
    pub state_dir: &'a Path,
    /// Stream threads.
    pub threads: usize,
    /// File for its log (standard error).
    pub log: &'a Path,
}

/// A running reference job.
pub struct ReferenceJob {
    child: Child,
    /// Its standard output, line by line, with when each line was read.
    lines: Receiver<(String, Instant)>,
    log: PathBuf,
    started: Instant,
}

impl ReferenceJob {
    /// Starts the job.
    pub fn start(settings: &ReferenceJobSettings) -> anyhow::Result<Self> {
        let log = File::create(settings.log)
            .with_context(|| format!("cannot create {}", settings.log.display()))?;
        let started = Instant::now();
        let mut child = Command::new("java")
            .args([
                "-cp",
                settings.classpath,
                "ReferenceJob",
                settings.bootstrap,
            ])
            .args([
                &settings.topics.input,
                &settings.topics.counts,
                &settings.topics.alerts,
                settings.application_id,
            ])
            .arg(settings.state_dir)
            .arg(settings.threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start the Kafka Streams job (java)")?;
        let stdout = child.stdout.take().context("no standard output")?;
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send((line, Instant::now())).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            log: settings.log.to_owned(),
            started,
        })
    }

    /// Waits until the job prints `line`, and returns the time from its spawn until then.
    /// Fails if the job ends or `timeout` passes first.
    pub fn wait_for(&mut self, line: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((printed, at)) if printed == line => return Ok(at - self.started),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => bail!(
                    "the Kafka Streams job did not print {line:?} within {timeout:?}; log {} ends with:\n{}",
                    self.log.display(),
                    log_tail(&self.log)
                ),
                Err(RecvTimeoutError::Disconnected) => bail!(
                    "the Kafka Streams job ended ({:?}) before printing {line:?}; log {} ends with:\n{}",
                    self.child.wait()?,
                    self.log.display(),
                    log_tail(&self.log)
                ),
            }
        }
    }

    /// CPU time the job has used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.child.id())
    }

    /// The job's peak resident set size, in bytes.
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        peak_rss_bytes(self.child.id())
    }
}

impl Drop for ReferenceJob {
    /// Ends the job: it has no output left to write once it has caught up (a transaction
    /// that it had open would be aborted by the broker after its timeout).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
