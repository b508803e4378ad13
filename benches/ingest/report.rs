//! The summary on stdout: markdown that can go into `benches/RESULTS.md` as it is.

use crate::Args;
use crate::live::{Cpu, DELAY_EVERY, Live, Seen};
use crate::{Run, Throughput};
use clickflow_benches::harness::kafka::PARTITIONS;
use clickflow_benches::harness::metrics::Freshness;

/// The freshness target of the issue, in seconds.
const FRESHNESS_TARGET: f64 = 0.1;

/// The throughput target of the issue: clickflow over the bare consumer.
const RATIO_TARGET: f64 = 0.7;

/// Prints the summary of both phases.
pub fn print_summary(args: &Args, throughput: &Throughput, live: &Live) {
    println!("machine: {}", machine());
    println!(
        "load average (1 min) at the start and the end: {} and {}",
        throughput.load_average,
        load_average()
    );
    println!("command: `{}`", args.command);
    if let Some(config) = &args.serve_config {
        println!("serve configuration: {}", config.display());
    }
    print_throughput(args, throughput);
    print_freshness(args, live);
}

fn print_throughput(args: &Args, throughput: &Throughput) {
    let bare = median_seconds(&throughput.bare);
    let clickflow = median_seconds(&throughput.clickflow);
    println!(
        "throughput: {} events in one {PARTITIONS}-partition topic (filled at {:.0} records/s), {} workers, medians of {} alternating runs after {} untimed run(s) of each side",
        args.events, throughput.fill_rate, args.workers, args.runs, args.warm_up_runs
    );
    println!();
    println!("| reader | runs | median | events/s |");
    println!("|---|---|---|---|");
    let row = |name: String, runs: &[Run], median: f64| {
        println!(
            "| {name} | {} | {median:.2} s | {:.0} |",
            list_seconds(runs),
            args.events as f64 / median
        );
    };
    row(
        format!("bare rdkafka `BaseConsumer` x{}", args.workers),
        &throughput.bare,
        bare,
    );
    row(
        format!("`clickflow serve -w {}`, all views", args.workers),
        &throughput.clickflow,
        clickflow,
    );
    let peer = (!throughput.peer.is_empty()).then(|| median_seconds(&throughput.peer));
    if let Some(peer) = peer {
        row(
            format!(
                "Kafka Streams reference job, {} threads: page views per minute and alerts",
                args.workers
            ),
            &throughput.peer,
            peer,
        );
    }
    println!();
    println!(
        "CPU per run (medians): bare consumer {}; clickflow {}",
        median_cpu(&throughput.bare),
        median_cpu(&throughput.clickflow)
    );
    let ratio = bare / clickflow;
    println!(
        "clickflow / bare: {ratio:.2} (target >= {RATIO_TARGET}: {})",
        met(ratio >= RATIO_TARGET)
    );
    let clickflow_start_up = median_start_up(&throughput.clickflow);
    println!(
        "clickflow start-up (spawn to first record counted): median {clickflow_start_up:.2} s; without it, clickflow / bare is {:.2}",
        bare / (clickflow - clickflow_start_up)
    );
    println!(
        "clickflow peak RSS: {:.2} GiB (largest of the runs)",
        largest_peak_rss_gib(&throughput.clickflow)
    );
    if let Some(peer) = peer {
        let peer_start_up = median_start_up(&throughput.peer);
        println!(
            "Kafka Streams job: CPU per run (medians) {}; start-up (spawn to first record) median {peer_start_up:.2} s; peak RSS {:.2} GiB (the JVM's default heap); Kafka Streams / bare {:.2}; clickflow is {:.1}x as fast ({:.1}x without either start-up)",
            median_cpu(&throughput.peer),
            largest_peak_rss_gib(&throughput.peer),
            bare / peer,
            peer / clickflow,
            (peer - peer_start_up) / (clickflow - clickflow_start_up)
        );
        for (run, counts) in throughput.final_counts.iter().enumerate() {
            println!(
                "  run {}, page-view-counts at the end: clickflow {} windows, counts summing to {}; Kafka Streams {} windows, counts summing to {}",
                run + 1,
                counts.clickflow.windows,
                counts.clickflow.views,
                counts.peer.windows,
                counts.peer.views
            );
        }
    }
}

/// The median start-up of `runs`, in seconds.
fn median_start_up(runs: &[Run]) -> f64 {
    median(
        runs.iter()
            .filter_map(|run| run.start_up)
            .map(|start_up| start_up.as_secs_f64())
            .collect(),
    )
}

/// The largest peak RSS of `runs`, in GiB.
fn largest_peak_rss_gib(runs: &[Run]) -> f64 {
    let bytes = runs
        .iter()
        .filter_map(|run| run.peak_rss)
        .max()
        .unwrap_or_default();
    bytes as f64 / (1u64 << 30) as f64
}

fn print_freshness(args: &Args, live: &Live) {
    let freshness = match &live.freshness {
        Freshness::Histogram {
            p50_at_most,
            p99_at_most,
            events,
            mean,
        } => format!(
            "p50 <= {:.0} ms, p99 <= {:.0} ms, mean {:.0} ms (histogram bucket bounds, {events} events published after the first {} s)",
            p50_at_most * 1000.0,
            p99_at_most * 1000.0,
            mean * 1000.0,
            live.warm_up.as_secs()
        ),
        Freshness::Summary { p50, p99 } => format!(
            "p50 {:.0} ms, p99 {:.0} ms (the service's summary: every event since it started)",
            p50 * 1000.0,
            p99 * 1000.0
        ),
    };
    println!(
        "freshness at {} events/s for {} s: {freshness}; target p99 < {:.0} ms: {}",
        args.rate,
        args.live_seconds,
        FRESHNESS_TARGET * 1000.0,
        met(live.freshness.p99() < FRESHNESS_TARGET)
    );
    println!(
        "  achieved produce rate {:.0} records/s; cores used: {}; {:.1} output transactions/s; {}",
        live.produced_rate,
        cores("clickflow", &live.cores),
        live.transactions_per_second,
        if live.caught_up {
            "every record counted after the sending"
        } else {
            "NOT caught up within a minute of the end of the sending"
        }
    );
    println!(
        "  behind the wall clock (p50 / p99 of {} samples, every {} ms): least partition watermark {:.0} / {:.0} ms, published frontier {:.0} / {:.0} ms",
        live.frontier_delay_ms.samples,
        DELAY_EVERY.as_millis(),
        live.input_delay_ms.p50,
        live.input_delay_ms.p99,
        live.frontier_delay_ms.p50,
        live.frontier_delay_ms.p99
    );
    println!(
        "  seen by a read_committed reader of the page-view-counts topic, events sent after the first {} s: clickflow {}",
        live.warm_up.as_secs(),
        seen(&live.seen)
    );
    if let Some(peer) = &live.peer {
        println!(
            "  the Kafka Streams job, in a live run of its own ({:.0} records/s achieved), seen the same way: {}; cores used: {}",
            peer.produced_rate,
            seen(&peer.seen),
            cores("the job", &peer.cores)
        );
        println!(
            "  p99 seen from outside, Kafka Streams / clickflow: {:.1}",
            peer.seen.freshness_ms.p99 / live.seen.freshness_ms.p99
        );
    }
}

/// The cores used by the reader (named `reader`), the broker and the load generator.
fn cores(reader: &str, cores: &Cpu) -> String {
    let broker = cores
        .broker
        .map_or(String::new(), |broker| format!(", the broker {broker:.2}"));
    format!(
        "{reader} {:.2}{broker}, the load generator {:.2}",
        cores.reader, cores.generator
    )
}

/// Freshness seen from outside, as the summary shows it.
fn seen(seen: &Seen) -> String {
    format!(
        "p50 {:.0} ms, p99 {:.0} ms, mean {:.0} ms over {} events, {} never visible",
        seen.freshness_ms.p50,
        seen.freshness_ms.p99,
        seen.mean_ms,
        seen.freshness_ms.samples,
        seen.never_visible
    )
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "NOT met" }
}

fn median_seconds(runs: &[Run]) -> f64 {
    median(runs.iter().map(|run| run.elapsed.as_secs_f64()).collect())
}

/// The median (the upper one of an even number); NaN for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median CPU seconds of the reader and of the broker over `runs`.
fn median_cpu(runs: &[Run]) -> String {
    let reader = median(runs.iter().map(|run| run.reader_cpu).collect());
    let broker: Vec<f64> = runs.iter().filter_map(|run| run.broker_cpu).collect();
    if broker.is_empty() {
        format!("{reader:.2} s")
    } else {
        format!(
            "{reader:.2} s, the broker meanwhile {:.2} s",
            median(broker)
        )
    }
}

fn list_seconds(runs: &[Run]) -> String {
    let seconds: Vec<String> = runs
        .iter()
        .map(|run| format!("{:.2}", run.elapsed.as_secs_f64()))
        .collect();
    seconds.join(", ")
}

/// Cores, CPU model and memory, from `/proc`.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let read = |path| std::fs::read_to_string(path).unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_once(':'))
            .map(|(_, value)| value.trim().to_owned())
            .unwrap_or_default()
    };
    let model = field(&read("/proc/cpuinfo"), "model name");
    let memory_kib: f64 = field(&read("/proc/meminfo"), "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_default();
    format!(
        "{cores} cores ({model}), {:.0} GiB",
        memory_kib / (1u64 << 20) as f64
    )
}

/// The machine's load average over the last minute.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}
