//! Events without a Zoom id or a known source: lookups, adds, duplicates.

use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{Script, TestApp, event, header_int, header_str, zoom_error};

fn email_only(id: &str, email: &str, previous: Option<&str>, new: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": id, "email": email,
        "previous_department": previous, "new_department": new,
    })
}

#[tokio::test]
async fn an_email_only_event_is_resolved_once_and_cached() {
    let mut app = TestApp::spawn().await;
    app.mount_user("jane.doe@example.com", "JaneZoomId1", &["grp_eng"])
        .await;
    app.answer_patches(ResponseTemplate::new(204)).await;

    app.publish_json(email_only(
        "e1",
        "jane.doe@example.com",
        Some("Engineering"),
        "Sales",
    ))
    .await;
    app.wait_for_api_requests(2).await;
    // Same person, other spelling of the address: the cache answers.
    app.publish_json(email_only(
        "e2",
        "Jane.Doe@example.com",
        Some("Sales"),
        "Support",
    ))
    .await;
    app.wait_for_api_requests(3).await;
    app.stop_and_assert_queues_empty().await;

    let requests = app.api_requests().await;
    let calls: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.method.to_string(), r.url.path().to_owned()))
        .collect();
    assert_eq!(
        calls,
        [
            ("GET".into(), "/v2/users/jane.doe@example.com".into()),
            (
                "PATCH".into(),
                "/v2/groups/grp_eng/members/JaneZoomId1".into()
            ),
            (
                "PATCH".into(),
                "/v2/groups/grp_sales/members/JaneZoomId1".into()
            ),
        ]
    );
}

#[tokio::test]
async fn an_unknown_email_is_dead_lettered_with_zoom_code_1001() {
    let mut app = TestApp::spawn().await;
    app.mount_unknown_user("nobody@example.com").await;

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
        app.api_requests().await.len(),
        1,
        "no write after a failed lookup"
    );
}

#[tokio::test]
async fn without_a_known_source_the_users_managed_group_is_the_source() {
    let mut app = TestApp::spawn().await;
    // "grp_other" is not in the mapping: never touched.
    app.mount_user("U1", "U1", &["grp_other", "grp_eng"]).await;
    Mock::given(method("PATCH"))
        .and(path("/v2/groups/grp_eng/members/U1"))
        .and(body_json(
            serde_json::json!({"action": "move", "target_group_id": "grp_sales"}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&app.zoom)
        .await;

    app.publish_json(event("e1", "U1", None, "Sales")).await;
    app.wait_for_api_requests(2).await;
    app.stop_and_assert_queues_empty().await;
    let requests = app.api_requests().await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method.as_str(), "GET");
    app.zoom.verify().await;
}

#[tokio::test]
async fn a_user_already_in_the_target_gets_no_write() {
    let mut app = TestApp::spawn().await;
    app.mount_user("U1", "U1", &["grp_sales"]).await;
    // "Legal" has no group: the source is unknown, so the lookup decides.
    app.publish_json(event("e1", "U1", Some("Legal"), "Sales"))
        .await;
    app.wait_for_api_requests(1).await;
    app.stop_and_assert_queues_empty().await;
    let requests = app.api_requests().await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method.as_str(), "GET");
    assert_eq!(requests[0].url.path(), "/v2/users/U1");
}

#[tokio::test]
async fn a_user_in_no_managed_group_is_added_to_the_target() {
    let mut app = TestApp::spawn().await;
    app.mount_user("U1", "U1", &["grp_other"]).await;
    Mock::given(method("POST"))
        .and(path("/v2/groups/grp_sales/members"))
        .and(body_json(serde_json::json!({"members": [{"id": "U1"}]})))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"ids": "U1"})))
        .expect(1)
        .mount(&app.zoom)
        .await;

    app.publish_json(event("e1", "U1", None, "Sales")).await;
    app.wait_for_api_requests(2).await;
    app.stop_and_assert_queues_empty().await;
    assert_eq!(app.api_requests().await.len(), 2);
    app.zoom.verify().await;
}

#[tokio::test]
async fn a_user_in_several_managed_groups_ends_in_the_target_only() {
    let mut app = TestApp::spawn().await;
    app.mount_user("U1", "U1", &["grp_support", "grp_eng", "grp_other"])
        .await;
    Mock::given(method("PATCH"))
        .and(path("/v2/groups/grp_eng/members/U1"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&app.zoom)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v2/groups/grp_support/members/U1"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&app.zoom)
        .await;

    app.publish_json(event("e1", "U1", None, "Sales")).await;
    app.wait_for_api_requests(3).await;
    app.stop_and_assert_queues_empty().await;
    let requests = app.api_requests().await;
    assert_eq!(requests.len(), 3, "GET, PATCH, DELETE; grp_other untouched");
    app.zoom.verify().await;
}

#[tokio::test]
async fn a_duplicate_event_is_recognised_as_already_applied() {
    let mut app = TestApp::spawn().await;
    let patches = Script::new(vec![
        ResponseTemplate::new(204),
        zoom_error(404, 4130, "User is not a member of group grp_eng."),
    ]);
    Mock::given(method("PATCH"))
        .and(path("/v2/groups/grp_eng/members/U1"))
        .respond_with(patches.clone())
        .mount(&app.zoom)
        .await;
    app.mount_user("U1", "U1", &["grp_sales"]).await;

    let duplicate = event("e-dup", "U1", Some("Engineering"), "Sales");
    app.publish_json(duplicate.clone()).await;
    app.publish_json(duplicate).await;
    app.wait_for_api_requests(3).await;
    app.stop_and_assert_queues_empty().await;

    assert_eq!(patches.times().len(), 2, "both PATCHes were sent");
    let requests = app.api_requests().await;
    assert_eq!(requests.len(), 3, "PATCH, PATCH, one check");
    assert_eq!(requests[2].method.as_str(), "GET");
}
