//! Page-view events as they arrive: the event model, the JSON decoder, ISO-8601 and
//! epoch-millisecond timestamps, dead-letter reasons, and admission against the watermark.
//!
//! Everything here is plain Rust with no dataflow or I/O, so every source (JSONL files,
//! Kafka partitions, the generator) decodes and admits events the same way.

mod admission;
mod decode;
mod event;
mod timestamp;

pub use admission::{Admission, AdmissionConfig};
pub use decode::{DEFAULT_MAX_EVENT_BYTES, decode_event};
pub use event::{DeadLetterReason, Event, EventTime};
pub use timestamp::{MAX_EVENT_TIME, format_iso8601_instant, format_iso8601_utc, parse_iso8601};
