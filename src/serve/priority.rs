//! CPU priority of the dataflow against the serving threads.
//!
//! On a saturated machine a query must not queue behind the dataflow's batch work: the
//! API's runtime and the view store's thread keep the process's priority, and the threads
//! that ingest (the timely workers, the Kafka clients' threads, the output writer) run
//! `api.dataflow_nice` nice levels below it. Lowering a thread's priority needs no
//! privilege, and threads inherit it from the thread that starts them, so lowering the
//! thread that starts the dataflow, after the serving threads exist, covers all of it.

use tracing::warn;

/// Lowers the calling thread's priority by `increment` nice levels (to 19 at most); a
/// failure is logged and the thread keeps its priority.
pub fn lower_current_thread(increment: i32) {
    if increment == 0 {
        return;
    }
    let thread = Some(rustix::thread::gettid());
    let lowered = rustix::process::getpriority_process(thread)
        .and_then(|nice| rustix::process::setpriority_process(thread, (nice + increment).min(19)));
    if let Err(error) = lowered {
        warn!(%error, increment, "cannot lower the dataflow's CPU priority; it runs at the API's");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lowered_thread_runs_that_many_nice_levels_lower_and_others_keep_theirs() {
        let own = rustix::process::getpriority_process(Some(rustix::thread::gettid()))
            .expect("own priority");
        let lowered = std::thread::spawn(move || {
            lower_current_thread(3);
            let started = std::thread::spawn(|| {
                rustix::process::getpriority_process(Some(rustix::thread::gettid()))
            });
            (
                rustix::process::getpriority_process(Some(rustix::thread::gettid())),
                started.join().expect("child thread"),
            )
        })
        .join()
        .expect("lowered thread");
        let expected = (own + 3).min(19);
        assert_eq!(lowered.0.expect("lowered priority"), expected);
        assert_eq!(
            lowered.1.expect("inherited priority"),
            expected,
            "inherited"
        );
        let after = rustix::process::getpriority_process(Some(rustix::thread::gettid()))
            .expect("own priority after");
        assert_eq!(after, own, "the calling thread keeps its priority");
    }
}
