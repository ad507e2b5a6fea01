//! Clumsy hands: closed pipes, unknown filter values, wrong credentials and
//! unreachable hosts end with a clear line, never a panic or a silent hang.

use std::process::Stdio;
use std::time::Duration;

use crate::helpers::Tool;
use crate::helpers::{TestApp, eventually};
use crate::process::DaemonProcess;

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

/// The broker's management API as guest (the test broker's admin).
const MANAGEMENT: &str = "http://127.0.0.1:15672/api";

async fn management(method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> u16 {
    let mut request = reqwest::Client::new()
        .request(method, format!("{MANAGEMENT}/{path}"))
        .basic_auth("guest", Some("guest"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
        .send()
        .await
        .expect("management API")
        .status()
        .as_u16()
}

/// A broker user of its own with every right on `/`, deleted when dropped.
struct LoginUser {
    name: String,
}

impl LoginUser {
    async fn create(password: &str) -> Self {
        let name = format!("zds-login-{}-{}", std::process::id(), fastrand::u32(..));
        let user = Self { name };
        user.set_password(password).await;
        let rights = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
        let path = format!("permissions/%2F/{}", user.name);
        assert!(management(reqwest::Method::PUT, &path, Some(rights)).await < 300);
        user
    }

    async fn set_password(&self, password: &str) {
        let body = serde_json::json!({"password": password, "tags": ""});
        let path = format!("users/{}", self.name);
        assert!(management(reqwest::Method::PUT, &path, Some(body)).await < 300);
    }

    /// Closes every connection of the user (RabbitMQ's HTTP API:
    /// `DELETE /api/connections/username/{name}`).
    async fn close_connections(&self) {
        let path = format!("connections/username/{}", self.name);
        management(reqwest::Method::DELETE, &path, None).await;
    }

    fn url(&self, password: &str) -> String {
        format!("amqp://{}:{password}@127.0.0.1:5672/%2f", self.name)
    }
}

impl Drop for LoginUser {
    fn drop(&mut self) {
        let name = self.name.clone();
        // On a thread with its own runtime: the test's may be shutting down.
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let path = format!("users/{name}");
                runtime.block_on(management(reqwest::Method::DELETE, &path, None));
            }
        })
        .join();
    }
}

#[tokio::test]
async fn a_refused_broker_login_at_start_up_exits_2_naming_the_user() {
    let app = TestApp::prepare_with(|_| {}).await;
    let url = "amqp://guest:not-the-pw-4711@127.0.0.1:5672/%2f";
    let mut daemon = DaemonProcess::start_against(&app.config_toml(), &[], url);
    let code = daemon.wait_exit(Duration::from_secs(10)).await;
    let log = daemon.log();
    assert_eq!(code, Some(2), "{log}");
    // lapin logs the closed connection itself; the daemon's own line is one.
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR zoom_dept_sync"))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("\"guest\"") && errors[0].contains("AMQP_URL"),
        "{log}"
    );
    assert!(!log.contains("not-the-pw-4711"), "{log}");
    assert!(!log.contains("trying again"), "{log}");

    // The commands say the same.
    let tool = Tool::new(&app, "");
    let output = tool
        .command(&["status"])
        .env("AMQP_URL", url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused the login of user \"guest\""),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-pw-4711"), "{stderr}");
}

#[tokio::test]
async fn a_password_changed_under_the_daemon_is_a_readyz_reason_until_restored() {
    let app = TestApp::prepare_with(|_| {}).await;
    let user = LoginUser::create("first-pw").await;
    let daemon = DaemonProcess::start_against(&app.config_toml(), &[], &user.url("first-pw"));
    app.wait_until_consuming().await;

    user.set_password("second-pw").await;
    user.close_connections().await;
    eventually(
        "/readyz names the refused login",
        Duration::from_secs(20),
        || async {
            let (code, body) = app.http_get("/readyz").await;
            code == 503 && body.contains("refused the login") && body.contains(&user.name)
        },
    )
    .await;
    eventually("an ERROR per attempt", Duration::from_secs(10), || async {
        daemon
            .log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("refused the login"))
    })
    .await;
    assert!(!daemon.log().contains("first-pw"));

    user.set_password("first-pw").await;
    app.wait_until_consuming().await;
    eventually("ready again", Duration::from_secs(20), || async {
        app.http_get("/readyz").await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn errors_name_the_host_port_or_url_that_failed_never_a_password() {
    let closed = crate::helpers::free_local_port();
    let token_url = format!("http://{closed}/oauth/token");
    let app = TestApp::prepare_with(|s| s.zoom.oauth_token_url = token_url.clone()).await;
    let tool = Tool::new(&app, "");

    // A broker host that does not resolve.
    let output = tool
        .command(&["check"])
        .env("AMQP_URL", "amqp://u:pw-4711@no-such-host.invalid:5672/%2f")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("no-such-host.invalid:5672"), "{said}");
    assert!(!said.contains("pw-4711"), "{said}");

    // A vhost that does not exist: refused by name, with the user.
    let output = tool
        .command(&["check"])
        .env(
            "AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/no-vhost-4711",
        )
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("127.0.0.1:5672 refused user \"guest\" the vhost \"no-vhost-4711\""),
        "{out}"
    );

    // A token endpoint nothing listens on.
    let (code, out, err) = tool.run_async(&["check"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&token_url), "{out}");

    // A daemon that does not run.
    let (_, out, err) = tool.run_async(&["status"]).await;
    let readyz = format!("http://{}/readyz", app.settings.http.listen);
    assert!(out.contains(&readyz), "{out}{err}");
}

/// Zoom refuses the app's credentials at start-up: the daemon stays up,
/// not ready and not consuming (the event waits in the queue, nothing is
/// dead-lettered for a config mistake); with the right secret it consumes.
#[tokio::test]
async fn wrong_zoom_credentials_keep_the_daemon_unready_and_the_event_queued() {
    use crate::helpers::{ACCOUNT_ID, CLIENT_ID, CLIENT_SECRET, event, groups_of, mapped_zoom};
    let mut seed = mapped_zoom().user("U1", "u1@example.com", &["grp_eng"]);
    seed.auth.account_id = Some(ACCOUNT_ID.into());
    seed.auth.client_id = Some(CLIENT_ID.into());
    seed.auth.client_secret = Some(CLIENT_SECRET.into());
    let zoom = crate::helpers::spawn_zoom(seed).await;
    let app = TestApp::prepare_with(|s| crate::helpers::use_zoom(s, &zoom)).await;
    app.publish_json(event("e-cred", "U1", Some("Engineering"), "Sales"))
        .await;

    let wrong = [("ZOOM_CLIENT_SECRET", Some("not-the-secret-99"))];
    let mut daemon = DaemonProcess::start_with_env(&app.config_toml(), &[], &wrong);
    eventually(
        "/readyz names the ZOOM_* variables",
        Duration::from_secs(15),
        || async {
            let Some((code, body)) = readyz(&app).await else {
                return false;
            };
            code == 503
                && ["ZOOM_ACCOUNT_ID", "ZOOM_CLIENT_ID", "ZOOM_CLIENT_SECRET"]
                    .iter()
                    .all(|v| body.contains(v))
        },
    )
    .await;
    assert_eq!(app.queue_state(&app.queue).await, (1, 0), "not consumed");
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0);
    assert!(!daemon.log().contains("not-the-secret-99"));
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).await, Some(0));

    let mut daemon = DaemonProcess::start(&app.config_toml());
    eventually("applied", Duration::from_secs(20), || async {
        groups_of(&zoom, "U1") == ["grp_sales"]
    })
    .await;
    assert_eq!(app.http_get("/readyz").await.0, 200);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).await, Some(0));
}

/// The daemon process's `/readyz`, once its HTTP server is up.
async fn readyz(app: &TestApp) -> Option<(u16, String)> {
    zoom_dept_sync::control::try_readiness(app.settings.http.listen)
        .await
        .ok()
}

/// A token endpoint that does not answer is not a credentials problem:
/// `/readyz` says it is unavailable, names no `ZOOM_*` variable, and the
/// daemon does not consume meanwhile.
#[tokio::test]
async fn a_token_endpoint_that_is_away_reads_apart_from_wrong_credentials() {
    let closed = crate::helpers::free_local_port();
    let app = TestApp::prepare_with(|s| {
        s.zoom.oauth_token_url = format!("http://{closed}/oauth/token");
    })
    .await;
    let mut daemon = DaemonProcess::start(&app.config_toml());
    eventually(
        "/readyz says the endpoint is away",
        Duration::from_secs(15),
        || async {
            readyz(&app).await.is_some_and(|(code, body)| {
                code == 503
                    && body.contains("token endpoint is unavailable")
                    && body.contains(&closed.to_string())
                    && !body.contains("ZOOM_CLIENT_SECRET")
            })
        },
    )
    .await;
    assert_eq!(app.queue_state(&app.queue).await.1, 0, "not consuming");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).await, Some(0));
}

/// The receiver, as the binary: `ingest --config` in a temp dir, with only
/// `env` (its secret set), logging to a piped stderr.
fn ingest_binary(
    config: &str,
    env: &[(&str, &str)],
) -> (tokio::process::Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("write config");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"));
    command
        .args(["ingest", "--config"])
        .arg(&path)
        .env_clear()
        .env(
            "ZDS_INGEST_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    (command, dir)
}

fn ingest_config(queue: &str) -> String {
    let listen = crate::helpers::free_local_port();
    let probes = crate::helpers::free_local_port();
    format!(
        "[amqp]\nqueue = \"{queue}\"\n[ingest]\nlisten = \"{listen}\"\nprobe_listen = \"{probes}\"\n\
         [departments]\nSales = \"grp_sales\"\n"
    )
}

#[tokio::test]
async fn the_receiver_with_a_refused_broker_login_at_start_up_exits_2_naming_the_user() {
    let queue = crate::helpers::unique_name("ingest-login");
    let url = "amqp://guest:not-the-pw-4711@127.0.0.1:5672/%2f";
    let (mut command, _dir) = ingest_binary(&ingest_config(&queue), &[("AMQP_URL", url)]);
    let child = command.spawn().expect("start ingest");
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("ingest exits")
        .expect("wait");
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{log}");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR zoom_dept_sync"))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("refused the login of user \"guest\"") && errors[0].contains("AMQP_URL"),
        "{log}"
    );
    assert!(!log.contains("not-the-pw-4711"), "{log}");
    assert!(!log.contains("trying again"), "{log}");
}

#[tokio::test]
async fn the_receiver_names_a_login_refused_after_its_first_session() {
    let queue = crate::helpers::unique_name("ingest-login");
    let user = LoginUser::create("first-pw").await;
    let config = ingest_config(&queue);
    let probes = config
        .lines()
        .find_map(|l| l.strip_prefix("probe_listen = "))
        .expect("probe_listen")
        .trim_matches('"')
        .to_owned();
    let url = user.url("first-pw");
    let (mut command, _dir) = ingest_binary(&config, &[("AMQP_URL", url.as_str())]);
    let child = command.spawn().expect("start ingest");
    let readyz = || async {
        match reqwest::get(format!("http://{probes}/readyz")).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    };
    eventually("ready", Duration::from_secs(10), || async {
        readyz().await.0 == 200
    })
    .await;

    user.set_password("second-pw").await;
    user.close_connections().await;
    let named = format!("the broker refuses the login of user {}", user.name);
    eventually(
        "/readyz names the refused login",
        Duration::from_secs(15),
        || async {
            let (status, body) = readyz().await;
            status == 503 && body.contains(&named) && body.contains("AMQP_URL")
        },
    )
    .await;
    let (_, body) = readyz().await;
    assert!(!body.contains("cannot reach"), "{body}");
    drop(child);
}
