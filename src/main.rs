//! The `clickflow` binary: parses the command line and runs one subcommand.

mod batch;
mod client;
mod cluster;
mod demo;
mod generate;
mod options;
mod produce;
mod serve;
mod topics;

use clap::{Parser, Subcommand};

/// The dataflow allocates many small, short-lived objects; mimalloc handles them much
/// faster than the system allocator (see benches/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for them on its
/// arenas, and the first touch of a huge page makes the kernel zero all 2 MiB of it: as
/// the views' state grows and large buffers come and go, that zeroing took a quarter of
/// the service's CPU while catching up. Without them, `batch` takes 15–40% less time and a
/// catch-up a fifth to a quarter less CPU (see benches/RESULTS.md, tenth sitting).
fn disable_transparent_huge_pages() -> std::io::Result<()> {
    rustix::thread::disable_transparent_huge_pages(true).map_err(std::io::Error::from)
}

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
    /// Run `serve` or `batch` as several local processes of one cluster, for development.
    Cluster(cluster::ClusterArgs),
    /// Write a deterministic synthetic event file (JSONL).
    Generate(generate::GenerateArgs),
    /// Run everything with nothing installed: an in-process Kafka, the generator, the
    /// service, and the live views in the terminal.
    Demo(demo::DemoArgs),
    /// Run the service: Kafka in, live views, Kafka out, metrics.
    Serve(serve::ServeArgs),
    /// Create the reference topics (input, dead letters, counts, alerts).
    Topics(topics::TopicsArgs),
    /// Send generated page views to Kafka with the reference producer's settings.
    Produce(produce::ProduceArgs),
    /// Query a view of a running server: page views, top pages, sessions, the funnel.
    Query(client::query::QueryArgs),
    /// Follow a view of a running server live: snapshot, then updates and progress.
    Subscribe(client::subscribe::SubscribeArgs),
    /// The alerts of a running server: current alerts, rules, and live transitions.
    Alerts(client::alerts::AlertsArgs),
    /// A running server's frontier, partitions, lag and counters.
    Status(client::status::StatusArgs),
}

fn main() -> anyhow::Result<()> {
    let huge_pages = disable_transparent_huge_pages();
    let command = Cli::parse().command;
    // The demo draws on the terminal: only warnings may interrupt it, unless RUST_LOG says.
    let default_level = if matches!(command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or a pipe gets plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
        )
        .init();
    if let Err(error) = huge_pages {
        tracing::warn!(%error, "cannot turn transparent huge pages off; running with them");
    }
    match command {
        Command::Batch(args) => batch::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Topics(args) => topics::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Query(args) => client::query::run(args),
        Command::Subscribe(args) => client::subscribe::run(args),
        Command::Alerts(args) => client::alerts::run(args),
        Command::Status(args) => client::status::run(args),
    }
}
