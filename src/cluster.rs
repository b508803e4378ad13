//! `clickflow cluster`: runs `serve` or `batch` as several local processes of one timely
//! cluster, for development.
//!
//! It picks a free loopback port per process, writes them to a host file, and starts the
//! subcommand once per process with `-n`, `-p` and `-h` added (`-w` stays the
//! subcommand's). The processes log to this terminal. In `serve`, only process 0 serves
//! the API; the other processes serve their metrics on free ports (their logs name them).
//! A cluster cannot lose a process, so when one fails, the others are stopped (SIGTERM);
//! SIGINT or SIGTERM to the launcher is passed on to every process, which then shuts
//! down as it would alone. It ends when every process has, and fails if any did.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rustix::process::{Pid, Signal, kill_process};
use tokio::process::{Child, Command};
use tracing::{info, warn};

/// The subcommands that run the dataflow and take the cluster options.
const CLUSTER_SUBCOMMANDS: [&str; 2] = ["serve", "batch"];

/// The options that the launcher sets for each process.
const SET_BY_THE_LAUNCHER: [&str; 6] = ["-n", "--processes", "-p", "--process", "-h", "--hostfile"];

/// How often the launcher looks at its processes.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Arguments of `clickflow cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Number of processes.
    #[arg(short = 'n', long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    processes: u16,
    /// The subcommand each process runs, with its options, after `--`: `serve ...` or
    /// `batch ...` (e.g. `clickflow cluster -n 2 -- batch -w 2 --input FILE --output DIR`).
    #[arg(required = true, last = true, value_name = "SUBCOMMAND")]
    command: Vec<String>,
}

/// Runs the cluster until every process has ended.
pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let subcommand = args.command[0].as_str();
    if !CLUSTER_SUBCOMMANDS.contains(&subcommand) {
        bail!("cluster runs `serve` or `batch`, not `{subcommand}`");
    }
    if let Some(option) = args.command[1..].iter().find(|argument| {
        let name = argument.split('=').next().unwrap_or_default();
        SET_BY_THE_LAUNCHER.contains(&name)
    }) {
        bail!("{option}: cluster sets the processes, process index and host file itself");
    }
    let hostfile = Hostfile::write(args.processes)?;
    let program = std::env::current_exe().context("cannot find this program's path")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the launcher's runtime")?;
    runtime.block_on(supervise(&program, &args, &hostfile.path))
}

/// Starts the processes and waits for them all.
async fn supervise(program: &Path, args: &ClusterArgs, hostfile: &Path) -> anyhow::Result<()> {
    let processes = args.processes.to_string();
    let mut children = Vec::new();
    for process in 0..args.processes {
        let mut command = Command::new(program);
        command
            .args(&args.command)
            .args(["-n", processes.as_str(), "-p", &process.to_string(), "-h"])
            .arg(hostfile);
        if args.command[0] == "serve" && process > 0 {
            command.args(["--set", "metrics.listen=\"127.0.0.1:0\""]);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                stop(&children);
                return Err(error).with_context(|| format!("cannot start process {process}"));
            }
        };
        info!(process, pid = child.id(), "cluster process started");
        children.push(Running { child, ended: None });
    }
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut stopping = false;
    loop {
        for (process, running) in children.iter_mut().enumerate() {
            if running.ended.is_none()
                && let Some(status) = running.child.try_wait()?
            {
                info!(process, %status, "cluster process ended");
                running.ended = Some(status);
            }
        }
        if children.iter().all(|running| running.ended.is_some()) {
            break;
        }
        let failed = children
            .iter()
            .any(|running| running.ended.is_some_and(|status| !status.success()));
        if failed && !stopping {
            warn!("a cluster process failed; stopping the others");
            stop(&children);
            stopping = true;
        }
        tokio::select! {
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
            _ = &mut interrupt, if !stopping => {
                stop(&children);
                stopping = true;
            }
            _ = terminate.recv(), if !stopping => {
                stop(&children);
                stopping = true;
            }
        }
    }
    let failures: Vec<String> = children
        .iter()
        .enumerate()
        .filter_map(|(process, running)| {
            let status = running.ended?;
            (!status.success()).then(|| format!("process {process} {status}"))
        })
        .collect();
    if !failures.is_empty() {
        bail!("the cluster failed: {}", failures.join(", "));
    }
    Ok(())
}

/// A process of the cluster, and how it ended.
struct Running {
    child: Child,
    ended: Option<ExitStatus>,
}

/// Asks every process that is still running to shut down.
fn stop(children: &[Running]) {
    for running in children.iter().filter(|running| running.ended.is_none()) {
        let pid = running
            .child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw);
        if let Some(pid) = pid {
            // A process that has just ended cannot be signalled, which is as good.
            let _ = kill_process(pid, Signal::TERM);
        }
    }
}

/// The cluster's host file: one free loopback `host:port` per process, removed on drop.
struct Hostfile {
    path: PathBuf,
}

impl Hostfile {
    fn write(processes: u16) -> anyhow::Result<Self> {
        // Held together, so that no two get the same port; freed before the processes
        // bind them.
        let listeners = (0..processes)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .context("cannot find free loopback ports")?;
        let mut hosts = String::new();
        for listener in &listeners {
            hosts.push_str(&format!("{}\n", listener.local_addr()?));
        }
        let path =
            std::env::temp_dir().join(format!("clickflow-cluster-{}.hosts", std::process::id()));
        std::fs::write(&path, hosts).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for Hostfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
