//! Start-up with a bad configuration: exit code 2 and one line naming the key.

use std::process::Command;

const MAPPING: &str = "[departments]\n\"Sales\" = \"grp_sales\"\n";

fn run(config: &str, secrets: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"))
        .args(["run", "--config"])
        .arg(&path)
        .env_clear()
        .envs(secrets.iter().copied())
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    (output.status.code().unwrap_or(-1), stderr)
}

const ALL_SECRETS: [(&str, &str); 3] = [
    ("ZOOM_ACCOUNT_ID", "acct"),
    ("ZOOM_CLIENT_ID", "id"),
    ("ZOOM_CLIENT_SECRET", "s3cret-value"),
];

#[test]
fn a_missing_secret_exits_2_naming_it() {
    let (code, stderr) = run(MAPPING, &ALL_SECRETS[..2]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ZOOM_CLIENT_SECRET"), "{stderr}");
}

#[test]
fn a_key_with_the_wrong_type_exits_2_naming_it() {
    let config = format!("[worker]\nconcurrency = \"lots\"\n{MAPPING}");
    let (code, stderr) = run(&config, &ALL_SECRETS);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("concurrency"), "{stderr}");
    assert!(!stderr.contains("s3cret-value"), "no secret in errors");
}

#[test]
fn an_empty_mapping_exits_2() {
    let (code, stderr) = run("[departments]\n", &ALL_SECRETS);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("mapping is empty"), "{stderr}");
}

#[test]
fn a_missing_config_file_exits_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"))
        .args(["run", "--config", "/nonexistent/zds.toml"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/zds.toml"));
}

#[test]
fn a_config_that_could_pass_the_consumer_timeout_exits_2_naming_the_keys() {
    let config = format!(
        "[amqp]\nprefetch = 64\nconsumer_timeout_secs = 1800\n[worker]\nconcurrency = 1\n[retry]\nmax_elapsed_secs = 600\n{MAPPING}"
    );
    let (code, stderr) = run(&config, &ALL_SECRETS);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for key in [
        "amqp.prefetch",
        "worker.concurrency",
        "retry.max_elapsed_secs",
        "amqp.consumer_timeout_secs",
    ] {
        assert!(stderr.contains(key), "{key} in {stderr}");
    }
}

#[test]
fn a_wait_too_large_to_add_to_a_clock_exits_2() {
    let config = format!("[retry]\nmax_elapsed_secs = 9223372036854775807\n{MAPPING}");
    let (code, stderr) = run(&config, &ALL_SECRETS);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("retry.max_elapsed_secs"), "{stderr}");
}

/// A TOML syntax error on the broker URL's line: figment/toml quote the
/// line, so the password would be in the message. It names the file and
/// the line, never the line's text.
#[test]
fn a_toml_syntax_error_on_the_url_line_exits_2_without_the_password() {
    for broken in [
        "[amqp]\nurl = \"amqp://user:s3cret-pw@host/%2f\n",
        "[amqp]\nurl = \"amqp://user:s3cret-pw@host/%2f\" junk\n",
        "[amqp]\nurl = amqp://user:s3cret-pw@host/%2f\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, format!("{broken}{MAPPING}")).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"))
            .args(["run", "--config"])
            .arg(&path)
            .env_clear()
            .envs(ALL_SECRETS)
            .output()
            .expect("run the binary");
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(!stderr.contains("s3cret-pw"), "a password in: {stderr}");
        assert!(stderr.contains("config.toml"), "names the file: {stderr}");
        assert!(stderr.contains("line 2"), "names the line: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn a_departments_file_with_a_departments_table_exits_2_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("d.toml"),
        "[departments]\nHR = \"grp_hr\"\n",
    )
    .unwrap();
    let path = dir.path().join("config.toml");
    // Also with no department in common: docs/configuration.md says one is used
    // instead of the other, so having both is a mistake, not a merge.
    std::fs::write(&path, format!("departments_file = \"d.toml\"\n{MAPPING}")).unwrap();
    // Today's code merges the two and starts: the test must not hang on it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"))
        .args(["run", "--config"])
        .arg(&path)
        .env_clear()
        .envs(ALL_SECRETS)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("departments_file") && stderr.contains("[departments]"),
        "{stderr}"
    );
}
