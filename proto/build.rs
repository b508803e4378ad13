//! Compiles `clickflow/v1/clickflow.proto` with protox (pure Rust, no `protoc`) into a
//! file descriptor set, writes it to `OUT_DIR` for server reflection, and generates the
//! messages, the client and the server from it with tonic-prost-build.

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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())
        .map_err(|error| format!("cannot generate code from {PROTO}: {error}"))
}
