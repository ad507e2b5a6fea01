//! One user's events apply in the order consumed; other users do not wait.

use zoom_fake::{FaultsConfig, ReceivedRequest};

use crate::helpers::{event, groups_of, mapped_zoom, spawn_on_fake, wait_for_calls};

#[tokio::test]
async fn one_users_events_apply_in_order_while_others_proceed() {
    let mut seed = mapped_zoom()
        .user("U1", "u1@example.com", &["grp_eng"])
        .user("V2", "v2@example.com", &["grp_eng"])
        .user("W3", "w3@example.com", &["grp_support"]);
    // Every move is slow (U1's first one above all): a user who waited
    // behind U1 would reach Zoom after U1's second move.
    seed.faults = FaultsConfig {
        latency_ms: 500,
        ..FaultsConfig::default()
    };
    let (mut app, zoom) = spawn_on_fake(seed).await;

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

    wait_for_calls(&zoom, 5).await;
    app.stop_and_assert_queues_empty().await;
    // In arrival order.
    let requests = zoom.api_requests();
    assert_eq!(requests.len(), 5, "{requests:?}");

    let target = |r: &ReceivedRequest| {
        let body = r.json().expect("a JSON body");
        body["target_group_id"].as_str().unwrap().to_owned()
    };
    let u1: Vec<String> = requests
        .iter()
        .filter(|r| r.path.ends_with("/members/U1"))
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
            .position(|r| r.path.ends_with(suffix))
            .unwrap()
    };
    let u1_second = requests
        .iter()
        .position(|r| r.path == "/v2/groups/grp_sales/members/U1")
        .unwrap();
    assert!(
        position("/members/V2") < u1_second,
        "V2 did not wait behind U1"
    );
    assert!(
        position("/members/W3") < u1_second,
        "W3 did not wait behind U1"
    );
    assert_eq!(groups_of(&zoom, "U1"), ["grp_mkt"]);
    assert_eq!(groups_of(&zoom, "V2"), ["grp_sales"]);
    assert_eq!(groups_of(&zoom, "W3"), ["grp_sales"]);
}
