//! Events come out of order (webhook senders retry; an old export is
//! reconciled late): an event older than one already applied for the same
//! person is skipped as `stale`, not applied, and the trail says so.

use std::time::Duration;

use zoom_fake::FakeConfig;

use crate::helpers::{TestApp, eventually};
use crate::trail::Trail;

fn at(id: &str, user: &str, previous: &str, new: &str, occurred_at: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": id, "zoom_user_id": user,
        "previous_department": previous, "new_department": new,
        "occurred_at": occurred_at,
    })
}

#[tokio::test]
async fn an_event_older_than_one_applied_for_the_person_is_skipped_as_stale() {
    let seed = FakeConfig::default()
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .group("grp_support", "Support")
        .user("U1", "u1@example.com", &["grp_eng"]);
    let zoom = crate::helpers::spawn_zoom(seed).await;
    let trail = Trail::new();
    let mut app = TestApp::spawn_with(|s| {
        crate::helpers::use_zoom(s, &zoom);
        s.outcomes = trail.settings("90D");
    })
    .await;
    // Applied at 10:00: Engineering → Support. Then one from 09:00 arrives
    // late (Engineering → Sales): it must not move U1 back.
    app.publish_json(at(
        "new",
        "U1",
        "Engineering",
        "Support",
        "2026-11-27T10:00:00Z",
    ))
    .await;
    app.publish_json(at(
        "old",
        "U1",
        "Engineering",
        "Sales",
        "2026-11-27T09:00:00Z",
    ))
    .await;
    eventually("both settled", Duration::from_secs(10), || async {
        app.queue_state(&app.queue).await.0 == 0 && zoom.counters().total.calls >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let groups = {
        let state = zoom.state();
        state
            .users
            .iter()
            .find(|u| u.id == "U1")
            .unwrap()
            .groups
            .clone()
    };
    assert_eq!(groups, ["grp_support"], "the newer event stands");
    assert_eq!(
        zoom.counters().medium.calls,
        1,
        "the stale event called nothing"
    );

    let results: Vec<(serde_json::Value, serde_json::Value)> = trail
        .records(&app)
        .await
        .iter()
        .map(|r| (r["event_id"].clone(), r["result"].clone()))
        .collect();
    assert_eq!(
        results,
        [
            (serde_json::json!("new"), serde_json::json!("applied")),
            (serde_json::json!("old"), serde_json::json!("stale")),
        ]
    );
    app.stop_and_assert_queues_empty().await;
    trail.delete(&app).await;
}

/// An event dated far in the future (9999-12-31) is dead-lettered as
/// `invalid_payload` naming `occurred_at`, never applied and never
/// remembered: the person's next event, dated now, still moves them.
#[tokio::test]
async fn an_event_from_the_far_future_is_refused_and_freezes_nobody() {
    use crate::helpers::{mapped_zoom, spawn_zoom, use_zoom};
    let zoom = spawn_zoom(mapped_zoom().user("U1", "u1@example.com", &["grp_eng"])).await;
    let mut app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;
    app.publish_json(at(
        "future",
        "U1",
        "Engineering",
        "Sales",
        "9999-12-31T00:00:00Z",
    ))
    .await;
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    app.publish_json(at("now", "U1", "Engineering", "Support", &now))
        .await;
    let dead = app.dead_letters(1).await;
    assert_eq!(
        crate::helpers::header_str(&dead[0], "failure-reason").as_deref(),
        Some("invalid_payload")
    );
    let detail = crate::helpers::header_str(&dead[0], "detail").unwrap_or_default();
    assert!(detail.contains("occurred_at"), "{detail}");
    eventually(
        "U1 moved by the event dated now",
        Duration::from_secs(10),
        || async {
            let state = zoom.state();
            let u1 = state.users.iter().find(|u| u.id == "U1").unwrap();
            u1.groups == ["grp_support"]
        },
    )
    .await;
    app.stop_and_assert_queues_empty().await;
}
