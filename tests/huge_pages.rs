//! The `clickflow` process runs without transparent huge pages: zeroing whole 2 MiB pages
//! on first touch cost the views a fifth of their time (see `benches/RESULTS.md`).
#![allow(clippy::unwrap_used)]

mod support;

use std::fs::{File, read_to_string};
use std::process::Command;

use support::run::{TempDir, binary};

#[test]
fn the_binary_turns_transparent_huge_pages_off_for_itself() {
    let dir = TempDir::new("huge-pages").unwrap();
    let input = dir.path().join("events");
    let made = Command::new("mkfifo").arg(&input).status().unwrap();
    assert!(made.success(), "mkfifo {}", input.display());
    let mut batch = Command::new(binary())
        .arg("batch")
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("out"))
        .spawn()
        .unwrap();
    // Opening a FIFO to write waits until `batch` opens it to read, which is after `main`
    // started: the process's settings are in place by then.
    let writer = File::create(&input).unwrap();
    let status = read_to_string(format!("/proc/{}/status", batch.id())).unwrap();
    drop(writer);
    assert!(batch.wait().unwrap().success());
    let huge_pages = status
        .lines()
        .find(|line| line.starts_with("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled in\n{status}"));
    assert_eq!(huge_pages.split_whitespace().nth(1), Some("0"), "{status}");
}
