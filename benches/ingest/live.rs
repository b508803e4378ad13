//! Phase 2, freshness: `clickflow serve` reads a fresh topic from its latest offsets while
//! the load generator writes records at a fixed rate with event times that follow the wall
//! clock. The service's freshness histogram is scraped at the end of a warm-up and at the
//! end of the sending; in between, the delays of the least partition watermark and of the
//! published frontier behind the wall clock are sampled, and the CPU used by the service,
//! the broker and the load generator is measured.
//!
//! Freshness is also measured from outside, as a reader of the output sees it (see
//! `harness::visibility`): for clickflow, and with `--kafka-streams` for the Kafka Streams
//! job, which then gets a live run of its own at the same rate, on fresh topics.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::{Args, broker_cpu_seconds, now_ms, progress, start_serve, unique_prefix};
use anyhow::Context;
use clickflow_benches::harness::kafka::{
    PARTITIONS, create_topics, delete_topics, generator, produce, topic_names,
};
use clickflow_benches::harness::metrics::{Freshness, Scrape, freshness_histogram_between};
use clickflow_benches::harness::peer::{RUNNING, ReferenceJob, ReferenceJobSettings};
use clickflow_benches::harness::process::cpu_seconds;
use clickflow_benches::harness::serve::Serve;
use clickflow_benches::harness::visibility::{
    OutputFollower, Sighting, Visibility, sent_by_window, visibility,
};
use clickflow_ingest::producer::DeliverySummary;

/// How long `clickflow serve` may take to read its partitions at the start.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the service may take to catch up after the live sending.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the delays behind the wall clock are sampled in the freshness phase.
pub const DELAY_EVERY: Duration = Duration::from_millis(100);

/// The page-view window, `clickflow serve`'s default and the Kafka Streams job's.
const PAGE_WINDOW_MS: u64 = 60_000;

/// How long the Kafka Streams job may take to get its partitions.
const PEER_STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// After the sending, the Kafka Streams job is taken to be done once its output topic has
/// had no new record for this long (its commits come every 100 ms while it has work).
const PEER_QUIET: Duration = Duration::from_secs(5);

/// The freshness phase's outcome.
pub struct Live {
    /// Freshness of the events published in the window.
    pub freshness: Freshness,
    /// Records per second the load generator delivered.
    pub produced_rate: f64,
    /// Cores used while the records were sent.
    pub cores: Cpu,
    /// Committed output transactions per second.
    pub transactions_per_second: f64,
    /// Wall clock minus the least partition watermark (how late events reach the views).
    pub input_delay_ms: Percentiles,
    /// Wall clock minus the published frontier.
    pub frontier_delay_ms: Percentiles,
    /// Whether every record was counted and published after the sending.
    pub caught_up: bool,
    /// The time before the first freshness scrape.
    pub warm_up: Duration,
    /// Freshness as a reader of the output topic saw it, of the events sent in the window.
    pub seen: Seen,
    /// The Kafka Streams job's live run, if it ran.
    pub peer: Option<PeerLive>,
}

/// The Kafka Streams job's live run.
pub struct PeerLive {
    /// Freshness as a reader of its output topic saw it, of the events sent after the
    /// warm-up.
    pub seen: Seen,
    /// Records per second the load generator delivered.
    pub produced_rate: f64,
    /// Cores used while the records were sent (`reader`: the job's JVM).
    pub cores: Cpu,
}

/// Freshness as a reader of an output topic saw it.
pub struct Seen {
    /// Of the events that became visible, in milliseconds.
    pub freshness_ms: Percentiles,
    /// Their mean, in milliseconds.
    pub mean_ms: f64,
    /// Events that never became visible.
    pub never_visible: usize,
}

impl Seen {
    fn of(visibility: Visibility) -> Self {
        let count = visibility.delays_ms.len();
        let mean_ms = visibility.delays_ms.iter().sum::<f64>() / count.max(1) as f64;
        Self {
            freshness_ms: Percentiles::of(visibility.delays_ms),
            mean_ms,
            never_visible: visibility.never_visible,
        }
    }
}

/// Phase 2: freshness while records arrive at `--rate`.
pub fn live(args: &Args) -> anyhow::Result<Live> {
    let topics = topic_names(&unique_prefix("live"));
    create_topics(&args.bootstrap, &topics.specs())?;
    let log = args.logs.join("live.log");
    let mut serve = start_serve(args, &topics, "latest", &log)?;
    let partitions = usize::from(PARTITIONS);
    serve.wait_until("reading its partitions", STARTUP_TIMEOUT, |scrape| {
        let progress = scrape.progress();
        progress.partitions == partitions && progress.partitions_with_lag == partitions
    })?;
    let follower = OutputFollower::start(&args.bootstrap, &topics.counts)?;
    let warm_up = Duration::from_secs(args.warm_up_seconds.min(args.live_seconds / 2));
    let (window, summary) = send_live(args, &topics.input, |finished| {
        watch(&mut serve, args.broker_pid, warm_up, finished)
    })?;
    let events = summary.delivered;
    let caught_up = serve
        .wait_until("caught up", DRAIN_TIMEOUT, |scrape| {
            scrape.progress().caught_up(events, partitions)
        })
        .inspect_err(|error| progress(format!("{error:#}")))
        .is_ok();
    serve.stop()?;
    let seen = seen_from_outside(
        args,
        &topics.input,
        follower.finish()?,
        (window.first.cpu.at_ms, window.last.cpu.at_ms),
    )?;
    let peer = args
        .kafka_streams
        .as_deref()
        .map(|classpath| peer_live(args, classpath, warm_up))
        .transpose()?;
    show_histogram(&window.first.scrape, &window.last.scrape);
    let seconds = (window.last.cpu.at - window.first.cpu.at).as_secs_f64();
    let transactions = |sample: &Sample| sample.scrape.sum("clickflow_output_transactions_total");
    Ok(Live {
        freshness: Freshness::between(&window.first.scrape, &window.last.scrape)?,
        produced_rate: summary.records_per_second(),
        cores: Cpu::between(&window.first.cpu, &window.last.cpu),
        transactions_per_second: (transactions(&window.last) - transactions(&window.first))
            / seconds,
        input_delay_ms: Percentiles::of(window.input_delays_ms),
        frontier_delay_ms: Percentiles::of(window.frontier_delays_ms),
        caught_up,
        warm_up,
        seen,
        peer,
    })
}

/// Freshness of the events sent to `input` in `[from_ms, to_ms)`, from what a follower of
/// the output topic saw.
fn seen_from_outside(
    args: &Args,
    input: &str,
    sightings: Vec<Sighting>,
    (from_ms, to_ms): (i64, i64),
) -> anyhow::Result<Seen> {
    let sent = sent_by_window(&args.bootstrap, input, PAGE_WINDOW_MS)?;
    Ok(Seen::of(visibility(&sent, &sightings, from_ms, to_ms)))
}

/// The Kafka Streams job's live run: on fresh topics, records sent at `--rate` for
/// `--live-seconds` once the job has its partitions, its output followed meanwhile.
fn peer_live(args: &Args, classpath: &str, warm_up: Duration) -> anyhow::Result<PeerLive> {
    let prefix = unique_prefix("live-peer");
    let topics = topic_names(&prefix);
    create_topics(&args.bootstrap, &topics.specs())?;
    let state_dir = args.logs.join("kafka-streams-live.state");
    let log = args.logs.join("kafka-streams-live.log");
    progress(format!(
        "starting the Kafka Streams job with {} threads for the live run (log {})",
        args.workers,
        log.display()
    ));
    let mut job = ReferenceJob::start(&ReferenceJobSettings {
        classpath,
        bootstrap: &args.bootstrap,
        topics: &topics,
        application_id: &format!("{prefix}.kafka-streams"),
        state_dir: &state_dir,
        threads: args.workers,
        log: &log,
    })?;
    job.wait_for(RUNNING, PEER_STARTUP_TIMEOUT)?;
    let follower = OutputFollower::start(&args.bootstrap, &topics.counts)?;
    let ((first, last), summary) = send_live(args, &topics.input, |finished| {
        std::thread::sleep(warm_up);
        let first = CpuSample::take(job.cpu_seconds()?, args.broker_pid)?;
        while !finished() {
            std::thread::sleep(DELAY_EVERY);
        }
        Ok((first, CpuSample::take(job.cpu_seconds()?, args.broker_pid)?))
    })?;
    let drained = Instant::now();
    while follower.quiet_for() < PEER_QUIET && drained.elapsed() < DRAIN_TIMEOUT {
        std::thread::sleep(DELAY_EVERY);
    }
    let sightings = follower.finish()?;
    drop(job);
    std::fs::remove_dir_all(&state_dir)
        .with_context(|| format!("cannot remove {}", state_dir.display()))?;
    let seen = seen_from_outside(args, &topics.input, sightings, (first.at_ms, last.at_ms))?;
    delete_topics(&args.bootstrap, &format!("{prefix}."))?;
    Ok(PeerLive {
        seen,
        produced_rate: summary.records_per_second(),
        cores: Cpu::between(&first, &last),
    })
}

/// Sends records at `--rate` for `--live-seconds` to `input`, with event times that
/// follow the wall clock, while `watch` runs (given whether the sending has ended); returns
/// what `watch` returned and the delivery summary.
fn send_live<W>(
    args: &Args,
    input: &str,
    watch: impl FnOnce(&dyn Fn() -> bool) -> anyhow::Result<W>,
) -> anyhow::Result<(W, DeliverySummary)> {
    let records = generator(
        args.rate * args.live_seconds,
        now_ms()?,
        args.live_seconds * 1000,
    );
    progress(format!(
        "sending {} records at {} records/s to {input}",
        records.events, args.rate
    ));
    let never = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sending = scope.spawn(|| produce(&args.bootstrap, input, records, args.rate, &never));
        let watched = watch(&|| sending.is_finished());
        let summary = sending
            .join()
            .map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
        Ok((watched?, summary))
    })
}

/// What the service showed while records were being sent.
struct Window {
    /// At the end of the warm-up.
    first: Sample,
    /// When the sending ended.
    last: Sample,
    /// Wall clock minus the least partition watermark, every [`DELAY_EVERY`].
    input_delays_ms: Vec<f64>,
    /// Wall clock minus the published frontier, every [`DELAY_EVERY`].
    frontier_delays_ms: Vec<f64>,
}

/// A scrape of the service's metrics, with the CPU time used so far.
struct Sample {
    scrape: Scrape,
    cpu: CpuSample,
}

impl Sample {
    fn take(serve: &mut Serve, broker: Option<u32>) -> anyhow::Result<Self> {
        Ok(Self {
            scrape: serve.scrape()?,
            cpu: CpuSample::take(serve.cpu_seconds()?, broker)?,
        })
    }
}

/// The CPU time used so far by the reader, the broker (if known) and this process (the
/// load generator), and when.
struct CpuSample {
    cpu: Cpu,
    at: Instant,
    /// The wall clock, in epoch milliseconds.
    at_ms: i64,
}

impl CpuSample {
    /// With `reader` the reader's CPU seconds so far.
    fn take(reader: f64, broker: Option<u32>) -> anyhow::Result<Self> {
        Ok(Self {
            cpu: Cpu {
                reader,
                broker: broker_cpu_seconds(broker)?,
                generator: cpu_seconds(std::process::id())?,
            },
            at: Instant::now(),
            at_ms: i64::try_from(now_ms()?)?,
        })
    }
}

/// CPU seconds, or cores (CPU seconds per second), by process.
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    /// The reader: `clickflow serve`, or the Kafka Streams job's JVM.
    pub reader: f64,
    /// The broker, if its process id is known.
    pub broker: Option<f64>,
    /// This process: the load generator, and the scrapes.
    pub generator: f64,
}

impl Cpu {
    /// Cores used from `first` to `last`.
    fn between(first: &CpuSample, last: &CpuSample) -> Self {
        let seconds = (last.at - first.at).as_secs_f64();
        let (a, b) = (first.cpu, last.cpu);
        Self {
            reader: (b.reader - a.reader) / seconds,
            broker: b.broker.zip(a.broker).map(|(b, a)| (b - a) / seconds),
            generator: (b.generator - a.generator) / seconds,
        }
    }
}

/// Watches the service from the end of `warm_up` until `finished` (the sending).
fn watch(
    serve: &mut Serve,
    broker: Option<u32>,
    warm_up: Duration,
    finished: &dyn Fn() -> bool,
) -> anyhow::Result<Window> {
    let started = Instant::now();
    std::thread::sleep(warm_up);
    let first = Sample::take(serve, broker)?;
    let (mut input_delays_ms, mut frontier_delays_ms) = (Vec::new(), Vec::new());
    while !finished() {
        std::thread::sleep(DELAY_EVERY);
        let progress = serve.scrape()?.progress();
        let now = now_ms()? as f64;
        input_delays_ms.extend(progress.least_watermark.map(|w| now - w));
        frontier_delays_ms.extend(progress.frontier.map(|f| now - f));
    }
    let last = Sample::take(serve, broker)?;
    progress(format!(
        "sending ended; freshness scraped at {:.1} s and {:.1} s",
        (first.cpu.at - started).as_secs_f64(),
        (last.cpu.at - started).as_secs_f64()
    ));
    Ok(Window {
        first,
        last,
        input_delays_ms,
        frontier_delays_ms,
    })
}

/// The median and 99th percentile of some samples.
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The number of samples.
    pub samples: usize,
}

impl Percentiles {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = (q * samples.len() as f64).ceil() as usize;
            samples
                .get(rank.saturating_sub(1))
                .copied()
                .unwrap_or(f64::NAN)
        };
        Self {
            p50: at(0.5),
            p99: at(0.99),
            samples: samples.len(),
        }
    }
}

/// Shows the freshness histogram between two scrapes on stderr, as the share of events
/// at or under each bound, if the service exposes a histogram.
fn show_histogram(first: &Scrape, last: &Scrape) {
    let counts = freshness_histogram_between(first, last);
    let total = counts.last().map_or(0.0, |(_, count)| *count);
    if total <= 0.0 {
        return;
    }
    let shares: Vec<String> = counts
        .iter()
        .map(|(bound, count)| format!("{}: {:.1}%", bound * 1000.0, 100.0 * count / total))
        .collect();
    progress(format!(
        "freshness, share of events at or under N ms: {}",
        shares.join(", ")
    ));
}
