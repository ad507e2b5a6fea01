//! Secrets from files (`X_FILE`), as systemd's `LoadCredential=` and
//! Kubernetes' secret volumes provide them: the binary, its broker URL and
//! its Zoom client secret each read from a file.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{
    ACCOUNT_ID, CLIENT_ID, TOKEN_PATH, TestApp, amqp_url, event, eventually, free_local_port,
    groups_of, mapped_zoom, spawn_zoom, use_zoom, wait_for_calls,
};
use crate::process::DaemonProcess;
use base64::Engine;

#[tokio::test]
async fn credentials_from_files_reach_the_broker_and_zoom() {
    let zoom = spawn_zoom(mapped_zoom().user("U1", "u1@example.com", &["grp_eng"])).await;
    let app = TestApp::prepare_with(|s| use_zoom(s, &zoom)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("zoom_client_secret");
    // Written as `echo` or an editor would: with a trailing newline.
    std::fs::write(&secret_file, "secret-from-a-file\n").expect("write");
    let url_file = dir.path().join("amqp_url");
    std::fs::write(&url_file, format!("{}\r\n", amqp_url())).expect("write");
    // The file's amqp.url leads nowhere: consuming proves the URL came from
    // AMQP_URL_FILE.
    let nowhere = free_local_port();
    let config = app.config_toml().replacen(
        "[amqp]\n",
        &format!("[amqp]\nurl = \"amqp://guest:guest@{nowhere}/%2f\"\n"),
        1,
    );
    let mut daemon = DaemonProcess::start_with_env(
        &config,
        &[],
        &[
            ("AMQP_URL", None),
            ("ZOOM_CLIENT_SECRET", None),
            ("AMQP_URL_FILE", url_file.to_str()),
            ("ZOOM_CLIENT_SECRET_FILE", secret_file.to_str()),
        ],
    );
    eventually(
        "the daemon consumes with the URL from AMQP_URL_FILE",
        Duration::from_secs(20),
        || async { app.queue_state(&app.queue).await.1 >= 1 },
    )
    .await;

    app.publish_json(event("cred-1", "U1", Some("Engineering"), "Sales"))
        .await;
    let calls = wait_for_calls(&zoom, 1).await;
    assert_eq!(calls[0].status, Some(204), "the token worked: {calls:?}");
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
    let tokens: Vec<_> = zoom
        .requests()
        .into_iter()
        .filter(|r| r.path == TOKEN_PATH)
        .collect();
    assert_eq!(tokens.len(), 1, "one token request");
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:secret-from-a-file"))
    );
    assert_eq!(
        tokens[0].header("authorization"),
        Some(expected.as_str()),
        "the token request carries the secret from the file, newline stripped"
    );
    let sent = format!(
        "{}{}",
        tokens[0].query.as_deref().unwrap_or_default(),
        String::from_utf8_lossy(&tokens[0].body)
    );
    assert!(sent.contains(ACCOUNT_ID), "account id sent: {sent}");

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)).await, Some(0));
    assert!(
        !daemon.log().contains("secret-from-a-file"),
        "the secret is never logged"
    );
}

/// Runs `run --config` (a minimal config) with only `env`; (exit code,
/// stderr). A daemon that starts instead of refusing is killed after 10 s.
fn run_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[departments]\nSales = \"grp_sales\"\n").expect("write");
    let stderr = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"))
        .args(["run", "--config"])
        .arg(&config)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("run the binary");
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr).unwrap_or_default();
    (code, stderr.trim().to_owned())
}

#[test]
fn credentials_a_variable_and_its_file_both_set_exit_2_naming_both() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-file").expect("write");
    let (code, stderr) = run_with(&[
        ("ZOOM_ACCOUNT_ID", "acct"),
        ("ZOOM_CLIENT_ID", "id"),
        ("ZOOM_CLIENT_SECRET", "from-env"),
        ("ZOOM_CLIENT_SECRET_FILE", file.to_str().expect("path")),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("ZOOM_CLIENT_SECRET ") && stderr.contains("ZOOM_CLIENT_SECRET_FILE"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("from-env") && !stderr.contains("from-file"),
        "no secret in errors: {stderr}"
    );
}

#[test]
fn credentials_an_unreadable_file_exits_2_naming_the_variable_and_the_path() {
    let (code, stderr) = run_with(&[
        ("ZOOM_ACCOUNT_ID", "acct"),
        ("ZOOM_CLIENT_ID_FILE", "/nonexistent/zoom_client_id"),
        ("ZOOM_CLIENT_SECRET", "s"),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("ZOOM_CLIENT_ID_FILE") && stderr.contains("/nonexistent/zoom_client_id"),
        "{stderr}"
    );
}
