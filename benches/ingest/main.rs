//! The ingest benchmark (issue "Kafka in and out"): events per second from a real local
//! Kafka topic through all of clickflow's views, side by side with a bare rdkafka
//! consumer that only reads the same topic, and event freshness at a live rate.
//! `scripts/bench-ingest` starts the broker, builds, and runs this against it.
//!
//! 1. Throughput. A fresh 12-partition topic is filled with `--events` generated records
//!    (the load generator at full speed, the reference producer's settings) whose event
//!    times span the two hours before the fill. Then, in alternation, `--warm-up-runs`
//!    untimed and `--runs` timed times each:
//!    - the bare consumer: `-w` threads, each with its own `BaseConsumer` assigned the
//!      partitions clickflow would give that worker, with clickflow's fetch settings,
//!      polling in batches until every record is read;
//!    - `clickflow serve -w W` from the earliest offsets, into fresh output and
//!      dead-letter topics, timed from the spawn of the process until its metrics show
//!      every record counted (events plus dead letters), no consumer lag, and the
//!      published frontier at or past the least partition watermark (the views have
//!      published everything up to the slowest partition). Its peak RSS is read from
//!      `/proc` before it is stopped with SIGTERM;
//!    - with `--kafka-streams`, in the timed runs only, the peer: the reference pipeline's
//!      Kafka Streams job (page views per page per minute, and alerts, exactly-once) with
//!      `-w` stream threads, from the earliest offsets into fresh output topics, timed
//!      from the spawn of its JVM until the output of every record is committed. Then
//!      both `page-view-counts` topics are read to the end: how many windows each holds
//!      and what their last counts add up to, to show that both counted the same.
//!
//!    Each run's own topics are deleted once the run and, in a timed run, the peer's run
//!    and both final counts are done, so that the broker does not compact them during
//!    later runs and the freshness phase.
//!
//!    Each run also reports the CPU time of its reader (this process for the bare
//!    consumer, the service for clickflow, the JVM for the peer) and of the broker
//!    meanwhile. The event times lie in the past because the broker refuses records more
//!    than an hour ahead of its clock, and the peer writes its records with their event
//!    times.
//! 2. Freshness. `clickflow serve -w W` reads a fresh topic from the latest offsets while
//!    the load generator writes `--rate` records/s for `--live-seconds`, with event times
//!    that follow the wall clock. Freshness (record timestamp to publication in the
//!    output topics) is read from the service's `clickflow_freshness_seconds`: from the
//!    difference of two scrapes of the histogram (after `--warm-up-seconds` and at the end
//!    of the sending) when it is one, from the summary (every event since the start)
//!    otherwise. It is also measured from outside, as a `read_committed` reader of the
//!    `page-view-counts` topic sees it (`harness::visibility`), for the same events. With
//!    `--kafka-streams`, the peer then gets a live run of its own on fresh topics, at the
//!    same rate and for as long, measured from outside the same way.
//!
//! Progress goes to stderr, a markdown summary to stdout.

mod live;
mod report;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use clap::Parser;
use clickflow_ingest::admin::ReferenceTopics;

use clickflow_benches::harness::kafka::{
    FinalCounts, PARTITIONS, bare_consume, create_topics, delete_topics, final_counts, generator,
    produce, topic_names,
};
use clickflow_benches::harness::peer::{
    CAUGHT_UP, FIRST_RECORD, ReferenceJob, ReferenceJobSettings,
};
use clickflow_benches::harness::process::cpu_seconds;
use clickflow_benches::harness::serve::Serve;

/// Event-time span of the throughput phase's records, as in the batch benchmark.
const FILL_SPAN_MS: u64 = 2 * 60 * 60 * 1000;

/// Arguments of the benchmark.
#[derive(Parser, Debug)]
#[command(about = "clickflow's ingest benchmark against a running Kafka")]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long)]
    bootstrap: String,
    /// The `clickflow` binary.
    #[arg(long, default_value = "target/release/clickflow")]
    clickflow: PathBuf,
    /// Records in the throughput phase's topic.
    #[arg(long, default_value_t = 5_000_000)]
    events: u64,
    /// Worker threads of clickflow, and threads of the bare consumer.
    #[arg(short = 'w', long, default_value_t = 2)]
    workers: usize,
    /// Runs of each side in the throughput phase.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Untimed runs of each side before the timed ones: the broker's JIT compiles its
    /// fetch and transaction paths over the first runs after it starts, which slows the
    /// first runs of `clickflow serve` (see `benches/RESULTS.md`, twentieth sitting).
    #[arg(long, default_value_t = 3)]
    warm_up_runs: usize,
    /// Records per second in the freshness phase.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Length of the freshness phase's sending, in seconds.
    #[arg(long, default_value_t = 120)]
    live_seconds: u64,
    /// Seconds of the freshness phase left out of a freshness histogram: the start-up
    /// transient (the broker compiling the live paths, the service's state growing from
    /// empty), which is not the steady freshness the target is about.
    #[arg(long, default_value_t = 60)]
    warm_up_seconds: u64,
    /// A configuration file for `clickflow serve` (e.g. extra librdkafka properties);
    /// the benchmark's own settings override its topics, start and metrics address.
    #[arg(long)]
    serve_config: Option<PathBuf>,
    /// The class path of the Kafka Streams peer, as `scripts/kafka-streams-build` prints
    /// it; without it the throughput phase runs no peer.
    #[arg(long)]
    kafka_streams: Option<String>,
    /// The broker's process id, to report its CPU use in both phases.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Directory for the services' logs.
    #[arg(long, default_value = "target/bench-ingest")]
    logs: PathBuf,
    /// The command line to show in the summary.
    #[arg(long, default_value = "")]
    command: String,
}

/// One run of one side of the throughput phase.
#[derive(Clone, Copy, Debug)]
struct Run {
    elapsed: Duration,
    /// Peak RSS of the service or the peer, in bytes (none for the bare consumer).
    peak_rss: Option<u64>,
    /// From the spawn of the service or the peer to its first record (none for the bare
    /// consumer).
    start_up: Option<Duration>,
    /// CPU time of the reader (this process for the bare consumer, the service for
    /// clickflow, the JVM for the peer) during the run, in seconds.
    reader_cpu: f64,
    /// CPU time of the broker during the run, in seconds, if its process id is known.
    broker_cpu: Option<f64>,
}

/// What clickflow's and the peer's `page-view-counts` topics held at the end of a run.
struct BothFinalCounts {
    clickflow: FinalCounts,
    peer: FinalCounts,
}

/// The throughput phase's outcome.
struct Throughput {
    bare: Vec<Run>,
    clickflow: Vec<Run>,
    /// The Kafka Streams peer's runs, if it ran.
    peer: Vec<Run>,
    /// What both `page-view-counts` topics held at the end of each timed run, if the peer
    /// ran.
    final_counts: Vec<BothFinalCounts>,
    fill_rate: f64,
    /// The machine's load average before the phase.
    load_average: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.workers > 0 && args.runs > 0 && args.events > 0,
        "-w, --runs and --events must be at least 1"
    );
    ensure!(args.rate > 0, "--rate must be at least 1");
    std::fs::create_dir_all(&args.logs)
        .with_context(|| format!("cannot create {}", args.logs.display()))?;
    let throughput = throughput(&args)?;
    let live = live::live(&args)?;
    report::print_summary(&args, &throughput, &live);
    Ok(())
}

/// Phase 1: the bare consumer, `clickflow serve` and (in the timed runs, if built) the
/// Kafka Streams job over the same filled topic.
fn throughput(args: &Args) -> anyhow::Result<Throughput> {
    let load_average = report::load_average();
    let topics = topic_names(&unique_prefix("throughput"));
    create_topics(&args.bootstrap, &topics.specs())?;
    progress(format!(
        "filling {} with {} records",
        topics.input, args.events
    ));
    let fill = produce(
        &args.bootstrap,
        &topics.input,
        generator(args.events, now_ms()? - FILL_SPAN_MS, FILL_SPAN_MS),
        0,
        &AtomicBool::new(false),
    )?;
    progress(format!(
        "filled in {:.1} s ({:.0} records/s)",
        fill.elapsed.as_secs_f64(),
        fill.records_per_second()
    ));
    let mut result = Throughput {
        bare: Vec::new(),
        clickflow: Vec::new(),
        peer: Vec::new(),
        final_counts: Vec::new(),
        fill_rate: fill.records_per_second(),
        load_average,
    };
    for run in 1..=args.warm_up_runs {
        let (_, _, clickflow_topics) = run_pair(args, &topics.input, &format!("warm-up{run}"))?;
        clickflow_topics.delete(&args.bootstrap)?;
    }
    for run in 1..=args.runs {
        let label = format!("run{run}");
        let (bare, clickflow, clickflow_topics) = run_pair(args, &topics.input, &label)?;
        result.bare.push(bare);
        result.clickflow.push(clickflow);
        if let Some(classpath) = &args.kafka_streams {
            let peer_topics =
                RunTopics::create(args, &topics.input, &format!("{label}-kafka-streams"))?;
            let peer = peer_run(args, classpath, &peer_topics, &label)?;
            report_run(&label, "Kafka Streams job", args.events, &peer);
            result.peer.push(peer);
            result.final_counts.push(BothFinalCounts {
                clickflow: final_counts(&args.bootstrap, &clickflow_topics.topics.counts)?,
                peer: final_counts(&args.bootstrap, &peer_topics.topics.counts)?,
            });
            peer_topics.delete(&args.bootstrap)?;
        }
        clickflow_topics.delete(&args.bootstrap)?;
    }
    Ok(result)
}

/// One run of the bare consumer, then one of `clickflow serve`, each reported as `label`;
/// also returns the service's topics.
fn run_pair(args: &Args, input: &str, label: &str) -> anyhow::Result<(Run, Run, RunTopics)> {
    let bare = bare_run(args, input)?;
    report_run(label, "bare consumer", args.events, &bare);
    let topics = RunTopics::create(args, input, label)?;
    let clickflow = serve_run(args, &topics.topics, label)?;
    report_run(label, "clickflow serve", args.events, &clickflow);
    Ok((bare, clickflow, topics))
}

/// The topics of one run of clickflow or of the peer: fresh output topics, and the shared
/// input topic. Every topic the run creates is named `PREFIX.…`: the peer's internal
/// topics too, being named after its [`RunTopics::application_id`].
struct RunTopics {
    prefix: String,
    topics: ReferenceTopics,
}

impl RunTopics {
    /// Creates the output topics of a run named `run`, reading `input`.
    fn create(args: &Args, input: &str, run: &str) -> anyhow::Result<Self> {
        let prefix = unique_prefix(&format!("throughput-{run}"));
        let outputs = topic_names(&prefix);
        let specs: Vec<_> = outputs
            .specs()
            .into_iter()
            .filter(|spec| spec.name != outputs.input)
            .collect();
        create_topics(&args.bootstrap, &specs)?;
        let topics = ReferenceTopics {
            input: input.to_owned(),
            ..outputs
        };
        Ok(Self { prefix, topics })
    }

    /// The peer's application id, which names its consumer group and internal topics.
    fn application_id(&self) -> String {
        format!("{}.kafka-streams", self.prefix)
    }

    /// Deletes the run's topics once they have been read: the broker would otherwise go on
    /// compacting them (the output topics and the peer's changelogs) during later runs.
    fn delete(self, bootstrap: &str) -> anyhow::Result<()> {
        delete_topics(bootstrap, &format!("{}.", self.prefix))
    }
}

fn bare_run(args: &Args, input: &str) -> anyhow::Result<Run> {
    let reader_cpu = cpu_seconds(std::process::id())?;
    let broker_cpu = broker_cpu_seconds(args.broker_pid)?;
    let (records, elapsed) = bare_consume(&args.bootstrap, input, args.workers)?;
    ensure!(
        records == args.events,
        "the bare consumer read {records} records, not {}",
        args.events
    );
    Ok(Run {
        elapsed,
        peak_rss: None,
        start_up: None,
        reader_cpu: cpu_seconds(std::process::id())? - reader_cpu,
        broker_cpu: cpu_between(broker_cpu, broker_cpu_seconds(args.broker_pid)?),
    })
}

/// The broker's CPU time so far, in seconds, if its process id is known.
fn broker_cpu_seconds(broker_pid: Option<u32>) -> anyhow::Result<Option<f64>> {
    broker_pid.map(cpu_seconds).transpose()
}

/// The CPU seconds used from the reading `before` to the reading `after`, when both are
/// known.
fn cpu_between(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

fn serve_run(args: &Args, topics: &ReferenceTopics, run: &str) -> anyhow::Result<Run> {
    let log = args.logs.join(format!("throughput-{run}.log"));
    let broker_cpu = broker_cpu_seconds(args.broker_pid)?;
    let spawned = Instant::now();
    let mut serve = start_serve(args, topics, "earliest", &log)?;
    let timeout = Duration::from_secs(120.max(args.events / 10_000));
    let mut start_up = None;
    serve.wait_until("caught up", timeout, |scrape| {
        let progress = scrape.progress();
        if start_up.is_none() && progress.records > 0 {
            start_up = Some(spawned.elapsed());
        }
        progress.caught_up(args.events, usize::from(PARTITIONS))
    })?;
    let elapsed = serve.elapsed();
    let reader_cpu = serve.cpu_seconds()?;
    let broker_cpu = cpu_between(broker_cpu, broker_cpu_seconds(args.broker_pid)?);
    let peak_rss = serve.peak_rss_bytes()?;
    serve.stop()?;
    Ok(Run {
        elapsed,
        peak_rss: Some(peak_rss),
        start_up,
        reader_cpu,
        broker_cpu,
    })
}

/// One run of the Kafka Streams job on `topics`, with the job built at `classpath`.
fn peer_run(args: &Args, classpath: &str, topics: &RunTopics, run: &str) -> anyhow::Result<Run> {
    let state_dir = args.logs.join(format!("kafka-streams-{run}.state"));
    let log = args.logs.join(format!("kafka-streams-{run}.log"));
    progress(format!(
        "starting the Kafka Streams job with {} threads (log {})",
        args.workers,
        log.display()
    ));
    let broker_cpu = broker_cpu_seconds(args.broker_pid)?;
    let mut job = ReferenceJob::start(&ReferenceJobSettings {
        classpath,
        bootstrap: &args.bootstrap,
        topics: &topics.topics,
        application_id: &topics.application_id(),
        state_dir: &state_dir,
        threads: args.workers,
        log: &log,
    })?;
    let timeout = Duration::from_secs(600.max(args.events / 1_000));
    let start_up = job.wait_for(FIRST_RECORD, timeout)?;
    let elapsed = job.wait_for(CAUGHT_UP, timeout)?;
    let reader_cpu = job.cpu_seconds()?;
    let broker_cpu = cpu_between(broker_cpu, broker_cpu_seconds(args.broker_pid)?);
    let peak_rss = job.peak_rss_bytes()?;
    drop(job);
    std::fs::remove_dir_all(&state_dir)
        .with_context(|| format!("cannot remove {}", state_dir.display()))?;
    Ok(Run {
        elapsed,
        peak_rss: Some(peak_rss),
        start_up: Some(start_up),
        reader_cpu,
        broker_cpu,
    })
}

/// Starts `clickflow serve` on `topics`, reading from `start`.
fn start_serve(
    args: &Args,
    topics: &ReferenceTopics,
    start: &str,
    log: &Path,
) -> anyhow::Result<Serve> {
    let quoted = |value: &str| format!("{value:?}");
    let sets = [
        format!("kafka.bootstrap={}", quoted(&args.bootstrap)),
        format!("kafka.input_topics=[{}]", quoted(&topics.input)),
        format!("kafka.dead_letter_topic={}", quoted(&topics.dead_letters)),
        format!("kafka.page_view_counts_topic={}", quoted(&topics.counts)),
        format!("kafka.alerts_topic={}", quoted(&topics.alerts)),
        format!("kafka.rules_topic={}", quoted(&topics.rules)),
        format!(
            "kafka.transactional_id={}",
            quoted(&format!("{}.writer", topics.counts))
        ),
        format!("kafka.start={}", quoted(start)),
        "kafka.idle_timeout_ms=1000".to_owned(),
    ];
    progress(format!(
        "starting {} serve -w {} (log {})",
        args.clickflow.display(),
        args.workers,
        log.display()
    ));
    Serve::start(
        &args.clickflow,
        args.workers,
        args.serve_config.as_deref(),
        &sets,
        log,
    )
}

fn report_run(label: &str, side: &str, events: u64, result: &Run) {
    let seconds = result.elapsed.as_secs_f64();
    let rss = result.peak_rss.map_or(String::new(), |bytes| {
        format!(", peak RSS {:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    });
    let start_up = result.start_up.map_or(String::new(), |start_up| {
        format!(
            ", first record counted after {:.2} s",
            start_up.as_secs_f64()
        )
    });
    let broker = result
        .broker_cpu
        .map_or(String::new(), |cpu| format!(" (the broker {cpu:.2} s)"));
    progress(format!(
        "{label}, {side}: {seconds:.2} s, {:.0} events/s{rss}{start_up}, CPU {:.2} s{broker}",
        events as f64 / seconds,
        result.reader_cpu
    ));
}

/// A prefix for topic names that no earlier run used.
fn unique_prefix(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("bench-ingest-{}-{nanos}-{what}", std::process::id())
}

/// The wall clock in epoch milliseconds.
fn now_ms() -> anyhow::Result<u64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    u64::try_from(now.as_millis()).context("the system clock is too far ahead")
}

fn progress(message: String) {
    eprintln!("bench-ingest: {message}");
}
