//! What the harnesses read about the processes they start, from `/proc`: CPU time, of a
//! process or of some of its threads, and peak memory; and the tail of a log file to show
//! with a failure.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Context;

/// Lines of a log shown with a failure.
const LOG_TAIL: usize = 30;

/// The last lines of the log file `log`, to show with a failure.
pub fn log_tail(log: &Path) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}

/// The peak resident set size (`VmHWM`) of process `pid`, in bytes.
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM in {path}"))?;
    Ok(kib * 1024)
}

/// CPU time process `pid` has used so far (user + system), in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU time the threads of `process` (a pid, or `self`) whose names start with `prefix`
/// have used so far (user + system), in seconds.
pub fn threads_cpu_seconds(process: &str, prefix: &str) -> anyhow::Result<f64> {
    let tasks = format!("/proc/{process}/task");
    let mut seconds = 0.0;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("cannot list {tasks}"))? {
        let task = task?.path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if name.starts_with(prefix) {
            seconds += stat_cpu_seconds(&task.join("stat").to_string_lossy())?;
        }
    }
    Ok(seconds)
}

/// The CPU time (user + system) in seconds in a `/proc` `stat` file.
fn stat_cpu_seconds(path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces: state
    // is field 3, utime field 14 and stime field 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .with_context(|| format!("unexpected {path}"))?
        .1
        .split_whitespace()
        .collect();
    let ticks = |field: usize| -> anyhow::Result<f64> {
        let value = fields
            .get(field - 3)
            .with_context(|| format!("short {path}"))?;
        Ok(value.parse::<f64>()?)
    };
    Ok((ticks(14)? + ticks(15)?) / clock_ticks_per_second())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), 100 if it cannot be asked.
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
