//! The files `batch` writes: dead letters as they are found, views at the end.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clickflow_dataflow::ViewSnapshot;
use clickflow_events::DeadLetterReason;
use serde::Serialize;

/// Writes `dead_letters.jsonl`, one `{"line","reason","raw"}` object per line.
pub struct DeadLetterWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

#[derive(Serialize)]
struct DeadLetter<'a> {
    line: u64,
    reason: &'static str,
    raw: &'a str,
}

impl DeadLetterWriter {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
        })
    }

    /// Appends one dead letter; bytes that are not UTF-8 become U+FFFD in `raw`.
    pub fn write(
        &mut self,
        line: u64,
        reason: DeadLetterReason,
        record: &[u8],
    ) -> anyhow::Result<()> {
        let raw = String::from_utf8_lossy(record);
        let letter = DeadLetter {
            line,
            reason: reason.as_str(),
            raw: &raw,
        };
        serde_json::to_writer(&mut self.out, &letter)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .with_context(|| format!("{}: write failed", self.path.display()))
    }

    /// Flushes the file.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("{}: write failed", self.path.display()))
    }
}

/// Writes the four view files into `dir` and returns their row counts.
pub fn write_views(dir: &Path, snapshot: &ViewSnapshot) -> anyhow::Result<[usize; 4]> {
    write_rows(
        &dir.join("page_views_per_minute.jsonl"),
        &snapshot.page_views,
    )?;
    write_rows(&dir.join("user_sessions.jsonl"), &snapshot.sessions)?;
    write_rows(&dir.join("checkout_funnel.jsonl"), &snapshot.funnel)?;
    write_rows(&dir.join("alerts.jsonl"), &snapshot.alerts)?;
    Ok([
        snapshot.page_views.len(),
        snapshot.sessions.len(),
        snapshot.funnel.len(),
        snapshot.alerts.len(),
    ])
}

fn write_rows<R: Serialize>(path: &Path, rows: &[R]) -> anyhow::Result<()> {
    let write = || -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        for row in rows {
            serde_json::to_writer(&mut out, row)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    write().with_context(|| format!("{}: write failed", path.display()))
}
