//! The happy path: a mapped event becomes exactly one PATCH move.

use serde_json::json;

use crate::helpers::{
    assert_bearer_from, event, groups_of, mapped_zoom, spawn_on_fake, token_calls, wait_for_calls,
};

#[tokio::test]
async fn a_mapped_event_becomes_one_patch_move_with_the_token() {
    let user = "KDcuGIm1QgePTO8WbOqwIQ";
    let seed = mapped_zoom().user(user, "kd@example.com", &["grp_eng"]);
    let (mut app, zoom) = spawn_on_fake(seed).await;

    app.publish_json(event("hr-7f3a9c", user, Some("Engineering"), "Sales"))
        .await;

    let requests = wait_for_calls(&zoom, 1).await;
    app.stop_and_assert_queues_empty().await;
    let requests_after = zoom.api_requests();
    assert_eq!(
        requests_after.len(),
        1,
        "exactly one call: {requests_after:?}"
    );
    let patch = &requests[0];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.path, format!("/v2/groups/grp_eng/members/{user}"));
    assert_bearer_from(&zoom, patch);
    assert_eq!(
        patch.json(),
        Some(json!({"action": "move", "target_group_id": "grp_sales"}))
    );
    assert_eq!(patch.header("content-type"), Some("application/json"));
    assert_eq!(patch.status, Some(204));
    assert_eq!(token_calls(&zoom), 1);
    assert_eq!(groups_of(&zoom, user), ["grp_sales"]);
}

#[tokio::test]
async fn same_source_and_target_group_makes_no_call() {
    let seed = mapped_zoom().user("U1", "u1@example.com", &["grp_eng"]);
    let (mut app, zoom) = spawn_on_fake(seed).await;
    // "engineering" and "Engineering " map to the same group.
    app.publish_json(event("e-same", "U1", Some("engineering"), " Engineering "))
        .await;
    // A second, real move proves the first was handled before it.
    app.publish_json(event("e-next", "U1", Some("Engineering"), "Sales"))
        .await;
    wait_for_calls(&zoom, 1).await;
    app.stop_and_assert_queues_empty().await;
    let requests = zoom.api_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].path, "/v2/groups/grp_eng/members/U1");
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
}
