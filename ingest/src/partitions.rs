//! Which worker reads which input partition, and what each worker knows of its own
//! partitions: next offset, admission watermark, and whether the partition is idle (no
//! admitted record for the idle timeout, and nothing left to fetch as far as the consumer
//! knows).
//!
//! Assignment is explicit and deterministic (no consumer group): partition `p` of topic
//! `t` belongs to worker `(p + hash(t)) % peers`. Each topic's partitions are thereby
//! spread round-robin over all workers of all processes, a partition added later lands on
//! a worker without moving any other, and every process computes the same map.

use std::time::{Duration, Instant};

use clickflow_dataflow::Time;
use clickflow_events::{Admission, AdmissionConfig};

/// The global index of the worker that reads `partition` of `topic`, out of `peers`.
pub fn owner(topic: &str, partition: i32, peers: usize) -> usize {
    // FNV-1a: stable across processes, builds and Rust versions, unlike `DefaultHasher`.
    let topic_hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let peers = peers.max(1) as u64;
    ((u64::from(partition.unsigned_abs()) + topic_hash % peers) % peers) as usize
}

/// One partition read by this worker.
#[derive(Debug)]
pub struct OwnedPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Admission against this partition's own watermark.
    pub admission: Admission,
    /// Offset of the next record to read.
    pub next_offset: i64,
    /// When the last admitted record arrived (or the partition was assigned): refused
    /// records are not activity.
    pub last_record: Instant,
    /// Whether the consumer's last statistics showed records not fetched yet (true until
    /// the first statistics): such a partition is behind, not idle.
    pub unfetched: bool,
}

impl OwnedPartition {
    /// A partition assigned now, starting at `next_offset`.
    pub fn new(topic: &str, partition: i32, admission: AdmissionConfig, next_offset: i64) -> Self {
        Self {
            topic: topic.to_owned(),
            partition,
            admission: Admission::new(admission),
            next_offset,
            last_record: Instant::now(),
            unfetched: true,
        }
    }

    /// Whether no record arrived for `idle_timeout` and none is known to be waiting: an
    /// idle partition does not hold back the frontier.
    pub fn is_idle(&self, now: Instant, idle_timeout: Duration) -> bool {
        !self.unfetched && self.is_silent(now, idle_timeout)
    }

    /// Leaves `pause` out of the partition's silence: a time in which nothing was polled
    /// says nothing about whether records came.
    pub fn excuse_silence(&mut self, pause: Duration) {
        self.last_record += pause;
    }

    /// Whether no record arrived for `silence`, up to `now`.
    pub fn is_silent(&self, now: Instant, silence: Duration) -> bool {
        now.duration_since(self.last_record) >= silence
    }
}

/// How a worker's input time advances: see [`input_time`].
#[derive(Clone, Copy, Debug)]
pub struct TimePolicy {
    /// A partition with no record for this long, and none known to be waiting, is idle.
    pub idle_timeout: Duration,
    /// While records arrive, the time advances by whole ticks of this many milliseconds.
    pub tick: Time,
    /// Once no partition has had a record for this long, the time advances to the least
    /// watermark itself.
    pub quiet_after: Duration,
}

/// The logical time a worker's input may advance to, given its partitions.
///
/// Active partitions hold the time at their least watermark, rounded down to a multiple of
/// the tick (an active partition that has admitted nothing yet holds it where it is), so
/// that the events of one tick share a logical time and the views work a tick at a time.
/// Once the input has gone quiet (no record in any partition for `quiet_after`), the time
/// advances to the least watermark itself: the last events of a burst are published then,
/// instead of waiting for records of the next tick or for the idle timeout. With no active
/// partition the worker follows the largest watermark any worker has announced, plus one:
/// everything up to that watermark is then complete as far as this worker is concerned.
pub fn input_time(
    current: Time,
    partitions: &[OwnedPartition],
    now: Instant,
    policy: TimePolicy,
    announced_watermark: Option<Time>,
) -> Time {
    let mut active = partitions
        .iter()
        .filter(|partition| !partition.is_idle(now, policy.idle_timeout))
        .map(|partition| partition.admission.watermark())
        .peekable();
    // Idle partitions have been silent for longer still. Records known to be left to
    // fetch do not count: the statistics that tell come a second apart.
    let quiet = partitions
        .iter()
        .all(|partition| partition.is_silent(now, policy.quiet_after));
    let tick = if quiet { 1 } else { policy.tick.max(1) };
    let target = if active.peek().is_some() {
        active
            .try_fold(Time::MAX, |least, watermark| {
                watermark.map(|w| least.min(w))
            })
            .map_or(current, |least| least - least % tick)
    } else {
        announced_watermark.map_or(current, |watermark| watermark.saturating_add(1))
    };
    current.max(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    // How long before the tests' `now` a partition's last record arrived.
    const JUST_NOW: Duration = Duration::ZERO;
    const A_SECOND_AGO: Duration = Duration::from_secs(1);
    const A_MINUTE_AGO: Duration = Duration::from_secs(60);

    /// Idle after 10 s, quiet after 20 ms, ticks of `tick`.
    fn policy(tick: Time) -> TimePolicy {
        TimePolicy {
            idle_timeout: Duration::from_secs(10),
            tick,
            quiet_after: Duration::from_millis(20),
        }
    }

    fn partition(watermark: Option<Time>, now: Instant, silent_for: Duration) -> OwnedPartition {
        let mut partition = OwnedPartition::new("t", 0, AdmissionConfig::default(), 0);
        if let Some(watermark) = watermark {
            partition.admission.admit(watermark).unwrap();
        }
        partition.last_record = now - silent_for;
        partition.unfetched = false;
        partition
    }

    #[test]
    fn a_pause_in_polling_is_not_silence() {
        let now = Instant::now();
        // Silent for a second before a minute in which nothing was polled.
        let mut paused = partition(Some(1_000), now, A_SECOND_AGO + A_MINUTE_AGO);
        assert!(paused.is_idle(now, policy(1).idle_timeout));
        paused.excuse_silence(A_MINUTE_AGO);
        assert!(!paused.is_idle(now, policy(1).idle_timeout));
        assert!(paused.is_silent(now, A_SECOND_AGO));
        assert!(!paused.is_silent(now, A_SECOND_AGO * 2));
    }

    #[test]
    fn owners_spread_partitions_round_robin_and_do_not_move_when_partitions_are_added() {
        let owners: Vec<usize> = (0..12).map(|p| owner("page-views", p, 4)).collect();
        for worker in 0..4 {
            assert_eq!(
                owners.iter().filter(|&&o| o == worker).count(),
                3,
                "{owners:?}"
            );
        }
        assert_eq!(owner("page-views", 5, 4), owners[5]);
        assert!((0..12).all(|p| owner("x", p, 1) == 0));
    }

    #[test]
    fn the_least_active_watermark_sets_the_time_and_idle_partitions_do_not_count() {
        let now = Instant::now();
        let parts = [
            partition(Some(500), now, JUST_NOW),
            partition(Some(300), now, JUST_NOW),
            partition(Some(100), now, A_MINUTE_AGO),
        ];
        assert_eq!(input_time(0, &parts, now, policy(1), Some(900)), 300);
        assert_eq!(
            input_time(400, &parts, now, policy(1), None),
            400,
            "never goes back"
        );
    }

    #[test]
    fn a_partition_with_records_left_to_fetch_is_not_idle_however_long_its_silence() {
        let now = Instant::now();
        let mut behind = partition(Some(100), now, A_MINUTE_AGO);
        behind.unfetched = true;
        let parts = [partition(Some(500), now, JUST_NOW), behind];
        assert_eq!(input_time(0, &parts, now, policy(1), Some(900)), 100);
        let fresh = OwnedPartition::new("t", 1, AdmissionConfig::default(), 0);
        assert!(
            !fresh.is_idle(now + Duration::from_secs(60), policy(1).idle_timeout),
            "unfetched until the first statistics"
        );
    }

    #[test]
    fn active_partitions_hold_the_time_at_the_start_of_the_least_watermarks_tick() {
        let now = Instant::now();
        let parts = [
            partition(Some(1_234), now, A_SECOND_AGO),
            partition(Some(1_299), now, JUST_NOW),
        ];
        assert_eq!(input_time(0, &parts, now, policy(100), None), 1_200);
        assert_eq!(input_time(0, &parts, now, policy(1_000), None), 1_000);
        assert_eq!(
            input_time(1_210, &parts, now, policy(100), None),
            1_210,
            "never goes back"
        );
    }

    #[test]
    fn once_no_partition_has_had_a_record_for_a_while_the_time_reaches_the_least_watermark() {
        let now = Instant::now();
        let quiet = [
            partition(Some(1_234), now, A_SECOND_AGO),
            partition(Some(1_299), now, A_SECOND_AGO),
        ];
        assert_eq!(input_time(0, &quiet, now, policy(100), None), 1_234);
        assert_eq!(
            input_time(0, &quiet, now, policy(100), Some(5_000)),
            1_234,
            "quiet is not idle: the partitions still hold the time"
        );
        let waiting = [
            partition(Some(1_234), now, A_SECOND_AGO),
            partition(None, now, A_SECOND_AGO),
        ];
        assert_eq!(
            input_time(7, &waiting, now, policy(100), Some(5_000)),
            7,
            "a partition that has admitted nothing still holds the time"
        );
        let records_again = [
            partition(Some(1_250), now, JUST_NOW),
            partition(Some(1_299), now, A_SECOND_AGO),
        ];
        assert_eq!(
            input_time(1_234, &records_again, now, policy(100), None),
            1_234,
            "when records come again, the time goes on by ticks, never back to one"
        );
    }

    #[test]
    fn an_active_partition_without_events_holds_the_time() {
        let now = Instant::now();
        let parts = [
            partition(Some(500), now, JUST_NOW),
            partition(None, now, JUST_NOW),
        ];
        assert_eq!(input_time(7, &parts, now, policy(1), Some(900)), 7);
    }

    #[test]
    fn with_every_partition_idle_the_time_follows_the_announced_watermark() {
        let now = Instant::now();
        let parts = [partition(Some(100), now, A_MINUTE_AGO)];
        assert_eq!(input_time(50, &parts, now, policy(100), Some(900)), 901);
        assert_eq!(input_time(50, &[], now, policy(100), Some(900)), 901);
        assert_eq!(input_time(50, &[], now, policy(100), None), 50);
    }
}
