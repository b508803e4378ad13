//! `clickflow batch`: every view over a JSONL file, written as JSON lines sorted by key.
//!
//! The workers of process 0 take the file in chunks of whole lines and decode them in
//! parallel; admission against the watermark is sequential, chunk by chunk in file order
//! (line numbers are the arrival order), and writes dead letters as it finds them. Each
//! worker then feeds its admitted events to the same dataflow `serve` runs, at the
//! watermark reached before its chunk, so the views' logical time is the watermark. At
//! the end the input advances just past the final watermark and the views are read at that
//! `as_of`: exactly the final state, with retention applied at the final watermark.

mod chunks;
mod output;
mod progress;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use clickflow_dataflow::{AlertRule, ArrivedEvent, Time, ViewConfig, ViewStore, build_views};
use clickflow_events::{Admission, DeadLetterReason, Event, decode_event};
use differential_dataflow::input::{Input, InputSession};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use crate::options::{ClusterArgs, ViewArgs};
use chunks::{Chunk, ChunkReader};
use output::{DeadLetterWriter, refuse_own_output_as_input, write_views};
use progress::Progress;

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
    /// Bytes of input per chunk. A chunk's events enter the dataflow at one logical time,
    /// so large chunks let each key absorb many events per update of its rows; about two
    /// chunks per worker are in flight.
    #[arg(long, default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    chunk_bytes: u64,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// A worker gave up because another worker failed.
#[derive(Debug, thiserror::Error)]
#[error("stopped because another worker failed")]
struct StoppedByFailure;

/// Everything this process's workers share.
struct BatchJob {
    output: PathBuf,
    views: ViewConfig,
    max_event_bytes: usize,
    high_traffic_threshold: u64,
    single_process: bool,
    /// The input file; `None` in processes other than 0, which read nothing.
    reader: Option<Mutex<ChunkReader>>,
    admitter: Mutex<Admitter>,
    progress: Progress,
    /// The views' state, kept by one worker of this process.
    store: ViewStore,
    /// Set once worker 0 has written the views (or failed).
    done: AtomicBool,
    /// Set when a worker fails, so that the others stop waiting for it.
    failed: AtomicBool,
}

/// Sequential admission of decoded chunks, in file order.
struct Admitter {
    next_chunk: u64,
    admission: Admission,
    dead_letters: Option<DeadLetterWriter>,
    summary: Summary,
}

/// What process 0 saw.
#[derive(Clone, Default)]
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
    let reads_input = args.cluster.process == 0;
    let (reader, dead_letters, total_bytes) = if reads_input {
        let reader = ChunkReader::open(&args.input, args.chunk_bytes as usize)?;
        refuse_own_output_as_input(&args.input, &args.output)?;
        let total_bytes = std::fs::metadata(&args.input).map(|m| m.len()).unwrap_or(0);
        if args.output.exists() && !args.output.is_dir() {
            bail!("--output {}: not a directory", args.output.display());
        }
        std::fs::create_dir_all(&args.output).with_context(|| {
            format!(
                "--output {}: cannot create directory",
                args.output.display()
            )
        })?;
        let dead_letters = DeadLetterWriter::create(&args.output)?;
        (Some(Mutex::new(reader)), Some(dead_letters), total_bytes)
    } else {
        (None, None, 0)
    };
    let job = BatchJob {
        views: args.views.view_config()?,
        max_event_bytes: args.views.max_event_bytes,
        high_traffic_threshold: args.views.high_traffic_threshold,
        single_process: args.cluster.processes == 1,
        reader,
        admitter: Mutex::new(Admitter {
            next_chunk: 0,
            admission: Admission::new(args.views.admission_config()),
            dead_letters,
            summary: Summary::default(),
        }),
        progress: if reads_input {
            Progress::new(total_bytes)
        } else {
            Progress::Hidden
        },
        store: ViewStore::new(args.cluster.workers as usize),
        done: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        output: args.output,
    };
    let guards = timely::execute(args.cluster.timely_config()?, move |worker| {
        job.run_worker(worker)
    })
    .map_err(|error| anyhow!("cannot start workers: {error}"))?;
    let mut summary = None;
    let (mut first_error, mut stopped) = (None, None);
    for result in guards.join() {
        match result
            .map_err(|panic| anyhow!("worker failed: {panic}"))
            .and_then(|result| result)
        {
            Ok(worker_summary) => summary = summary.or(worker_summary),
            // A worker that stopped because another failed is not the cause: report the cause.
            Err(error) if error.is::<StoppedByFailure>() => stopped = Some(error),
            Err(error) => first_error = first_error.or(Some(error)),
        }
    }
    let first_error = first_error.or(stopped);
    if let Some(error) = first_error {
        return Err(error);
    }
    if let Some(summary) = summary {
        eprintln!("{}", summary.line(started.elapsed()));
    }
    Ok(())
}

impl BatchJob {
    fn run_worker(&self, worker: &mut Worker) -> anyhow::Result<Option<Summary>> {
        let probe = ProbeHandle::new();
        let dataflow = worker.next_dataflow_index();
        let (mut events, mut rules) = worker.dataflow::<Time, _, _>(|scope| {
            let (events_input, events) = scope.new_collection::<ArrivedEvent, isize>();
            let (rules_input, rules) = scope.new_collection::<AlertRule, isize>();
            build_views(events, rules, &self.views)
                .probe_with(&probe)
                .export(&self.store);
            (events_input, rules_input)
        });
        // The rules of a batch are fixed: inserted once, then the input closes.
        if worker.index() == 0 {
            rules.insert(AlertRule::high_traffic(self.high_traffic_threshold));
        }
        drop(rules);

        // A panic must release the other workers too, or they would wait for it forever.
        let _on_panic = ReleaseOnPanic(self);
        let result = match &self.reader {
            Some(reader) => self
                .feed(worker, reader, &mut events, &probe)
                .and_then(|()| self.finish(worker, reader, events)),
            None => Ok(None),
        };
        if result.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        if result.is_err() || worker.index() == 0 {
            self.done.store(true, Ordering::SeqCst);
        }
        if self.single_process {
            worker.step_while(|| !self.done.load(Ordering::SeqCst));
            // Running on would only retract every row as its retention expires.
            worker.drop_dataflow(dataflow);
        }
        result
    }

    /// Takes, decodes, admits and inserts chunks until the file is exhausted.
    fn feed(
        &self,
        worker: &mut Worker,
        reader: &Mutex<ChunkReader>,
        events: &mut InputSession<Time, ArrivedEvent, isize>,
        probe: &ProbeHandle<Time>,
    ) -> anyhow::Result<()> {
        let mut previous_start = 0;
        loop {
            let chunk = {
                let mut reader = lock(reader);
                let chunk = reader.next_chunk().context("--input: read failed")?;
                self.progress.read(reader.bytes_read());
                chunk
            };
            let Some(chunk) = chunk else { return Ok(()) };
            let decoded: Vec<_> = chunk
                .records()
                .map(|record| decode_event(record, self.max_event_bytes))
                .collect();
            while lock(&self.admitter).next_chunk != chunk.index {
                self.step_unless_stopped(worker)?;
            }
            let (start, end, admitted) = lock(&self.admitter).admit(&chunk, decoded)?;
            lock(reader).recycle(chunk);
            events.advance_to(start);
            for event in admitted {
                events.insert(event);
            }
            events.advance_to(end);
            events.flush();
            // Keep at most about one chunk per worker in flight.
            while probe.less_than(&previous_start) {
                self.step_unless_stopped(worker)?;
            }
            previous_start = start;
        }
    }

    /// Waits until every chunk is admitted; worker 0 then reads the views at the final
    /// watermark and writes them.
    fn finish(
        &self,
        worker: &mut Worker,
        reader: &Mutex<ChunkReader>,
        mut events: InputSession<Time, ArrivedEvent, isize>,
    ) -> anyhow::Result<Option<Summary>> {
        if worker.index() != 0 {
            return Ok(None);
        }
        loop {
            let taken = {
                let reader = lock(reader);
                reader.at_end().then(|| reader.chunks_taken())
            };
            let admitter = lock(&self.admitter);
            events.advance_to(admitter.admission.watermark().unwrap_or(0));
            if taken == Some(admitter.next_chunk) {
                break;
            }
            drop(admitter);
            self.step_unless_stopped(worker)?;
        }
        let mut summary = {
            let mut admitter = lock(&self.admitter);
            if let Some(dead_letters) = admitter.dead_letters.as_mut() {
                dead_letters.finish()?;
            }
            admitter.summary.watermark = admitter.admission.watermark();
            admitter.summary.clone()
        };
        self.progress
            .phase("input read; computing the views to the final watermark");
        let end = summary.watermark.map_or(0, |watermark| watermark + 1);
        events.advance_to(end);
        events.flush();
        while self.store.as_of().is_some_and(|as_of| as_of < end) {
            self.step_unless_stopped(worker)?;
        }
        self.progress.phase("writing the views");
        summary.rows = write_views(&self.output, &self.store.snapshot())?;
        self.progress.finish();
        Ok(Some(summary))
    }

    fn step_unless_stopped(&self, worker: &mut Worker) -> anyhow::Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoppedByFailure.into());
        }
        worker.step();
        std::thread::yield_now();
        Ok(())
    }
}

/// Marks the job failed and done if the worker holding it unwinds.
struct ReleaseOnPanic<'a>(&'a BatchJob);

impl Drop for ReleaseOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.failed.store(true, Ordering::SeqCst);
            self.0.done.store(true, Ordering::SeqCst);
        }
    }
}

impl Admitter {
    /// Admits a decoded chunk; returns the watermark before and after it and the events.
    fn admit(
        &mut self,
        chunk: &Chunk,
        decoded: Vec<Result<Event, DeadLetterReason>>,
    ) -> anyhow::Result<(Time, Time, Vec<ArrivedEvent>)> {
        let start = self.admission.watermark().unwrap_or(0);
        let mut admitted = Vec::with_capacity(decoded.len());
        for ((line, record), decoded) in (chunk.first_line..).zip(chunk.records()).zip(decoded) {
            self.summary.lines += 1;
            match decoded.and_then(|event| self.admission.admit(event.time).map(|()| event)) {
                Ok(event) => {
                    self.summary.counted += 1;
                    admitted.push(ArrivedEvent {
                        event,
                        arrival: line,
                    });
                }
                Err(reason) => {
                    self.summary.dead_letters[reason as usize] += 1;
                    if let Some(dead_letters) = self.dead_letters.as_mut() {
                        dead_letters.write(line, reason, record)?;
                    }
                }
            }
        }
        self.next_chunk += 1;
        Ok((start, self.admission.watermark().unwrap_or(0), admitted))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
