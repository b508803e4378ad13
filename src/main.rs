//! The `clickflow` binary: parses the command line and runs one subcommand.

mod batch;
mod generate;
mod options;

use clap::{Parser, Subcommand};

/// The dataflow allocates many small, short-lived objects; mimalloc handles them much
/// faster than the system allocator (see benches/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exact, live clickstream analytics.
#[derive(Parser)]
#[command(name = "clickflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compute every view over a JSONL file of events and write the final state as JSONL.
    Batch(batch::BatchArgs),
    /// Write a deterministic synthetic event file (JSONL).
    Generate(generate::GenerateArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Batch(args) => batch::run(args),
        Command::Generate(args) => generate::run(args),
    }
}
