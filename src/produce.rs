//! `clickflow produce`: the load generator. Sends [`clickflow_ingest::generator`]'s records
//! to a topic with the reference producer's settings through
//! [`clickflow_ingest::producer::LoadProducer`], shows a progress bar on stderr and prints
//! a delivery summary on stdout.
//!
//! At a rate (`--rate R`, the default) the event times follow the wall clock: the stream
//! starts at `--start-ms` (default: when the sending starts, once connected) and spans as
//! much event time as the run takes, so `--events N` and `--duration-ms D` determine each
//! other (`D = N / R` seconds). At `--rate 0` the records go as fast as the producer takes
//! them, over `--duration-ms` of event time (default 2 hours).

use std::ops::ControlFlow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clickflow_ingest::admin::INPUT_TOPIC;
use clickflow_ingest::generator::GeneratorConfig;
use clickflow_ingest::producer::{LoadConfig, LoadProducer};
use indicatif::{ProgressBar, ProgressStyle};

use crate::generate::GeneratorArgs;

/// Arguments of `clickflow produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    #[arg(long, value_name = "HOST:PORT", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    bootstrap: String,
    /// The topic to write to; it must exist (see `clickflow topics`).
    #[arg(long, default_value = INPUT_TOPIC)]
    topic: String,
    /// Records per second; 0 sends as fast as possible.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Number of records [default: as many as --rate sends in --duration-ms if that is
    /// given, else 1000000].
    #[arg(long)]
    events: Option<u64>,
    /// Event-time span of the records, in milliseconds; with --rate > 0 also the length of
    /// the run, so give --events or --duration-ms, not both [default: --events / --rate
    /// seconds; at --rate 0, 7200000].
    #[arg(long)]
    duration_ms: Option<u64>,
    /// Event time of the first record, in epoch milliseconds [default: when the sending
    /// starts, once connected].
    #[arg(long)]
    start_ms: Option<u64>,
    /// How long to wait for the cluster, in milliseconds: for the topic's metadata at the
    /// start, and for each record's delivery (`message.timeout.ms`).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    #[command(flatten)]
    generator: GeneratorArgs,
}

impl ProduceArgs {
    /// The number of records and their event-time span.
    fn events_and_span(&self) -> anyhow::Result<(u64, u64)> {
        let default = GeneratorConfig::default();
        let rate = self.rate;
        Ok(match (rate, self.events, self.duration_ms) {
            (0, events, duration_ms) => (
                events.unwrap_or(default.events),
                duration_ms.unwrap_or(default.duration_ms),
            ),
            (_, Some(_), Some(_)) => bail!(
                "--rate {rate} with both --events and --duration-ms: give one, the rate sets the other"
            ),
            (_, None, Some(duration_ms)) => (
                u64::try_from(u128::from(duration_ms) * u128::from(rate) / 1000)
                    .context("--duration-ms × --rate is too large")?,
                duration_ms,
            ),
            (_, events, None) => {
                let events = events.unwrap_or(default.events);
                let span = u128::from(events) * 1000 / u128::from(rate);
                (
                    events,
                    u64::try_from(span).context("--events / --rate is too long")?,
                )
            }
        })
    }
}

/// Sends the records, prints the summary, and fails if any record was not delivered.
pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let (events, duration_ms) = args.events_and_span()?;
    let start_ms = match args.start_ms {
        Some(start_ms) => start_ms,
        None => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .context("the system clock is before 1970")?;
            u64::try_from(now.as_millis()).context("the system clock is too far ahead")?
        }
    };
    let producer = LoadProducer::new(LoadConfig {
        bootstrap: args.bootstrap,
        topic: args.topic.clone(),
        generator: args.generator.config(events, start_ms, duration_ms),
        start_now: args.start_ms.is_none(),
        rate: args.rate,
        timeout: Duration::from_millis(args.timeout_ms),
    })?;
    let partitions = producer.partitions();
    let bar = ProgressBar::new(producer.events()).with_style(
        ProgressStyle::with_template(
            "{bar:40} {human_pos}/{human_len} delivered, {per_sec}, eta {eta} {msg}",
        )
        .context("progress bar template")?,
    );
    let summary = producer.run(|progress| {
        bar.set_position(progress.delivered);
        if progress.failed > 0 {
            bar.set_message(format!("({} failed)", progress.failed));
        }
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    println!(
        "delivered {} of {} records to {} ({partitions} partitions), {} failed; {} bytes in {:.2} s ({:.0} records/s)",
        summary.delivered,
        events,
        args.topic,
        summary.failed,
        summary.bytes,
        summary.elapsed.as_secs_f64(),
        summary.records_per_second(),
    );
    if let Some(error) = summary.first_error {
        bail!(
            "{} of {} records sent were not delivered; first error: {error}",
            summary.failed,
            summary.sent
        );
    }
    Ok(())
}
