//! The account's rate: a steady client-side limit, and one 429 holds every
//! call back, not only the one that got it.

use std::time::Duration;

use wiremock::ResponseTemplate;

use crate::helpers::{Script, TestApp};

#[tokio::test]
async fn no_one_second_window_sees_more_than_the_configured_rate() {
    let mut app = TestApp::spawn_with(|s| s.zoom.requests_per_second = 20).await;
    let script = Script::new(vec![ResponseTemplate::new(204)]);
    app.answer_patches(script.clone()).await;

    app.publish_moves(60).await;
    app.wait_for_api_requests(60).await;
    app.stop_and_assert_queues_empty().await;

    let times = script.times();
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| {
                    t.duration_since(*start)
                        .is_ok_and(|d| d < Duration::from_secs(1))
                })
                .count()
        })
        .max()
        .unwrap();
    println!("busiest one-second window: {busiest} calls");
    assert!(busiest <= 21, "{busiest} calls in one second");
}

#[tokio::test]
async fn a_429_holds_back_every_call_until_its_wait_is_over() {
    let mut app = TestApp::spawn_with(|s| s.zoom.requests_per_second = 20).await;
    let script = Script::new(vec![
        ResponseTemplate::new(429).insert_header("retry-after", "1"),
        ResponseTemplate::new(204),
    ]);
    app.answer_patches(script.clone()).await;

    app.publish_moves(10).await;
    app.wait_for_api_requests(11).await;
    app.stop_and_assert_queues_empty().await;

    let times = script.times();
    assert_eq!(times.len(), 11, "ten events, one retried");
    let limited = times[0];
    for (i, t) in times.iter().enumerate().skip(1) {
        let after = t.duration_since(limited).unwrap();
        assert!(
            after >= Duration::from_secs(1),
            "call {i} went out {after:?} after the 429"
        );
    }
}
