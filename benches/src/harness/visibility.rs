//! Freshness as a reader of the output sees it, measured the same way for clickflow and for
//! the Kafka Streams peer.
//!
//! A [`OutputFollower`] reads a `page-view-counts` topic as a `read_committed` consumer
//! while the load generator sends, and notes when each record reaches it. Afterwards the
//! input topic is read back ([`sent_by_window`]): an event becomes visible with the first
//! record of its window whose count covers it, and its freshness is that moment minus its
//! record timestamp (when the load generator sent it). The events of a window are taken to
//! be counted in the order in which they were sent. Both readers count a window's events
//! from several partitions, so an event can be credited a little early or late, alike for
//! both. The follower fetches as clickflow's source does (`fetch.wait.max.ms` 10 ms).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use clickflow_events::{DEFAULT_MAX_EVENT_BYTES, decode_event, parse_iso8601};
use clickflow_ingest::status::now_ms;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use crate::harness::kafka::{CountValue, assign_from_beginning, bare_consumer_config, read_to_end};

/// A `page-view-counts` record as the follower saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// When it reached the follower, in epoch milliseconds.
    pub seen_ms: i64,
    /// Its window: the page and the window's start in epoch milliseconds.
    pub window: (String, u64),
    /// The window's count.
    pub count: u64,
}

/// A thread that follows a `page-view-counts` topic from its beginning.
pub struct OutputFollower {
    stop: Arc<AtomicBool>,
    /// When the last record arrived (epoch ms; 0 before the first).
    last_seen_ms: Arc<AtomicI64>,
    thread: JoinHandle<anyhow::Result<Vec<Sighting>>>,
}

impl OutputFollower {
    /// Starts following `topic`, which must exist; its partitions are assigned before this
    /// returns.
    pub fn start(bootstrap: &str, topic: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer =
            bare_consumer_config(bootstrap, "bench-ingest-output-follower").create()?;
        assign_from_beginning(&consumer, topic)?;
        let stop = Arc::new(AtomicBool::new(false));
        let last_seen_ms = Arc::new(AtomicI64::new(0));
        let thread = {
            let (stop, last_seen_ms, topic) = (
                Arc::clone(&stop),
                Arc::clone(&last_seen_ms),
                topic.to_owned(),
            );
            std::thread::spawn(move || {
                let mut sightings = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let seen_ms = now_ms();
                    let message = message.with_context(|| format!("following {topic}"))?;
                    let value = message.payload().unwrap_or_default();
                    sightings.push(sighting(seen_ms, value).with_context(|| {
                        format!("a record of {topic} at offset {}", message.offset())
                    })?);
                    last_seen_ms.store(seen_ms, Ordering::Relaxed);
                }
                Ok(sightings)
            })
        };
        Ok(Self {
            stop,
            last_seen_ms,
            thread,
        })
    }

    /// How long ago the last record arrived (since the start, before the first).
    pub fn quiet_for(&self) -> Duration {
        let last = self.last_seen_ms.load(Ordering::Relaxed);
        Duration::from_millis(u64::try_from(now_ms() - last).unwrap_or(0))
    }

    /// Stops following, and returns every record seen, in arrival order.
    pub fn finish(self) -> anyhow::Result<Vec<Sighting>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the output follower panicked"))?
    }
}

fn sighting(seen_ms: i64, value: &[u8]) -> anyhow::Result<Sighting> {
    let value: CountValue = serde_json::from_slice(value)?;
    let start = parse_iso8601(&value.window_start)
        .with_context(|| format!("window_start {:?}", value.window_start))?;
    Ok(Sighting {
        seen_ms,
        window: (value.page, start),
        count: value.count,
    })
}

/// The send times (record timestamps, epoch ms) of the events of `input` by window of
/// `window_ms`, each window's in order. Records that are not events are left out.
pub fn sent_by_window(
    bootstrap: &str,
    input: &str,
    window_ms: u64,
) -> anyhow::Result<HashMap<(String, u64), Vec<i64>>> {
    let mut sent: HashMap<(String, u64), Vec<i64>> = HashMap::new();
    read_to_end(bootstrap, input, "bench-ingest-sent-by-window", |message| {
        let payload = message.payload().unwrap_or_default();
        if let (Ok(event), Some(sent_ms)) = (
            decode_event(payload, DEFAULT_MAX_EVENT_BYTES),
            message.timestamp().to_millis(),
        ) {
            let start = event.time / window_ms * window_ms;
            sent.entry((event.page.to_string(), start))
                .or_default()
                .push(sent_ms);
        }
        Ok(())
    })?;
    for times in sent.values_mut() {
        times.sort_unstable();
    }
    Ok(sent)
}

/// The freshness of events sent in `[from_ms, to_ms)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Visibility {
    /// Each visible event's freshness, in milliseconds, in no particular order.
    pub delays_ms: Vec<f64>,
    /// Events that no record covered.
    pub never_visible: usize,
}

/// When each event sent in `[from_ms, to_ms)` became visible in `sightings`, given the
/// send times of every event by window (`sent`, each window's in order).
pub fn visibility(
    sent: &HashMap<(String, u64), Vec<i64>>,
    sightings: &[Sighting],
    from_ms: i64,
    to_ms: i64,
) -> Visibility {
    let in_range = |time: &i64| (from_ms..to_ms).contains(time);
    let mut covered: HashMap<&(String, u64), usize> = HashMap::new();
    let mut result = Visibility::default();
    for sighting in sightings {
        let Some(times) = sent.get(&sighting.window) else {
            continue;
        };
        let covered = covered.entry(&sighting.window).or_default();
        let count = usize::try_from(sighting.count).map_or(times.len(), |c| c.min(times.len()));
        for time in times.get(*covered..count).unwrap_or_default() {
            if in_range(time) {
                result.delays_ms.push((sighting.seen_ms - time) as f64);
            }
        }
        *covered = (*covered).max(count);
    }
    result.never_visible = sent
        .iter()
        .map(|(window, times)| {
            let covered = covered.get(window).copied().unwrap_or(0);
            times[covered..]
                .iter()
                .filter(|time| in_range(time))
                .count()
        })
        .sum();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(seen_ms: i64, page: &str, start: u64, count: u64) -> Sighting {
        Sighting {
            seen_ms,
            window: (page.to_owned(), start),
            count,
        }
    }

    #[test]
    fn each_event_is_visible_from_the_first_count_that_covers_it() {
        let sent = HashMap::from([
            (("/a".to_owned(), 0), vec![100, 110, 120, 130]),
            (("/b".to_owned(), 0), vec![105]),
            (("/c".to_owned(), 0), vec![115]),
        ]);
        let sightings = [
            seen(140, "/a", 0, 2),
            seen(150, "/b", 0, 1),
            // A repeated count covers nothing new.
            seen(160, "/a", 0, 2),
            seen(170, "/a", 0, 3),
            // A window nobody sent to is not an event.
            seen(175, "/z", 0, 9),
        ];
        let mut visibility = visibility(&sent, &sightings, 105, 125);
        visibility.delays_ms.sort_by(f64::total_cmp);
        // Sent in range: /a at 110 (seen at 140) and 120 (at 170), /b at 105 (at 150);
        // /c at 115 was never seen. /a at 100 and 130 are out of range.
        assert_eq!(visibility.delays_ms, vec![30.0, 45.0, 50.0]);
        assert_eq!(visibility.never_visible, 1);
    }

    #[test]
    fn a_count_beyond_the_events_sent_covers_them_all() {
        let sent = HashMap::from([(("/a".to_owned(), 60_000), vec![10, 20])]);
        let visibility = visibility(&sent, &[seen(50, "/a", 60_000, 7)], 0, 100);
        assert_eq!(visibility.delays_ms, vec![40.0, 30.0]);
        assert_eq!(visibility.never_visible, 0);
    }

    #[test]
    fn a_sighting_reads_the_output_value() {
        let value = br#"{"page":"/p","count":3,"unique_users":2,"window_start":"2026-12-05T07:00:00Z","window_end":"2026-12-05T07:01:00Z"}"#;
        assert_eq!(
            sighting(9, value).unwrap(),
            seen(9, "/p", 1_796_454_000_000, 3)
        );
        assert!(sighting(9, b"{}").is_err());
    }
}
