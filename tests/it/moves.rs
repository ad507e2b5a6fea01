//! The happy path: a mapped event becomes exactly one PATCH move.

use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{TOKEN, TestApp, event};

#[tokio::test]
async fn a_mapped_event_becomes_one_patch_move_with_the_token() {
    let mut app = TestApp::spawn().await;
    Mock::given(method("PATCH"))
        .and(path("/v2/groups/grp_eng/members/KDcuGIm1QgePTO8WbOqwIQ"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(
            serde_json::json!({"action": "move", "target_group_id": "grp_sales"}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&app.zoom)
        .await;

    app.publish_json(event(
        "hr-7f3a9c",
        "KDcuGIm1QgePTO8WbOqwIQ",
        Some("Engineering"),
        "Sales",
    ))
    .await;

    let requests = app.wait_for_api_requests(1).await;
    app.stop_and_assert_queues_empty().await;
    let requests_after = app.api_requests().await;
    assert_eq!(
        requests_after.len(),
        1,
        "exactly one call: {requests_after:?}"
    );
    let patch = &requests[0];
    assert_eq!(patch.method.as_str(), "PATCH");
    assert_eq!(
        patch.url.path(),
        "/v2/groups/grp_eng/members/KDcuGIm1QgePTO8WbOqwIQ"
    );
    assert_eq!(
        patch.headers.get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(app.token_requests().await, 1);
    app.zoom.verify().await;
}

#[tokio::test]
async fn same_source_and_target_group_makes_no_call() {
    let mut app = TestApp::spawn().await;
    // "engineering" and "Engineering " map to the same group.
    app.publish_json(event("e-same", "U1", Some("engineering"), " Engineering "))
        .await;
    // A second, real move proves the first was handled before it.
    app.answer_patches(ResponseTemplate::new(204)).await;
    app.publish_json(event("e-next", "U1", Some("Engineering"), "Sales"))
        .await;
    let requests = app.wait_for_api_requests(1).await;
    app.stop_and_assert_queues_empty().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.path(), "/v2/groups/grp_eng/members/U1");
}
