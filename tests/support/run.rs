//! Running the real `clickflow batch` binary (the package's build, or `$CLICKFLOW_BIN`)
//! with a timeout, and comparing its outputs with readable failure messages: the first
//! differing row of each file, the input lines behind it, and every line whose fate
//! (counted or which dead letter) differs from the reference's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use std::{fs, io, thread};

use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;

use super::reference::{Record, classify};
use super::{Config, OUTPUT_FILES, Outputs};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, empty directory whose name contains `label` and is unique within
    /// this machine (process id and a counter).
    pub fn new(label: &str) -> io::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("clickflow-test-{label}-{}-{n}", std::process::id()));
        // A leftover from a crashed run with a recycled pid would be stale: start afresh.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The raw bytes of the five output files, in the order of [`OUTPUT_FILES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawOutputs(pub [Vec<u8>; 5]);

impl RawOutputs {
    /// Parses every file as JSON lines.
    pub fn parse(&self) -> Result<Outputs, String> {
        let mut parsed: [Vec<Value>; 5] = Default::default();
        for ((name, bytes), rows) in OUTPUT_FILES.iter().zip(&self.0).zip(&mut parsed) {
            let text = std::str::from_utf8(bytes).map_err(|e| format!("{name}: not UTF-8: {e}"))?;
            for (index, line) in text.split_terminator('\n').enumerate() {
                let row = serde_json::from_str(line)
                    .map_err(|e| format!("{name} line {}: {e}: {line:?}", index + 1))?;
                rows.push(row);
            }
        }
        Ok(Outputs::from_rows(parsed))
    }

    /// The first file whose bytes differ from `other`'s, with both contents.
    pub fn first_difference(&self, other: &RawOutputs) -> Option<String> {
        let (name, (a, b)) = OUTPUT_FILES
            .iter()
            .zip(self.0.iter().zip(&other.0))
            .find(|(_, (a, b))| a != b)?;
        Some(format!(
            "{name} differs:\n--- first\n{}--- second\n{}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        ))
    }
}

/// How long one `clickflow batch` run on a small test input may take before it counts
/// as hung (generous: a run takes milliseconds, but CI machines may be busy).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `command` to its end and returns its stdout; fails the test, with `what` and the
/// command's stderr, if the command fails.
pub fn stdout_of(command: &mut Command, what: &str) -> Vec<u8> {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The binary under test: `$CLICKFLOW_BIN` if set (e.g. a release build or a snapshot),
/// else the package's own debug build.
pub fn binary() -> PathBuf {
    std::env::var_os("CLICKFLOW_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_clickflow")),
        PathBuf::from,
    )
}

/// Writes `input` to a file, runs `clickflow batch` on it with the flags of `cfg`, and
/// reads back the five output files. A run that fails or exceeds [`RUN_TIMEOUT`] (it is
/// then killed) is an error that carries its stderr.
pub fn run_batch(input: &[u8], cfg: &Config) -> Result<RawOutputs, String> {
    let io_error = |what: &str, e: io::Error| format!("{what}: {e}");
    let dir = TempDir::new("batch").map_err(|e| io_error("temp dir", e))?;
    let input_path = dir.path().join("input.jsonl");
    let output_dir = dir.path().join("out");
    let stderr_path = dir.path().join("stderr");
    fs::write(&input_path, input).map_err(|e| io_error("writing input", e))?;
    let stderr = File::create(&stderr_path).map_err(|e| io_error("stderr file", e))?;
    let args = cfg.args();
    let mut child = Command::new(binary())
        .arg("batch")
        .arg("--input")
        .arg(&input_path)
        .arg("--output")
        .arg(&output_dir)
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| io_error("spawning clickflow", e))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| io_error("waiting", e))? {
            break Some(status);
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    if status.is_none_or(|s| !s.success()) {
        let outcome = status.map_or(format!("killed after {RUN_TIMEOUT:?}"), |s| s.to_string());
        return Err(format!(
            "`clickflow batch {}` failed ({outcome}); stderr:\n{}",
            args.join(" "),
            fs::read_to_string(&stderr_path).unwrap_or_default()
        ));
    }
    let mut files: [Vec<u8>; 5] = Default::default();
    for (name, file) in OUTPUT_FILES.iter().zip(&mut files) {
        *file = fs::read(output_dir.join(name)).map_err(|e| io_error(name, e))?;
    }
    Ok(RawOutputs(files))
}

/// Compares `actual` with `expected` (the reference's answer for `input` under `cfg`).
/// On a difference, describes for every differing file its first differing row and the
/// input lines that contribute to it, and the reference's view of each such line.
pub fn compare(
    expected: &Outputs,
    actual: &Outputs,
    input: &[u8],
    cfg: &Config,
) -> Result<(), String> {
    let (records, watermark) = classify(input, cfg);
    let mut report = String::new();
    for ((name, expected), actual) in OUTPUT_FILES.iter().zip(expected.rows()).zip(actual.rows()) {
        if expected == actual {
            continue;
        }
        let index = expected
            .iter()
            .zip(actual)
            .position(|(e, a)| e != a)
            .unwrap_or(expected.len().min(actual.len()));
        let show = |row: Option<&Value>| row.map_or("<no row>".to_owned(), Value::to_string);
        let _ = writeln!(
            report,
            "{name}: {} rows expected, {} produced; first difference at row {index}:\n  \
             expected: {}\n  actual:   {}",
            expected.len(),
            actual.len(),
            show(expected.get(index)),
            show(actual.get(index)),
        );
        let rows = [expected.get(index), actual.get(index)];
        let relevant: Vec<&Record> = records
            .iter()
            .filter(|r| rows.iter().flatten().any(|row| contributes(r, row)))
            .collect();
        let _ = writeln!(
            report,
            "  input lines behind these rows (reference outcome):"
        );
        for record in relevant.iter().take(40) {
            let _ = writeln!(report, "    {}", describe(record));
        }
    }
    if report.is_empty() {
        return Ok(());
    }
    disagreements(
        &records,
        &expected.dead_letters,
        &actual.dead_letters,
        &mut report,
    );
    let _ = writeln!(
        report,
        "final watermark (reference): {watermark:?}; flags: {}",
        cfg.args().join(" ")
    );
    Err(report)
}

/// Whether `record` is one of the input lines that an output row is made of: matches
/// every key the row has among `line`, `user_id`, `page` and the window bounds.
fn contributes(record: &Record, row: &Value) -> bool {
    if let Some(line) = row.get("line").and_then(Value::as_u64) {
        return line == record.line as u64;
    }
    let Some(event) = &record.event else {
        return false;
    };
    let matches = |key: &str, value: &str| {
        row.get(key)
            .and_then(Value::as_str)
            .is_none_or(|v| v == value)
    };
    let start = row.get("window_start").and_then(Value::as_u64).unwrap_or(0);
    let end = row
        .get("window_end")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    matches("user_id", &event.user)
        && matches("page", &event.page)
        && (start..end).contains(&event.time)
}

/// Lists the lines whose fate (counted, or dead letter with which reason) differs between
/// the reference and the binary: usually the root cause of every other difference.
fn disagreements(records: &[Record], expected: &[Value], actual: &[Value], report: &mut String) {
    let reasons = |rows: &[Value]| -> BTreeMap<u64, String> {
        rows.iter()
            .filter_map(|row| Some((row["line"].as_u64()?, row["reason"].as_str()?.to_owned())))
            .collect()
    };
    let (expected, actual) = (reasons(expected), reasons(actual));
    let counted = "counted".to_owned();
    let differing: Vec<&Record> = records
        .iter()
        .filter(|r| expected.get(&(r.line as u64)) != actual.get(&(r.line as u64)))
        .collect();
    if differing.is_empty() {
        return;
    }
    let _ = writeln!(
        report,
        "lines the binary treats differently from the reference:"
    );
    for record in differing.iter().take(40) {
        let line = record.line as u64;
        let _ = writeln!(
            report,
            "    binary: {}; {}",
            actual.get(&line).unwrap_or(&counted),
            describe(record)
        );
    }
}

/// One line of a failure report: number, reference outcome, event time, raw text.
pub fn describe(record: &Record) -> String {
    let outcome = record.reason.map_or("admitted", |r| r.as_str());
    let time = record
        .event
        .as_ref()
        .map_or(String::new(), |e| format!(" t={}", e.time));
    format!(
        "line {} [{outcome}{time}]: {}",
        record.line,
        preview(&record.raw)
    )
}

/// A line as a quoted, escaped string (invalid UTF-8 shown as U+FFFD), shortened to
/// about 200 bytes with the full length noted.
pub fn preview(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if text.len() <= 200 {
        return format!("{text:?}");
    }
    let cut = (0..=200)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{:?}… ({} bytes)", &text[..cut], raw.len())
}

/// Proptest settings for tests that spawn the binary once or twice per case: `cases`
/// cases unless `PROPTEST_CASES` says otherwise, and bounded shrinking.
pub fn slow_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::Config {
        cases,
        max_shrink_iters: 400,
        max_shrink_time: 600_000,
        // `tests/<test>.proptest-regressions` (the default looks for a lib.rs or main.rs
        // next to the test, warns, and ends up with the same file).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..proptest::test_runner::Config::default()
    }
}
