//! What the end-to-end benchmarks against a real Kafka share: topics and load
//! ([`kafka`]), the service as a child process ([`serve`]), its metrics ([`metrics`]), the
//! Kafka Streams job it is compared with ([`peer`]), what `/proc` tells of them
//! ([`process`]), and freshness as a reader of the output topic sees it ([`visibility`]).

pub mod kafka;
pub mod metrics;
pub mod peer;
pub mod process;
pub mod serve;
pub mod visibility;
