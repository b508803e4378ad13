//! Where clickflow's events come from and where its results go: Kafka in and out, and
//! the load generator.
//!
//! - [`source`]: the Kafka source inside the dataflow, one consumer per worker, with the
//!   partition map of [`partitions`] and the partitions that [`input_topics`] finds;
//! - [`dead_letters`]: refused records, to the dead-letter topic;
//! - [`output`]: the transactional writer of the output topics;
//! - [`rule_log`]: the alert rules created and deleted at run time, kept in a topic;
//! - [`status`]: offsets, lag, counters and freshness, for metrics and status;
//! - [`generator`]: a deterministic, seeded generator of synthetic page-view records
//!   (sessions, Zipf-popular pages, the checkout funnel, and every kind of record that
//!   ends in the dead letters), used by `clickflow generate` and the load generators.
//!
//! Records are decoded and admitted with [`clickflow_events`], the same way for every
//! source.

pub mod admin;
pub mod dead_letters;
pub mod generator;
pub mod input_topics;
pub mod output;
pub mod partitions;
pub mod producer;
mod repeating;
pub mod rule_log;
pub mod source;
mod stall;
pub mod status;

/// A Kafka client failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused or failed an operation.
    #[error("{what}: {source}")]
    Client {
        /// Which client or operation.
        what: &'static str,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The cluster did not answer at all.
    #[error("{what}: cannot reach Kafka at {bootstrap}: {source}")]
    Unreachable {
        /// Which client.
        what: &'static str,
        /// The bootstrap servers.
        bootstrap: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// The output writer panicked.
    #[error("the output writer panicked")]
    WriterPanicked,
}
