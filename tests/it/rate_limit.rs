//! The account's rate: a steady client-side limit per Zoom category; a 429
//! holds back every call of its category, not only the one that got it, and
//! no call of another category; a per-second 429 within our own limit
//! lowers that category's rate.

use std::time::Duration;

use zoom_fake::{Category, ScriptedFault};

use crate::helpers::{
    TestApp, engineers, event, eventually, groups_of, spawn_zoom, use_zoom, wait_for_calls,
};

/// Zoom's body for a per-second 429.
const QPS_MESSAGE: &str =
    "You have reached the maximum per-second rate limit for this API. Try again later.";

#[tokio::test]
async fn no_one_second_window_sees_more_than_the_configured_rate() {
    let zoom = spawn_zoom(engineers(60)).await;
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.zoom.rate_limits.medium = Some(20);
    })
    .await;

    app.publish_moves(60).await;
    wait_for_calls(&zoom, 60).await;
    app.stop_and_assert_queues_empty().await;

    let times: Vec<_> = zoom.api_requests().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 60);
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| {
                    t.checked_duration_since(*start)
                        .is_some_and(|d| d < Duration::from_secs(1))
                })
                .count()
        })
        .max()
        .unwrap();
    println!("busiest one-second window: {busiest} calls");
    assert!(busiest <= 21, "{busiest} calls in one second");
    assert_eq!(groups_of(&zoom, "U59"), ["grp_sales"]);
}

#[tokio::test]
async fn a_429_holds_back_every_call_until_its_wait_is_over() {
    let zoom = spawn_zoom(engineers(10)).await;
    // Untyped, as the answer this test was written against.
    zoom.script(
        ScriptedFault::new("PATCH", 429, 429, QPS_MESSAGE)
            .untyped()
            .retry_after("1"),
    );
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.zoom.rate_limits.medium = Some(20);
    })
    .await;

    app.publish_moves(10).await;
    wait_for_calls(&zoom, 11).await;
    app.stop_and_assert_queues_empty().await;

    let calls = zoom.api_requests();
    assert_eq!(calls.len(), 11, "ten events, one retried");
    assert_eq!(calls[0].status, Some(429));
    let limited = calls[0].at;
    for (i, call) in calls.iter().enumerate().skip(1) {
        let after = call.at.duration_since(limited);
        assert!(
            after >= Duration::from_secs(1),
            "call {i} went out {after:?} after the 429"
        );
    }
    assert_eq!(groups_of(&zoom, "U9"), ["grp_sales"]);
}

#[tokio::test]
async fn a_light_429_does_not_hold_back_group_writes() {
    let zoom = spawn_zoom(engineers(11)).await;
    let mut light = ScriptedFault::new("GET", 429, 429, QPS_MESSAGE)
        .path_prefix("/v2/users/U0")
        .retry_after("2");
    light.category = Some(Category::Light);
    zoom.script(light);
    let mut app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;

    app.publish_json(event("e0", "U0", None, "Sales")).await;
    for i in 1..=10 {
        let user = format!("U{i}");
        app.publish_json(event(&format!("e{i}"), &user, Some("Engineering"), "Sales"))
            .await;
    }
    wait_for_calls(&zoom, 13).await;
    eventually(
        "every event is settled",
        Duration::from_secs(10),
        || async {
            app.queue_state(&app.queue).await.0 == 0
                && app
                    .http_get("/metrics")
                    .await
                    .1
                    .contains("calls_per_event_count{kind=\"lookup\"} 1")
        },
    )
    .await;
    let metrics = app.http_get("/metrics").await.1;
    app.stop_and_assert_queues_empty().await;

    let calls = zoom.api_requests();
    let lookups: Vec<_> = calls.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(lookups.len(), 2, "the 429, then the lookup again");
    assert_eq!(lookups[0].status, Some(429));
    let patch_times: Vec<_> = calls
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.at)
        .collect();
    assert_eq!(patch_times.len(), 11);
    let before_retry = patch_times.iter().filter(|t| **t < lookups[1].at).count();
    assert_eq!(
        before_retry, 10,
        "the ten moves went out while the Light gate was closed"
    );
    assert!(
        metrics.contains(
            "zoom_dept_sync_zoom_rate_limited_total{category=\"light\",limit=\"per_second\"} 1"
        ),
        "{metrics}"
    );
    // A lookup event cost three calls (429, lookup, move); a move one.
    for expected in [
        "zoom_dept_sync_zoom_calls_per_event_sum{kind=\"lookup\"} 3.0",
        "zoom_dept_sync_zoom_calls_per_event_sum{kind=\"move\"} 10.0",
        "zoom_dept_sync_zoom_calls_per_event_count{kind=\"move\"} 10",
    ] {
        assert!(metrics.contains(expected), "{expected} in {metrics}");
    }
}

#[tokio::test]
async fn a_per_second_429_within_our_limit_lowers_that_categorys_rate() {
    let zoom = spawn_zoom(engineers(1)).await;
    // One per-second 429 (Zoom's body and headers), though the fake's own
    // limit is far off.
    let mut qps = ScriptedFault::new("PATCH", 429, 429, QPS_MESSAGE);
    qps.category = Some(Category::Medium);
    zoom.script(qps);
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.zoom.rate_limits.medium = Some(20);
    })
    .await;
    let (status, ready) = app.http_get("/readyz").await;
    assert_eq!(status, 200);
    assert!(ready.contains("medium 20/20"), "{ready}");

    app.publish_moves(1).await;
    wait_for_calls(&zoom, 2).await;
    // Cut to 16/s by the 429, and one step (a hundredth of 20) won back by
    // the retry's success.
    eventually(
        "/readyz shows the lowered rate",
        Duration::from_secs(5),
        || async { app.http_get("/readyz").await.1.contains("medium 16.2/20") },
    )
    .await;
    let (_, ready) = app.http_get("/readyz").await;
    assert!(
        ready.contains("light 1000/1000") && ready.contains("heavy 1000/1000"),
        "other categories untouched: {ready}"
    );
    let metrics = app.http_get("/metrics").await.1;
    for expected in [
        "zoom_dept_sync_zoom_rate_effective_per_second{category=\"medium\"} 16.2",
        "zoom_dept_sync_zoom_rate_limit_per_second{category=\"medium\"} 20.0",
        "zoom_dept_sync_zoom_rate_limited_total{category=\"medium\",limit=\"per_second\"} 1",
    ] {
        assert!(metrics.contains(expected), "{expected} in {metrics}");
    }
    app.stop_and_assert_queues_empty().await;
    let statuses: Vec<_> = zoom.api_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(429), Some(204)], "the 429, then the move");
    assert_eq!(groups_of(&zoom, "U0"), ["grp_sales"]);
}
