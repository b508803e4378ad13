//! Command-line options shared by the subcommands that run the dataflow.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, FromArgMatches};
use clickflow_dataflow::{FunnelStep, ViewConfig};
use clickflow_events::{AdmissionConfig, DEFAULT_MAX_EVENT_BYTES};
use serde::Deserialize;

/// Sizes of the views and the admission bounds: flags of `batch`, the `[views]` section
/// of `serve`'s configuration file.
#[derive(Args, Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViewArgs {
    /// Tumbling window of page_views_per_minute, in milliseconds.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub window_ms: u64,
    /// Tumbling window of checkout_funnel, in milliseconds.
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub funnel_window_ms: u64,
    /// Largest gap between two events of one session (inclusive), in milliseconds.
    #[arg(long, default_value_t = 1_800_000)]
    pub session_gap_ms: u64,
    /// How long state is kept behind the watermark, in milliseconds.
    #[arg(long, default_value_t = 86_400_000)]
    pub retention_ms: u64,
    /// How far ahead of the watermark an event may be, in milliseconds.
    #[arg(long, default_value_t = 3_600_000)]
    pub max_future_ms: u64,
    /// Largest record, in bytes, that is decoded.
    #[arg(long, default_value_t = DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// Threshold of the built-in high_traffic rule (page_views_per_minute.view_count > N).
    #[arg(long, default_value_t = 1000)]
    pub high_traffic_threshold: u64,
    /// Funnel steps in order, as NAME=PAGE pairs separated by commas.
    #[arg(
        long,
        default_value = "browse=/products,cart=/cart,checkout=/checkout,purchase=/confirmation"
    )]
    pub funnel_steps: String,
}

/// The flags' defaults, so that the file and the flags have one set of defaults.
impl Default for ViewArgs {
    fn default() -> Self {
        let command = ViewArgs::augment_args(clap::Command::new("defaults"));
        let matches = command.get_matches_from(["defaults"]);
        ViewArgs::from_arg_matches(&matches).unwrap_or_else(|error| unreachable!("{error}"))
    }
}

impl ViewArgs {
    /// The views' configuration.
    pub fn view_config(&self) -> anyhow::Result<ViewConfig> {
        for (name, window_ms) in [
            ("window_ms (--window-ms)", self.window_ms),
            (
                "funnel_window_ms (--funnel-window-ms)",
                self.funnel_window_ms,
            ),
        ] {
            if window_ms == 0 {
                bail!("{name}: at least 1");
            }
        }
        Ok(ViewConfig {
            page_window_ms: self.window_ms,
            funnel_window_ms: self.funnel_window_ms,
            session_gap_ms: self.session_gap_ms,
            retention_ms: self.retention_ms,
            funnel_steps: parse_funnel_steps(&self.funnel_steps)?,
        })
    }

    /// The admission bounds.
    pub fn admission_config(&self) -> AdmissionConfig {
        AdmissionConfig {
            retention_ms: self.retention_ms,
            max_future_ms: self.max_future_ms,
        }
    }
}

/// The funnel steps' key in `serve`'s configuration, and their flag in `batch`.
const FUNNEL_STEPS: &str = "funnel_steps (--funnel-steps)";

fn parse_funnel_steps(text: &str) -> anyhow::Result<Vec<FunnelStep>> {
    let steps = text
        .split(',')
        .map(|pair| {
            let (name, page) = pair
                .split_once('=')
                .with_context(|| format!("{FUNNEL_STEPS}: {pair:?} is not NAME=PAGE"))?;
            if name.is_empty() || page.is_empty() {
                bail!("{FUNNEL_STEPS}: {pair:?} has an empty name or page");
            }
            Ok(FunnelStep {
                name: name.into(),
                page: page.into(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (index, step) in steps.iter().enumerate() {
        let earlier = &steps[..index];
        if earlier.iter().any(|earlier| earlier.name == step.name) {
            bail!(
                "{FUNNEL_STEPS}: more than one step is named {:?}",
                step.name
            );
        }
        if earlier.iter().any(|earlier| earlier.page == step.page) {
            bail!(
                "{FUNNEL_STEPS}: page {:?} is used by more than one step",
                step.page
            );
        }
    }
    if steps.len() > usize::from(u8::MAX) {
        bail!("{FUNNEL_STEPS}: at most {} steps", u8::MAX);
    }
    Ok(steps)
}

/// Worker threads and processes (timely's -w, -n, -p, -h).
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub workers: u64,
    /// Number of processes in the cluster.
    #[arg(short = 'n', long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub processes: u64,
    /// This process's index, from 0 to processes - 1.
    #[arg(short = 'p', long, default_value_t = 0)]
    pub process: u64,
    /// File with one host:port per process, in process order (default 127.0.0.1:2101, 2102, ...).
    #[arg(short = 'h', long)]
    pub hostfile: Option<PathBuf>,
}

impl ClusterArgs {
    /// The timely configuration these options describe.
    pub fn timely_config(&self) -> anyhow::Result<timely::Config> {
        let threads = self.workers as usize;
        let processes = self.processes as usize;
        let process = self.process as usize;
        if process >= processes {
            bail!("--process {process} must be less than --processes {processes}");
        }
        let communication = if processes > 1 {
            let addresses = match &self.hostfile {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("--hostfile {}: cannot read", path.display()))?;
                    let addresses: Vec<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .take(processes)
                        .map(String::from)
                        .collect();
                    if addresses.len() < processes {
                        bail!(
                            "--hostfile {} lists {} addresses, --processes needs {processes}",
                            path.display(),
                            addresses.len()
                        );
                    }
                    addresses
                }
                None => (0..processes)
                    .map(|i| format!("127.0.0.1:{}", 2101 + i))
                    .collect(),
            };
            timely::CommunicationConfig::Cluster {
                threads,
                process,
                addresses,
                report: false,
                zerocopy: false,
            }
        } else if threads > 1 {
            timely::CommunicationConfig::Process(threads)
        } else {
            timely::CommunicationConfig::Thread
        };
        Ok(timely::Config {
            communication,
            worker: timely::WorkerConfig::default(),
        })
    }
}
