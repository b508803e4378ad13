//! `clickflow batch`: every view over a JSONL file, written as JSON lines sorted by key.
//!
//! Process 0's first worker reads the file line by line (the line number is the arrival
//! order), decodes and admits each record against the file's watermark, and feeds the
//! admitted events to the same dataflow `serve` runs; dead letters are written as they
//! are found. Lines are fed in chunks, each at the watermark reached before it, so the
//! views' logical time is the watermark. At the end the input advances just past the
//! final watermark and the views are read at that `as_of`: exactly the final state, with
//! retention applied at the final watermark.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::Args;
use clickflow_dataflow::{
    AlertRule, ArrivedEvent, Time, ViewConfig, ViewSnapshot, ViewStore, build_views,
};
use clickflow_events::{Admission, AdmissionConfig, DeadLetterReason, decode_event};
use differential_dataflow::input::{Input, InputSession};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use timely::worker::Worker;

use crate::options::{ClusterArgs, ViewArgs};

/// Lines fed to the dataflow between two advances of its logical time.
const LINES_PER_STEP: u64 = 50_000;

/// Arguments of `clickflow batch`.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct BatchArgs {
    /// JSONL input: one JSON event per line.
    #[arg(long)]
    input: PathBuf,
    /// Directory for the output files (created if missing).
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    views: ViewArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// Everything each worker needs, shared read-only.
struct BatchJob {
    input: PathBuf,
    output: PathBuf,
    views: ViewConfig,
    admission: AdmissionConfig,
    max_event_bytes: usize,
    high_traffic_threshold: u64,
    /// Set by the reading worker once the views are written. With a single process the
    /// other workers then drop the dataflow instead of running it to completion, which
    /// would retract every window and session as their retention expires.
    written: AtomicBool,
    single_process: bool,
    workers_per_process: usize,
    /// The views' state, shared by this process's workers.
    store: ViewStore,
}

/// What the reading worker saw.
#[derive(Default)]
struct Summary {
    lines: u64,
    counted: u64,
    dead_letters: [u64; DeadLetterReason::ALL.len()],
    watermark: Option<Time>,
    rows: [usize; 4],
}

/// Runs `clickflow batch`.
pub fn run(args: BatchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let job = Arc::new(BatchJob {
        views: args.views.view_config()?,
        admission: args.views.admission_config(),
        max_event_bytes: args.views.max_event_bytes,
        high_traffic_threshold: args.views.high_traffic_threshold,
        input: args.input,
        output: args.output,
        written: AtomicBool::new(false),
        single_process: args.cluster.processes == 1,
        workers_per_process: args.cluster.workers as usize,
        store: ViewStore::default(),
    });
    let reads_input = args.cluster.process == 0;
    if reads_input {
        File::open(&job.input)
            .with_context(|| format!("--input {}: cannot open", job.input.display()))?;
        std::fs::create_dir_all(&job.output).with_context(|| {
            format!("--output {}: cannot create directory", job.output.display())
        })?;
    }
    let guards = timely::execute(args.cluster.timely_config()?, move |worker| {
        job.run_worker(worker)
    })
    .map_err(|error| anyhow!("cannot start workers: {error}"))?;
    let mut summary = None;
    for result in guards.join() {
        if let Some(worker_summary) =
            result.map_err(|panic| anyhow!("worker failed: {panic}"))??
        {
            summary = Some(worker_summary);
        }
    }
    if let Some(summary) = summary {
        eprintln!("{}", summary.line(started.elapsed()));
    }
    Ok(())
}

impl BatchJob {
    fn run_worker(&self, worker: &mut Worker) -> anyhow::Result<Option<Summary>> {
        let store = &self.store;
        let dataflow = worker.next_dataflow_index();
        let (events, rules) = worker.dataflow::<Time, _, _>(|scope| {
            let (events_input, events) = scope.new_collection::<ArrivedEvent, isize>();
            let (rules_input, rules) = scope.new_collection::<AlertRule, isize>();
            build_views(events, rules, &self.views).export(store, self.workers_per_process);
            (events_input, rules_input)
        });
        let summary = if worker.index() == 0 {
            let summary = self.read_and_write(worker, events, rules, store);
            self.written.store(true, Ordering::SeqCst);
            Some(summary?)
        } else {
            drop((events, rules));
            if self.single_process {
                worker.step_while(|| !self.written.load(Ordering::SeqCst));
            }
            None
        };
        if self.single_process {
            worker.drop_dataflow(dataflow);
        }
        Ok(summary)
    }

    /// Feeds the file to the dataflow, writes dead letters as they are found, and writes
    /// the views once they reflect the final watermark.
    fn read_and_write(
        &self,
        worker: &mut Worker,
        mut events: InputSession<Time, ArrivedEvent, isize>,
        mut rules: InputSession<Time, AlertRule, isize>,
        store: &ViewStore,
    ) -> anyhow::Result<Summary> {
        rules.insert(AlertRule::high_traffic(self.high_traffic_threshold));

        let file = File::open(&self.input)
            .with_context(|| format!("--input {}: cannot open", self.input.display()))?;
        let progress = progress_bar(file.metadata().map(|m| m.len()).unwrap_or(0));
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut dead_letters = DeadLetterWriter::create(&self.output.join("dead_letters.jsonl"))?;
        let mut admission = Admission::new(self.admission);
        let mut summary = Summary::default();
        let mut line = Vec::new();
        let mut bytes_read = 0;
        let mut previous_step_time = 0;
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("--input {}: read failed", self.input.display()))?;
            if read == 0 {
                break;
            }
            bytes_read += read as u64;
            summary.lines += 1;
            let record = strip_line_terminator(&line);
            let admitted = decode_event(record, self.max_event_bytes)
                .and_then(|event| admission.admit(event.time).map(|()| event));
            match admitted {
                Ok(event) => {
                    summary.counted += 1;
                    events.insert(ArrivedEvent {
                        event,
                        arrival: summary.lines,
                    });
                }
                Err(reason) => {
                    summary.dead_letters[reason as usize] += 1;
                    dead_letters.write(summary.lines, reason, record)?;
                }
            }
            if summary.lines % LINES_PER_STEP == 0 {
                let time = admission.watermark().unwrap_or(0);
                events.advance_to(time);
                rules.advance_to(time);
                events.flush();
                rules.flush();
                worker.step_while(|| !reached(store.as_of(), previous_step_time));
                previous_step_time = time;
                progress.set_position(bytes_read);
            }
        }
        dead_letters.finish()?;
        progress.finish_and_clear();

        summary.watermark = admission.watermark();
        let end = summary.watermark.map_or(0, |watermark| watermark + 1);
        events.advance_to(end);
        rules.advance_to(end);
        events.flush();
        rules.flush();
        worker.step_while(|| !reached(store.as_of(), end));
        let snapshot = store.snapshot();
        summary.rows = write_views(&self.output, &snapshot)?;
        Ok(summary)
    }
}

/// Whether a store at `as_of` reflects every update before `time`.
fn reached(as_of: Option<Time>, time: Time) -> bool {
    as_of.is_none_or(|as_of| as_of >= time)
}

/// The record on a line: without its `\n`, and without a `\r` before it.
fn strip_line_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn progress_bar(total_bytes: u64) -> ProgressBar {
    let progress = ProgressBar::new(total_bytes);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {wide_bar} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress
}

struct DeadLetterWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

#[derive(Serialize)]
struct DeadLetter<'a> {
    line: u64,
    reason: &'static str,
    raw: &'a str,
}

impl DeadLetterWriter {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
        })
    }

    fn write(&mut self, line: u64, reason: DeadLetterReason, record: &[u8]) -> anyhow::Result<()> {
        let raw = String::from_utf8_lossy(record);
        let letter = DeadLetter {
            line,
            reason: reason.as_str(),
            raw: &raw,
        };
        serde_json::to_writer(&mut self.out, &letter)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .with_context(|| format!("{}: write failed", self.path.display()))
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("{}: write failed", self.path.display()))
    }
}

/// Writes the four view files and returns their row counts.
fn write_views(dir: &Path, snapshot: &ViewSnapshot) -> anyhow::Result<[usize; 4]> {
    write_rows(
        &dir.join("page_views_per_minute.jsonl"),
        &snapshot.page_views,
    )?;
    write_rows(&dir.join("user_sessions.jsonl"), &snapshot.sessions)?;
    write_rows(&dir.join("checkout_funnel.jsonl"), &snapshot.funnel)?;
    write_rows(&dir.join("alerts.jsonl"), &snapshot.alerts)?;
    Ok([
        snapshot.page_views.len(),
        snapshot.sessions.len(),
        snapshot.funnel.len(),
        snapshot.alerts.len(),
    ])
}

fn write_rows<R: Serialize>(path: &Path, rows: &[R]) -> anyhow::Result<()> {
    let write = || -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        for row in rows {
            serde_json::to_writer(&mut out, row)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    write().with_context(|| format!("{}: write failed", path.display()))
}

impl Summary {
    fn line(&self, elapsed: Duration) -> String {
        let dead: u64 = self.dead_letters.iter().sum();
        let reasons: Vec<String> = DeadLetterReason::ALL
            .iter()
            .zip(self.dead_letters)
            .filter(|(_, count)| *count > 0)
            .map(|(reason, count)| format!("{reason}={count}"))
            .collect();
        let rate = self.lines as f64 / elapsed.as_secs_f64().max(1e-9);
        format!(
            "batch: {} lines in {:.2}s ({:.0} lines/s): {} counted, {} dead letters{}; \
             rows: {} page_views_per_minute, {} user_sessions, {} checkout_funnel, {} alerts; watermark {}",
            self.lines,
            elapsed.as_secs_f64(),
            rate,
            self.counted,
            dead,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            },
            self.rows[0],
            self.rows[1],
            self.rows[2],
            self.rows[3],
            self.watermark
                .map_or_else(|| "none".to_owned(), |w| w.to_string()),
        )
    }
}
