//! The operator's toolbox, run as the binary against a real broker:
//! `dead-letters list | show | replay | purge`, `check`, `publish`.

use std::process::Stdio;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use zoom_dept_sync::broker::admin::Admin;
use zoom_dept_sync::config::QueueType;
use zoom_fake::FakeConfig;

use crate::helpers::{
    CLIENT_SECRET, TestApp, Tool, drain, eventually, groups_of, header_int, header_str,
    mapped_zoom, output, spawn_zoom, use_zoom,
};

/// A dead letter as the daemon writes it.
struct Letter<'a> {
    id: &'a str,
    reason: &'a str,
    code: Option<i64>,
    replays: Option<i64>,
}

fn letter<'a>(id: &'a str, reason: &'a str, code: Option<i64>) -> Letter<'a> {
    Letter {
        id,
        reason,
        code,
        replays: None,
    }
}

async fn put_dead_letter(app: &TestApp, letter: &Letter<'_>) {
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    let mut headers = FieldTable::default();
    headers.insert("failure-reason".into(), text(letter.reason));
    headers.insert("failed-at".into(), text("2026-11-26T10:00:00Z"));
    headers.insert("failure-attempts".into(), AMQPValue::LongLongInt(1));
    headers.insert("source-queue".into(), text(&app.queue));
    headers.insert("producer-header".into(), text("kept"));
    if let Some(code) = letter.code {
        headers.insert("zoom-error-code".into(), AMQPValue::LongLongInt(code));
        headers.insert("zoom-http-status".into(), AMQPValue::LongLongInt(404));
    }
    if let Some(replays) = letter.replays {
        headers.insert("replay-count".into(), AMQPValue::LongLongInt(replays));
    }
    let user = letter.id.replace('e', "U");
    let body = serde_json::json!({
        "event_id": letter.id, "zoom_user_id": user,
        "previous_department": "Engineering", "new_department": "Sales",
    });
    app.channel
        .basic_publish(
            "".into(),
            app.dead_letter_queue.as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&body).unwrap(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

/// Ten dead letters: e0..e9, codes 4130 on the even ones.
async fn ten_mixed(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = format!("e{i}");
        let l = match i % 4 {
            0 | 2 => letter(&id, "zoom_rejected", Some(4130)),
            1 => letter(&id, "zoom_rejected", Some(1001)),
            _ => letter(&id, "unmapped_department", None),
        };
        put_dead_letter(app, &l).await;
        ids.push(id);
    }
    ids
}

fn event_id(delivery: &Delivery) -> String {
    let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    body["event_id"].as_str().unwrap().to_owned()
}

fn ids(messages: &[Delivery]) -> Vec<String> {
    messages.iter().map(event_id).collect()
}

/// Test 1: `list --code 4130` shows exactly those, `--group-by code` counts
/// right, and afterwards the queue holds all ten in the same order.
#[tokio::test]
async fn listing_filters_and_groups_and_changes_nothing() {
    let app = TestApp::prepare_with(|_| {}).await;
    let all = ten_mixed(&app).await;
    let tool = Tool::new(&app, "");

    let (code, out, err) = tool.run(&["dead-letters", "list", "--code", "4130", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON rows");
    let listed: Vec<&str> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["e0", "e2", "e4", "e6", "e8"]);
    assert!(
        rows.iter()
            .all(|r| r["zoom_code"] == 4130 && r["reason"] == "zoom_rejected")
    );

    let (code, out, _) = tool.run(&["dead-letters", "list", "--group-by", "code", "--json"]);
    assert_eq!(code, 0);
    let groups: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let counts: Vec<(&str, u64)> = groups
        .iter()
        .map(|g| (g["key"].as_str().unwrap(), g["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, [("4130", 5), ("1001", 3), ("-", 2)]);
    assert_eq!(groups[0]["sample_event_id"], "e0");

    let (code, table, _) = tool.run(&["dead-letters", "list", "--reason", "unmapped_department"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("e3") && table.contains("e7") && !table.contains("e0 "),
        "{table}"
    );
    assert!(table.contains("2 dead letters"), "{table}");

    let (code, shown, _) = tool.run(&["dead-letters", "show", "e4"]);
    assert_eq!(code, 0);
    assert!(shown.contains(r#""zoom-error-code": 4130"#), "{shown}");
    assert!(shown.contains(r#""event_id": "e4""#), "{shown}");
    let (code, _, err) = tool.run(&["dead-letters", "show", "nope"]);
    assert_eq!(code, 1, "{err}");

    assert_eq!(ids(&drain(&app, &app.dead_letter_queue).await), all);
}

/// On a cluster (`queue_type = "quorum"`) the dead-letter queue is a
/// quorum queue too, replicated, declared with an explicit delivery limit
/// so RabbitMQ 4.0-4.2's default of 20 (which counts every hand-back) does
/// not apply: read 25 times, it keeps every message, in order.
#[tokio::test]
async fn on_a_cluster_the_dead_letter_queue_is_quorum_and_reading_it_loses_nothing() {
    let app = TestApp::prepare_with(|s| s.amqp.queue_type = QueueType::Quorum).await;
    let channel = app.connection.create_channel().await.unwrap();
    let mut classic = FieldTable::default();
    classic.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("classic")),
    );
    let redeclared = channel
        .queue_declare(
            app.dead_letter_queue.as_str().into(),
            lapin::options::QueueDeclareOptions::durable(),
            classic,
        )
        .await;
    let refused = redeclared.expect_err("a quorum queue refuses a classic redeclaration");
    assert!(refused.to_string().contains("x-queue-type"), "{refused}");
    let topology = zoom_dept_sync::broker::topology::Topology::new(&app.settings.amqp);
    let limit = topology.arguments(&app.dead_letter_queue);
    assert_eq!(
        limit.inner().get("x-delivery-limit"),
        Some(&AMQPValue::LongInt(i32::MAX))
    );
    let all = ten_mixed(&app).await;
    let tool = Tool::new(&app, "queue_type = \"quorum\"\n");
    for _ in 0..25 {
        let (code, _, err) = tool.run_async(&["dead-letters", "list", "--json"]).await;
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(ids(&drain(&app, &app.dead_letter_queue).await), all);
}

/// A quorum queue puts what is handed back behind what it still holds, so
/// a read that stops early (a capped peek, a sweep told to stop) would
/// rotate the queue. Both take the rest before handing anything back.
#[tokio::test]
async fn a_read_that_stops_early_keeps_a_quorum_queue_in_order() {
    use zoom_dept_sync::broker::admin::{Step, SweepLimits};
    let app = TestApp::prepare_with(|s| s.amqp.queue_type = QueueType::Quorum).await;
    let published: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    for (i, id) in published.iter().enumerate() {
        let event = crate::helpers::event(id, &format!("U{i}"), None, "Sales");
        app.publish_json(event).await;
    }
    let admin = Admin::connect(&app.settings.amqp, "test").await.unwrap();
    // A whole read first: everything is now among the handed-back, and a
    // head handed back again goes behind the others.
    assert_eq!(admin.peek(&app.queue).await.unwrap().len(), 6);
    let (head, capped) = admin.peek_at_most(&app.queue, 2).await.unwrap();
    assert!(capped && head.len() == 2);
    let limits = SweepLimits {
        rate: None,
        stop: tokio_util::sync::CancellationToken::new(),
        hold_for: Duration::from_secs(30),
    };
    let mut seen = 0;
    let summary = admin
        .sweep(&app.queue, &limits, |_| {
            seen += 1;
            if seen < 2 { Step::Keep } else { Step::Stop }
        })
        .await
        .unwrap();
    assert!(summary.stopped);
    admin.close().await;
    assert_eq!(ids(&drain(&app, &app.queue).await), published);
}

/// Tests 2 and 3: `replay --code 4130` puts those back on the input queue
/// with the failure headers gone and `replay-count = 1`; one replayed three
/// times already is skipped; the rest stay in order; once Zoom knows the
/// group, the daemon applies the replayed events.
#[tokio::test]
async fn replay_moves_the_selected_ones_and_skips_the_loopers() {
    // Zoom knows the users of the replayed events, U0, U2 .. U8.
    let seed = [0, 2, 4, 6, 8].iter().fold(mapped_zoom(), |seed, i| {
        seed.user(&format!("U{i}"), &format!("u{i}@example.com"), &["grp_eng"])
    });
    let zoom = spawn_zoom(seed).await;
    let mut app = TestApp::prepare_with(|s| use_zoom(s, &zoom)).await;
    ten_mixed(&app).await;
    let looper = Letter {
        replays: Some(3),
        ..letter("e10", "zoom_rejected", Some(4130))
    };
    put_dead_letter(&app, &looper).await;
    let tool = Tool::new(&app, "");

    let (code, out, _) = tool.run(&["dead-letters", "replay", "--code", "4130", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("would replay 5, skip 1"), "{out}");
    assert_eq!(
        app.queue_state(&app.queue).await.0,
        0,
        "a dry run changes nothing"
    );

    let (code, out, err) = tool.run(&["dead-letters", "replay", "--code", "4130", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("skip e10"), "{out}");
    assert!(
        out.contains("replayed 5, skipped 1, left in the dead-letter queue 6"),
        "{out}"
    );

    let replayed = drain(&app, &app.queue).await;
    assert_eq!(ids(&replayed), ["e0", "e2", "e4", "e6", "e8"]);
    for message in &replayed {
        assert_eq!(header_int(message, "replay-count"), Some(1));
        assert!(header_str(message, "replay-id").is_some_and(|id| id.starts_with("replay-")));
        assert!(header_str(message, "replayed-at").is_some());
        assert_eq!(header_str(message, "failure-reason"), None);
        assert_eq!(header_int(message, "zoom-error-code"), None);
        assert_eq!(
            header_str(message, "producer-header").as_deref(),
            Some("kept")
        );
    }
    let left = drain(&app, &app.dead_letter_queue).await;
    assert_eq!(ids(&left), ["e1", "e3", "e5", "e7", "e9", "e10"]);
    // Held ones before, the last one replayed: nothing held after it.
    for letter_id in ["e1", "e11"] {
        put_dead_letter(&app, &letter(letter_id, "zoom_rejected", Some(1001))).await;
    }
    let (code, out, err) = tool.run(&["dead-letters", "replay", "--event-id", "e11", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ids(&drain(&app, &app.queue).await), ["e11"]);
    assert_eq!(ids(&drain(&app, &app.dead_letter_queue).await), ["e1"]);

    // Back on the input queue, the daemon applies them.
    for message in &replayed {
        app.publish_with(&message.data, message.properties.clone())
            .await;
    }
    app.start().await;
    eventually(
        "replayed events applied",
        Duration::from_secs(15),
        || async {
            [0, 2, 4, 6, 8]
                .iter()
                .all(|i| groups_of(&zoom, &format!("U{i}")) == ["grp_sales"])
        },
    )
    .await;
    app.stop_and_assert_queues_empty().await;
}

/// Test 4: a replay killed (SIGKILL) after 5 of 20 leaves every message in
/// exactly one of the two queues.
#[tokio::test]
async fn a_killed_replay_leaves_each_message_in_exactly_one_queue() {
    let app = TestApp::prepare_with(|_| {}).await;
    let mut all = Vec::new();
    for i in 0..20 {
        let id = format!("e{i}");
        put_dead_letter(&app, &letter(&id, "zoom_rejected", Some(4130))).await;
        all.push(id);
    }
    let tool = Tool::new(&app, "");
    let mut replay = tool
        .command(&["dead-letters", "replay", "--rate", "4", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the replay");
    eventually("five replayed", Duration::from_secs(20), || async {
        app.queue_state(&app.queue).await.0 >= 5
    })
    .await;
    // Into the wait between two messages, not between a confirm and its ack.
    tokio::time::sleep(Duration::from_millis(60)).await;
    replay.kill().expect("SIGKILL");
    let _ = replay.wait();
    eventually("the held ones back", Duration::from_secs(10), || async {
        let input = app.queue_state(&app.queue).await.0;
        let dead = app.queue_state(&app.dead_letter_queue).await.0;
        input + dead == 20
    })
    .await;
    let input = ids(&drain(&app, &app.queue).await);
    let dead = ids(&drain(&app, &app.dead_letter_queue).await);
    assert!((5..20).contains(&input.len()), "{} replayed", input.len());
    assert_eq!(input, all[..input.len()], "replayed in order");
    assert_eq!(dead, all[input.len()..], "the rest stay, in order");
}

/// Test 5: `purge --reason unmapped_department --yes --export f.jsonl`: the
/// file holds them, the queue does not, the rest stay in order.
#[tokio::test]
async fn purge_exports_then_drops_the_selected_ones() {
    let app = TestApp::prepare_with(|_| {}).await;
    ten_mixed(&app).await;
    let tool = Tool::new(&app, "");
    let export = tool.dir().join("f.jsonl");

    let (code, _, err) = tool.run(&["dead-letters", "purge", "--reason", "unmapped_department"]);
    assert_eq!(code, 2, "no --yes, no --export: {err}");
    let (code, _, err) = tool.run(&["dead-letters", "purge", "--no-export", "--yes"]);
    assert_eq!(code, 2, "no filter needs --all: {err}");

    let export_arg = export.to_str().unwrap();
    let (code, out, err) = tool.run(&[
        "dead-letters",
        "purge",
        "--reason",
        "unmapped_department",
        "--yes",
        "--export",
        export_arg,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("purged 2 dead letters"), "{out}");
    let exported: Vec<String> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|line| {
            use base64::Engine;
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(line["headers"]["failure-reason"], "unmapped_department");
            let body = base64::engine::general_purpose::STANDARD
                .decode(line["body_base64"].as_str().unwrap())
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            body["event_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(exported, ["e3", "e7"]);

    // The last message selected too (nothing held after it).
    let (code, out, err) = tool.run(&[
        "dead-letters",
        "purge",
        "--code",
        "1001",
        "--yes",
        "--no-export",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("purged 3 dead letters"), "{out}");
    let left = ids(&drain(&app, &app.dead_letter_queue).await);
    assert_eq!(left, ["e0", "e2", "e4", "e6", "e8"]);
}

/// Test 6: `check` against a Zoom that lacks one mapped group: exit 1, and
/// the output names it; every other step passes.
#[tokio::test]
async fn check_names_a_mapped_group_missing_in_zoom() {
    let seed = FakeConfig::default()
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .group("grp_support", "Support")
        .user("E1", "e1@example.com", &["grp_eng"])
        .user("E2", "e2@example.com", &["grp_eng"])
        .user("E3", "e3@example.com", &["grp_eng"])
        .user("S1", "s1@example.com", &["grp_sales"])
        .user("S2", "s2@example.com", &["grp_sales"]);
    let zoom = spawn_zoom(seed).await;
    let app = TestApp::prepare_with(|s| use_zoom(s, &zoom)).await;
    let tool = Tool::new(&app, "");
    // Not blocking: zoom-fake answers on this test's runtime.
    let (code, out, err) = tool.run_async(&["check"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("[FAIL] groups: grp_mkt (for marketing) does not exist in Zoom"),
        "{out}"
    );
    assert!(out.contains("[ok]   broker: reachable"), "{out}");
    assert!(out.contains("[ok]   token: granted"), "{out}");
    assert!(
        out.contains("[warn] groups: grp_support \"Support\" has no members"),
        "{out}"
    );
    assert_eq!(out.matches("[FAIL]").count(), 1, "{out}");
    assert!(
        out.contains("[ok]   groups model: Zoom's API does not show whether this account uses the new groups and settings experience"),
        "{out}"
    );
    assert!(
        !out.contains(CLIENT_SECRET) && !err.contains(CLIENT_SECRET),
        "no secrets"
    );
}

/// `publish` validates each line with the daemon's parser: invalid lines
/// are reported by number and not sent; valid ones are, in order.
#[tokio::test]
async fn publish_sends_valid_lines_and_reports_invalid_ones() {
    let app = TestApp::prepare_with(|_| {}).await;
    let tool = Tool::new(&app, "");
    let file = tool.dir().join("events.jsonl");
    let valid = |id: &str| {
        format!(
            r#"{{"event_id":"{id}","zoom_user_id":"U1","previous_department":"Engineering","new_department":"Sales"}}"#
        )
    };
    let lines = [
        valid("p1"),
        "{\"event_id\": \"broken\"".into(),
        String::new(),
        valid("p2"),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, out, err) = tool.run(&["publish", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("line 2: invalid event, not sent"), "{err}");
    assert!(out.contains("published 2 events"), "{out}");
    assert_eq!(ids(&drain(&app, &app.queue).await), ["p1", "p2"]);
}

/// `publish --file /dev/zero`: refused at once as not a regular file
/// (exit 2), as `--hr-export` is; it never reads an endless file.
#[tokio::test]
async fn publish_refuses_a_file_that_is_not_regular() {
    let app = TestApp::prepare_with(|_| {}).await;
    let tool = Tool::new(&app, "");
    let mut command = tool.command(&["publish", "--file", "/dev/zero"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let run = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .output();
    let done = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("publish must not read /dev/zero")
        .expect("run");
    let (code, out, err) = output(done);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("/dev/zero: not a regular file (a device)"),
        "{err}"
    );
    assert!(err.contains("at most 64 MiB"), "{err}");
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}

/// Standard input is read no further than 64 MiB and one byte: an endless
/// input (`/dev/zero`, one line without end) is refused (exit 2), kept
/// nowhere, and nothing is published.
#[tokio::test]
async fn publish_stops_reading_an_endless_standard_input() {
    let app = TestApp::prepare_with(|_| {}).await;
    let tool = Tool::new(&app, "");
    let mut command = tool.command(&["publish"]);
    let zero = std::fs::File::open("/dev/zero").unwrap();
    command
        .stdin(zero)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .output();
    let done = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("publish must stop reading")
        .expect("run");
    let (code, out, err) = output(done);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("standard input: over the limit of 64 MiB"),
        "{err}"
    );
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}

/// A line far over the event limit (10 MiB) is an invalid line: reported
/// with its length and never sent, not even with `--raw` (it is not kept);
/// the lines around it are published.
#[tokio::test]
async fn publish_skips_an_overlong_line_and_sends_the_rest() {
    let app = TestApp::prepare_with(|_| {}).await;
    let tool = Tool::new(&app, "");
    let file = tool.dir().join("events.jsonl");
    let valid = |id: &str| {
        format!(
            r#"{{"event_id":"{id}","zoom_user_id":"U1","previous_department":"Engineering","new_department":"Sales"}}"#
        )
    };
    let long = format!(r#"{{"event_id":"{}"}}"#, "x".repeat(10 << 20));
    std::fs::write(&file, [valid("q1"), long, valid("q2")].join("\n")).unwrap();
    let (code, out, err) = tool.run(&["publish", "--raw", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("line 2: invalid event, not sent: line is 10485775 bytes, over the"),
        "{err}"
    );
    assert!(out.contains("published 2 events"), "{out}");
    assert!(out.contains("1 invalid lines"), "{out}");
    assert_eq!(ids(&drain(&app, &app.queue).await), ["q1", "q2"]);
}

/// `status` reports the queues, dead letters by reason and the daemon's
/// readiness; `resume` reaches the daemon's control endpoint (a daemon that
/// is not quarantined says so: exit 1).
#[tokio::test]
async fn status_and_resume_reach_the_running_daemon() {
    let mut app = TestApp::spawn().await;
    ten_mixed(&app).await;
    // `.ci/run` enables the management plugin; its numbers lag up to 5 s.
    let tool = Tool::new(&app, "management_url = \"http://127.0.0.1:15672\"\n");
    let mut status = serde_json::Value::Null;
    for _ in 0..40 {
        let (code, out, err) = tool.run_async(&["status", "--json"]).await;
        assert_eq!(code, 0, "{out}{err}");
        status = serde_json::from_str(&out).unwrap();
        if status["details"]["consumers"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status["input"]["consumers"], 1);
    assert_eq!(status["details"]["consumers"], 1, "{status}");
    assert_eq!(status["details"]["active_consumers"], 1);
    assert_eq!(status["details"]["waiting_consumers"], 0);
    assert_eq!(status["details"]["messages_unacknowledged"], 0);
    assert_eq!(status["dead_letters"], 10);
    assert_eq!(status["dead_letters_by_reason"]["zoom_rejected"], 8);
    assert_eq!(status["dead_letters_by_reason"]["unmapped_department"], 2);
    assert_eq!(status["readyz"][0], 200);

    let (code, _, err) = tool.run_async(&["resume"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not quarantined"), "{err}");
    app.stop().await;
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 10);
}

/// A capped peek (what `status` uses on the input queue while the brake
/// holds) reads the head, says more wait, and leaves the queue as it was.
#[tokio::test]
async fn a_capped_peek_reads_the_head_says_more_wait_and_changes_nothing() {
    let app = TestApp::prepare_with(|_| {}).await;
    let published: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    for (i, id) in published.iter().enumerate() {
        let user = format!("U{i}");
        app.publish_json(crate::helpers::event(id, &user, None, "Sales"))
            .await;
    }
    let admin = Admin::connect(&app.settings.amqp, "test")
        .await
        .expect("connect");
    let body_id = |m: &zoom_dept_sync::triage::StoredMessage| {
        let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        body["event_id"].as_str().unwrap().to_owned()
    };
    let (head, capped) = admin.peek_at_most(&app.queue, 3).await.expect("peek");
    assert!(capped, "two more wait");
    assert_eq!(head.iter().map(body_id).collect::<Vec<_>>(), published[..3]);
    let (all, capped) = admin.peek_at_most(&app.queue, 5).await.expect("peek");
    assert!(!capped, "exactly five");
    assert_eq!(all.len(), 5);
    admin.close().await;
    assert_eq!(ids(&drain(&app, &app.queue).await), published);
}
