//! What the end-to-end benchmarks against a real Kafka share: topics and load
//! ([`kafka`]), the service as a child process ([`serve`]), its metrics ([`metrics`]), the
//! Kafka Streams job it is compared with ([`peer`]), and what `/proc` tells of them
//! ([`process`]).

pub mod kafka;
pub mod metrics;
pub mod peer;
pub mod process;
pub mod serve;
