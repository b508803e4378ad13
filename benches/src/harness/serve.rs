//! `clickflow serve` as a child process: started with `--set` overrides and its metrics on
//! a free local port, watched through `/metrics` and `/proc`, stopped with SIGTERM as an
//! operator would. Its log goes to a file, whose tail is part of any failure.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::harness::metrics::{Scrape, scrape};
use crate::harness::process::{cpu_seconds, log_tail, peak_rss_bytes, threads_cpu_seconds};

/// How often `/metrics` is read while waiting.
const POLL: Duration = Duration::from_millis(25);

/// How long the service may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `clickflow serve`.
pub struct Serve {
    child: Option<Child>,
    metrics: SocketAddr,
    log: PathBuf,
    started: Instant,
}

impl Serve {
    /// Starts `BINARY serve -w WORKERS [--config CONFIG] --set KEY=VALUE...` with the
    /// metrics endpoint on a free port, logging (at `info`) to `log`.
    pub fn start(
        binary: &Path,
        workers: usize,
        config: Option<&Path>,
        sets: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let metrics = free_local_address()?;
        let log_file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(binary);
        command.arg("serve").args(["-w", &workers.to_string()]);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command.args(["--set", &format!("metrics.listen=\"{metrics}\"")]);
        for set in sets {
            command.args(["--set", set]);
        }
        let started = Instant::now();
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {} serve", binary.display()))?;
        Ok(Self {
            child: Some(child),
            metrics,
            log: log.to_owned(),
            started,
        })
    }

    /// Time since the process was spawned.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Reads `/metrics` until `done` holds for a scrape, and returns that scrape. Fails if
    /// the process exits or `timeout` passes first; scrapes that fail while the process
    /// runs (the endpoint is not up yet) are retried.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Scrape) -> bool,
    ) -> anyhow::Result<Scrape> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let last = match scrape(self.metrics) {
                Ok(scrape) if done(&scrape) => return Ok(scrape),
                Ok(scrape) => format!("last progress: {:?}", scrape.progress()),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "clickflow serve: not {what} after {timeout:?} ({last}); log {} ends with:\n{}",
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Reads `/metrics` once.
    pub fn scrape(&mut self) -> anyhow::Result<Scrape> {
        self.check_running()?;
        scrape(self.metrics)
    }

    /// The process's peak resident set size (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        let child = self.child.as_ref().context("clickflow serve was stopped")?;
        peak_rss_bytes(child.id())
    }

    /// CPU time the process has used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let child = self.child.as_ref().context("clickflow serve was stopped")?;
        cpu_seconds(child.id())
    }

    /// CPU time the service's API threads have used so far, in seconds.
    pub fn api_cpu_seconds(&self) -> anyhow::Result<f64> {
        let child = self.child.as_ref().context("clickflow serve was stopped")?;
        threads_cpu_seconds(&child.id().to_string(), "clickflow-api")
    }

    /// Stops the service with SIGTERM and waits for it; fails if it does not exit
    /// successfully within a minute.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("clickflow serve was not running");
        };
        let signalled = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("cannot run kill")?;
        if !signalled.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                bail!(
                    "clickflow serve exited with {status} after SIGTERM; log {} ends with:\n{}",
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            std::thread::sleep(POLL);
        }
        child.kill()?;
        child.wait()?;
        bail!(
            "clickflow serve did not stop within {STOP_TIMEOUT:?} of SIGTERM; log {}",
            self.log.display()
        )
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_mut().context("clickflow serve was stopped")?;
        if let Some(status) = child.try_wait()? {
            bail!(
                "clickflow serve exited early with {status}; log {} ends with:\n{}",
                self.log.display(),
                log_tail(&self.log)
            );
        }
        Ok(())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free address on the loopback interface (bound once, then released).
pub fn free_local_address() -> anyhow::Result<SocketAddr> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot find a free local port")?;
    Ok(listener.local_addr()?)
}
