//! The API's own metrics, in Prometheus text: how long each unary method takes in the
//! server (from the handler's start to its answer: waiting for the view store, the query
//! and the conversion to messages, not the network), and the subscribers connected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clickflow_ingest::status::write_metric;

/// The unary methods that are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `QueryPageViews`.
    QueryPageViews,
    /// `TopPages`.
    TopPages,
    /// `QuerySessions`.
    QuerySessions,
    /// `QueryFunnel`.
    QueryFunnel,
    /// `ListAlerts`.
    ListAlerts,
    /// `GetStatus`.
    GetStatus,
}

impl Method {
    const ALL: [Method; 6] = [
        Self::QueryPageViews,
        Self::TopPages,
        Self::QuerySessions,
        Self::QueryFunnel,
        Self::ListAlerts,
        Self::GetStatus,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::QueryPageViews => "QueryPageViews",
            Self::TopPages => "TopPages",
            Self::QuerySessions => "QuerySessions",
            Self::QueryFunnel => "QueryFunnel",
            Self::ListAlerts => "ListAlerts",
            Self::GetStatus => "GetStatus",
        }
    }
}

/// Upper bounds of the duration histogram's buckets, in microseconds.
const BOUNDS_US: [u64; 16] = [
    25, 50, 100, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000,
    1_000_000,
];

/// One method's histogram: a count per bucket (the last one unbounded) and the sum.
#[derive(Default)]
struct Durations {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_ns: AtomicU64,
}

/// Request durations per method, recorded from any thread.
#[derive(Default)]
pub struct RequestDurations {
    methods: [Durations; Method::ALL.len()],
}

impl RequestDurations {
    /// Counts one request of `method` that took `elapsed`.
    pub fn record(&self, method: Method, elapsed: Duration) {
        let durations = &self.methods[method as usize];
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(BOUNDS_US.len());
        durations.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        durations.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// `clickflow_api_request_duration_seconds` and `clickflow_api_subscribers`.
    pub fn prometheus_text(&self, subscribers: usize) -> String {
        let mut samples = Vec::new();
        for method in Method::ALL {
            let durations = &self.methods[method as usize];
            let name = method.name();
            let mut cumulative = 0;
            for (index, count) in durations.buckets.iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                let bound = BOUNDS_US
                    .get(index)
                    .map_or("+Inf".to_owned(), |us| (*us as f64 / 1e6).to_string());
                samples.push((
                    format!("_bucket{{method=\"{name}\",le=\"{bound}\"}}"),
                    cumulative.to_string(),
                ));
            }
            let sum = durations.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            samples.push((format!("_sum{{method=\"{name}\"}}"), sum.to_string()));
            samples.push((
                format!("_count{{method=\"{name}\"}}"),
                cumulative.to_string(),
            ));
        }
        let mut text = String::new();
        write_metric(
            &mut text,
            "clickflow_api_request_duration_seconds",
            "histogram",
            "Time the server took to answer a unary request, by method.",
            samples,
        );
        write_metric(
            &mut text,
            "clickflow_api_subscribers",
            "gauge",
            "Subscriptions connected now.",
            [(String::new(), subscribers.to_string())],
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_cumulative_buckets_by_method() {
        let durations = RequestDurations::default();
        durations.record(Method::TopPages, Duration::from_micros(40));
        durations.record(Method::TopPages, Duration::from_micros(1_000));
        durations.record(Method::TopPages, Duration::from_secs(3));
        durations.record(Method::QuerySessions, Duration::from_micros(10));
        let text = durations.prometheus_text(7);
        for expected in [
            "clickflow_api_request_duration_seconds_bucket{method=\"TopPages\",le=\"0.000025\"} 0\n",
            "clickflow_api_request_duration_seconds_bucket{method=\"TopPages\",le=\"0.00005\"} 1\n",
            "clickflow_api_request_duration_seconds_bucket{method=\"TopPages\",le=\"0.001\"} 2\n",
            "clickflow_api_request_duration_seconds_bucket{method=\"TopPages\",le=\"1\"} 2\n",
            "clickflow_api_request_duration_seconds_bucket{method=\"TopPages\",le=\"+Inf\"} 3\n",
            "clickflow_api_request_duration_seconds_count{method=\"TopPages\"} 3\n",
            "clickflow_api_request_duration_seconds_sum{method=\"TopPages\"} 3.00104\n",
            "clickflow_api_request_duration_seconds_bucket{method=\"QuerySessions\",le=\"0.000025\"} 1\n",
            "clickflow_api_request_duration_seconds_count{method=\"GetStatus\"} 0\n",
            "clickflow_api_subscribers 7\n",
            "# TYPE clickflow_api_request_duration_seconds histogram\n",
            "# TYPE clickflow_api_subscribers gauge\n",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
