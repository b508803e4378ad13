//! Two processes with two workers each give byte-identical `batch` output to one worker:
//! the cluster options really spread the work over processes and route results back, also
//! when `clickflow cluster` starts the processes.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_clickflow");
const OUTPUT_FILES: [&str; 5] = [
    "page_views_per_minute.jsonl",
    "user_sessions.jsonl",
    "checkout_funnel.jsonl",
    "alerts.jsonl",
    "dead_letters.jsonl",
];

fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("clickflow-processes-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn check(output: Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two loopback addresses whose ports were free a moment ago.
fn free_addresses() -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

fn batch(input: &Path, output: &Path, cluster: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(["batch", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output);
    command
        .args(["--high-traffic-threshold", "20"])
        .args(cluster);
    command
}

/// A generated input file in `dir`, and the output of `batch -w 1` over it.
fn input_and_single_worker_output(dir: &Path) -> (PathBuf, PathBuf) {
    let input = dir.join("events.jsonl");
    check(
        Command::new(BINARY)
            .args([
                "generate", "--events", "30000", "--users", "500", "--pages", "50", "--seed", "11",
            ])
            .args(["--duration-ms", "3600000", "--output"])
            .arg(&input)
            .output()
            .unwrap(),
        "generate",
    );
    let single = dir.join("single");
    let run = batch(&input, &single, &["-w", "1"]).output().unwrap();
    // Without a terminal, progress is logged, phase by phase.
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        log.contains("batch: input read; computing the views")
            && log.contains("batch: writing the views"),
        "{log}"
    );
    check(run, "batch -w 1");
    (input, single)
}

/// Every output file in `cluster` equals the one in `single`.
fn assert_same_output(single: &Path, cluster: &Path) {
    let mut rows = 0;
    for file in OUTPUT_FILES {
        let expected = std::fs::read_to_string(single.join(file)).unwrap();
        let actual = std::fs::read_to_string(cluster.join(file)).unwrap();
        assert_eq!(
            actual, expected,
            "{file} differs between 1 worker and 2 processes x 2 workers"
        );
        rows += expected.lines().count();
    }
    assert!(
        rows > 1000,
        "the input should produce a substantial output, got {rows} rows"
    );
}

#[test]
fn two_processes_match_one_worker() {
    let dir = scratch_dir("two");
    let (input, single) = input_and_single_worker_output(&dir);

    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, free_addresses().join("\n")).unwrap();
    let cluster = dir.join("cluster");
    let hosts = hostfile.to_str().unwrap();
    let cluster_args = |process| {
        [
            "-w",
            "2",
            "-n",
            "2",
            "-p",
            process,
            "-h",
            hosts,
            "--chunk-bytes",
            "65536",
        ]
    };
    let second = batch(&input, &cluster, &cluster_args("1")).spawn().unwrap();
    let first = batch(&input, &cluster, &cluster_args("0"))
        .output()
        .unwrap();
    check(second.wait_with_output().unwrap(), "batch process 1");
    check(first, "batch process 0");

    assert_same_output(&single, &cluster);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_cluster_command_runs_the_processes_and_matches_one_worker() {
    let dir = scratch_dir("cluster-command");
    let (input, single) = input_and_single_worker_output(&dir);
    let cluster = dir.join("cluster");
    check(
        Command::new(BINARY)
            .args(["cluster", "-n", "2", "--", "batch", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&cluster)
            .args(["--high-traffic-threshold", "20", "-w", "2"])
            .args(["--chunk-bytes", "65536"])
            .output()
            .unwrap(),
        "cluster -n 2 -- batch",
    );
    assert_same_output(&single, &cluster);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_cluster_command_names_what_it_refuses_and_which_process_failed() {
    let refused = |args: &[&str]| {
        let output = Command::new(BINARY)
            .arg("cluster")
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let other = refused(&["--", "produce", "--bootstrap", "127.0.0.1:9"]);
    assert!(
        other.contains("`serve` or `batch`, not `produce`"),
        "{other}"
    );
    let own = refused(&["--", "batch", "-p", "1", "--input", "x", "--output", "y"]);
    assert!(own.contains("-p: cluster sets"), "{own}");
    let dir = scratch_dir("cluster-failure");
    let missing = dir.join("missing.jsonl");
    let failed = refused(&[
        "-n",
        "2",
        "--",
        "batch",
        "--input",
        missing.to_str().unwrap(),
        "--output",
        dir.join("out").to_str().unwrap(),
    ]);
    assert!(
        failed.contains("the cluster failed: process 0 exit status: 1"),
        "{failed}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
