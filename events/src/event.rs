//! The decoded event and the reasons a record can be refused.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Event time: milliseconds since the Unix epoch, UTC. Events before 1970 are refused as
/// `invalid_timestamp`, so the type is unsigned.
pub type EventTime = u64;

/// One page view that passed decoding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// The user who viewed the page (never empty).
    pub user_id: CompactString,
    /// The page viewed (never empty).
    pub page: CompactString,
    /// Event time in epoch milliseconds (fractions of a millisecond are truncated).
    pub time: EventTime,
}

/// Why a record was routed to the dead letters instead of being counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DeadLetterReason {
    /// Not valid JSON, not a JSON object, or not UTF-8.
    InvalidJson,
    /// `user_id`, `page` or `timestamp` absent or null.
    MissingField,
    /// `user_id` or `page` not a non-empty string.
    InvalidField,
    /// `timestamp` unparseable or out of range.
    InvalidTimestamp,
    /// The record is larger than `max_event_bytes`.
    TooLarge,
    /// Event time older than the watermark minus retention.
    TooLate,
    /// Event time more than `max_future` ahead of the watermark.
    FutureTimestamp,
}

impl DeadLetterReason {
    /// Every reason, in the order of the specification's table.
    pub const ALL: [DeadLetterReason; 7] = [
        Self::InvalidJson,
        Self::MissingField,
        Self::InvalidField,
        Self::InvalidTimestamp,
        Self::TooLarge,
        Self::TooLate,
        Self::FutureTimestamp,
    ];

    /// The reason's wire name, as written to dead-letter outputs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::TooLarge => "too_large",
            Self::TooLate => "too_late",
            Self::FutureTimestamp => "future_timestamp",
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
