//! Flow control that reaches every process: a source pauses while the views' frontier has
//! stood still for long and the source's time is ahead of it.
//!
//! When the output writer cannot write, worker 0 of process 0 waits, and the frontier of
//! the views stops where that worker is. [`crate::output::Backpressure`] pauses the
//! sources of process 0 at once; the sources of other processes learn of it only through
//! the frontier, which every worker sees. A source whose time is ahead of a frontier that
//! has not moved for the stall time polls nothing until it moves, so that the records it
//! would read wait in Kafka rather than in the dataflow's memory (librdkafka's prefetch
//! queue, bounded, still fills).
//!
//! The worker that holds the frontier is never ahead of it, so it keeps reading: a
//! frontier held back by a partition that is slow, or has not spoken yet, moves on as
//! before, and the others read again once it does. The stall time is longer than the idle
//! timeout, after which silent partitions mostly stop holding the frontier back.

use std::time::{Duration, Instant};

use clickflow_dataflow::Time;

/// Watches the views' frontier for a source.
#[derive(Debug)]
pub(crate) struct FrontierStall {
    /// How long the frontier must stand still before a source ahead of it pauses.
    stall: Duration,
    /// The frontier as last seen, and since when it has been there.
    frontier: Option<Time>,
    since: Instant,
}

impl FrontierStall {
    /// A watch that pauses sources after the frontier has stood still for `stall`.
    pub(crate) fn new(stall: Duration, now: Instant) -> Self {
        Self {
            stall,
            frontier: None,
            since: now,
        }
    }

    /// Whether a source at `time` should pause `now`, the views' frontier being `frontier`
    /// (`None` once the views are complete).
    pub(crate) fn holds_back(&mut self, frontier: Option<Time>, time: Time, now: Instant) -> bool {
        if frontier != self.frontier {
            self.frontier = frontier;
            self.since = now;
        }
        frontier.is_some_and(|frontier| frontier < time)
            && now.duration_since(self.since) >= self.stall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(15);

    #[test]
    fn a_source_ahead_of_a_frontier_that_stands_still_pauses_until_it_moves() {
        let start = Instant::now();
        let mut watch = FrontierStall::new(STALL, start);
        assert!(!watch.holds_back(Some(100), 500, start));
        assert!(!watch.holds_back(Some(100), 500, start + STALL / 2));
        assert!(watch.holds_back(Some(100), 500, start + STALL));
        // The frontier moves: the source reads again, and pauses only after another stall.
        let moved = start + STALL + Duration::from_secs(1);
        assert!(!watch.holds_back(Some(200), 500, moved));
        assert!(!watch.holds_back(Some(200), 500, moved + STALL / 2));
        assert!(watch.holds_back(Some(200), 500, moved + STALL));
    }

    #[test]
    fn the_source_that_holds_the_frontier_never_pauses() {
        let start = Instant::now();
        let mut watch = FrontierStall::new(STALL, start);
        watch.holds_back(Some(100), 100, start);
        assert!(!watch.holds_back(Some(100), 100, start + STALL * 10));
        assert!(!watch.holds_back(None, 100, start + STALL * 20));
    }
}
