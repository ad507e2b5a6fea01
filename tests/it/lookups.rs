//! Events without a Zoom id or a known source: lookups, adds, duplicates.

use serde_json::json;
use zoom_fake::FakeConfig;

use crate::helpers::{
    event, groups_of, header_int, header_str, mapped_zoom, spawn_on_fake, wait_for_calls,
};

fn email_only(id: &str, email: &str, previous: Option<&str>, new: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": id, "email": email,
        "previous_department": previous, "new_department": new,
    })
}

/// The test mapping's groups, and `grp_other`, which is not in it.
fn with_other_group() -> FakeConfig {
    mapped_zoom().group("grp_other", "Other")
}

/// (method, path) of each API call, in arrival order.
fn calls(zoom: &zoom_fake::FakeHandle) -> Vec<(String, String)> {
    zoom.api_requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

fn call(method: &str, path: &str) -> (String, String) {
    (method.to_owned(), path.to_owned())
}

#[tokio::test]
async fn an_email_only_event_is_resolved_once_and_cached() {
    let seed = mapped_zoom().user("JaneZoomId1", "jane.doe@example.com", &["grp_eng"]);
    let (mut app, zoom) = spawn_on_fake(seed).await;

    app.publish_json(email_only(
        "e1",
        "jane.doe@example.com",
        Some("Engineering"),
        "Sales",
    ))
    .await;
    wait_for_calls(&zoom, 2).await;
    // Same person, other spelling of the address: the cache answers.
    app.publish_json(email_only(
        "e2",
        "Jane.Doe@example.com",
        Some("Sales"),
        "Support",
    ))
    .await;
    wait_for_calls(&zoom, 3).await;
    app.stop_and_assert_queues_empty().await;

    assert_eq!(
        calls(&zoom),
        [
            call("GET", "/v2/users/jane.doe@example.com"),
            call("PATCH", "/v2/groups/grp_eng/members/JaneZoomId1"),
            call("PATCH", "/v2/groups/grp_sales/members/JaneZoomId1"),
        ]
    );
    assert_eq!(groups_of(&zoom, "JaneZoomId1"), ["grp_support"]);
}

#[tokio::test]
async fn an_unknown_email_is_dead_lettered_with_zoom_code_1001() {
    let (mut app, zoom) = spawn_on_fake(mapped_zoom()).await;

    app.publish_json(email_only("e-nobody", "nobody@example.com", None, "Sales"))
        .await;
    let letters = app.dead_letters(1).await;
    assert_eq!(
        header_str(&letters[0], "failure-reason").as_deref(),
        Some("zoom_rejected")
    );
    assert_eq!(header_int(&letters[0], "zoom-http-status"), Some(404));
    assert_eq!(header_int(&letters[0], "zoom-error-code"), Some(1001));
    assert_eq!(header_int(&letters[0], "failure-attempts"), Some(1));
    app.stop().await;
    assert_eq!(
        calls(&zoom),
        [call("GET", "/v2/users/nobody@example.com")],
        "no write after a failed lookup"
    );
}

#[tokio::test]
async fn without_a_known_source_the_users_managed_group_is_the_source() {
    // "grp_other" is not in the mapping: never touched.
    let seed = with_other_group().user("U1", "u1@example.com", &["grp_other", "grp_eng"]);
    let (mut app, zoom) = spawn_on_fake(seed).await;

    app.publish_json(event("e1", "U1", None, "Sales")).await;
    wait_for_calls(&zoom, 2).await;
    app.stop_and_assert_queues_empty().await;
    assert_eq!(
        calls(&zoom),
        [
            call("GET", "/v2/users/U1"),
            call("PATCH", "/v2/groups/grp_eng/members/U1"),
        ]
    );
    let patch = &zoom.api_requests()[1];
    assert_eq!(
        patch.json(),
        Some(json!({"action": "move", "target_group_id": "grp_sales"}))
    );
    assert_eq!(groups_of(&zoom, "U1"), ["grp_other", "grp_sales"]);
}

#[tokio::test]
async fn a_user_already_in_the_target_gets_no_write() {
    let seed = mapped_zoom().user("U1", "u1@example.com", &["grp_sales"]);
    let (mut app, zoom) = spawn_on_fake(seed).await;
    // "Legal" has no group: the source is unknown, so the lookup decides.
    app.publish_json(event("e1", "U1", Some("Legal"), "Sales"))
        .await;
    wait_for_calls(&zoom, 1).await;
    app.stop_and_assert_queues_empty().await;
    assert_eq!(calls(&zoom), [call("GET", "/v2/users/U1")]);
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
}

#[tokio::test]
async fn a_user_in_no_managed_group_is_added_to_the_target() {
    let seed = with_other_group().user("U1", "u1@example.com", &["grp_other"]);
    let (mut app, zoom) = spawn_on_fake(seed).await;

    app.publish_json(event("e1", "U1", None, "Sales")).await;
    wait_for_calls(&zoom, 2).await;
    app.stop_and_assert_queues_empty().await;
    assert_eq!(
        calls(&zoom),
        [
            call("GET", "/v2/users/U1"),
            call("POST", "/v2/groups/grp_sales/members"),
        ]
    );
    let add = &zoom.api_requests()[1];
    assert_eq!(add.json(), Some(json!({"members": [{"id": "U1"}]})));
    assert_eq!(add.status, Some(201));
    assert_eq!(groups_of(&zoom, "U1"), ["grp_other", "grp_sales"]);
}

#[tokio::test]
async fn a_user_in_several_managed_groups_ends_in_the_target_only() {
    let seed = with_other_group().user(
        "U1",
        "u1@example.com",
        &["grp_support", "grp_eng", "grp_other"],
    );
    let (mut app, zoom) = spawn_on_fake(seed).await;

    app.publish_json(event("e1", "U1", None, "Sales")).await;
    wait_for_calls(&zoom, 3).await;
    app.stop_and_assert_queues_empty().await;
    let mut writes = calls(&zoom);
    assert_eq!(writes.len(), 3, "GET, PATCH, DELETE; grp_other untouched");
    assert_eq!(writes.remove(0), call("GET", "/v2/users/U1"));
    writes.sort();
    assert_eq!(
        writes,
        [
            call("DELETE", "/v2/groups/grp_support/members/U1"),
            call("PATCH", "/v2/groups/grp_eng/members/U1"),
        ]
    );
    assert_eq!(groups_of(&zoom, "U1"), ["grp_other", "grp_sales"]);
}

#[tokio::test]
async fn a_duplicate_event_is_recognised_as_already_applied() {
    let seed = mapped_zoom().user("U1", "u1@example.com", &["grp_eng"]);
    let (mut app, zoom) = spawn_on_fake(seed).await;

    // The second PATCH finds U1 gone from Engineering (Zoom's "not a
    // member"): one check shows the move is done.
    let duplicate = event("e-dup", "U1", Some("Engineering"), "Sales");
    app.publish_json(duplicate.clone()).await;
    app.publish_json(duplicate).await;
    wait_for_calls(&zoom, 3).await;
    app.stop_and_assert_queues_empty().await;

    let requests = zoom.api_requests();
    assert_eq!(requests.len(), 3, "PATCH, PATCH, one check: {requests:?}");
    let patches: Vec<_> = requests.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), 2, "both PATCHes were sent");
    assert_eq!(patches[0].status, Some(204));
    assert_eq!(patches[1].status, Some(404), "not a member any more");
    assert_eq!(requests[2].method, "GET");
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
}
