//! `clickflow generate`: writes a deterministic synthetic event file (JSON lines) with
//! [`clickflow_ingest::generator`], for `clickflow batch` and for benchmarks.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clickflow_events::AdmissionConfig;
use clickflow_ingest::generator::{Generator, GeneratorConfig, Record};
use indicatif::{ProgressBar, ProgressStyle};

/// Records written between two progress bar updates.
const PROGRESS_EVERY: u64 = 1 << 16;

/// Arguments of `clickflow generate`. Defaults are [`GeneratorConfig::default`]'s.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// File to write, one JSON record per line (replaced if it exists).
    #[arg(long, short)]
    output: PathBuf,
    /// Number of records (lines) to write.
    #[arg(long, default_value_t = GeneratorConfig::default().events)]
    events: u64,
    /// Event time of the first record, in epoch milliseconds.
    #[arg(long, default_value_t = GeneratorConfig::default().start_ms)]
    start_ms: u64,
    /// Event-time span of the file, in milliseconds.
    #[arg(long, default_value_t = GeneratorConfig::default().duration_ms)]
    duration_ms: u64,
    #[command(flatten)]
    generator: GeneratorArgs,
}

/// The generator's parameters that `clickflow generate` and `clickflow produce` share:
/// the seed, the population and the mix of records. Defaults are
/// [`GeneratorConfig::default`]'s.
#[derive(Debug, clap::Args)]
pub struct GeneratorArgs {
    /// Seed: the same seed and parameters give byte-identical records on any machine.
    #[arg(long, default_value_t = GeneratorConfig::default().seed)]
    seed: u64,
    /// Number of distinct `/page/<rank>` pages (the four funnel pages come on top).
    #[arg(long, default_value_t = GeneratorConfig::default().pages)]
    pages: u32,
    /// Number of distinct users.
    #[arg(long, default_value_t = GeneratorConfig::default().users)]
    users: u64,
    /// Share of records up to 5 minutes behind the watermark (still counted).
    #[arg(long, default_value_t = GeneratorConfig::default().out_of_order)]
    out_of_order: f64,
    /// Share of records older than the watermark minus `--retention-ms` (`too_late`).
    #[arg(long, default_value_t = GeneratorConfig::default().late)]
    late: f64,
    /// Share of records more than `--max-future-ms` ahead of the watermark (`future_timestamp`).
    #[arg(long, default_value_t = GeneratorConfig::default().future)]
    future: f64,
    /// Share of undecodable records, spread over every kind of malformed record.
    #[arg(long, default_value_t = GeneratorConfig::default().malformed)]
    malformed: f64,
    /// Share of sessions that walk the funnel /products → /cart → /checkout → /confirmation.
    #[arg(long, default_value_t = GeneratorConfig::default().funnel)]
    funnel: f64,
    /// Probability that a funnel session goes on from one step to the next.
    #[arg(long, default_value_t = GeneratorConfig::default().funnel_continue)]
    funnel_continue: f64,
    /// Zipf exponent of page popularity (0 = uniform).
    #[arg(long, default_value_t = GeneratorConfig::default().zipf_exponent)]
    zipf_exponent: f64,
    /// Retention of the consumer, in milliseconds: late records are older than the
    /// watermark minus this.
    #[arg(long, default_value_t = GeneratorConfig::default().admission.retention_ms)]
    retention_ms: u64,
    /// How far ahead of the watermark the consumer accepts events, in milliseconds:
    /// future records are further ahead.
    #[arg(long, default_value_t = GeneratorConfig::default().admission.max_future_ms)]
    max_future_ms: u64,
    /// Largest record the consumer decodes, in bytes: `too_large` records are longer.
    #[arg(long, default_value_t = GeneratorConfig::default().max_event_bytes)]
    max_event_bytes: usize,
}

impl GeneratorArgs {
    /// The generator's configuration: `events` records from `start_ms` over `duration_ms`
    /// of event time, with these parameters.
    pub fn config(&self, events: u64, start_ms: u64, duration_ms: u64) -> GeneratorConfig {
        GeneratorConfig {
            seed: self.seed,
            events,
            pages: self.pages,
            users: self.users,
            start_ms,
            duration_ms,
            out_of_order: self.out_of_order,
            late: self.late,
            future: self.future,
            malformed: self.malformed,
            funnel: self.funnel,
            funnel_continue: self.funnel_continue,
            zipf_exponent: self.zipf_exponent,
            admission: AdmissionConfig {
                retention_ms: self.retention_ms,
                max_future_ms: self.max_future_ms,
            },
            max_event_bytes: self.max_event_bytes,
        }
    }
}

/// Writes the file and prints a one-line summary on stderr.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let config = args
        .generator
        .config(args.events, args.start_ms, args.duration_ms);
    let mut generator = Generator::new(config).context("invalid generator parameters")?;
    let path = &args.output;
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let progress = ProgressBar::new(args.events).with_style(
        ProgressStyle::with_template(
            "{bar:40} {human_pos}/{human_len} events, {per_sec}, eta {eta}",
        )
        .context("progress bar template")?,
    );
    let started = Instant::now();
    let mut record = Record::new();
    let (mut written, mut bytes, mut dead_letters) = (0u64, 0u64, 0u64);
    while let Some(kind) = generator.next_record(&mut record) {
        out.write_all(record.value())
            .and_then(|()| out.write_all(b"\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
        bytes += record.value().len() as u64 + 1;
        dead_letters += u64::from(kind.expected_dead_letter().is_some());
        if written % PROGRESS_EVERY == 0 {
            progress.set_position(written);
        }
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {written} events ({dead_letters} meant as dead letters), {bytes} bytes to {} in {seconds:.2} s ({:.0} events/s)",
        path.display(),
        written as f64 / seconds.max(f64::MIN_POSITIVE),
    );
    Ok(())
}
