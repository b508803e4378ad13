//! Where clickflow's events come from and where its results go: event sources and sinks
//! outside the dataflow.
//!
//! - [`generator`]: a deterministic, seeded generator of synthetic page-view records
//!   (sessions, Zipf-popular pages, the checkout funnel, and every kind of record that
//!   ends in the dead letters), used by `clickflow generate` and the load generators.
//!
//! Records are decoded and admitted with [`clickflow_events`], the same way for every
//! source.

pub mod generator;
