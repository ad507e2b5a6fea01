//! Rejections go to the dead-letter queue with SPEC's headers, body unchanged;
//! a dead letter that cannot be published is never lost.

use lapin::BasicProperties;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zoom_fake::ScriptedFault;

use crate::helpers::{
    TestApp, event, eventually, groups_of, header_int, header_str, mapped_zoom, spawn_on_fake,
    wait_for_calls,
};

#[tokio::test]
async fn zoom_400_and_404_are_dead_lettered_with_code_and_message() {
    // The duplicate check finds neither user in the target group.
    let seed = mapped_zoom()
        .user("U400", "u400@example.com", &["grp_eng"])
        .user("U404", "u404@example.com", &["grp_eng"]);
    let (mut app, zoom) = spawn_on_fake(seed).await;
    for (user, status, code, message) in [
        ("U400", 400, 300, "Invalid target group."),
        ("U404", 404, 4130, "Group does not exist: grp_eng."),
    ] {
        zoom.script_until_cleared(
            ScriptedFault::new("PATCH", status, code, message)
                .path_prefix(&format!("/v2/groups/grp_eng/members/{user}")),
        );
    }

    let body400 =
        serde_json::to_vec_pretty(&event("e-400", "U400", Some("Engineering"), "Sales")).unwrap();
    let body404 = event("e-404", "U404", Some("Engineering"), "Sales")
        .to_string()
        .into_bytes();
    app.publish_with(
        &body400,
        BasicProperties::default().with_content_type("application/vnd.hr+json".into()),
    )
    .await;
    app.publish(&body404).await;

    let mut letters = app.dead_letters(2).await;
    letters.sort_by_key(|d| header_int(d, "zoom-http-status"));
    let (l400, l404) = (&letters[0], &letters[1]);

    assert_eq!(l400.data, body400, "body byte-identical");
    assert_eq!(l404.data, body404, "body byte-identical");
    for (letter, status, code, message, id) in [
        (l400, 400, 300, "Invalid target group.", "e-400"),
        (l404, 404, 4130, "Group does not exist: grp_eng.", "e-404"),
    ] {
        assert_eq!(
            header_str(letter, "failure-reason").as_deref(),
            Some("zoom_rejected")
        );
        assert_eq!(header_int(letter, "zoom-http-status"), Some(status));
        assert_eq!(header_int(letter, "zoom-error-code"), Some(code));
        assert_eq!(
            header_str(letter, "zoom-error-message").as_deref(),
            Some(message)
        );
        // The PATCH and the one duplicate check.
        assert_eq!(header_int(letter, "failure-attempts"), Some(2));
        assert_eq!(
            header_str(letter, "source-queue").as_deref(),
            Some(app.queue.as_str())
        );
        let failed_at = header_str(letter, "failed-at").unwrap();
        let failed_at = OffsetDateTime::parse(&failed_at, &Rfc3339).expect("RFC 3339");
        assert_eq!(failed_at.offset(), time::UtcOffset::UTC);
        assert_eq!(
            letter.properties.message_id().as_ref().map(|s| s.as_str()),
            Some(id)
        );
        assert_eq!(*letter.properties.delivery_mode(), Some(2), "persistent");
        let headers = letter.properties.headers().clone().unwrap();
        assert!(
            headers
                .inner()
                .keys()
                .all(|k| !k.as_str().starts_with("x-")),
            "no x- headers: {headers:?}"
        );
    }
    assert_eq!(
        l400.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/vnd.hr+json")
    );
    app.stop_and_assert_queues_empty().await;
    assert_eq!(groups_of(&zoom, "U400"), ["grp_eng"], "unchanged");
    assert_eq!(groups_of(&zoom, "U404"), ["grp_eng"], "unchanged");
}

#[tokio::test]
async fn an_unmapped_department_is_dead_lettered() {
    let (mut app, zoom) = spawn_on_fake(mapped_zoom()).await;
    app.publish_json(event("e-unmapped", "U1", Some("Engineering"), "Legal"))
        .await;
    let letters = app.dead_letters(1).await;
    assert_eq!(
        header_str(&letters[0], "failure-reason").as_deref(),
        Some("unmapped_department")
    );
    assert!(header_str(&letters[0], "detail").unwrap().contains("Legal"));
    assert_eq!(header_int(&letters[0], "failure-attempts"), Some(0));
    assert_eq!(header_int(&letters[0], "zoom-http-status"), None);
    app.stop_and_assert_queues_empty().await;
    assert!(zoom.api_requests().is_empty(), "{:?}", zoom.api_requests());
}

#[tokio::test]
async fn an_unmapped_department_is_skipped_when_configured() {
    let zoom =
        crate::helpers::spawn_zoom(mapped_zoom().user("U1", "u1@example.com", &["grp_eng"])).await;
    let mut app = TestApp::spawn_with(|s| {
        crate::helpers::use_zoom(s, &zoom);
        s.worker.unmapped = zoom_dept_sync::config::Unmapped::Skip;
    })
    .await;
    app.publish_json(event("e-unmapped", "U1", Some("Engineering"), "Legal"))
        .await;
    app.publish_json(event("e-after", "U1", Some("Engineering"), "Sales"))
        .await;
    wait_for_calls(&zoom, 1).await;
    app.stop_and_assert_queues_empty().await;
    let paths: Vec<String> = zoom.api_requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/v2/groups/grp_eng/members/U1"],
        "only the mapped one"
    );
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
}

#[tokio::test]
async fn a_deleted_dead_letter_queue_loses_nothing() {
    let mut app = TestApp::spawn().await;
    // The operator deletes the dead-letter queue while the daemon runs.
    app.delete_queue(&app.dead_letter_queue).await;
    app.publish(b"{not json").await;
    // The broker returns the first dead letter as unroutable; the daemon
    // declares the queue again and the requeued event lands there.
    let letters = app.dead_letters(1).await;
    assert_eq!(letters[0].data, b"{not json");
    assert_eq!(
        header_str(&letters[0], "failure-reason").as_deref(),
        Some("invalid_payload")
    );
    app.stop_and_assert_queues_empty().await;
}

#[tokio::test]
async fn without_topology_rights_a_missing_dead_letter_queue_holds_events_back() {
    let mut app = TestApp::spawn_with(|s| s.amqp.declare_topology = false).await;
    app.delete_queue(&app.dead_letter_queue).await;
    app.publish(b"{not json").await;
    eventually("/readyz reports it", Duration::from_secs(10), || async {
        let (status, body) = app.http_get("/readyz").await;
        status == 503 && body.contains("dead letters cannot be published")
    })
    .await;
    assert!(
        app.try_queue_state(&app.dead_letter_queue).await.is_none(),
        "not declared by the daemon"
    );

    // The operator creates the queue; the held-back event lands there.
    app.channel
        .queue_declare(
            app.dead_letter_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let letters = app.dead_letters(1).await;
    assert_eq!(letters[0].data, b"{not json");
    app.stop_and_assert_queues_empty().await;
}
