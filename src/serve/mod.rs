//! `clickflow serve`: the service. Kafka in, the views kept exactly up to date, Kafka out.
//!
//! Every worker of every process runs a Kafka source over its own partitions; the views
//! are built over their union, as in `batch`. Process 0 keeps the views' current rows (the
//! [`ViewStore`]) and writes the output topics one committed transaction per frontier
//! step. The service runs until SIGINT/SIGTERM: intake stops, the output writer commits
//! what it has, and dead letters are flushed.

mod background;
pub mod config;
mod priority;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use clickflow_api::{AlertRules, ApiState};
use clickflow_dataflow::{
    AlertRule, RuleChanges, Time, ViewStore, alert_rules, build_views, publish_steps,
};
use clickflow_ingest::dead_letters::DeadLetterProducer;
use clickflow_ingest::input_topics::TopicWatcher;
use clickflow_ingest::output::{OutputWriter, StepSender};
use clickflow_ingest::rule_log::{LoggedRules, RuleLog};
use clickflow_ingest::source::{SourceContext, kafka_source};
use clickflow_ingest::status::IngestStatus;
use differential_dataflow::AsCollection;
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::vec::Map;
use tracing::{error, info};

use crate::options::ClusterArgs;
pub use background::Background;
use config::ServeConfig;

/// How long the workers sleep at most when there is nothing to do.
const PARK: Duration = Duration::from_millis(50);

/// How long dead letters may take to flush at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `clickflow serve`.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct ServeArgs {
    /// TOML configuration file (see config/clickflow.toml); defaults apply without one.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides one configuration key, e.g. `--set kafka.bootstrap=broker:9092`; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// What a running service shares with whoever started it.
#[derive(Clone)]
pub struct Service {
    /// The views' current rows (kept in process 0).
    pub store: ViewStore,
    /// Ingest and output status of this process.
    pub status: IngestStatus,
    /// The alert rules: the built-in `high_traffic`, then those of the rules' log.
    pub rules: AlertRules,
    /// Set to stop the service.
    pub shutdown: Arc<AtomicBool>,
}

impl Service {
    /// A service that has not started, for `config` and `workers` threads per process,
    /// keeping its alert rules in `rule_log` (see [`open_rule_log`]) if there is one.
    pub fn new(
        config: &ServeConfig,
        workers: usize,
        rule_log: Option<(RuleLog, LoggedRules)>,
    ) -> Self {
        let high_traffic = AlertRule::high_traffic(config.views.high_traffic_threshold);
        let rules = match rule_log {
            Some((log, logged)) => {
                AlertRules::logged(RuleChanges::default(), [high_traffic], log, logged)
            }
            None => AlertRules::new(RuleChanges::default(), [high_traffic]),
        };
        Self {
            store: ViewStore::serving(workers, config.api.changelog_ms),
            status: IngestStatus::default(),
            rules,
            shutdown: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the background tasks: metrics, signals, the progress log, and the gRPC
    /// API (in process 0, which keeps the views).
    pub fn start_background(
        &self,
        config: &ServeConfig,
        cluster: &ClusterArgs,
    ) -> anyhow::Result<Background> {
        let api = (cluster.process == 0)
            .then(|| config.api_listen())
            .transpose()?
            .flatten()
            .map(|address| anyhow::Ok((address, self.api_state(config, cluster)?)))
            .transpose()?;
        Background::start(
            config.metrics_listen()?,
            api,
            self.status.clone(),
            Arc::clone(&self.shutdown),
        )
    }

    /// The gRPC API's view of the service.
    pub fn api_state(
        &self,
        config: &ServeConfig,
        cluster: &ClusterArgs,
    ) -> anyhow::Result<ApiState> {
        let mut state = ApiState::new(self.store.clone(), self.status.clone(), self.rules.clone());
        state.workers = u32::try_from(cluster.workers).unwrap_or(u32::MAX);
        state.processes = u32::try_from(cluster.processes).unwrap_or(u32::MAX);
        state.retention_ms = config.views.retention_ms;
        state.session_gap_ms = config.views.session_gap_ms;
        state.subscriber_buffer = config.api.subscriber_buffer;
        state.subscriber_buffer_bytes = config.api.subscriber_buffer_bytes;
        state.subscription_message_bytes = config.api.subscription_message_bytes;
        state.funnel_steps = config.views.view_config()?.funnel_steps;
        Ok(state)
    }
}

/// Reads the rules' log (`kafka.rules_topic`) in process 0, which keeps the rules; `None`
/// in other processes or when the topic is configured empty.
pub fn open_rule_log(
    config: &ServeConfig,
    cluster: &ClusterArgs,
) -> anyhow::Result<Option<(RuleLog, LoggedRules)>> {
    let topic = &config.kafka.rules_topic;
    if cluster.process != 0 || topic.is_empty() {
        return Ok(None);
    }
    let (log, logged) = RuleLog::open(
        &config.kafka.bootstrap,
        topic,
        &config.producer_properties(),
    )?;
    info!(topic = %topic, rules = logged.len(), "alert rules read from their log");
    Ok(Some((log, logged)))
}

/// Runs `clickflow serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::load(args.config.as_deref(), std::env::vars(), &args.set)?;
    // The cluster's options and host file are checked before anything waits for Kafka.
    args.cluster.timely_config()?;
    let rule_log = open_rule_log(&config, &args.cluster)?;
    let service = Service::new(&config, args.cluster.workers as usize, rule_log);
    let background = service.start_background(&config, &args.cluster)?;
    let result = run_service(&config, &args.cluster, &service);
    background.stop();
    result
}

/// Runs the service until `service.shutdown` is set or a part of it fails.
pub fn run_service(
    config: &ServeConfig,
    cluster: &ClusterArgs,
    service: &Service,
) -> anyhow::Result<()> {
    // The API and the view store already run; what starts from here on runs below them.
    priority::lower_current_thread(config.api.dataflow_nice);
    let views = config.views.view_config()?;
    let source_config = Arc::new(config.source_config()?);
    let dead_letters = DeadLetterProducer::new(
        &config.kafka.bootstrap,
        &config.kafka.dead_letter_topic,
        service.status.clone(),
        &config.producer_properties(),
    )?;
    let publishes = cluster.process == 0;
    let writer_stopped = Arc::new(AtomicBool::new(false));
    let (writer, sender) = if publishes {
        let stop = [Arc::clone(&writer_stopped), Arc::clone(&service.shutdown)];
        let on_failure = move || {
            for flag in stop {
                flag.store(true, Ordering::SeqCst);
            }
        };
        let (writer, sender) =
            OutputWriter::start(config.output_config(), service.status.clone(), on_failure)
                .context("cannot start the output writer")?;
        (Some(writer), Some(sender))
    } else {
        (None, None)
    };
    let backpressure = sender
        .as_ref()
        .map(StepSender::backpressure)
        .unwrap_or_default();
    let sender = Mutex::new(sender);
    // Looks the input partitions up until the workers have stopped.
    let topic_watcher =
        TopicWatcher::start(&source_config).context("cannot watch the input topics")?;
    let context = SourceContext {
        status: service.status.clone(),
        dead_letters: dead_letters.clone(),
        measure_freshness: publishes,
        process: cluster.process as usize,
        backpressure,
        inputs: topic_watcher.partitions(),
    };
    let worker_service = service.clone();
    let worker_writer_stopped = Arc::clone(&writer_stopped);
    info!(
        topics = ?config.kafka.input_topics,
        bootstrap = %config.kafka.bootstrap,
        workers = cluster.workers,
        processes = cluster.processes,
        process = cluster.process,
        "starting"
    );
    let guards = timely::execute(cluster.timely_config()?, move |worker| {
        let service = &worker_service;
        let index = worker.index();
        let sender: Option<StepSender> = if index == 0 {
            sender.lock().unwrap_or_else(PoisonError::into_inner).take()
        } else {
            None
        };
        let writer_stopped = Arc::clone(&worker_writer_stopped);
        let shutdown = Arc::clone(&service.shutdown);
        let publish = sender.map(|sender| {
            move |step| {
                if !sender.send(step) {
                    writer_stopped.store(true, Ordering::SeqCst);
                    shutdown.store(true, Ordering::SeqCst);
                }
            }
        });
        let rule_changes = (index == 0).then(|| service.rules.changes());
        let dataflow = worker.next_dataflow_index();
        let built = worker.dataflow::<Time, _, _>(|scope| {
            let probe = ProbeHandle::new();
            let source = kafka_source(
                scope,
                Arc::clone(&source_config),
                context.clone(),
                probe.clone(),
            )?;
            let rules = alert_rules(source.progress.clone(), rule_changes);
            // A rule change must take effect even when every partition is idle.
            let rule_times = rules.inner.clone().map(|(_, time, _)| time);
            source.hear(source.progress.clone().concat(rule_times));
            source.report_to(service.status.clone(), service.store.clone());
            let views = build_views(source.events.as_collection(), rules, &views);
            publish_steps(views.page_views.clone(), views.alerts.clone(), publish);
            views.probe_with(&probe).export(&service.store);
            Ok::<_, clickflow_ingest::KafkaError>(())
        });
        if let Err(error) = built {
            service.shutdown.store(true, Ordering::SeqCst);
            return Err(error.into());
        }
        while !service.shutdown.load(Ordering::SeqCst) {
            worker.step_or_park(Some(PARK));
        }
        worker.drop_dataflow(dataflow);
        Ok::<_, anyhow::Error>(())
    })
    .map_err(|error| anyhow!("cannot start workers: {error}"))?;
    let mut first_error = None;
    for result in guards.join() {
        if let Err(error) = result
            .map_err(|panic| anyhow!("worker failed: {panic}"))
            .and_then(|result| result)
        {
            first_error = first_error.or(Some(error));
        }
    }
    let written = writer
        .map_or(Ok(()), |writer| writer.finish().context("output writer"))
        .and_then(|()| {
            if writer_stopped.load(Ordering::SeqCst) {
                Err(anyhow!("the output writer stopped"))
            } else {
                Ok(())
            }
        });
    // Dead letters are delivered whatever became of the output writer: they are the only
    // trace of the records they stand for.
    let delivered = dead_letters
        .flush(FLUSH_TIMEOUT)
        .context("dead letters not all delivered at shutdown");
    if let (Err(_), Err(lost)) = (&written, &delivered) {
        error!(
            error = format!("{lost:#}"),
            "while stopping for the output writer"
        );
    }
    if let (Err(_), Some(worker)) = (&written, &first_error) {
        error!(error = format!("{worker:#}"), "a worker failed too");
    }
    // The watcher may be in the middle of a lookup (up to seconds with a broker down):
    // waiting for it comes after the output and the dead letters.
    drop(topic_watcher);
    written?;
    delivered?;
    info!("stopped");
    first_error.map_or(Ok(()), Err)
}
