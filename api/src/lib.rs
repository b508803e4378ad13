//! The gRPC services of `clickflow.v1`: queries, subscriptions, alert rules and status,
//! served from the dataflow's view store. Reserved for the API work; nothing is served yet.
