//! Messages over the 64 KiB limit: the broker dead-letters them (the daemon
//! rejects them without requeue, the input queue's dead-letter exchange
//! routes them), so the daemon never publishes such a body again.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use zoom_dept_sync::broker::admin::Admin;
use zoom_dept_sync::config::QueueType;
use zoom_dept_sync::event::MAX_PAYLOAD_BYTES;
use zoom_dept_sync::triage::DeadLetterRow;

use crate::helpers::Tool;
use crate::helpers::{TestApp, event, groups_of, header_str, mapped_zoom, spawn_zoom, use_zoom};

/// A valid event padded with a `pad` field to exactly `size` bytes.
fn padded_event(id: &str, size: usize) -> Vec<u8> {
    let mut body =
        format!(r#"{{"event_id":"{id}","zoom_user_id":"U9","new_department":"Sales","pad":""#)
            .into_bytes();
    body.resize(size - 2, b'x');
    body.extend_from_slice(b"\"}");
    body
}

#[tokio::test]
async fn a_message_over_the_limit_is_dead_lettered_by_the_broker_not_republished() {
    let zoom = spawn_zoom(mapped_zoom().user("U1", "u1@example.com", &["grp_eng"])).await;
    let mut app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;

    let sizes = [MAX_PAYLOAD_BYTES + 1024, 1024 * 1024];
    let mut headers = FieldTable::default();
    headers.insert(
        "producer".into(),
        AMQPValue::LongString(LongString::from("hr-export")),
    );
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id("big-id".into())
        .with_headers(headers);
    for (i, size) in sizes.iter().enumerate() {
        app.publish_with(
            &padded_event(&format!("big-{i}"), *size),
            properties.clone(),
        )
        .await;
    }
    app.publish_json(event("small", "U1", Some("Engineering"), "Sales"))
        .await;

    let letters = app.dead_letters(sizes.len()).await;
    crate::helpers::eventually(
        "the small event after them is applied",
        std::time::Duration::from_secs(20),
        || async { groups_of(&zoom, "U1") == ["grp_sales"] },
    )
    .await;
    for (i, size) in sizes.iter().enumerate() {
        let letter = letters
            .iter()
            .find(|l| l.data == padded_event(&format!("big-{i}"), *size))
            .unwrap_or_else(|| panic!("the {size}-byte message is in the dead-letter queue"));
        // The broker's dead letter: the original message, x-death added.
        assert_eq!(
            header_str(letter, "failure-reason"),
            None,
            "not republished"
        );
        assert_eq!(header_str(letter, "producer").as_deref(), Some("hr-export"));
        assert_eq!(
            letter.properties.message_id().as_ref().map(|s| s.as_str()),
            Some("big-id")
        );
        assert_eq!(
            header_str(letter, "x-first-death-reason").as_deref(),
            Some("rejected"),
            "dead-lettered by the broker (x-death)"
        );
    }
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0, "input queue empty");

    // Listed with a reason that says why (put them back to list them).
    for letter in &letters {
        app.channel
            .basic_publish(
                "".into(),
                app.dead_letter_queue.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                &letter.data,
                letter.properties.clone(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
    let tool = Tool::new(&app, "");
    let (code, out, err) = tool.run_async(&["dead-letters", "list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(rows.len(), 2, "{out}");
    for row in &rows {
        assert_eq!(row["reason"], "too_large", "{row}");
        assert!(
            row["message"]
                .as_str()
                .is_some_and(|m| m.contains("65536-byte limit")),
            "{row}"
        );
    }

    // A replay would only be rejected again: it leaves them where they are.
    let (code, out, err) = tool.run_async(&["dead-letters", "replay", "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("over the 65536-byte limit"), "{out}");
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 2);
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}

/// On a quorum queue (dead-letter strategy `at-least-once`, overflow
/// `reject-publish`) the broker dead-letters the rejected message too.
#[tokio::test]
async fn on_a_quorum_queue_the_broker_dead_letters_it_too() {
    let mut app = TestApp::spawn_with(|s| s.amqp.queue_type = QueueType::Quorum).await;
    let big = padded_event("big-q", MAX_PAYLOAD_BYTES + 1);
    app.publish(&big).await;
    let letters = app.dead_letters(1).await;
    app.stop().await;
    assert_eq!(letters[0].data, big);
    assert_eq!(header_str(&letters[0], "failure-reason"), None);
    assert_eq!(
        header_str(&letters[0], "x-first-death-reason").as_deref(),
        Some("rejected")
    );
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}

/// An input queue declared by someone else without our arguments may not
/// dead-letter: the daemon publishes the dead letter itself, as before.
#[tokio::test]
async fn without_dead_lettering_on_the_input_queue_the_daemon_publishes_it() {
    let mut app = TestApp::prepare_with(|_| {}).await;
    app.redeclare_input_queue(FieldTable::default()).await;
    app.start().await;
    let big = padded_event("big-legacy", MAX_PAYLOAD_BYTES + 1);
    app.publish(&big).await;
    let letters = app.dead_letters(1).await;
    app.stop().await;
    assert_eq!(letters[0].data, big);
    assert_eq!(
        header_str(&letters[0], "failure-reason").as_deref(),
        Some("too_large")
    );
}

/// Reading a queue for a listing (`dead-letters list`, `show`, `status`)
/// keeps at most the limit and one byte of each body, with its real
/// length: a 1 MiB dead letter costs 64 KiB, and still lists as
/// `too_large` with its size. The queue keeps the whole message.
#[tokio::test]
async fn a_peek_keeps_a_bounded_part_of_each_body_and_its_length() {
    let app = TestApp::prepare_with(|_| {}).await;
    let mut death = FieldTable::default();
    death.insert(
        "reason".into(),
        AMQPValue::LongString(LongString::from("rejected")),
    );
    let mut headers = FieldTable::default();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
    );
    let size = 1024 * 1024;
    let properties = BasicProperties::default().with_headers(headers);
    app.publish_with(&padded_event("huge", size), properties)
        .await;
    let admin = Admin::connect(&app.settings.amqp, "test")
        .await
        .expect("connect");
    let messages = admin.peek(&app.queue).await.expect("peek");
    admin.close().await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert!(
        message.body.len() <= MAX_PAYLOAD_BYTES + 1,
        "kept {} bytes",
        message.body.len()
    );
    let row = DeadLetterRow::of(message);
    assert_eq!(row.reason, "too_large", "{row:?}");
    assert_eq!(
        row.message.as_deref(),
        Some("message is 1048576 bytes, over the 65536-byte limit")
    );
    let whole = crate::helpers::drain(&app, &app.queue).await;
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].data, padded_event("huge", size), "left whole");
}

/// The operator deletes the dead-letter queue under the daemon: a reject
/// would have the broker drop the message (a classic queue's dead-lettering
/// to a missing queue). The daemon declares the queue again first, then
/// rejects: the message lands there as it was sent.
#[tokio::test]
async fn a_message_over_the_limit_is_not_lost_when_the_dead_letter_queue_was_deleted() {
    let mut app = TestApp::spawn().await;
    app.delete_queue(&app.dead_letter_queue).await;
    let big = padded_event("big-no-dlq", 70_000);
    app.publish(&big).await;
    let letters = app.dead_letters(1).await;
    let (_, metrics) = app.http_get("/metrics").await;
    assert!(
        metrics.contains("zoom_dept_sync_broker_reconnects_total 0"),
        "the check's NOT_FOUND closed a channel of its own, not the session"
    );
    app.stop().await;
    assert_eq!(letters[0].data, big, "byte-identical");
    assert_eq!(
        header_str(&letters[0], "x-first-death-reason").as_deref(),
        Some("rejected"),
        "dead-lettered by the broker"
    );
    assert_eq!(app.queue_state(&app.queue).await.0, 0, "input queue empty");
}

/// Without the right to declare it, a missing dead-letter queue holds the
/// message back (requeued, consuming paused) instead of losing it.
#[tokio::test]
async fn without_topology_rights_a_message_over_the_limit_waits_for_the_dead_letter_queue() {
    let mut app = TestApp::spawn_with(|s| s.amqp.declare_topology = false).await;
    app.delete_queue(&app.dead_letter_queue).await;
    let big = padded_event("big-held", 70_000);
    app.publish(&big).await;
    crate::helpers::eventually(
        "/readyz says why",
        std::time::Duration::from_secs(10),
        || async {
            let (status, body) = app.http_get("/readyz").await;
            status == 503 && body.contains("dead-letter queue")
        },
    )
    .await;
    assert!(app.try_queue_state(&app.dead_letter_queue).await.is_none());

    // The operator creates it; the held-back message lands there.
    app.channel
        .queue_declare(
            app.dead_letter_queue.as_str().into(),
            lapin::options::QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let letters = app.dead_letters(1).await;
    app.stop().await;
    assert_eq!(letters[0].data, big);
    assert_eq!(app.queue_state(&app.queue).await.0, 0, "input queue empty");
}
