//! `clickflow demo`: everything at once with nothing installed. librdkafka's in-process
//! mock cluster stands in for Kafka, the load generator writes live page views to it, the
//! service runs over them exactly as `serve` does, and the terminal shows the live views:
//! top pages of the current minute, the checkout funnel, alerts and the pipeline's health,
//! until Ctrl-C (or `--duration-s`).

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::Args;
use clickflow_dataflow::ViewSnapshot;
use clickflow_events::{DeadLetterReason, format_iso8601_utc};
use clickflow_ingest::generator::GeneratorConfig;
use clickflow_ingest::producer::{LoadConfig, LoadProducer};
use clickflow_ingest::status::now_ms;
use rdkafka::mocking::MockCluster;

use crate::options::ClusterArgs;
use crate::serve::config::ServeConfig;
use crate::serve::{Service, run_service};

/// Partitions of the demo's input topic (the reference pipeline's count).
const INPUT_PARTITIONS: i32 = 12;

/// Rows shown per table.
const TOP: usize = 8;

/// Arguments of `clickflow demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Page views per second from the built-in generator.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rate: u64,
    /// Distinct users of the generator.
    #[arg(long, default_value_t = 5000)]
    users: u64,
    /// Distinct pages of the generator.
    #[arg(long, default_value_t = 200)]
    pages: u32,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_s: Option<u64>,
    /// Seconds between two screens.
    #[arg(long, default_value_t = 1.0)]
    refresh_s: f64,
    /// Overrides one configuration key of the service, as `serve --set`.
    #[arg(long, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Worker threads.
    #[arg(short = 'w', long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    workers: u64,
}

/// Runs `clickflow demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1)
        .map_err(|error| anyhow!("cannot start the in-process Kafka cluster: {error}"))?;
    let bootstrap = cluster.bootstrap_servers();
    let mut sets = vec![
        format!("kafka.bootstrap=\"{bootstrap}\""),
        "kafka.idle_timeout_ms=1000".to_owned(),
        "metrics.listen=\"\"".to_owned(),
    ];
    sets.extend(args.set.iter().cloned());
    let config = ServeConfig::load(None, std::env::vars(), &sets)?;
    for topic in &config.kafka.input_topics {
        create_topic(&cluster, topic, INPUT_PARTITIONS)?;
    }
    for topic in [
        &config.kafka.dead_letter_topic,
        &config.kafka.page_view_counts_topic,
        &config.kafka.alerts_topic,
    ] {
        create_topic(&cluster, topic, 1)?;
    }

    let service = Service::new(&config, args.workers as usize, None);
    let cluster_args = ClusterArgs {
        workers: args.workers,
        processes: 1,
        process: 0,
        hostfile: None,
    };
    let background = service.start_background(&config, &cluster_args)?;
    if let Some(seconds) = args.duration_s {
        let shutdown = Arc::clone(&service.shutdown);
        thread::spawn(move || {
            thread::sleep(Duration::from_secs(seconds));
            shutdown.store(true, Ordering::SeqCst);
        });
    }
    let producer = start_producer(&args, &bootstrap, &config.kafka.input_topics[0], &service)?;
    let screen = {
        let service = service.clone();
        let refresh = Duration::from_secs_f64(args.refresh_s.clamp(0.05, 3600.0));
        let threshold = config.views.high_traffic_threshold;
        thread::spawn(move || show(&service, refresh, threshold))
    };
    let result = run_service(&config, &cluster_args, &service);
    service.shutdown.store(true, Ordering::SeqCst);
    let produced = producer
        .join()
        .map_err(|_| anyhow!("the generator panicked"))?;
    let _ = screen.join();
    background.stop();
    result?;
    let produced = produced?;
    println!(
        "demo: {} events produced, {} counted, {} dead letters; p99 freshness {}",
        produced.delivered,
        service.status.events_counted(),
        service.status.dead_letters().iter().sum::<u64>(),
        service
            .status
            .freshness_quantile_ms(0.99)
            .map_or_else(|| "n/a".to_owned(), |ms| format!("{ms} ms")),
    );
    drop(cluster);
    Ok(())
}

fn create_topic(
    cluster: &MockCluster<'_, impl rdkafka::ClientContext>,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    cluster
        .create_topic(topic, partitions, 1)
        .map_err(|error| anyhow!("cannot create topic {topic} in the in-process cluster: {error}"))
}

/// Starts the generator: live event times, at `args.rate`, until the service stops.
fn start_producer(
    args: &DemoArgs,
    bootstrap: &str,
    topic: &str,
    service: &Service,
) -> anyhow::Result<thread::JoinHandle<anyhow::Result<clickflow_ingest::producer::DeliverySummary>>>
{
    let day_ms = 86_400_000;
    let generator = GeneratorConfig {
        events: args.rate * day_ms / 1000,
        duration_ms: day_ms,
        start_ms: u64::try_from(now_ms()).unwrap_or_default(),
        users: args.users,
        pages: args.pages,
        ..GeneratorConfig::default()
    };
    let producer = LoadProducer::new(LoadConfig {
        bootstrap: bootstrap.to_owned(),
        topic: topic.to_owned(),
        generator,
        start_now: true,
        rate: args.rate,
        timeout: Duration::from_secs(10),
    })
    .context("cannot start the generator")?;
    let shutdown = Arc::clone(&service.shutdown);
    Ok(thread::spawn(move || {
        let summary = producer.run(|_| {
            if shutdown.load(Ordering::SeqCst) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        match &summary.first_error {
            Some(error) if summary.delivered == 0 => {
                Err(anyhow!("the generator delivered nothing: {error}"))
            }
            _ => Ok(summary),
        }
    }))
}

/// Redraws the screen every `refresh` until the service stops.
fn show(service: &Service, refresh: Duration, threshold: u64) {
    let terminal = std::io::stdout().is_terminal();
    let started = Instant::now();
    while !service.shutdown.load(Ordering::SeqCst) {
        thread::sleep(refresh);
        let snapshot = service.store.snapshot();
        let screen = render(service, &snapshot, threshold, started.elapsed());
        let mut stdout = std::io::stdout().lock();
        if terminal {
            // Clear the screen and draw from the top left corner.
            let _ = write!(stdout, "\x1b[2J\x1b[H{screen}");
        } else {
            let _ = writeln!(stdout, "{screen}");
        }
        let _ = stdout.flush();
    }
}

/// One screen: status, top pages of the latest minute, the latest funnel window, alerts.
fn render(service: &Service, snapshot: &ViewSnapshot, threshold: u64, elapsed: Duration) -> String {
    let status = &service.status;
    let dead_letters = status.dead_letters();
    let refused: Vec<String> = DeadLetterReason::ALL
        .iter()
        .zip(dead_letters)
        .filter(|(_, count)| *count > 0)
        .map(|(reason, count)| format!("{reason} {count}"))
        .collect();
    let frontier = status.published_frontier().flatten();
    let mut screen = format!(
        "clickflow demo: {:.0} s, {} events counted, {} dead letters ({}); frontier {} ({} behind), p99 freshness {}; Ctrl-C stops\n\n",
        elapsed.as_secs_f64(),
        status.events_counted(),
        dead_letters.iter().sum::<u64>(),
        if refused.is_empty() {
            "none".to_owned()
        } else {
            refused.join(", ")
        },
        frontier.map_or_else(|| "-".to_owned(), format_iso8601_utc),
        frontier.map_or_else(
            || "-".to_owned(),
            |f| format!("{:.1} s", (now_ms() - f as i64) as f64 / 1000.0)
        ),
        status
            .freshness_quantile_ms(0.99)
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
    );
    if let Some(latest) = snapshot.page_views.iter().map(|row| row.window_start).max() {
        let mut top: Vec<_> = snapshot
            .page_views
            .iter()
            .filter(|row| row.window_start == latest)
            .collect();
        top.sort_by(|a, b| {
            b.view_count
                .cmp(&a.view_count)
                .then_with(|| a.page.cmp(&b.page))
        });
        screen += &format!(
            "top pages, minute from {}\n  {:<24} {:>8} {:>8}\n",
            format_iso8601_utc(latest),
            "page",
            "views",
            "users"
        );
        for row in top.iter().take(TOP) {
            screen += &format!(
                "  {:<24} {:>8} {:>8}\n",
                row.page, row.view_count, row.unique_users
            );
        }
    }
    if let Some(latest) = snapshot.funnel.iter().map(|row| row.window_start).max() {
        screen += &format!(
            "\ncheckout funnel, 5 minutes from {}\n  {:<24} {:>8} {:>10}\n",
            format_iso8601_utc(latest),
            "step",
            "users",
            "converted"
        );
        for row in snapshot
            .funnel
            .iter()
            .filter(|row| row.window_start == latest)
        {
            screen += &format!(
                "  {:<24} {:>8} {:>10}\n",
                row.funnel_step, row.unique_users, row.converted_users
            );
        }
    }
    let mut alerts: Vec<_> = snapshot.alerts.iter().collect();
    alerts.sort_by(|a, b| {
        b.window_start
            .cmp(&a.window_start)
            .then_with(|| b.value.cmp(&a.value))
    });
    screen += &format!(
        "\nalerts (views per minute > {threshold}): {} standing\n",
        alerts.len()
    );
    for row in alerts.iter().take(TOP) {
        screen += &format!(
            "  {:<14} {:<24} {} {:>8}\n",
            row.rule,
            row.page,
            format_iso8601_utc(row.window_start),
            row.value
        );
    }
    screen
}
