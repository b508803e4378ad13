//! Compiles `clickflow/v1/clickflow.proto` with protox (pure Rust, no `protoc`) into a
//! file descriptor set, writes it to `OUT_DIR` for server reflection, and generates code
//! from it with tonic-prost-build in two passes: the messages and the client into
//! `OUT_DIR`, then the server alone into `OUT_DIR/server`. The server pass uses the first
//! pass's messages, except that `Subscribe` streams `EncodedSubscribeResponse`s: messages
//! encoded once and sent as they are to every subscriber.

use std::path::PathBuf;

const PROTO: &str = "clickflow/v1/clickflow.proto";

fn main() {
    if let Err(error) = generate() {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn generate() -> Result<(), String> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    // protox's Debug, not Display, names the file, line and column of an error.
    let mut compiler = protox::Compiler::new(["."]).map_err(|error| format!("{error:?}"))?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_file(PROTO)
        .map_err(|error| format!("{error:?}"))?;
    for file in compiler.files() {
        if let Some(path) = file.path() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let descriptor_path = out_dir.join("clickflow_v1_descriptor.bin");
    std::fs::write(&descriptor_path, compiler.encode_file_descriptor_set())
        .map_err(|error| format!("cannot write {}: {error}", descriptor_path.display()))?;
    let generated = |error: std::io::Error| format!("cannot generate code from {PROTO}: {error}");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(compiler.file_descriptor_set())
        .map_err(generated)?;
    let server_dir = out_dir.join("server");
    std::fs::create_dir_all(&server_dir)
        .map_err(|error| format!("cannot create {}: {error}", server_dir.display()))?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&server_dir)
        .extern_path(".clickflow.v1", "crate::v1")
        .extern_path(
            ".clickflow.v1.SubscribeResponse",
            "crate::EncodedSubscribeResponse",
        )
        .compile_fds(compiler.file_descriptor_set())
        .map_err(generated)
}
