//! The audit trail: one outcome record per settled event, on the outcome
//! exchange and in its stream, confirmed before the event is acked; and
//! `history` reading it back.

use std::time::Duration;

use serde_json::Value;
use zoom_fake::{FakeConfig, FakeHandle};

use crate::helpers::Tool;
use crate::helpers::{TestApp, event, eventually};
use crate::trail::{Trail, of};

/// u1 in Engineering (will move), u2 already in Sales, u4 in Engineering.
async fn zoom() -> FakeHandle {
    let seed = FakeConfig::default()
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .user("U1", "u1@example.com", &["grp_eng"])
        .user("U2", "u2@example.com", &["grp_sales"])
        .user("U4", "u4@example.com", &["grp_eng"]);
    crate::helpers::spawn_zoom(seed).await
}

#[tokio::test]
async fn every_settled_event_has_its_outcome_and_none_is_acked_without_it() {
    let zoom = zoom().await;
    let trail = Trail::new();
    let (exchange, stream) = (trail.exchange.clone(), trail.stream.clone());
    let mut app = TestApp::spawn_with(|s| {
        crate::helpers::use_zoom(s, &zoom);
        s.worker.pause_initial_ms = 200;
        s.outcomes = trail.settings("90D");
    })
    .await;
    for (id, user) in [("e1", "U1"), ("e2", "U2"), ("e3", "U3")] {
        app.publish_json(event(id, user, Some("Engineering"), "Sales"))
            .await;
    }
    app.dead_letters(1).await;
    eventually(
        "three outcomes in the stream",
        Duration::from_secs(10),
        || async { trail.records(&app).await.len() >= 3 },
    )
    .await;
    let records = trail.records(&app).await;
    assert_eq!(records.len(), 3, "one per event: {records:#?}");
    let [e1] = of(&records, "e1")[..] else {
        panic!("{records:#?}")
    };
    assert_eq!(
        (e1["result"].as_str(), e1["action"].as_str()),
        (Some("applied"), Some("move"))
    );
    assert_eq!(e1["from_groups"], serde_json::json!(["grp_eng"]));
    assert_eq!(e1["to_group"], "grp_sales");
    assert_eq!(e1["steps"][0]["step"], "move");
    assert_eq!(e1["steps"][0]["status"], 204);
    let [e2] = of(&records, "e2")[..] else {
        panic!("{records:#?}")
    };
    assert_eq!(e2["result"], "already_applied");
    let steps: Vec<(&str, u64)> = e2["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [("move", 404), ("lookup", 200)],
        "the duplicate check"
    );
    let [e3] = of(&records, "e3")[..] else {
        panic!("{records:#?}")
    };
    assert_eq!(e3["result"], "dead_lettered");
    assert_eq!(e3["error"]["code"], 1001);
    assert!(
        e3["error"]["recommended_action"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );

    // `history` reads the same trail back for one person.
    let tool = Tool::new(&app, "");
    let (code, out, err) = tool
        .run_async(&["history", "--email", "U1@example.com"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("| e1 ") && out.contains("1 outcomes for"),
        "{out}"
    );
    assert!(!out.contains("| e2 "), "only U1's: {out}");
    // The preflight sees the trail's exchange and stream.
    let (_, out, _) = tool.run_async(&["check"]).await;
    assert!(
        out.contains(&format!("[ok]   outcomes: exchange {exchange} exists"))
            && out.contains(&format!("[ok]   outcomes: stream {stream} exists")),
        "{out}"
    );

    // The exchange goes away: e4's record cannot be published, so e4 is not
    // acked; the next session declares the exchange again and e4 gets its
    // record then.
    trail.delete_exchange(&app).await;
    app.publish_json(event("e4", "U4", Some("Engineering"), "Sales"))
        .await;
    eventually("e4 has its outcome", Duration::from_secs(20), || async {
        !of(&trail.records(&app).await, "e4").is_empty()
    })
    .await;
    eventually(
        "the input queue is empty",
        Duration::from_secs(10),
        || async { app.queue_state(&app.queue).await.0 == 0 },
    )
    .await;
    let records = trail.records(&app).await;
    let e4 = of(&records, "e4");
    assert_eq!(e4.len(), 1, "{records:#?}");
    assert_eq!(
        e4[0]["result"], "already_applied",
        "the first run moved U4 but could not record it, so it ran again"
    );
    let groups = |user: &str| {
        let state = zoom.state();
        state
            .users
            .iter()
            .find(|u| u.id == user)
            .unwrap()
            .groups
            .clone()
    };
    assert_eq!(groups("U4"), ["grp_sales"]);

    // A dead letter whose record cannot be published (the exchange is gone
    // again): the event goes back before its dead letter exists, so the
    // dead-letter queue ends with one copy, not two.
    trail.delete_exchange(&app).await;
    app.publish_json(event("e5", "U5", Some("Engineering"), "Sales"))
        .await;
    eventually("e5 has its outcome", Duration::from_secs(20), || async {
        !of(&trail.records(&app).await, "e5").is_empty()
    })
    .await;
    eventually("e5's dead letter", Duration::from_secs(10), || async {
        app.queue_state(&app.dead_letter_queue).await.0 == 1
    })
    .await;

    // The stream is deleted: the record comes back unroutable (`mandatory`)
    // instead of being confirmed and dropped; the daemon declares and binds
    // the stream again, and the event gets its record there.
    app.channel
        .queue_delete(stream.as_str().into(), Default::default())
        .await
        .unwrap();
    app.publish_json(event("e6", "U1", Some("Sales"), "Engineering"))
        .await;
    eventually(
        "e6 has its outcome in the new stream",
        Duration::from_secs(20),
        || async {
            app.try_queue_state(&stream).await.is_some()
                && !of(&trail.records(&app).await, "e6").is_empty()
        },
    )
    .await;
    app.stop().await;
    assert_eq!(
        app.queue_state(&app.queue).await,
        (0, 0),
        "every event settled"
    );
    assert_eq!(
        app.queue_state(&app.dead_letter_queue).await.0,
        1,
        "one dead letter for e5"
    );
    trail.delete(&app).await;
}

/// A stream declared with another `x-max-age` is used as it is: a changed
/// `outcomes.max_age` must not stop consuming (RabbitMQ refuses to
/// redeclare a queue with other arguments).
#[tokio::test]
async fn a_changed_max_age_does_not_stop_consuming() {
    let trail = Trail::new();
    let mut first = TestApp::spawn_with(|s| s.outcomes = trail.settings("90D")).await;
    first.stop().await;
    let mut second = TestApp::spawn_with(|s| s.outcomes = trail.settings("30D")).await;
    assert_eq!(second.queue_state(&second.queue).await.1, 1, "consuming");
    second.stop().await;
    trail.delete(&second).await;
}

/// `history` ends on a trail that never goes quiet: records published after
/// it started end the reading (it used to wait for a quiet second).
#[tokio::test]
async fn history_ends_on_a_busy_trail() {
    let trail = Trail::new();
    let stream = trail.stream.clone();
    let mut app = TestApp::spawn_with(|s| {
        s.outcomes = trail.settings("90D");
    })
    .await;
    let busy = tokio_util::sync::CancellationToken::new();
    let publisher = {
        let (channel, busy, stream) = (app.channel.clone(), busy.clone(), stream.clone());
        tokio::spawn(async move {
            while !busy.is_cancelled() {
                let now = time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap();
                let record =
                    serde_json::json!({"event_id": "x", "email": "a@x.com", "processed_at": now});
                let _ = channel
                    .basic_publish(
                        "".into(),
                        stream.as_str().into(),
                        Default::default(),
                        record.to_string().as_bytes(),
                        Default::default(),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let tool = Tool::new(&app, "");
    let history = tool.run_async(&["history", "--email", "a@x.com", "--json"]);
    let (code, out, err) = tokio::time::timeout(Duration::from_secs(30), history)
        .await
        .expect("history ends although the trail keeps growing");
    busy.cancel();
    let _ = publisher.await;
    assert_eq!(code, 0, "{out}{err}");
    let records: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(!records.is_empty(), "{out}");
    app.stop().await;
    trail.delete(&app).await;
}
