//! Shared support for the integration tests: the `batch` configuration and its five
//! outputs, an independent reference implementation ([`reference`]), a runner for the
//! real binary with readable diffs ([`run`]), input generators ([`generate`]), and for the
//! Kafka tests a client of the real broker ([`kafka`]), a `serve` runner ([`serve`]), its
//! metrics endpoint ([`metrics`]) and the pieces of an end-to-end pipeline test
//! ([`pipeline`]).
//!
//! Each test crate uses a different subset of this module, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod generate;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod reference;
pub mod run;
pub mod serve;
pub mod timestamp;

use serde_json::Value;

/// The flags of `clickflow batch`; `None` means "not passed, use the default".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `--workers`.
    pub workers: Option<u64>,
    /// `--window-ms` (default 60000).
    pub window_ms: Option<u64>,
    /// `--funnel-window-ms` (default 300000).
    pub funnel_window_ms: Option<u64>,
    /// `--session-gap-ms` (default 1800000).
    pub session_gap_ms: Option<u64>,
    /// `--retention-ms` (default 86400000).
    pub retention_ms: Option<u64>,
    /// `--max-future-ms` (default 3600000).
    pub max_future_ms: Option<u64>,
    /// `--max-event-bytes` (default 65536).
    pub max_event_bytes: Option<u64>,
    /// `--high-traffic-threshold` (default 1000).
    pub high_traffic_threshold: Option<u64>,
    /// `--chunk-bytes`: input bytes per chunk; small chunks spread a small file over all
    /// workers, so that parallel decoding and ordered admission are exercised.
    pub chunk_bytes: Option<u64>,
}

impl Config {
    /// Page-view window size.
    pub fn window_ms(&self) -> u64 {
        self.window_ms.unwrap_or(60_000)
    }

    /// Funnel window size.
    pub fn funnel_window_ms(&self) -> u64 {
        self.funnel_window_ms.unwrap_or(300_000)
    }

    /// Session inactivity gap (inclusive).
    pub fn session_gap_ms(&self) -> u64 {
        self.session_gap_ms.unwrap_or(1_800_000)
    }

    /// Retention behind the watermark.
    pub fn retention_ms(&self) -> u64 {
        self.retention_ms.unwrap_or(86_400_000)
    }

    /// How far ahead of the watermark an event may be.
    pub fn max_future_ms(&self) -> u64 {
        self.max_future_ms.unwrap_or(3_600_000)
    }

    /// The largest accepted record, in bytes.
    pub fn max_event_bytes(&self) -> u64 {
        self.max_event_bytes.unwrap_or(65_536)
    }

    /// The `high_traffic` alert threshold (strictly greater fires).
    pub fn high_traffic_threshold(&self) -> u64 {
        self.high_traffic_threshold.unwrap_or(1_000)
    }

    /// The command-line flags for the options that are set.
    pub fn args(&self) -> Vec<String> {
        [
            ("--workers", self.workers),
            ("--window-ms", self.window_ms),
            ("--funnel-window-ms", self.funnel_window_ms),
            ("--session-gap-ms", self.session_gap_ms),
            ("--retention-ms", self.retention_ms),
            ("--max-future-ms", self.max_future_ms),
            ("--max-event-bytes", self.max_event_bytes),
            ("--high-traffic-threshold", self.high_traffic_threshold),
            ("--chunk-bytes", self.chunk_bytes),
        ]
        .into_iter()
        .filter_map(|(flag, value)| Some([flag.to_owned(), value?.to_string()]))
        .flatten()
        .collect()
    }
}

/// The output files of `clickflow batch`, in the order of [`Outputs::rows`].
pub const OUTPUT_FILES: [&str; 5] = [
    "page_views_per_minute.jsonl",
    "user_sessions.jsonl",
    "checkout_funnel.jsonl",
    "alerts.jsonl",
    "dead_letters.jsonl",
];

/// The rows of the five output files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outputs {
    /// `page_views_per_minute.jsonl`.
    pub page_views: Vec<Value>,
    /// `user_sessions.jsonl`.
    pub sessions: Vec<Value>,
    /// `checkout_funnel.jsonl`.
    pub funnel: Vec<Value>,
    /// `alerts.jsonl`.
    pub alerts: Vec<Value>,
    /// `dead_letters.jsonl`.
    pub dead_letters: Vec<Value>,
}

impl Outputs {
    /// Builds outputs from rows listed in the order of [`OUTPUT_FILES`].
    pub fn from_rows(
        [page_views, sessions, funnel, alerts, dead_letters]: [Vec<Value>; 5],
    ) -> Self {
        Outputs {
            page_views,
            sessions,
            funnel,
            alerts,
            dead_letters,
        }
    }

    /// The rows of each file, in the order of [`OUTPUT_FILES`].
    pub fn rows(&self) -> [&[Value]; 5] {
        [
            &self.page_views,
            &self.sessions,
            &self.funnel,
            &self.alerts,
            &self.dead_letters,
        ]
    }
}
