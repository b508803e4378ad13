//! Phase 2, freshness: `clickflow serve` reads a fresh topic from its latest offsets while
//! the load generator writes records at a fixed rate with event times that follow the wall
//! clock. The service's freshness histogram is scraped at the end of a warm-up and at the
//! end of the sending; in between, the delays of the least partition watermark and of the
//! published frontier behind the wall clock are sampled, and the CPU used by the service,
//! the broker and the load generator is measured.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::{Args, broker_cpu_seconds, now_ms, progress, start_serve, unique_prefix};
use clickflow_benches::harness::kafka::{
    PARTITIONS, create_topics, generator, produce, topic_names,
};
use clickflow_benches::harness::metrics::{Freshness, Scrape, freshness_histogram_between};
use clickflow_benches::harness::process::cpu_seconds;
use clickflow_benches::harness::serve::Serve;

/// How long `clickflow serve` may take to read its partitions at the start.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the service may take to catch up after the live sending.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the delays behind the wall clock are sampled in the freshness phase.
pub const DELAY_EVERY: Duration = Duration::from_millis(100);

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
    let records = generator(
        args.rate * args.live_seconds,
        now_ms()?,
        args.live_seconds * 1000,
    );
    let events = records.events;
    progress(format!(
        "sending {events} records at {} records/s to {}",
        args.rate, topics.input
    ));
    let warm_up = Duration::from_secs(args.warm_up_seconds.min(args.live_seconds / 2));
    let never = AtomicBool::new(false);
    let window = std::thread::scope(|scope| {
        let sending =
            scope.spawn(|| produce(&args.bootstrap, &topics.input, records, args.rate, &never));
        watch(&mut serve, args.broker_pid, warm_up, || {
            sending.is_finished()
        })
        .and_then(|window| {
            let summary = sending
                .join()
                .map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
            Ok((window, summary))
        })
    });
    let (window, summary) = window?;
    let caught_up = serve
        .wait_until("caught up", DRAIN_TIMEOUT, |scrape| {
            scrape.progress().caught_up(events, partitions)
        })
        .inspect_err(|error| progress(format!("{error:#}")))
        .is_ok();
    serve.stop()?;
    show_histogram(&window.first.scrape, &window.last.scrape);
    let seconds = (window.last.at - window.first.at).as_secs_f64();
    let transactions = |sample: &Sample| sample.scrape.sum("clickflow_output_transactions_total");
    Ok(Live {
        freshness: Freshness::between(&window.first.scrape, &window.last.scrape)?,
        produced_rate: summary.records_per_second(),
        cores: Cpu::cores(&window.first, &window.last),
        transactions_per_second: (transactions(&window.last) - transactions(&window.first))
            / seconds,
        input_delay_ms: Percentiles::of(window.input_delays_ms),
        frontier_delay_ms: Percentiles::of(window.frontier_delays_ms),
        caught_up,
        warm_up,
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

/// A scrape of the service's metrics, with the CPU time used so far by the service, the
/// broker (if known) and this process (the load generator).
struct Sample {
    scrape: Scrape,
    cpu: Cpu,
    at: Instant,
}

impl Sample {
    fn take(serve: &mut Serve, broker: Option<u32>) -> anyhow::Result<Self> {
        Ok(Self {
            scrape: serve.scrape()?,
            cpu: Cpu {
                serve: serve.cpu_seconds()?,
                broker: broker_cpu_seconds(broker)?,
                generator: cpu_seconds(std::process::id())?,
            },
            at: Instant::now(),
        })
    }
}

/// CPU seconds, or cores (CPU seconds per second), by process.
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    /// `clickflow serve`.
    pub serve: f64,
    /// The broker, if its process id is known.
    pub broker: Option<f64>,
    /// This process: the load generator, and the scrapes.
    pub generator: f64,
}

impl Cpu {
    /// Cores used from `first` to `last`.
    fn cores(first: &Sample, last: &Sample) -> Self {
        let seconds = (last.at - first.at).as_secs_f64();
        let (a, b) = (first.cpu, last.cpu);
        Self {
            serve: (b.serve - a.serve) / seconds,
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
    finished: impl Fn() -> bool,
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
        (first.at - started).as_secs_f64(),
        (last.at - started).as_secs_f64()
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
