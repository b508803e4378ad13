//! What the end-to-end benchmarks against a real Kafka share: topics and load
//! ([`kafka`]), the service as a child process ([`serve`]), and its metrics ([`metrics`]).

pub mod kafka;
pub mod metrics;
pub mod serve;
