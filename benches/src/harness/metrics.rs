//! Reading `clickflow serve`'s Prometheus endpoint: a plain HTTP GET over a `TcpStream`,
//! the text exposition format parsed into samples, and the figures the benchmark needs
//! from them (how far ingest has got, and event freshness).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};

/// How long a scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The freshness metric (see `ingest/src/status.rs`).
const FRESHNESS: &str = "clickflow_freshness_seconds";

/// One sample: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of one scrape.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    samples: Vec<Sample>,
}

/// Fetches `/metrics` from `address`.
pub fn scrape(address: SocketAddr) -> anyhow::Result<Scrape> {
    let mut stream = TcpStream::connect_timeout(&address, SCRAPE_TIMEOUT)
        .with_context(|| format!("cannot connect to the metrics endpoint {address}"))?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading the metrics from {address}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{address}/metrics: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("{address}/metrics answered {status:?}");
    }
    Ok(Scrape::parse(body))
}

/// A timestamp gauge's seconds since the epoch in whole milliseconds, as the service's
/// event times are.
fn epoch_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round()
}

impl Scrape {
    /// Parses the text exposition format; comments and unparsable lines are skipped.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(parse_sample)
            .collect();
        Self { samples }
    }

    fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |sample| sample.name == name)
    }

    /// The sum of every sample of `name` (a counter's value, over all its labels).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples(name).map(|sample| sample.value).sum()
    }

    fn value(&self, name: &str) -> Option<f64> {
        self.samples(name).next().map(|sample| sample.value)
    }

    /// How far ingest has got.
    pub fn progress(&self) -> Progress {
        let lags: Vec<f64> = self
            .samples("clickflow_consumer_lag_records")
            .map(|s| s.value)
            .collect();
        let watermarks: Vec<f64> = self
            .samples("clickflow_partition_watermark_timestamp_seconds")
            .map(|s| epoch_ms(s.value))
            .collect();
        Progress {
            records: (self.sum("clickflow_events_total") + self.sum("clickflow_dead_letters_total"))
                as u64,
            partitions: self.samples("clickflow_partition_next_offset").count(),
            partitions_with_lag: lags.len(),
            lag: lags.iter().sum::<f64>() as u64,
            frontier: self
                .value("clickflow_frontier_timestamp_seconds")
                .map(epoch_ms),
            least_watermark: (watermarks.len() == lags.len())
                .then(|| watermarks.into_iter().reduce(f64::min))
                .flatten(),
        }
    }

    /// The cumulative freshness histogram, `(upper bound in seconds, count)` sorted by
    /// bound; empty when the service exposes no histogram.
    fn freshness_buckets(&self) -> Vec<(f64, f64)> {
        self.buckets(FRESHNESS, None)
    }

    /// The cumulative buckets of histogram `name` (of the series with label `label`, if
    /// given), `(upper bound, count)` sorted by bound.
    fn buckets(&self, name: &str, label: Option<(&str, &str)>) -> Vec<(f64, f64)> {
        let mut buckets: Vec<(f64, f64)> = self
            .samples(&format!("{name}_bucket"))
            .filter(|sample| label.is_none_or(|(key, value)| sample.label(key) == Some(value)))
            .filter_map(|sample| {
                let bound = match sample.label("le")? {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().ok()?,
                };
                Some((bound, sample.value))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }

    /// A quantile of the freshness summary, in seconds.
    fn freshness_quantile(&self, quantile: &str) -> Option<f64> {
        self.samples(FRESHNESS)
            .find(|sample| {
                sample
                    .label("quantile")
                    .and_then(|q| q.parse::<f64>().ok())
                    .zip(quantile.parse::<f64>().ok())
                    .is_some_and(|(a, b)| a == b)
            })
            .map(|sample| sample.value)
    }
}

/// Parses `name{key="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => return None,
    };
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(rest) => parse_labels(rest)?,
        None => (Vec::new(), rest),
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `key="value",...}` and returns the labels and what follows the `}`.
fn parse_labels(mut rest: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (at, '"') => break at,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        rest = &after[end + 1..];
    }
}

/// How far the service's ingest has got, from one scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Events counted plus dead letters.
    pub records: u64,
    /// Input partitions assigned.
    pub partitions: usize,
    /// Partitions whose lag is known.
    pub partitions_with_lag: usize,
    /// Total consumer lag over the partitions whose lag is known.
    pub lag: u64,
    /// The published event-time frontier (epoch ms).
    pub frontier: Option<f64>,
    /// The least partition watermark, when every partition has one.
    pub least_watermark: Option<f64>,
}

impl Progress {
    /// Whether all `records` of `partitions` partitions are read and the views have
    /// published everything up to the slowest partition's watermark.
    pub fn caught_up(&self, records: u64, partitions: usize) -> bool {
        self.records >= records
            && self.partitions == partitions
            && self.partitions_with_lag == partitions
            && self.lag == 0
            && self
                .frontier
                .zip(self.least_watermark)
                .is_some_and(|(frontier, least)| frontier >= least)
    }
}

/// The cumulative freshness histogram of the events published between `first` and
/// `last`: `(upper bound in seconds, count)`, sorted by bound; empty without a histogram.
pub fn freshness_histogram_between(first: &Scrape, last: &Scrape) -> Vec<(f64, f64)> {
    histogram_between(first, last, FRESHNESS, None)
}

/// The cumulative histogram `name` (of the series with `label`, if given) of what was
/// observed between `first` and `last`: `(upper bound, count)`, sorted by bound.
pub fn histogram_between(
    first: &Scrape,
    last: &Scrape,
    name: &str,
    label: Option<(&str, &str)>,
) -> Vec<(f64, f64)> {
    let before = first.buckets(name, label);
    last.buckets(name, label)
        .into_iter()
        .map(|(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c);
            (bound, count - earlier)
        })
        .collect()
}

/// The upper bound of the bucket that the `q`-quantile of a cumulative histogram
/// (`(upper bound, count)` sorted by bound) falls in; infinite when it is empty.
pub fn quantile_at_most(counts: &[(f64, f64)], q: f64) -> f64 {
    let total = counts.last().map_or(0.0, |(_, count)| *count);
    let rank = (q * total).ceil().max(1.0);
    counts
        .iter()
        .find(|(_, count)| *count >= rank)
        .map_or(f64::INFINITY, |(bound, _)| *bound)
}

/// Event freshness (record timestamp to publication) as the service reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Freshness {
    /// From a histogram: the upper bounds of the buckets that the quantiles fall in, over
    /// the events published between two scrapes.
    Histogram {
        /// Bucket bound of the median, in seconds.
        p50_at_most: f64,
        /// Bucket bound of the 99th percentile, in seconds.
        p99_at_most: f64,
        /// Events published between the scrapes.
        events: u64,
        /// The mean freshness of those events (from `_sum` and `_count`), in seconds.
        mean: f64,
    },
    /// From a summary: quantiles over every event the service published since it started.
    Summary {
        /// The median, in seconds.
        p50: f64,
        /// The 99th percentile, in seconds.
        p99: f64,
    },
}

impl Freshness {
    /// The freshness of the events published between `first` and `last`, or, if the
    /// service exposes a summary only, the summary in `last`.
    pub fn between(first: &Scrape, last: &Scrape) -> anyhow::Result<Self> {
        let buckets = last.freshness_buckets();
        if buckets.is_empty() {
            let quantile = |q: &str| {
                last.freshness_quantile(q)
                    .with_context(|| format!("no {FRESHNESS}{{quantile=\"{q}\"}} in the metrics"))
            };
            return Ok(Self::Summary {
                p50: quantile("0.5")?,
                p99: quantile("0.99")?,
            });
        }
        let counts = freshness_histogram_between(first, last);
        let events = counts.last().map_or(0.0, |(_, count)| *count);
        if events <= 0.0 {
            bail!("no events were published between the two freshness scrapes");
        }
        let sum = last.sum(&format!("{FRESHNESS}_sum")) - first.sum(&format!("{FRESHNESS}_sum"));
        Ok(Self::Histogram {
            p50_at_most: quantile_at_most(&counts, 0.5),
            p99_at_most: quantile_at_most(&counts, 0.99),
            events: events as u64,
            mean: sum / events,
        })
    }

    /// The 99th percentile (a bucket's upper bound for a histogram), in seconds.
    pub fn p99(&self) -> f64 {
        match self {
            Self::Histogram { p99_at_most, .. } => *p99_at_most,
            Self::Summary { p99, .. } => *p99,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE clickflow_events_total counter
clickflow_events_total 90
clickflow_dead_letters_total{reason=\"invalid_json\"} 4
clickflow_dead_letters_total{reason=\"too_late\"} 6
clickflow_consumer_lag_records{topic=\"t\",partition=\"0\"} 0
clickflow_consumer_lag_records{topic=\"t\",partition=\"1\"} 0
clickflow_partition_next_offset{topic=\"t\",partition=\"0\"} 50
clickflow_partition_next_offset{topic=\"t\",partition=\"1\"} 50
clickflow_partition_watermark_timestamp_seconds{topic=\"t\",partition=\"0\"} 1764936000.001
clickflow_partition_watermark_timestamp_seconds{topic=\"t\",partition=\"1\"} 1764936000.000
clickflow_frontier_timestamp_seconds 1764936000.000
clickflow_freshness_seconds{quantile=\"0.5\"} 0.012
clickflow_freshness_seconds{quantile=\"0.99\"} 0.080
";

    #[test]
    fn progress_adds_dead_letters_and_compares_the_frontier_with_the_least_watermark() {
        let progress = Scrape::parse(TEXT).progress();
        assert_eq!(progress.records, 100);
        assert_eq!(progress.least_watermark, Some(1_764_936_000_000.0));
        assert!(progress.caught_up(100, 2));
        assert!(!progress.caught_up(101, 2));
        assert!(!progress.caught_up(100, 3));
    }

    #[test]
    fn a_summary_is_read_as_it_is() {
        let scrape = Scrape::parse(TEXT);
        let freshness = Freshness::between(&Scrape::default(), &scrape).unwrap();
        assert_eq!(
            freshness,
            Freshness::Summary {
                p50: 0.012,
                p99: 0.080
            }
        );
    }

    #[test]
    fn histogram_quantiles_come_from_the_difference_of_two_scrapes() {
        let histogram = |counts: [u64; 4]| {
            let bounds = ["0.01", "0.05", "0.1", "+Inf"];
            let mut lines: Vec<String> = bounds
                .iter()
                .zip(counts)
                .map(|(le, count)| {
                    format!("clickflow_freshness_seconds_bucket{{le=\"{le}\"}} {count}")
                })
                .collect();
            lines.push(format!("clickflow_freshness_seconds_sum {}", counts[3] * 2));
            Scrape::parse(&lines.join("\n"))
        };
        // Before: 1,000 slow events at start-up; between the scrapes: 60 under 10 ms,
        // 39 under 50 ms and 1 under 100 ms.
        let first = histogram([0, 0, 0, 1000]);
        let last = histogram([60, 99, 100, 1100]);
        assert_eq!(
            Freshness::between(&first, &last).unwrap(),
            Freshness::Histogram {
                p50_at_most: 0.01,
                p99_at_most: 0.05,
                events: 100,
                mean: 2.0,
            }
        );
    }
}
