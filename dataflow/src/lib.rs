//! The timely/differential dataflow that keeps clickflow's views exactly up to date.
//!
//! Logical time is the watermark: an event enters the dataflow at a time no later than the
//! largest event time admitted before it, and every view retracts state at the watermark
//! where it falls out of retention. A view read at a frontier `F` therefore reflects
//! exactly the events admitted before `F` with retention applied at `F`. There is no
//! tokio, Kafka or gRPC in this crate: sources feed an input collection and results leave
//! through [`ViewStore`].

mod alerts;
mod config;
mod funnel;
mod keyed;
mod multiset;
mod page_sequence;
mod page_views;
mod rows;
mod rules;
mod sessions;
mod stash;
mod steps;
mod store;
mod transitions;
mod views;

pub use alerts::{AlertRule, Comparison, Metric, ViewName};
pub use config::{FunnelStep, ViewConfig};
pub use page_sequence::PageSequence;
pub use rows::{AlertRow, FunnelRow, PageViewRow, SessionRow};
pub use rules::{RuleChanges, alert_rules};
pub use steps::{Step, publish_steps};
pub use store::{AnyRow, TimedUpdates, ViewKind, ViewRead, ViewSnapshot, ViewStore, Visit};
pub use transitions::{AlertState, AlertTransition, alert_transitions, changed_rows};
pub use views::{ArrivedEvent, Time, Views, build_views};
