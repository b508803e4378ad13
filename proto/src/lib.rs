//! The `clickflow.v1` protocol: the code generated at build time from
//! `proto/clickflow/v1/clickflow.proto`, shared by the server, the CLI client and tests.
//!
//! - [`v1`]: the messages and enums, the client
//!   ([`v1::clickflow_client::ClickflowClient`]) and the server
//!   ([`v1::clickflow_server::ClickflowServer`], [`v1::clickflow_server::Clickflow`]);
//! - [`EncodedSubscribeResponse`]: what the server's `Subscribe` streams, a
//!   `SubscribeResponse` encoded once for many subscribers.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.

/// The generated code of package `clickflow.v1`. The `.proto` comments are its docs, so
/// `missing_docs` stays on: an undocumented message or field is a warning here. Only what
/// the generator writes differently from house style is allowed.
pub mod v1 {
    #![allow(unused_qualifications, clippy::all)]
    tonic::include_proto!("clickflow.v1");
    include!(concat!(env!("OUT_DIR"), "/server/clickflow.v1.rs"));
}

mod encoded;

pub use encoded::EncodedSubscribeResponse;

/// The encoded `google.protobuf.FileDescriptorSet` of `clickflow/v1/clickflow.proto`
/// (with source info, so reflection clients see the comments).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/clickflow_v1_descriptor.bin"));
