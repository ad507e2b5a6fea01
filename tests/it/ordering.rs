//! One user's events apply in the order consumed; other users do not wait.

use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{TestApp, event};

#[tokio::test]
async fn one_users_events_apply_in_order_while_others_proceed() {
    let mut app = TestApp::spawn().await;
    // The first move of U1 is slow.
    Mock::given(method("PATCH"))
        .and(path("/v2/groups/grp_eng/members/U1"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_millis(500)))
        .mount(&app.zoom)
        .await;
    app.answer_patches(ResponseTemplate::new(204)).await;

    app.publish_json(event("a-b", "U1", Some("Engineering"), "Sales"))
        .await;
    app.publish_json(event("b-c", "U1", Some("Sales"), "Support"))
        .await;
    app.publish_json(event("c-d", "U1", Some("Support"), "Marketing"))
        .await;
    app.publish_json(event("v", "V2", Some("Engineering"), "Sales"))
        .await;
    app.publish_json(event("w", "W3", Some("Support"), "Sales"))
        .await;

    let requests = app.wait_for_api_requests(5).await;
    app.stop_and_assert_queues_empty().await;

    let target = |r: &wiremock::Request| {
        let body: serde_json::Value = r.body_json().unwrap();
        body["target_group_id"].as_str().unwrap().to_owned()
    };
    let u1: Vec<String> = requests
        .iter()
        .filter(|r| r.url.path().ends_with("/members/U1"))
        .map(target)
        .collect();
    assert_eq!(
        u1,
        ["grp_sales", "grp_support", "grp_mkt"],
        "U1's moves in order; last target D"
    );

    let position = |suffix: &str| {
        requests
            .iter()
            .position(|r| r.url.path().ends_with(suffix))
            .unwrap()
    };
    let u1_second = requests
        .iter()
        .position(|r| r.url.path() == "/v2/groups/grp_sales/members/U1")
        .unwrap();
    assert!(
        position("/members/V2") < u1_second,
        "V2 did not wait behind U1"
    );
    assert!(
        position("/members/W3") < u1_second,
        "W3 did not wait behind U1"
    );
}
