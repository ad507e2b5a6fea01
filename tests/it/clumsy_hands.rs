//! Clumsy hands: closed pipes, unknown filter values, wrong credentials and
//! unreachable hosts end with a clear line, never a panic or a silent hang.

use std::process::Stdio;
use std::time::Duration;

use crate::helpers::TestApp;
use crate::process::DaemonProcess;
use crate::toolbox::Tool;

/// A pipe whose reader has already left, as after `| head -1` has read its
/// line: every write to it fails with `EPIPE` (Rust ignores `SIGPIPE`).
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    writer
}

#[tokio::test]
async fn check_into_a_reader_that_left_stops_quietly() {
    let app = TestApp::prepare_with(|_| {}).await;
    let tool = Tool::new(&app, "");
    let mut command = tokio::process::Command::from(tool.command(&["check"]));
    command.stdout(Stdio::from(closed_pipe()));
    command.stderr(Stdio::piped());
    // Not `output()`: tokio's replaces stdout with a pipe of its own.
    let output = command
        .spawn()
        .expect("run check")
        .wait_with_output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "{stderr}");
    // Its own verdict, as when the output is read to the end.
    let read = tool.command(&["check"]).output().unwrap();
    assert_eq!(output.status.code(), read.status.code(), "{stderr}");
}

#[tokio::test]
async fn a_daemon_whose_log_pipe_closed_still_obeys_sigterm() {
    let app = TestApp::prepare_with(|_| {}).await;
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut daemon = DaemonProcess::start_logging_to(&app.config_toml(), &[], &[], Some(writer));
    app.wait_until_consuming().await;
    // The log reader (a journald or a `| tee` that died) goes away.
    drop(reader);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn an_unknown_reason_exits_2_listing_the_valid_ones() {
    let app = TestApp::prepare_with(|_| {}).await;
    let tool = Tool::new(&app, "");
    let output = tool
        .command(&["dead-letters", "list", "--reason", "nonsense"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for reason in [
        "zoom_rejected",
        "invalid_payload",
        "unmapped_department",
        "retries_exhausted",
        "redelivery_limit",
        "brake_refused",
        "broker:delivery_limit",
        "broker:expired",
        "broker:maxlen",
        "broker:rejected",
    ] {
        assert!(stderr.contains(reason), "{reason} in {stderr}");
    }

    let output = tool
        .command(&["dead-letters", "list", "--reason", "broker:delivery_limit"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
