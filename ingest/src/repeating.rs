//! A thread of its own that repeats a task at an interval until its handle is dropped. A
//! run that panics is logged, and the task runs again at the next interval: a background
//! task that stopped for good would go unnoticed (no new partitions, no delivery reports).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::error;

use crate::KafkaError;

/// A thread that runs a task at once and then every interval; dropping this stops it
/// (after the run in progress) and waits for it.
pub(crate) struct Repeating {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Repeating {
    /// Starts thread `name`, which runs `task` every `interval`.
    pub(crate) fn start(
        name: &'static str,
        interval: Duration,
        mut task: impl FnMut() + Send + 'static,
    ) -> Result<Self, KafkaError> {
        let (stop, stopped) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                loop {
                    if catch_unwind(AssertUnwindSafe(&mut task)).is_err() {
                        error!(thread = name, "a background task panicked; it runs again");
                    }
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(|source| KafkaError::Thread { name, source })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Repeating {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn the_task_runs_at_once_and_not_after_the_handle_is_dropped() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let repeating = Repeating::start("test-repeating", Duration::from_secs(3600), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        while runs.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        // The drop waits for the thread, which ends without waiting out its interval.
        drop(repeating);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_run_that_panics_is_followed_by_the_next_one() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let repeating = Repeating::start("test-panicking", Duration::from_millis(1), move || {
            assert!(
                counted.fetch_add(1, Ordering::SeqCst) > 0,
                "the first run panics"
            );
        })
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "no run after the panic"
            );
            std::thread::yield_now();
        }
        drop(repeating);
    }
}
