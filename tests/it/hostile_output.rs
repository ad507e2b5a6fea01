//! What the commands print and write, when event data is hostile or the
//! operator's paths are not what they seem: control characters come out
//! escaped, output files are created new with mode 0600 and never through a
//! symlink, `status` sends no credentials through a proxy, and the HR
//! export is read only when it is a bounded regular file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::helpers::{TestApp, mapped_zoom, spawn_zoom, use_zoom};
use crate::helpers::{Tool, output};

/// A window-title change (OSC 0, ended by BEL) and a screen clear.
const TITLE: &str = "\u{1b}]0;pwned\u{7}";
const CLEAR: &str = "\u{1b}[2J";
/// DEL, a C1 CSI (an 8-bit escape some terminals obey) and a bidi override.
const OTHERS: &str = "\u{7f}\u{9b}\u{202e}";

/// No byte a terminal would act on: nothing below 0x20 but the newline, no
/// DEL, no C1 control and no bidi override or isolate.
fn assert_inert(what: &str, text: &str) {
    for c in text.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        assert!(
            c == '\n' || !(c.is_control() || bidi),
            "{what}: raw {c:?} in {text:?}"
        );
    }
}

async fn put_hostile_dead_letter(app: &TestApp) {
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    let mut headers = FieldTable::default();
    headers.insert("failure-reason".into(), text("invalid_payload"));
    headers.insert("failed-at".into(), text("2026-11-26T10:00:00Z"));
    headers.insert("detail".into(), text(&format!("bad{CLEAR}")));
    let body = json!({
        "event_id": format!("evil{TITLE}"),
        "zoom_user_id": format!("u{CLEAR}{OTHERS}"),
        "previous_department": format!("Eng{TITLE}"),
        "new_department": format!("Sales{CLEAR}\nforged row"),
    });
    app.channel
        .basic_publish(
            "".into(),
            app.dead_letter_queue.as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&body).unwrap(),
            BasicProperties::default().with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

/// `dead-letters list` (table, groups, JSON) and `show` print the hostile
/// fields escaped: `\u{1b}]0;pwned\u{7}` is shown, never obeyed.
#[tokio::test]
async fn dead_letters_list_and_show_escape_control_characters() {
    let app = TestApp::prepare_with(|_| {}).await;
    put_hostile_dead_letter(&app).await;
    let tool = Tool::new(&app, "");
    let runs: [&[&str]; 4] = [
        &["dead-letters", "list"],
        &["dead-letters", "list", "--json"],
        &["dead-letters", "list", "--group-by", "reason"],
        &["dead-letters", "show", &format!("evil{TITLE}")],
    ];
    for args in runs {
        let (code, out, err) = tool.run_async(args).await;
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert_inert(&format!("{args:?}"), &out);
        assert_inert(&format!("{args:?} stderr"), &err);
    }
    let (_, table, _) = tool.run_async(&["dead-letters", "list"]).await;
    assert!(table.contains(r"evil\u{1b}]0;pwned\u{7}"), "{table}");
    assert!(table.contains(r"Sales\u{1b}[2J\nforged row"), "{table}");
    assert!(table.contains(r"u\u{1b}[2J\u{7f}\u{9b}\u{202e}"), "{table}");
    let (_, listed, _) = tool.run_async(&["dead-letters", "list", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_str(&listed).expect("still JSON");
    assert_eq!(
        rows[0]["user"],
        format!("u{CLEAR}{OTHERS}"),
        "JSON keeps the value"
    );
    app.channel
        .queue_purge(app.dead_letter_queue.as_str().into(), Default::default())
        .await
        .unwrap();
}

/// `history` (table and JSON) prints a hostile trail record escaped.
#[tokio::test]
async fn history_escapes_control_characters() {
    let trail = crate::trail::Trail::new();
    let settings = trail.settings("1h");
    let app = TestApp::prepare_with(|s| s.outcomes = settings).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("stream")),
    );
    app.channel
        .queue_declare(
            trail.stream.as_str().into(),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await
        .expect("declare the stream");
    let record = json!({
        "event_id": format!("evil{TITLE}"),
        "user": "U1",
        "email": "u1@example.com",
        "processed_at": "2026-11-26T10:00:00Z",
        "result": format!("moved{CLEAR}"),
        "action": "move",
        "from_groups": [format!("g{OTHERS}")],
        "to_group": format!("grp{TITLE}"),
        "steps": [],
        "error": {"reason": format!("r{CLEAR}"), "code": 1, "recommended_action": "x\ny"},
    });
    app.channel
        .basic_publish(
            "".into(),
            trail.stream.as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&record).unwrap(),
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    let tool = Tool::new(&app, "");
    for json in [false, true] {
        let mut args = vec!["history", "--user", "U1"];
        if json {
            args.push("--json");
        }
        let (code, out, err) = tool.run_async(&args).await;
        assert_eq!(code, 0, "{out}{err}");
        assert_inert(&format!("{args:?}"), &out);
        if !json {
            assert!(out.contains(r"evil\u{1b}]0;pwned\u{7}"), "{out}");
            assert!(out.contains(r"moved\u{1b}[2J"), "{out}");
        }
    }
    trail.delete(&app).await;
}

/// `dead-letters purge --export`: an existing file or a symlink (to a file,
/// or dangling) is refused before anything is read or dropped, and the
/// target is left as it was; a new export is created with mode 0600.
#[tokio::test]
async fn purge_export_is_created_new_with_mode_0600_never_through_a_symlink() {
    let app = TestApp::prepare_with(|_| {}).await;
    put_hostile_dead_letter(&app).await;
    let tool = Tool::new(&app, "");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.txt");
    std::fs::write(&target, "precious\n").unwrap();
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let dangling = dir.path().join("dangling.jsonl");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    for path in [&target, &link, &dangling] {
        let purge = ["dead-letters", "purge", "--all", "--yes", "--export"];
        let mut args = purge.to_vec();
        args.push(path.to_str().unwrap());
        let (code, out, err) = tool.run_async(&args).await;
        assert_eq!(code, 2, "{path:?}: {out}{err}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "names the file: {err}"
        );
        assert!(err.contains("exists"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }
    assert!(
        !dir.path().join("nowhere").exists(),
        "no file behind the link"
    );
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 1);

    let fresh = dir.path().join("fresh.jsonl");
    let args = [
        "dead-letters",
        "purge",
        "--all",
        "--yes",
        "--export",
        fresh.to_str().unwrap(),
    ];
    let (code, out, err) = tool.run_async(&args).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_mode_0600(&fresh);
    assert_eq!(std::fs::read_to_string(&fresh).unwrap().lines().count(), 1);
}

fn assert_mode_0600(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{path:?} is {mode:o}");
}

/// `reconcile --plan-out`: the same rules as the purge export.
#[tokio::test]
async fn plan_out_is_created_new_with_mode_0600_never_through_a_symlink() {
    let zoom = spawn_zoom(mapped_zoom()).await;
    let app = TestApp::prepare_with(|s| use_zoom(s, &zoom)).await;
    let tool = Tool::new(&app, "");
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.csv");
    std::fs::write(&export, "email,department\n").unwrap();
    let target = dir.path().join("target.txt");
    std::fs::write(&target, "precious\n").unwrap();
    let link = dir.path().join("plan.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let reconcile = async |plan: &Path| {
        let args = [
            "reconcile",
            "--hr-export",
            export.to_str().unwrap(),
            "--plan-out",
            plan.to_str().unwrap(),
        ];
        tool.run_async(&args).await
    };
    for path in [&target, &link] {
        let (code, out, err) = reconcile(path).await;
        assert_eq!(code, 2, "{path:?}: {out}{err}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "names the file: {err}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }
    let fresh = dir.path().join("fresh.json");
    let (code, out, err) = reconcile(&fresh).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_mode_0600(&fresh);
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fresh).unwrap()).unwrap();
    assert_eq!(plan["changes"], 0, "{plan}");
}

/// `--hr-export` on a FIFO: refused at once (exit 2), never opened (an
/// open would block until a writer comes).
#[tokio::test]
async fn hr_export_on_a_fifo_is_refused_without_blocking() {
    let zoom = spawn_zoom(mapped_zoom()).await;
    let app = TestApp::prepare_with(|s| use_zoom(s, &zoom)).await;
    let tool = Tool::new(&app, "");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("export.csv");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let mut command = tool.command(&["reconcile", "--hr-export", fifo.to_str().unwrap()]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("reconcile must not block on a FIFO")
        .expect("wait");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert_eq!(zoom.counters().total.calls, 0);
}

/// A proxy that records every byte it is sent and answers nothing.
async fn recording_proxy() -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = vec![0; 4096];
                let n = socket.read(&mut got).await.unwrap_or(0);
                let _ = tx.send(got[..n].to_vec());
            });
        }
    });
    (url, rx)
}

/// `status` with an `http://` management URL and `HTTP_PROXY` set: the
/// management API is asked directly, so the broker's Basic credentials
/// never reach the proxy, and the numbers still come.
#[tokio::test]
async fn status_sends_no_credentials_through_a_proxy() {
    let app = TestApp::prepare_with(|_| {}).await;
    let tool = Tool::new(&app, "management_url = \"http://127.0.0.1:15672\"\n");
    let (proxy, mut received) = recording_proxy().await;
    let mut command = tool.command(&["status", "--json"]);
    for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"] {
        command.env(name, &proxy);
    }
    let mut command = tokio::process::Command::from(command);
    let (code, out, err) = output(command.output().await.expect("run"));
    if let Ok(sent) = received.try_recv() {
        panic!("the proxy was sent: {}", String::from_utf8_lossy(&sent));
    }
    // Exit 1: no daemon runs, so its /readyz does not answer.
    assert_eq!(code, 1, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(
        status["details"].is_object(),
        "the management API answered: {status}"
    );
    assert!(status["management_error"].is_null(), "{status}");
}

/// Found by the review: with `zoom.allow_insecure_http` (tests, the demo's
/// zoom-fake) the token request, with its Basic credentials, went through
/// `HTTP_PROXY`. A plain-http API URL is never reached through a proxy.
#[tokio::test]
async fn an_http_zoom_url_is_never_asked_through_a_proxy() {
    let app = TestApp::prepare_with(|_| {}).await;
    let tool = Tool::new(&app, "");
    let (proxy, mut received) = recording_proxy().await;
    let mut command = tool.command(&["check"]);
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env(name, &proxy);
    }
    let mut command = tokio::process::Command::from(command);
    let (_, out, err) = output(command.output().await.expect("run"));
    if let Ok(sent) = received.try_recv() {
        panic!("the proxy was sent: {}", String::from_utf8_lossy(&sent));
    }
    assert!(
        app.token_requests() >= 1,
        "Zoom was asked directly: {out}{err}"
    );
}

/// `--hr-export /proc/self/environ`: a procfs file reads as size 0 but has
/// content; it is refused as not a real file (exit 2), and nothing of the
/// environment (the Zoom secret, the broker password) reaches the error.
#[tokio::test]
async fn hr_export_from_procfs_is_refused_without_quoting_it() {
    let zoom = spawn_zoom(mapped_zoom()).await;
    let app = TestApp::prepare_with(|s| use_zoom(s, &zoom)).await;
    let tool = Tool::new(&app, "");
    let mut command = tool.command(&["reconcile", "--hr-export", "/proc/self/environ"]);
    command
        .env("ZOOM_CLIENT_SECRET", "s3cret-zz")
        .env("AMQP_URL", "amqp://guest:pw-zz9@127.0.0.1:5672/%2f");
    let (code, out, err) = output(
        tokio::process::Command::from(command)
            .output()
            .await
            .expect("run"),
    );
    assert_eq!(code, 2, "{out}{err}");
    for secret in ["s3cret-zz", "pw-zz9"] {
        assert!(!err.contains(secret), "{secret} in {err}");
        assert!(!out.contains(secret), "{secret} in {out}");
    }
    assert!(err.contains("not a real file"), "{err}");
    assert_eq!(zoom.counters().total.calls, 0);
}

/// A header without the needed columns: the error names what it found,
/// escaped (no raw ESC or BEL reaches the terminal).
#[tokio::test]
async fn hr_export_header_cells_are_escaped_in_the_error() {
    let zoom = spawn_zoom(mapped_zoom()).await;
    let app = TestApp::prepare_with(|s| use_zoom(s, &zoom)).await;
    let tool = Tool::new(&app, "");
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.csv");
    std::fs::write(&export, format!("mail{TITLE},dept{CLEAR}\n")).unwrap();
    let (code, out, err) = tool
        .run_async(&["reconcile", "--hr-export", export.to_str().unwrap()])
        .await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("no column \"email\""), "{err}");
    assert!(err.contains(r"mail\u{1b}]0;pwned\u{7}"), "{err}");
    assert_inert("stderr", &err);
}
