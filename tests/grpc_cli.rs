//! The gRPC client subcommands without a server: an unreachable server is an error that
//! names its address, and bad flags are refused with messages that name them. (The
//! end-to-end tests of the client against a real server are with the server's.)
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Longer than any of these commands may take; only a guard against a hung client.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Runs the binary with `args` (and `CLICKFLOW_SERVER` only if given), killing it if it
/// has not ended within [`HANG_GUARD`].
fn clickflow(args: &[&str], server_env: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clickflow"));
    command
        .args(args)
        .env_remove("CLICKFLOW_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(server) = server_env {
        command.env("CLICKFLOW_SERVER", server);
    }
    let mut child = command.spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > HANG_GUARD {
            child.kill().unwrap();
            panic!("clickflow {args:?} still running after {HANG_GUARD:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A local port that nothing listens on (it was free a moment ago).
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asserts that the command failed and that its stderr contains every one of `needles`.
fn assert_fails_with(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected a failure, got {}; stdout: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr does not contain {needle:?}:\n{stderr}"
        );
    }
}

#[test]
fn an_unreachable_server_is_an_error_naming_its_address() {
    let address = format!("http://127.0.0.1:{}", unused_port());
    let output = clickflow(&["status", "--server", &address], None);
    assert_fails_with(&output, &["cannot connect", &address]);
}

#[test]
fn a_server_address_of_another_scheme_or_without_a_port_and_a_zero_timeout_are_refused() {
    let output = clickflow(&["status", "--server", "ftp://127.0.0.1:1"], None);
    assert_fails_with(&output, &["--server", "ftp://", "HOST:PORT"]);
    for portless in ["127.0.0.1", "http://127.0.0.1", "127.0.0.1:0"] {
        let output = clickflow(&["status", "--server", portless], None);
        assert_fails_with(&output, &["--server", portless, "no port", "50051"]);
    }
    let output = clickflow(&["status", "--timeout-ms", "0"], None);
    assert_fails_with(&output, &["--timeout-ms", "0"]);
}

#[test]
fn a_server_that_does_not_answer_is_an_error_after_the_timeout() {
    // The kernel accepts connections on a listening socket that never reads them.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", silent.local_addr().unwrap());
    let output = clickflow(
        &["status", "--server", &address, "--timeout-ms", "300"],
        None,
    );
    assert_fails_with(
        &output,
        &["GetStatus failed", "no answer within --timeout-ms"],
    );
}

#[test]
fn the_server_comes_from_the_environment_and_may_omit_the_scheme() {
    let address = format!("127.0.0.1:{}", unused_port());
    // Flags of the client may follow the subcommand's own.
    let output = clickflow(
        &["query", "page-views", "--prefix", "/", "--json"],
        Some(&address),
    );
    assert_fails_with(&output, &["cannot connect", &format!("http://{address}")]);
}

#[test]
fn page_views_need_a_page_or_a_prefix_but_not_both() {
    let output = clickflow(&["query", "page-views"], None);
    assert_fails_with(&output, &["--page", "--prefix", "required"]);
    let output = clickflow(
        &["query", "page-views", "--page", "/a", "--prefix", "/"],
        None,
    );
    assert_fails_with(&output, &["--page", "--prefix", "cannot be used with"]);
}

#[test]
fn an_unknown_view_is_refused_with_the_known_ones() {
    let output = clickflow(&["subscribe", "--view", "nope"], None);
    assert_fails_with(
        &output,
        &[
            "'nope'",
            "--view",
            "page-views",
            "sessions",
            "funnel",
            "alerts",
        ],
    );
}

#[test]
fn times_are_epoch_ms_or_iso8601() {
    let output = clickflow(&["query", "funnel", "--from", "yesterday"], None);
    assert_fails_with(&output, &["--from", "yesterday", "ISO-8601"]);
}

#[test]
fn alert_rules_name_their_comparison() {
    let output = clickflow(
        &[
            "alerts",
            "create",
            "--id",
            "r",
            "--threshold",
            "5",
            "--comparison",
            ">",
        ],
        None,
    );
    assert_fails_with(&output, &["--comparison", "gt", "ge", "lt", "le", "eq"]);
}

/// A rule id the server would refuse is refused before connecting (no server runs here).
#[test]
fn alert_rule_ids_are_checked_before_connecting() {
    for command in [
        &["alerts", "create", "--id", "bad id!", "--threshold", "5"][..],
        &["alerts", "delete", "--id", ""][..],
    ] {
        let output = clickflow(command, None);
        assert_fails_with(&output, &["--id", "is not 1 to 128 characters"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("cannot connect"), "{stderr}");
    }
}
