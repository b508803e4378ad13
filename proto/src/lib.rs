//! The `clickflow.v1` protocol: the `.proto` files under `proto/clickflow/v1/` and the code
//! generated from them, shared by the server, the CLI client and tests. Reserved for the
//! API work; no messages are defined yet.
