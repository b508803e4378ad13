//! Running the real `clickflow serve` as a child process: configured by `--set` flags,
//! stopped with SIGTERM as an operator would, its log kept for failure messages.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::metrics::free_port;
use super::run::{TempDir, binary};

/// A running `clickflow serve`.
pub struct Serve {
    child: Option<Child>,
    dir: TempDir,
}

impl Serve {
    /// Starts `clickflow serve ARGS --set ...` (ARGS such as `-w 2`) with the metrics
    /// endpoint off unless `sets` turns it on, and the gRPC API on a free port (see
    /// [`Serve::api_address`]).
    pub fn start(args: &[&str], sets: &[String]) -> Serve {
        let dir = TempDir::new("serve").expect("temp dir");
        let log = File::create(dir.path().join("serve.log")).expect("log file");
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .args(args)
            .args(["--set", "metrics.listen=\"\""])
            .args(["--set", "api.listen=\"127.0.0.1:0\""]);
        for set in sets {
            command.args(["--set", set]);
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("cannot start clickflow serve");
        Serve {
            child: Some(child),
            dir,
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Waits until the log holds `text` at least `times` times; panics with the log after
    /// `timeout`.
    pub fn await_log(&self, text: &str, times: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log().matches(text).count() < times {
            assert!(
                Instant::now() < deadline,
                "`{text}` not {times} times in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The address of the gRPC API, once the log names it (waits up to 30 s).
    pub fn api_address(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(address) = log
                .lines()
                .filter(|line| line.contains("serving gRPC"))
                .find_map(|line| line.split("Some(").nth(1)?.split(')').next())
            {
                return format!("http://{address}");
            }
            assert!(
                Instant::now() < deadline,
                "no gRPC address in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops the service with SIGTERM and returns whether it exited successfully within
    /// 30 s, with its log.
    pub fn stop(self) -> (bool, String) {
        let (exited, log) = self.stop_within(Duration::from_secs(30));
        (exited == Some(true), log)
    }

    /// Stops the service with SIGTERM and returns, with its log, whether it exited
    /// successfully, if it exited within `timeout` (else it is killed).
    pub fn stop_within(mut self, timeout: Duration) -> (Option<bool>, String) {
        let exited = self.terminate(timeout);
        (exited, self.log())
    }

    fn terminate(&mut self, timeout: Duration) -> Option<bool> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status.success());
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
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

/// A timely hostfile in `dir` for `processes` processes on this machine, each on a port
/// that nothing listens on now; returns its path.
pub fn local_hostfile(dir: &TempDir, processes: usize) -> String {
    let path = dir.path().join("hosts");
    let hosts: String = (0..processes)
        .map(|_| format!("127.0.0.1:{}\n", free_port()))
        .collect();
    std::fs::write(&path, hosts).unwrap();
    path.to_str().unwrap().to_owned()
}
