//! The files `batch` writes: dead letters as they are found, views at the end. Each is
//! written under a `.partial` name, and all are renamed to their own names once the views
//! are written: a run that fails or is interrupted before then leaves the files of the
//! last complete run in the directory as they were (beside its own partial ones). Only a
//! failure among the five renames themselves could leave a mix.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clickflow_dataflow::ViewSnapshot;
use clickflow_events::DeadLetterReason;
use serde::Serialize;

/// The dead letters' file.
const DEAD_LETTERS_FILE: &str = "dead_letters.jsonl";

/// The views' files, in `ViewSnapshot`'s order.
const VIEW_FILES: [&str; 4] = [
    "page_views_per_minute.jsonl",
    "user_sessions.jsonl",
    "checkout_funnel.jsonl",
    "alerts.jsonl",
];

/// Where `file` in `dir` is written until the run completes.
fn partial(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!("{file}.partial"))
}

/// Refuses an `input` that is one of the files a run writes in `dir`, or their partial
/// copies (by name, link or symbolic link): the run would truncate or replace the events
/// it reads.
pub fn refuse_own_output_as_input(input: &Path, dir: &Path) -> anyhow::Result<()> {
    let Ok(read) = std::fs::metadata(input) else {
        return Ok(());
    };
    for file in VIEW_FILES.into_iter().chain([DEAD_LETTERS_FILE]) {
        for written in [dir.join(file), partial(dir, file)] {
            if std::fs::metadata(&written)
                .is_ok_and(|written| (written.dev(), written.ino()) == (read.dev(), read.ino()))
            {
                bail!(
                    "--input {} is {}, which this run writes over: give another --output",
                    input.display(),
                    written.display()
                );
            }
        }
    }
    Ok(())
}

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
    /// Creates (or truncates) the file's partial copy in `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let path = partial(dir, DEAD_LETTERS_FILE);
        let file =
            File::create(&path).with_context(|| format!("{}: cannot create", path.display()))?;
        Ok(Self {
            path,
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

/// Writes the four view files into `dir`, then gives them and the dead letters (which
/// must be finished) their own names; returns the views' row counts.
pub fn write_views(dir: &Path, snapshot: &ViewSnapshot) -> anyhow::Result<[usize; 4]> {
    let [page_views, sessions, funnel, alerts] = VIEW_FILES.map(|file| partial(dir, file));
    write_rows(&page_views, &snapshot.page_views)?;
    write_rows(&sessions, &snapshot.sessions)?;
    write_rows(&funnel, &snapshot.funnel)?;
    write_rows(&alerts, &snapshot.alerts)?;
    for file in VIEW_FILES.into_iter().chain([DEAD_LETTERS_FILE]) {
        let (from, to) = (partial(dir, file), dir.join(file));
        std::fs::rename(&from, &to)
            .with_context(|| format!("{}: cannot rename to {}", from.display(), to.display()))?;
    }
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

#[cfg(test)]
mod tests {
    use clickflow_dataflow::ViewStore;

    use super::*;

    #[test]
    fn a_run_replaces_the_last_runs_files_only_once_its_views_are_written() {
        let dir =
            std::env::temp_dir().join(format!("clickflow-batch-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
        for file in VIEW_FILES.into_iter().chain([DEAD_LETTERS_FILE]) {
            std::fs::write(dir.join(file), "last run\n").unwrap();
        }
        let mut dead_letters = DeadLetterWriter::create(&dir).unwrap();
        dead_letters
            .write(7, DeadLetterReason::InvalidJson, b"{")
            .unwrap();
        dead_letters.finish().unwrap();
        // Interrupted here, the directory still holds the last run's files.
        assert_eq!(read(DEAD_LETTERS_FILE), "last run\n");
        write_views(&dir, &ViewStore::new(1).snapshot()).unwrap();
        assert_eq!(
            read(DEAD_LETTERS_FILE),
            "{\"line\":7,\"reason\":\"invalid_json\",\"raw\":\"{\"}\n"
        );
        for file in VIEW_FILES {
            assert_eq!(read(file), "", "{file}: no rows");
        }
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 5, "no partial file left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_input_that_a_run_writes_over_is_refused_by_any_name() {
        let root =
            std::env::temp_dir().join(format!("clickflow-batch-input-{}", std::process::id()));
        let (out, elsewhere) = (root.join("out"), root.join("elsewhere"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let views = out.join(VIEW_FILES[1]);
        std::fs::write(&views, "{}\n").unwrap();
        let partial_letters = partial(&out, DEAD_LETTERS_FILE);
        std::fs::write(&partial_letters, "{}\n").unwrap();
        let linked = elsewhere.join("linked.jsonl");
        std::fs::hard_link(&views, &linked).unwrap();
        let symlinked = elsewhere.join("symlinked.jsonl");
        std::os::unix::fs::symlink(&partial_letters, &symlinked).unwrap();
        let unrelated = elsewhere.join(VIEW_FILES[1]);
        std::fs::write(&unrelated, "{}\n").unwrap();
        for input in [&views, &partial_letters, &linked, &symlinked] {
            let refused = refuse_own_output_as_input(input, &out)
                .unwrap_err()
                .to_string();
            assert!(refused.contains("give another --output"), "{refused}");
        }
        for input in [&unrelated, &root.join("missing.jsonl")] {
            refuse_own_output_as_input(input, &out).unwrap();
        }
        refuse_own_output_as_input(&views, &root.join("not-yet-created")).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }
}
