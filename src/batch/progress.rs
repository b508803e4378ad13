//! How far `batch` has got, on stderr: on a terminal, a bar of the input read that keeps
//! ticking and then names what the job is doing; otherwise (a log file, a pipe) a log line
//! every few seconds while reading and one at each later phase.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::lock;

/// How often a line is logged while reading when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The progress of one run.
pub enum Progress {
    /// Nothing to show: this process reads no input.
    Hidden,
    /// A bar on the terminal.
    Bar(ProgressBar),
    /// Log lines: the input's size, and when the last line was logged.
    Log {
        total_bytes: u64,
        last: Mutex<Instant>,
    },
}

impl Progress {
    /// Progress through an input of `total_bytes`.
    pub fn new(total_bytes: u64) -> Self {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Self::Log {
                total_bytes,
                last: Mutex::new(Instant::now()),
            };
        }
        let bar = ProgressBar::new(total_bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {wide_bar} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Self::Bar(bar)
    }

    /// `bytes` of the input have been read.
    pub fn read(&self, bytes: u64) {
        match self {
            Self::Hidden => {}
            Self::Bar(bar) => bar.set_position(bytes),
            Self::Log { total_bytes, last } => {
                let mut last = lock(last);
                if last.elapsed() >= LOG_EVERY {
                    *last = Instant::now();
                    tracing::info!(
                        read_mib = bytes >> 20,
                        of_mib = total_bytes >> 20,
                        "batch: reading the input"
                    );
                }
            }
        }
    }

    /// The input is read; the job now does `what`.
    pub fn phase(&self, what: &'static str) {
        match self {
            Self::Hidden => {}
            Self::Bar(bar) => bar.set_message(what),
            Self::Log { .. } => tracing::info!("batch: {what}"),
        }
    }

    /// The job is done: the bar goes.
    pub fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    /// A job that fails leaves no bar ticking over its error.
    fn drop(&mut self) {
        self.finish();
    }
}
