//! The gRPC services of `clickflow.v1`: queries, subscriptions, alert rules and status,
//! served from the dataflow's view store, with `grpc.health.v1` and server reflection.
//!
//! - [`queries`]: the unary queries and the status;
//! - [`subscribe`]: the feed of changes, `Subscribe` and `SubscribeAlerts`;
//! - [`rules`]: alert rules as data;
//! - [`convert`]: rows and rules as messages;
//! - [`metrics`]: request durations and subscribers, for Prometheus;
//! - [`service`]: the service and [`serve`].

pub mod convert;
mod error;
pub mod metrics;
pub mod queries;
pub mod rules;
mod service;
mod state;
pub mod subscribe;

pub use error::ApiError;
pub use rules::AlertRules;
pub use service::serve;
pub use state::ApiState;
