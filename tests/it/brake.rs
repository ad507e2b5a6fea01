//! The brake on the live path: a burst of writes past `brake.max_changes`
//! within the window stops before the next write; the held events wait on
//! the queue in order, `/readyz` names the brake, and `resume` lets the
//! rest through.

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicNackOptions};
use zoom_dept_sync::config::BrakeSettings;
use zoom_dept_sync::control::request_resume;
use zoom_fake::FakeHandle;

use crate::helpers::Tool;
use crate::helpers::{TestApp, engineers, eventually, groups_of, header_str, spawn_zoom, use_zoom};

/// A daemon on `zoom` with `concurrency` and the brake at `max_changes` /
/// `max_removals` within an hour.
async fn braked_app(
    zoom: &FakeHandle,
    concurrency: usize,
    max_changes: u32,
    max_removals: u32,
) -> TestApp {
    TestApp::spawn_with(|s| {
        use_zoom(s, zoom);
        s.worker.concurrency = concurrency;
        s.brake = BrakeSettings {
            max_changes,
            max_removals,
            window_secs: 3600,
        };
    })
    .await
}

fn users_in_sales(zoom: &FakeHandle, users: usize) -> usize {
    (0..users)
        .filter(|i| groups_of(zoom, &format!("U{i}")) == ["grp_sales"])
        .count()
}

/// The case: 50 moves with `max_changes = 20` are held at 20, the
/// other 30 wait on the queue (none dead-lettered), `/readyz` and the gauge
/// say so; `resume` lets them through.
#[tokio::test]
async fn a_burst_past_max_changes_is_held_until_resume() {
    const EVENTS: usize = 50;
    let zoom = spawn_zoom(engineers(EVENTS)).await;
    let mut app = braked_app(&zoom, 4, 20, 50).await;
    app.publish_moves(EVENTS).await;
    eventually("the brake holds", Duration::from_secs(20), || async {
        let (ready, consumers) = app.queue_state(&app.queue).await;
        consumers == 0 && ready as usize == EVENTS - users_in_sales(&zoom, EVENTS)
    })
    .await;
    assert_eq!(users_in_sales(&zoom, EVENTS), 20, "held at 20 writes");
    assert_eq!(zoom.counters().medium.calls, 20, "no write past the limit");
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0);
    let (status, body) = app.http_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("brake engaged: 20 changes"), "{body}");
    let metrics = app.http_get("/metrics").await.1;
    assert!(
        metrics.contains("zoom_dept_sync_brake_engaged 1"),
        "{metrics}"
    );

    let answer = request_resume(app.http).await.expect("resume is accepted");
    assert!(answer.contains("held burst goes through"), "{answer}");
    eventually("the rest is applied", Duration::from_secs(20), || async {
        users_in_sales(&zoom, EVENTS) == EVENTS
    })
    .await;
    eventually("consuming again", Duration::from_secs(10), || async {
        app.queue_state(&app.queue).await == (0, 1) && app.http_get("/readyz").await.0 == 200
    })
    .await;
    let metrics = app.http_get("/metrics").await.1;
    assert!(
        metrics.contains("zoom_dept_sync_brake_engaged 0"),
        "{metrics}"
    );
    app.stop_and_assert_queues_empty().await;
}

/// `leave` events count as removals against their own, lower limit.
#[tokio::test]
async fn removals_are_held_at_max_removals() {
    const EVENTS: usize = 12;
    let zoom = spawn_zoom(engineers(EVENTS)).await;
    let mut app = braked_app(&zoom, 2, 100, 5).await;
    for i in 0..EVENTS {
        app.publish_json(serde_json::json!({
            "event_id": format!("l{i}"), "zoom_user_id": format!("U{i}"), "action": "leave",
        }))
        .await;
    }
    eventually("the brake holds", Duration::from_secs(20), || async {
        app.queue_state(&app.queue).await.1 == 0
    })
    .await;
    let left = (0..EVENTS)
        .filter(|i| groups_of(&zoom, &format!("U{i}")).is_empty())
        .count();
    assert_eq!(left, 5, "held at 5 removals");
    let (status, body) = app.http_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("brake.max_removals = 5"), "{body}");
    request_resume(app.http).await.expect("resume");
    eventually("all left", Duration::from_secs(20), || async {
        (0..EVENTS).all(|i| groups_of(&zoom, &format!("U{i}")).is_empty())
    })
    .await;
    app.stop_and_assert_queues_empty().await;
}

/// A plan approved with `reconcile --apply --allow-large` is not held a
/// second time: with `max_changes = 1`, its five moves all land.
#[tokio::test]
async fn a_reconcile_plan_approved_as_large_is_not_held_again() {
    const USERS: usize = 5;
    let zoom = spawn_zoom(engineers(USERS)).await;
    let brake = BrakeSettings {
        max_changes: 1,
        max_removals: 1,
        window_secs: 3600,
    };
    let mut app = TestApp::prepare_with(|s| {
        use_zoom(s, &zoom);
        s.brake = brake;
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, app.config_toml()).expect("config");
    let export: String = (0..USERS).fold("email,department\n".into(), |csv, i| {
        csv + &format!("u{i}@example.com,Sales\n")
    });
    let export_path = dir.path().join("export.csv");
    std::fs::write(&export_path, export).expect("export");
    let reconcile = |extra: &'static [&'static str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"));
        command
            .args(["reconcile", "--config"])
            .arg(&config)
            .arg("--hr-export")
            .arg(&export_path)
            .args(["--apply"])
            .args(extra)
            .env_clear()
            .env("AMQP_URL", crate::helpers::amqp_url())
            .env("ZOOM_ACCOUNT_ID", crate::helpers::ACCOUNT_ID)
            .env("ZOOM_CLIENT_ID", crate::helpers::CLIENT_ID)
            .env("ZOOM_CLIENT_SECRET", crate::helpers::CLIENT_SECRET);
        // Not blocking: zoom-fake answers from this test's runtime.
        tokio::process::Command::from(command).output()
    };
    let out = reconcile(&["--allow-large"]).await.expect("reconcile runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(app.queue_state(&app.queue).await.0, USERS as u32);
    app.start().await;
    eventually("all five moved", Duration::from_secs(20), || async {
        users_in_sales(&zoom, USERS) == USERS
    })
    .await;
    let metrics = app.http_get("/metrics").await.1;
    assert!(
        metrics.contains("zoom_dept_sync_brake_engaged 0"),
        "{metrics}"
    );
    assert_eq!(app.http_get("/readyz").await.0, 200);
    app.stop_and_assert_queues_empty().await;
}

/// 50 moves with `max_changes = 20`: returns once the brake holds the 30
/// the daemon did not make, with the tool's config beside the daemon's.
async fn held_burst(zoom: &FakeHandle) -> (TestApp, Tool) {
    let app = braked_app(zoom, 4, 20, 50).await;
    app.publish_moves(50).await;
    eventually("the brake holds", Duration::from_secs(20), || async {
        app.http_get("/readyz").await.1.contains("brake engaged")
            && app.queue_state(&app.queue).await == (30, 0)
    })
    .await;
    let tool = Tool::new(&app, "");
    (app, tool)
}

/// The event ids of `queue`, head first, read as the toolbox reads (every
/// message taken unacked, then all handed back with one nack): the queue
/// is left as it was.
async fn peek_ids(app: &TestApp, queue: &str) -> Vec<String> {
    let channel = app.connection.create_channel().await.expect("channel");
    let (mut ids, mut last) = (Vec::new(), None);
    while let Some(got) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .expect("basic.get")
    {
        let body: serde_json::Value = serde_json::from_slice(&got.delivery.data).unwrap();
        ids.push(body["event_id"].as_str().unwrap_or("-").to_owned());
        last = Some(got.delivery.delivery_tag);
    }
    if let Some(tag) = last {
        let requeue = BasicNackOptions {
            multiple: true,
            requeue: true,
        };
        channel.basic_nack(tag, requeue).await.expect("nack");
    }
    let _ = channel.close(200, "done".into()).await;
    ids
}

/// Issue 20, item 4: `status` shows what the brake holds, grouped by
/// department and target group, and its read changes nothing.
#[tokio::test]
async fn status_shows_the_held_burst_by_department_and_group() {
    let zoom = spawn_zoom(engineers(50)).await;
    let (mut app, tool) = held_burst(&zoom).await;
    let before = peek_ids(&app, &app.queue).await;
    assert_eq!(before.len(), 30);

    let (code, out, err) = tool.run_async(&["status", "--json"]).await;
    assert_eq!(code, 1, "not ready while held: {out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(status["held"]["events"], 30, "{status}");
    assert_eq!(status["held"]["capped"], false, "{status}");
    assert_eq!(
        status["held"]["by_target"],
        serde_json::json!({"Sales → grp_sales": 30}),
        "{status}"
    );
    let (_, text, _) = tool.run_async(&["status"]).await;
    assert!(text.contains("held by the brake: 30 events"), "{text}");
    assert!(text.contains("Sales → grp_sales: 30"), "{text}");

    assert_eq!(
        peek_ids(&app, &app.queue).await,
        before,
        "same events, same order"
    );
    assert_eq!(app.queue_state(&app.queue).await, (30, 0));
    assert_eq!(
        users_in_sales(&zoom, 50),
        20,
        "the peek let nothing through"
    );
    request_resume(app.http).await.expect("resume");
    eventually("the rest is applied", Duration::from_secs(20), || async {
        users_in_sales(&zoom, 50) == 50
    })
    .await;
    // Once consuming, `status` reads nothing from the input queue.
    let (_, out, _) = tool.run_async(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(status["held"].is_null(), "{status}");
    app.stop_and_assert_queues_empty().await;
}

/// `brake refuse` moves the held burst to the dead-letter queue as
/// `brake_refused`; `resume` then has nothing to let through and the daemon
/// consumes again; `dead-letters replay --reason brake_refused` brings the
/// burst back, and with the brake released it is applied.
#[tokio::test]
async fn brake_refuse_dead_letters_the_held_burst_for_replay() {
    let zoom = spawn_zoom(engineers(50)).await;
    let (mut app, tool) = held_burst(&zoom).await;
    let held = peek_ids(&app, &app.queue).await;

    let (code, _, err) = tool.run_async(&["brake", "refuse"]).await;
    assert_eq!(code, 2, "refuse needs --yes: {err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(app.queue_state(&app.queue).await.0, 30);

    let (code, out, err) = tool.run_async(&["brake", "refuse", "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("refused 30 held events"), "{out}");
    assert!(out.contains("brake cleared"), "{out}");
    assert_eq!(app.queue_state(&app.queue).await.0, 0, "nothing left held");
    assert_eq!(
        peek_ids(&app, &app.dead_letter_queue).await,
        held,
        "in order"
    );
    let (code, out, err) = tool
        .run_async(&[
            "dead-letters",
            "list",
            "--reason",
            "brake_refused",
            "--json",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON");
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|r| r["reason"] == "brake_refused"));
    assert!(rows.iter().all(|r| r["failed_at"].is_string()), "{out}");

    // No `resume` needed: refusing cleared the brake (no release window).
    app.wait_until_consuming().await;
    eventually("ready again", Duration::from_secs(10), || async {
        app.http_get("/readyz").await.0 == 200
    })
    .await;
    let (code, _, err) = tool.run_async(&["brake", "refuse", "--yes"]).await;
    assert_eq!(code, 1, "nothing held now: {err}");
    assert!(err.contains("brake is not engaged"), "{err}");
    assert_eq!(users_in_sales(&zoom, 50), 20);

    let (code, out, err) = tool
        .run_async(&[
            "dead-letters",
            "replay",
            "--reason",
            "brake_refused",
            "--yes",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed 30"), "{out}");
    // Refusing emptied the window: the replayed burst of 30 is a burst
    // again, held past 20 more writes until an operator lets it through.
    eventually(
        "the brake holds the replay",
        Duration::from_secs(20),
        || async { app.http_get("/readyz").await.1.contains("brake engaged") },
    )
    .await;
    assert_eq!(users_in_sales(&zoom, 50), 40);
    request_resume(app.http).await.expect("resume");
    eventually("the burst is applied", Duration::from_secs(20), || async {
        users_in_sales(&zoom, 50) == 50
    })
    .await;
    app.stop_and_assert_queues_empty().await;
}

/// A refused event carries its reason and when, as the daemon's own do.
#[tokio::test]
async fn a_refused_event_carries_the_dead_letter_headers() {
    let zoom = spawn_zoom(engineers(50)).await;
    let (mut app, tool) = held_burst(&zoom).await;
    let (code, out, err) = tool.run_async(&["brake", "refuse", "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let letters = app.dead_letters(30).await;
    for letter in &letters {
        assert_eq!(
            header_str(letter, "failure-reason").as_deref(),
            Some("brake_refused")
        );
        assert!(header_str(letter, "failed-at").is_some());
        assert_eq!(
            header_str(letter, "source-queue").as_deref(),
            Some(app.queue.as_str())
        );
        assert!(
            header_str(letter, "detail").is_some_and(|d| d.contains("brake refuse")),
            "{:?}",
            header_str(letter, "detail")
        );
    }
    // Refusing cleared the brake: the daemon consumes again by itself.
    app.wait_until_consuming().await;
    app.stop_and_assert_queues_empty().await;
}

/// An event's writes are admitted together or not at all: a move whose
/// removal from another managed group the brake would refuse is not made
/// either, so nobody is left half moved (in the target and an old group).
#[tokio::test]
async fn an_event_is_never_stopped_half_way() {
    let seed =
        crate::helpers::mapped_zoom().user("U0", "u0@example.com", &["grp_eng", "grp_support"]);
    let zoom = spawn_zoom(seed).await;
    let mut app = braked_app(&zoom, 16, 10, 0).await;
    // No previous_department: looked up, then a move and a removal.
    app.publish_json(crate::helpers::event("e0", "U0", None, "Sales"))
        .await;
    eventually("the brake holds", Duration::from_secs(20), || async {
        app.http_get("/readyz").await.1.contains("brake engaged")
    })
    .await;
    assert_eq!(
        groups_of(&zoom, "U0"),
        ["grp_eng", "grp_support"],
        "not half moved"
    );
    assert_eq!(zoom.counters().medium.calls, 0, "no write made");
    request_resume(app.http).await.expect("resume");
    eventually("moved whole", Duration::from_secs(20), || async {
        groups_of(&zoom, "U0") == ["grp_sales"]
    })
    .await;
    app.stop_and_assert_queues_empty().await;
}

/// Issue 21 (review): the approval headers of `reconcile --apply
/// --allow-large` are trusted only on events that came through the default
/// exchange, which only the operator's grant reaches. The receiver's broker
/// user, which may write its own exchange alone, cannot exempt a burst from
/// the brake nor name a reconcile run in the audit trail by setting them.
#[tokio::test]
async fn approval_headers_through_the_receivers_exchange_are_held_as_any_burst() {
    use lapin::BasicProperties;
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};

    const EVENTS: usize = 5;
    let zoom = spawn_zoom(engineers(EVENTS)).await;
    let mut app = braked_app(&zoom, 1, 2, 2).await;
    let exchange = format!("{}.in", app.queue);
    for i in 0..EVENTS {
        let mut headers = FieldTable::default();
        headers.insert(
            "reconcile-allow-large".into(),
            AMQPValue::LongString("true".into()),
        );
        headers.insert(
            "reconcile-run-id".into(),
            AMQPValue::LongString("FORGED-RUN".into()),
        );
        let body = serde_json::to_vec(&crate::helpers::event(
            &format!("e{i}"),
            &format!("U{i}"),
            Some("Engineering"),
            "Sales",
        ))
        .unwrap();
        app.channel
            .basic_publish(
                exchange.as_str().into(),
                app.queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2)
                    .with_headers(headers),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
    eventually("held at two changes", Duration::from_secs(20), || async {
        let (status, body) = app.http_get("/readyz").await;
        status == 503 && body.contains("brake")
    })
    .await;
    assert_eq!(users_in_sales(&zoom, EVENTS), 2, "only the brake's two");
    assert_eq!(app.queue_state(&app.queue).await.0, 3, "three held");
    request_resume(app.http).await.expect("resume");
    eventually("the rest after resume", Duration::from_secs(20), || async {
        users_in_sales(&zoom, EVENTS) == EVENTS
    })
    .await;
    app.stop_and_assert_queues_empty().await;
}
