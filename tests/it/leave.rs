//! `leave` events: out of every managed group; a person Zoom does not know
//! (their account went first) is already out, not a dead letter.

use std::time::Duration;

use zoom_fake::FakeConfig;

use crate::helpers::{TestApp, eventually};

#[tokio::test]
async fn leavers_leave_every_managed_group_and_unknown_ones_are_already_out() {
    let seed = FakeConfig::default()
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .group("grp_all", "Everyone")
        .user("U1", "u1@example.com", &["grp_eng", "grp_sales", "grp_all"])
        .user("U2", "u2@example.com", &["grp_all"]);
    let zoom = crate::helpers::spawn_zoom(seed).await;
    let mut app = TestApp::spawn_with(|s| {
        crate::helpers::use_zoom(s, &zoom);
    })
    .await;
    let leave = |id: &str, who: serde_json::Value| {
        let mut event = serde_json::json!({"event_id": id, "action": "leave"});
        event
            .as_object_mut()
            .unwrap()
            .extend(who.as_object().unwrap().clone());
        event
    };
    // Email only, in two managed groups; in none; unknown to Zoom.
    app.publish_json(leave("l1", serde_json::json!({"email": "U1@example.com"})))
        .await;
    app.publish_json(leave("l2", serde_json::json!({"zoom_user_id": "U2"})))
        .await;
    app.publish_json(leave(
        "l3",
        serde_json::json!({"email": "gone@example.com"}),
    ))
    .await;
    eventually("all three settled", Duration::from_secs(10), || async {
        app.queue_state(&app.queue).await.0 == 0 && zoom.counters().total.calls >= 5
    })
    .await;
    app.stop_and_assert_queues_empty().await;
    let groups = |id: &str| crate::helpers::groups_of(&zoom, id);
    assert_eq!(groups("U1"), ["grp_all"], "left both managed groups");
    assert_eq!(groups("U2"), ["grp_all"], "untouched");
}
