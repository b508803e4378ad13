//! What this process's ingest and output have done: per-partition offsets, watermarks
//! and lag, counters, the published frontier and event freshness, shared between the
//! workers that update it and the readers (metrics, status) that show it. In process 0 it
//! also holds what the other processes' workers report (see [`StatusReport`]), so that the
//! status call and the `as_of` offsets cover every partition of a cluster.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clickflow_dataflow::Time;
use clickflow_events::DeadLetterReason;
use serde::{Deserialize, Serialize};

/// The largest freshness the histogram resolves, in milliseconds; slower events count here.
const FRESHNESS_BUCKETS_MS: usize = 60_000;

/// `(time, next_offset)` marks of one partition, oldest first.
type OffsetMarks = VecDeque<(Time, i64)>;

/// Offset marks kept per partition (about the last minutes of activations).
const OFFSET_MARKS: usize = 16_384;

/// Upper bounds (inclusive, ms) of the exported freshness histogram's buckets.
const FRESHNESS_BOUNDS_MS: [usize; 26] = [
    1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 125, 150, 200, 300, 500, 750, 1000,
    2000, 5000, 10_000, 60_000,
];

/// Counts of dead letters, by reason (in [`DeadLetterReason::ALL`] order).
pub type DeadLetterCounts = [u64; DeadLetterReason::ALL.len()];

/// One input partition as its reading worker last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// The global index of the worker reading it.
    pub worker: usize,
    /// The offset of the next record to read.
    pub next_offset: i64,
    /// The partition's high watermark (offset after its last record), when known.
    pub high_watermark: Option<i64>,
    /// The largest event time admitted from the partition.
    pub watermark: Option<Time>,
    /// Whether the partition is idle (no record for the idle timeout).
    pub idle: bool,
}

impl PartitionStatus {
    /// Records not yet read, when the high watermark is known.
    pub fn lag(&self) -> Option<i64> {
        self.high_watermark
            .map(|high| (high - self.next_offset).max(0))
    }
}

/// What a worker of another process than 0 reports to process 0, as data at the logical
/// time at which its latest records entered: the records of each listed partition before
/// its `next_offset` entered at that time or earlier.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The reporting worker's process.
    pub process: usize,
    /// The worker's partitions that changed since its last report.
    pub partitions: Vec<((String, i32), PartitionStatus)>,
    /// Events admitted by the whole process so far.
    pub events_counted: u64,
    /// Dead letters of the whole process so far.
    pub dead_letters: DeadLetterCounts,
}

/// Why a source reads nothing for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseReason {
    /// The output writer's queue is full ([`crate::output::Backpressure`]).
    OutputWriter,
    /// The views' frontier has stood still behind the source.
    Frontier,
    /// A dead letter waits for room in the dead-letter producer's queue
    /// ([`crate::dead_letters::DeadLetterSender`]).
    DeadLetters,
}

impl PauseReason {
    const ALL: [PauseReason; 3] = [
        PauseReason::OutputWriter,
        PauseReason::Frontier,
        PauseReason::DeadLetters,
    ];

    fn as_str(self) -> &'static str {
        match self {
            PauseReason::OutputWriter => "output_writer",
            PauseReason::Frontier => "frontier",
            PauseReason::DeadLetters => "dead_letters",
        }
    }
}

/// Shared ingest and output status of one process. Cloning shares it.
#[derive(Clone)]
pub struct IngestStatus {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    events_counted: AtomicU64,
    dead_letters: [AtomicU64; DeadLetterReason::ALL.len()],
    dead_letter_delivery_failures: AtomicU64,
    output_records: AtomicU64,
    transactions: AtomicU64,
    /// Sources paused now, by [`PauseReason`].
    paused_sources: [AtomicU64; PauseReason::ALL.len()],
    partitions: Mutex<BTreeMap<(String, i32), PartitionStatus>>,
    /// Per partition, `(time, next_offset)` marks: the records before `next_offset`
    /// entered the dataflow at logical times up to `time`.
    offsets: Mutex<BTreeMap<(String, i32), OffsetMarks>>,
    published: Mutex<Published>,
    /// What the other processes reported (process 0 only).
    reported: Mutex<Reported>,
}

/// The other processes' partitions and counters, as they last reported them. The status
/// call shows them; the metrics do not, as each process exports its own.
#[derive(Default)]
struct Reported {
    partitions: BTreeMap<(String, i32), PartitionStatus>,
    /// Per process: events counted and dead letters.
    counters: BTreeMap<usize, (u64, DeadLetterCounts)>,
}

/// The output side: the published frontier and the freshness of the events it covers.
struct Published {
    frontier: Option<Option<Time>>,
    /// Kafka record timestamps (epoch ms) of events entered at each logical time, kept
    /// until a published step covers that time.
    waiting: BTreeMap<Time, Vec<i64>>,
    /// Events by milliseconds from record timestamp to publication.
    freshness_ms: Vec<u64>,
}

impl Default for IngestStatus {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                started: Instant::now(),
                events_counted: AtomicU64::new(0),
                dead_letters: Default::default(),
                dead_letter_delivery_failures: AtomicU64::new(0),
                output_records: AtomicU64::new(0),
                transactions: AtomicU64::new(0),
                paused_sources: Default::default(),
                partitions: Mutex::new(BTreeMap::new()),
                offsets: Mutex::new(BTreeMap::new()),
                published: Mutex::new(Published {
                    frontier: None,
                    waiting: BTreeMap::new(),
                    freshness_ms: vec![0; FRESHNESS_BUCKETS_MS + 1],
                }),
                reported: Mutex::default(),
            }),
        }
    }
}

impl IngestStatus {
    /// Counts events admitted into the views.
    pub fn add_events_counted(&self, events: u64) {
        self.inner
            .events_counted
            .fetch_add(events, Ordering::Relaxed);
    }

    /// Counts one dead letter.
    pub fn add_dead_letter(&self, reason: DeadLetterReason) {
        self.inner.dead_letters[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a dead letter that could not be written to the dead-letter topic.
    pub fn add_dead_letter_delivery_failure(&self) {
        self.inner
            .dead_letter_delivery_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that a source that was paused for `from` (or read) is now paused for `to`
    /// (or reads).
    pub fn change_pause(&self, from: Option<PauseReason>, to: Option<PauseReason>) {
        if from == to {
            return;
        }
        if let Some(from) = from {
            self.inner.paused_sources[from as usize].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(to) = to {
            self.inner.paused_sources[to as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events admitted so far.
    pub fn events_counted(&self) -> u64 {
        self.inner.events_counted.load(Ordering::Relaxed)
    }

    /// Dead letters so far, by reason (in [`DeadLetterReason::ALL`] order).
    pub fn dead_letters(&self) -> DeadLetterCounts {
        std::array::from_fn(|i| self.inner.dead_letters[i].load(Ordering::Relaxed))
    }

    /// Takes in a report of another process's worker, made at logical time `time`.
    pub fn apply_report(&self, time: Time, report: StatusReport) {
        for ((topic, partition), status) in &report.partitions {
            self.record_offset(topic, *partition, time, status.next_offset);
        }
        let mut reported = lock(&self.inner.reported);
        reported.partitions.extend(report.partitions);
        let counters = reported.counters.entry(report.process).or_default();
        // Reports may arrive out of order; counters only grow.
        counters.0 = counters.0.max(report.events_counted);
        for (kept, count) in counters.1.iter_mut().zip(report.dead_letters) {
            *kept = (*kept).max(count);
        }
    }

    /// Every partition of the cluster: this process's and those reported to it.
    pub fn cluster_partitions(&self) -> BTreeMap<(String, i32), PartitionStatus> {
        let mut partitions = lock(&self.inner.reported).partitions.clone();
        partitions.extend(self.partitions());
        partitions
    }

    /// Events counted and dead letters by reason in the whole cluster: by this process and
    /// as reported by the others.
    pub fn cluster_counters(&self) -> (u64, DeadLetterCounts) {
        let mut events = self.events_counted();
        let mut dead_letters = self.dead_letters();
        for (reported_events, reported_dead_letters) in lock(&self.inner.reported).counters.values()
        {
            events += reported_events;
            for (total, count) in dead_letters.iter_mut().zip(reported_dead_letters) {
                *total += count;
            }
        }
        (events, dead_letters)
    }

    /// Replaces what is known of one partition.
    pub fn set_partition(&self, topic: &str, partition: i32, status: PartitionStatus) {
        lock(&self.inner.partitions).insert((topic.to_owned(), partition), status);
    }

    /// Updates one known partition in place.
    pub fn update_partition(
        &self,
        topic: &str,
        partition: i32,
        update: impl FnOnce(&mut PartitionStatus),
    ) {
        let mut partitions = lock(&self.inner.partitions);
        if let Some(status) = partitions.get_mut(&(topic.to_owned(), partition)) {
            update(status);
        }
    }

    /// Every partition read by this process, by `(topic, partition)`.
    pub fn partitions(&self) -> BTreeMap<(String, i32), PartitionStatus> {
        lock(&self.inner.partitions).clone()
    }

    /// Records that the records of a partition before `next_offset` have entered the
    /// dataflow at logical times up to `time`.
    pub fn record_offset(&self, topic: &str, partition: i32, time: Time, next_offset: i64) {
        let mut offsets = lock(&self.inner.offsets);
        let marks = offsets.entry((topic.to_owned(), partition)).or_default();
        match marks.back_mut() {
            Some((last_time, last_offset)) if *last_time == time => *last_offset = next_offset,
            _ => marks.push_back((time, next_offset)),
        }
        if marks.len() > OFFSET_MARKS {
            marks.pop_front();
        }
    }

    /// Per partition (of this process, and those reported to it), the offset of the first
    /// record not reflected by a read at `as_of` (`None`: everything read so far); partitions with nothing known
    /// before `as_of` are left out.
    pub fn offsets_before(&self, as_of: Option<Time>) -> Vec<(String, i32, i64)> {
        let offsets = lock(&self.inner.offsets);
        offsets
            .iter()
            .filter_map(|((topic, partition), marks)| {
                // Marks are in time order: the last one before `as_of` by binary search,
                // as the lock is shared with every worker's activations.
                let before = as_of.map_or(marks.len(), |as_of| {
                    marks.partition_point(|(time, _)| *time < as_of)
                });
                let (_, next_offset) = marks.get(before.checked_sub(1)?)?;
                Some((topic.clone(), *partition, *next_offset))
            })
            .collect()
    }

    /// Remembers the record timestamps of events entered at logical time `time`, so that
    /// their freshness is measured when a published step covers them.
    pub fn await_publication(&self, time: Time, record_timestamps: Vec<i64>) {
        if record_timestamps.is_empty() {
            return;
        }
        lock(&self.inner.published)
            .waiting
            .entry(time)
            .or_default()
            .extend(record_timestamps);
    }

    /// Records that everything before `frontier` (everything, when `None`) is published
    /// with `records` output records in `transactions` transactions.
    pub fn published(&self, frontier: Option<Time>, records: u64, transactions: u64) {
        self.inner
            .output_records
            .fetch_add(records, Ordering::Relaxed);
        self.inner
            .transactions
            .fetch_add(transactions, Ordering::Relaxed);
        let now = now_ms();
        let mut published = lock(&self.inner.published);
        published.frontier = Some(frontier);
        let covered = match frontier {
            Some(frontier) => {
                let later = published.waiting.split_off(&frontier);
                std::mem::replace(&mut published.waiting, later)
            }
            None => std::mem::take(&mut published.waiting),
        };
        for timestamp in covered.into_values().flatten() {
            let delay = usize::try_from((now - timestamp).max(0)).unwrap_or(usize::MAX);
            published.freshness_ms[delay.min(FRESHNESS_BUCKETS_MS)] += 1;
        }
    }

    /// The published frontier: `None` before the first step, `Some(None)` when complete.
    pub fn published_frontier(&self) -> Option<Option<Time>> {
        lock(&self.inner.published).frontier
    }

    /// The `q`-quantile (0..=1) of event freshness in milliseconds, over every published
    /// event so far; `None` before any.
    pub fn freshness_quantile_ms(&self, q: f64) -> Option<u64> {
        let published = lock(&self.inner.published);
        let total: u64 = published.freshness_ms.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (ms, count) in published.freshness_ms.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(ms as u64);
            }
        }
        Some(FRESHNESS_BUCKETS_MS as u64)
    }

    /// Cumulative `_bucket`, `_sum` and `_count` samples of the freshness histogram.
    fn freshness_histogram(&self) -> Vec<(String, String)> {
        let counts = lock(&self.inner.published).freshness_ms.clone();
        let mut samples = Vec::new();
        let mut cumulative = 0;
        let mut previous = 0;
        for bound in FRESHNESS_BOUNDS_MS {
            cumulative += counts[previous..=bound].iter().sum::<u64>();
            previous = bound + 1;
            let le = bound as f64 / 1000.0;
            samples.push((format!("_bucket{{le=\"{le}\"}}"), cumulative.to_string()));
        }
        let total: u64 = counts.iter().sum();
        let sum_ms: u64 = counts
            .iter()
            .enumerate()
            .map(|(ms, count)| ms as u64 * count)
            .sum();
        samples.push(("_bucket{le=\"+Inf\"}".to_owned(), total.to_string()));
        samples.push(("_sum".to_owned(), format!("{:.3}", sum_ms as f64 / 1000.0)));
        samples.push(("_count".to_owned(), total.to_string()));
        samples
    }

    /// The status in the Prometheus text exposition format.
    pub fn prometheus_text(&self) -> String {
        let mut text = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
            write_metric(&mut text, name, kind, help, samples);
        };
        let unlabelled = |value: String| vec![(String::new(), value)];
        metric(
            "clickflow_events_total",
            "counter",
            "Events admitted into the views.",
            unlabelled(self.events_counted().to_string()),
        );
        metric(
            "clickflow_dead_letters_total",
            "counter",
            "Records sent to the dead-letter output, by reason.",
            DeadLetterReason::ALL
                .iter()
                .zip(self.dead_letters())
                .map(|(reason, count)| (format!("{{reason=\"{reason}\"}}"), count.to_string()))
                .collect(),
        );
        metric(
            "clickflow_dead_letter_delivery_failures_total",
            "counter",
            "Dead letters that could not be written to the dead-letter topic.",
            unlabelled(
                self.inner
                    .dead_letter_delivery_failures
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
        );
        let partitions = self.partitions();
        let per_partition = |value: fn(&PartitionStatus) -> Option<String>| {
            partitions
                .iter()
                .filter_map(|((topic, partition), status)| {
                    let labels = format!("{{topic=\"{topic}\",partition=\"{partition}\"}}");
                    value(status).map(|value| (labels, value))
                })
                .collect()
        };
        metric(
            "clickflow_consumer_lag_records",
            "gauge",
            "Records in the partition not read yet.",
            per_partition(|status| status.lag().map(|lag| lag.to_string())),
        );
        metric(
            "clickflow_partition_next_offset",
            "gauge",
            "Offset of the next record to read.",
            per_partition(|status| Some(status.next_offset.to_string())),
        );
        metric(
            "clickflow_partition_watermark_timestamp_seconds",
            "gauge",
            "Largest event time admitted from the partition, in seconds since the epoch.",
            per_partition(|status| status.watermark.map(epoch_seconds)),
        );
        metric(
            "clickflow_partition_idle",
            "gauge",
            "1 when the partition is idle and does not hold back the frontier.",
            per_partition(|status| Some(u8::from(status.idle).to_string())),
        );
        let frontier = self.published_frontier();
        metric(
            "clickflow_frontier_timestamp_seconds",
            "gauge",
            "Published event-time frontier, in seconds since the epoch.",
            frontier
                .flatten()
                .map(|f| unlabelled(epoch_seconds(f)))
                .unwrap_or_default(),
        );
        metric(
            "clickflow_frontier_delay_seconds",
            "gauge",
            "Wall clock minus the published event-time frontier.",
            frontier
                .flatten()
                .map(|f| unlabelled(format!("{:.3}", (now_ms() - f as i64) as f64 / 1000.0)))
                .unwrap_or_default(),
        );
        metric(
            "clickflow_output_records_total",
            "counter",
            "Records written to the output topics.",
            unlabelled(
                self.inner
                    .output_records
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
        );
        metric(
            "clickflow_output_transactions_total",
            "counter",
            "Committed output transactions.",
            unlabelled(self.inner.transactions.load(Ordering::Relaxed).to_string()),
        );
        metric(
            "clickflow_sources_paused",
            "gauge",
            "Sources (one per worker) that read nothing for now, by reason.",
            PauseReason::ALL
                .iter()
                .map(|reason| {
                    let paused =
                        self.inner.paused_sources[*reason as usize].load(Ordering::Relaxed);
                    (
                        format!("{{reason=\"{}\"}}", reason.as_str()),
                        paused.to_string(),
                    )
                })
                .collect(),
        );
        metric(
            "clickflow_freshness_seconds",
            "histogram",
            "Record timestamp (produced) to publication in a committed output step, per event.",
            self.freshness_histogram(),
        );
        metric(
            "clickflow_uptime_seconds",
            "gauge",
            "Seconds since the process started ingesting.",
            unlabelled(format!("{:.3}", self.inner.started.elapsed().as_secs_f64())),
        );
        if let Some(bytes) = resident_memory_bytes() {
            metric(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the process, in bytes.",
                unlabelled(bytes.to_string()),
            );
        }
        text
    }
}

/// The process's resident memory (`VmRSS` in `/proc/self/status`); `None` where there is
/// no such file.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim_end()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// Appends one metric family in the Prometheus text exposition format to `text`: its
/// `HELP` and `TYPE` lines, then a line per sample, each given as what follows the name (a
/// suffix such as `_bucket`, then labels) and its value.
pub fn write_metric(
    text: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, String)>,
) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(text, "{name}{labels} {value}");
    }
}

/// An event time (epoch milliseconds) in seconds since the epoch, exactly: Prometheus'
/// base unit for a timestamp.
fn epoch_seconds(time: Time) -> String {
    format!("{}.{:03}", time / 1000, time % 1000)
}

/// The wall clock in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Locks `mutex`, also after a panic elsewhere left it poisoned (its data stays usable).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_counts_events_once_their_time_is_published() {
        let status = IngestStatus::default();
        let now = now_ms();
        status.await_publication(10, vec![now - 50, now - 50]);
        status.await_publication(20, vec![now - 5_000]);
        status.published(Some(11), 0, 1);
        assert_eq!(
            status
                .freshness_quantile_ms(1.0)
                .map(|ms| (50..1000).contains(&ms)),
            Some(true)
        );
        status.published(None, 0, 1);
        assert!(status.freshness_quantile_ms(1.0).unwrap() >= 5_000);
        assert!(status.freshness_quantile_ms(0.5).unwrap() < 1_000);
        let text = status.prometheus_text();
        assert!(
            text.contains("clickflow_freshness_seconds_bucket{le=\"0.04\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("clickflow_freshness_seconds_bucket{le=\"2\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("clickflow_freshness_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("clickflow_freshness_seconds_count 3\n"),
            "{text}"
        );
    }

    #[test]
    fn reports_of_other_processes_join_the_cluster_status_and_offsets_but_not_the_metrics() {
        let status = IngestStatus::default();
        status.set_partition("t", 0, PartitionStatus::default());
        status.record_offset("t", 0, 5, 10);
        status.add_events_counted(7);
        let remote = |next_offset, events_counted| StatusReport {
            process: 1,
            partitions: vec![(
                ("t".to_owned(), 1),
                PartitionStatus {
                    worker: 2,
                    next_offset,
                    ..PartitionStatus::default()
                },
            )],
            events_counted,
            dead_letters: [1, 0, 0, 0, 0, 0, 0],
        };
        status.apply_report(6, remote(20, 30));
        status.apply_report(9, remote(25, 35));
        // An older report of the counters, arriving late, does not count them back.
        status.apply_report(
            9,
            StatusReport {
                partitions: Vec::new(),
                ..remote(0, 31)
            },
        );
        assert_eq!(
            status.offsets_before(Some(8)),
            vec![("t".to_owned(), 0, 10), ("t".to_owned(), 1, 20)]
        );
        assert_eq!(status.offsets_before(None)[1], ("t".to_owned(), 1, 25));
        let partitions = status.cluster_partitions();
        assert_eq!(partitions.len(), 2);
        assert_eq!(partitions[&("t".to_owned(), 1)].worker, 2);
        let (events, dead_letters) = status.cluster_counters();
        assert_eq!((events, dead_letters[0]), (42, 1));
        assert_eq!(status.partitions().len(), 1);
        let text = status.prometheus_text();
        assert!(text.contains("clickflow_events_total 7\n"), "{text}");
        assert!(!text.contains("partition=\"1\""), "{text}");
    }

    #[test]
    fn offsets_before_an_as_of_are_those_of_the_last_batch_entered_before_it() {
        let status = IngestStatus::default();
        status.record_offset("t", 0, 10, 5);
        status.record_offset("t", 0, 10, 7);
        status.record_offset("t", 0, 20, 9);
        status.record_offset("t", 1, 30, 2);
        assert_eq!(status.offsets_before(Some(10)), vec![]);
        assert_eq!(
            status.offsets_before(Some(11)),
            vec![("t".to_owned(), 0, 7)]
        );
        assert_eq!(
            status.offsets_before(Some(20)),
            vec![("t".to_owned(), 0, 7)]
        );
        assert_eq!(
            status.offsets_before(Some(31)),
            vec![("t".to_owned(), 0, 9), ("t".to_owned(), 1, 2)]
        );
        assert_eq!(
            status.offsets_before(None),
            vec![("t".to_owned(), 0, 9), ("t".to_owned(), 1, 2)]
        );
    }

    #[test]
    fn prometheus_text_has_lag_per_partition_and_dead_letters_by_reason() {
        let status = IngestStatus::default();
        status.set_partition(
            "page-views",
            3,
            PartitionStatus {
                next_offset: 10,
                high_watermark: Some(25),
                watermark: Some(1_764_936_000_005),
                ..PartitionStatus::default()
            },
        );
        status.add_dead_letter(DeadLetterReason::TooLate);
        status.published(Some(1_764_936_000_120), 0, 0);
        let text = status.prometheus_text();
        assert!(
            text.contains(
                "clickflow_consumer_lag_records{topic=\"page-views\",partition=\"3\"} 15\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("clickflow_dead_letters_total{reason=\"too_late\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE clickflow_events_total counter\n"));
        assert!(
            text.contains(
                "clickflow_partition_watermark_timestamp_seconds{topic=\"page-views\",partition=\"3\"} 1764936000.005\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("clickflow_frontier_timestamp_seconds 1764936000.120\n"),
            "{text}"
        );
    }

    #[test]
    fn paused_sources_are_counted_by_their_reason_as_it_changes() {
        let status = IngestStatus::default();
        let shows = |writer: u64, frontier: u64, dead_letters: u64| {
            let text = status.prometheus_text();
            for (reason, paused) in [
                ("output_writer", writer),
                ("frontier", frontier),
                ("dead_letters", dead_letters),
            ] {
                let line = format!("clickflow_sources_paused{{reason=\"{reason}\"}} {paused}\n");
                assert!(text.contains(&line), "{line} in {text}");
            }
        };
        let (writer, frontier) = (Some(PauseReason::OutputWriter), Some(PauseReason::Frontier));
        let dead_letters = Some(PauseReason::DeadLetters);
        status.change_pause(None, frontier);
        status.change_pause(None, frontier);
        status.change_pause(frontier, writer);
        status.change_pause(writer, writer);
        status.change_pause(None, dead_letters);
        shows(1, 1, 1);
        status.change_pause(writer, None);
        status.change_pause(frontier, None);
        status.change_pause(dead_letters, frontier);
        shows(0, 1, 0);
    }
}
