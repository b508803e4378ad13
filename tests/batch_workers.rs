//! `clickflow batch` gives the same bytes with one worker and with four, on random inputs,
//! and gives hand-computed rows on a small input that hits the subtle cases: a late event
//! that merges two sessions, gaps of exactly 30 minutes and of 30 minutes + 1 ms, funnel
//! visits with equal times and out of order, too-late, future and malformed lines.
#![allow(clippy::unwrap_used)]

mod support;

use proptest::prelude::*;
use serde_json::{Value, json};

use support::generate::case;
use support::reference::reference;
use support::run::{compare, run_batch, slow_config};
use support::{Config, Outputs};

/// `workers` workers; with several, small chunks so that every worker decodes some.
fn with_workers(cfg: &Config, workers: u64) -> Config {
    Config {
        workers: Some(workers),
        chunk_bytes: (workers > 1).then_some(256),
        ..cfg.clone()
    }
}

proptest! {
    #![proptest_config(slow_config(32))]

    #[test]
    fn worker_count_does_not_change_the_output(case in case(40)) {
        let one = run_batch(&case.input, &with_workers(&case.cfg, 1)).map_err(TestCaseError::fail)?;
        let four = run_batch(&case.input, &with_workers(&case.cfg, 4)).map_err(TestCaseError::fail)?;
        if let Some(difference) = one.first_difference(&four) {
            return Err(TestCaseError::fail(format!("--workers 1 vs --workers 4: {difference}")));
        }
    }
}

/// 2026-11-24T12:00:00Z.
const T: u64 = 1_795_521_600_000;

fn event(user: &str, page: &str, timestamp: impl Into<Value>) -> String {
    json!({"user_id": user, "page": page, "timestamp": timestamp.into()}).to_string()
}

fn page_views(page: &str, start: u64, views: u64, users: u64) -> Value {
    json!({"page": page, "window_start": start, "window_end": start + 60_000,
           "view_count": views, "unique_users": users})
}

fn session(user: &str, start: u64, end: u64, pages: &[&str]) -> Value {
    json!({"user_id": user, "session_start": start, "session_end": end,
           "pages_viewed": pages.len(), "page_sequence": pages})
}

fn funnel(step: &str, start: u64, unique: u64, converted: u64) -> Value {
    json!({"funnel_step": step, "window_start": start, "window_end": start + 300_000,
           "unique_users": unique, "converted_users": converted})
}

fn dead(line: u64, reason: &str, raw: &str) -> Value {
    json!({"line": line, "reason": reason, "raw": raw})
}

#[test]
fn hand_computed_case_with_one_and_four_workers() {
    let too_late = event("d", "/products", T - 86_400_000);
    let future = event("d", "/products", T + 5_460_001);
    let lines = [
        event("a", "/products", T),
        event("a", "/cart", T + 1_800_001), // 30 min + 1 ms after line 1: a new session...
        event("b", "/products", T + 60_000),
        event("b", "/cart", T + 1_860_000), // exactly 30 min after line 3: same session
        event("a", "/cart", T + 900_000),   // ...until this late event merges them
        event("c", "/cart", T + 120_000),
        event("c", "/products", T + 120_000), // tie with line 6: cart counts as converted
        event("c", "/checkout", T + 100_000), // before cart: checkout not converted
        "not json".to_owned(),
        too_late.clone(), // T - 24 h + 24 h = T < watermark T + 1_860_000
        future.clone(),   // watermark + 1 h + 1 ms
        event("d", "/products", "2026-11-24T13:00:00.5+01:00"), // T + 500
        event("e", "/", T),
        event("e", "/", "2026-11-24T12:30:00.001Z") + "\r", // T + 1_800_001, CRLF
        String::new(),
    ];
    let input = lines.join("\n") + "\n";
    let cfg = Config {
        high_traffic_threshold: Some(1),
        ..Config::default()
    };

    let expected = Outputs {
        page_views: vec![
            page_views("/", T, 1, 1),
            page_views("/", T + 1_800_000, 1, 1),
            page_views("/cart", T + 120_000, 1, 1),
            page_views("/cart", T + 900_000, 1, 1),
            page_views("/cart", T + 1_800_000, 1, 1),
            page_views("/cart", T + 1_860_000, 1, 1),
            page_views("/checkout", T + 60_000, 1, 1),
            page_views("/products", T, 2, 2),
            page_views("/products", T + 60_000, 1, 1),
            page_views("/products", T + 120_000, 1, 1),
        ],
        sessions: vec![
            session("a", T, T + 1_800_001, &["/products", "/cart", "/cart"]),
            session("b", T + 60_000, T + 1_860_000, &["/products", "/cart"]),
            session(
                "c",
                T + 100_000,
                T + 120_000,
                &["/checkout", "/cart", "/products"],
            ),
            session("d", T + 500, T + 500, &["/products"]),
            session("e", T, T, &["/"]),
            session("e", T + 1_800_001, T + 1_800_001, &["/"]),
        ],
        funnel: vec![
            funnel("browse", T, 4, 4),
            funnel("cart", T, 1, 1),
            funnel("cart", T + 900_000, 1, 0),
            funnel("cart", T + 1_800_000, 2, 0),
            funnel("checkout", T, 1, 0),
        ],
        alerts: vec![
            json!({"rule": "high_traffic", "page": "/products", "window_start": T,
                            "window_end": T + 60_000, "value": 2, "threshold": 1}),
        ],
        dead_letters: vec![
            dead(9, "invalid_json", "not json"),
            dead(10, "too_late", &too_late),
            dead(11, "future_timestamp", &future),
            dead(15, "invalid_json", ""),
        ],
    };
    let oracle = reference(input.as_bytes(), &cfg);
    assert_eq!(
        oracle, expected,
        "the reference disagrees with the hand computation"
    );

    let one = run_batch(input.as_bytes(), &with_workers(&cfg, 1)).unwrap();
    let four = run_batch(input.as_bytes(), &with_workers(&cfg, 4)).unwrap();
    let actual = one.parse().unwrap();
    compare(&expected, &actual, input.as_bytes(), &cfg).unwrap_or_else(|report| panic!("{report}"));
    assert_eq!(one.first_difference(&four), None);
}

/// A run whose input is one of the files it writes (here the sessions of an earlier run
/// into the same directory), or whose output is a file, is refused before it writes
/// anything, and the input is left as it was.
#[test]
fn a_run_refuses_an_input_it_would_write_over() {
    let dir = support::run::TempDir::new("batch-own-input").unwrap();
    let input = dir.path().join("user_sessions.jsonl");
    let events = event("u1", "/a", T) + "\n";
    std::fs::write(&input, &events).unwrap();
    let output = std::process::Command::new(support::run::binary())
        .args(["batch", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "accepted: {stderr}");
    assert!(stderr.contains("which this run writes over"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&input).unwrap(), events);
    let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(written.len(), 1, "nothing else written: {written:?}");

    let elsewhere = dir.path().join("events.jsonl");
    std::fs::rename(&input, &elsewhere).unwrap();
    let output = std::process::Command::new(support::run::binary())
        .args(["batch", "--input"])
        .arg(&elsewhere)
        .arg("--output")
        .arg(&elsewhere)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("events.jsonl: not a directory"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), events);
}
