//! Transient failures are retried with backoff; 429 waits as Zoom says; a 401
//! refreshes the token; a budget that runs out dead-letters.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{Script, TOKEN_PATH, TestApp, event, header_int, header_str, zoom_error};

#[tokio::test]
async fn server_errors_are_retried_until_the_move_applies() {
    let mut app = TestApp::spawn_with(|s| {
        s.retry.initial_interval_ms = 100;
        s.retry.max_interval_ms = 2000;
    })
    .await;
    let script = Script::new(vec![
        zoom_error(500, 0, "Internal error"),
        ResponseTemplate::new(502),
        ResponseTemplate::new(503),
        ResponseTemplate::new(204),
    ]);
    Mock::given(method("PATCH"))
        .and(path("/v2/groups/grp_eng/members/U1"))
        .respond_with(script.clone())
        .mount(&app.zoom)
        .await;

    app.publish_json(event("e-5xx", "U1", Some("Engineering"), "Sales"))
        .await;
    app.wait_for_api_requests(4).await;
    app.stop_and_assert_queues_empty().await;

    let times = script.times();
    assert_eq!(times.len(), 4, "three failures, then the success; no more");
    // Full jitter makes each wait random within its step (the steps' growth
    // is unit-tested in retry.rs); here: the waits happened, in order.
    let gaps: Vec<Duration> = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap())
        .collect();
    println!("gaps between attempts: {gaps:?}");
}

#[tokio::test]
async fn a_429_retry_is_not_sent_before_retry_after_in_seconds() {
    let mut app = TestApp::spawn().await;
    let script = Script::new(vec![
        ResponseTemplate::new(429).insert_header("retry-after", "2"),
        ResponseTemplate::new(204),
    ]);
    app.answer_patches(script.clone()).await;

    app.publish_json(event("e-429", "U1", Some("Engineering"), "Sales"))
        .await;
    app.wait_for_api_requests(2).await;
    app.stop_and_assert_queues_empty().await;

    let times = script.times();
    assert_eq!(times.len(), 2);
    let gap = times[1].duration_since(times[0]).unwrap();
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
}

#[tokio::test]
async fn a_429_retry_is_not_sent_before_an_iso_8601_retry_after() {
    let mut app = TestApp::spawn().await;
    // Whole seconds, as Zoom writes it, at least two seconds ahead.
    let now = OffsetDateTime::now_utc();
    let at = now.replace_nanosecond(0).unwrap() + time::Duration::seconds(3);
    let script = Script::new(vec![
        ResponseTemplate::new(429)
            .insert_header("retry-after", at.format(&Rfc3339).unwrap().as_str())
            .set_body_json(serde_json::json!({"code": 429, "message": "You have reached the maximum daily rate limit"})),
        ResponseTemplate::new(204),
    ]);
    app.answer_patches(script.clone()).await;

    app.publish_json(event("e-429-iso", "U1", Some("Engineering"), "Sales"))
        .await;
    app.wait_for_api_requests(2).await;
    app.stop_and_assert_queues_empty().await;

    let times = script.times();
    assert_eq!(times.len(), 2);
    let retried_at = OffsetDateTime::from(times[1]);
    assert!(retried_at >= at, "retried at {retried_at}, before {at}");
}

#[tokio::test]
async fn a_401_with_code_124_fetches_a_new_token_and_retries_once() {
    let mut app = TestApp::spawn().await;
    let tokens = Script::new(vec![
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"access_token": "token-1", "expires_in": 3600})),
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"access_token": "token-2", "expires_in": 3600})),
    ]);
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(tokens.clone())
        .with_priority(1)
        .mount(&app.zoom)
        .await;
    app.answer_patches(Script::new(vec![
        zoom_error(401, 124, "Invalid access token."),
        ResponseTemplate::new(204),
    ]))
    .await;

    app.publish_json(event("e-401", "U1", Some("Engineering"), "Sales"))
        .await;
    let requests = app.wait_for_api_requests(2).await;
    app.stop_and_assert_queues_empty().await;

    assert_eq!(tokens.times().len(), 2, "one token, then one refresh");
    let bearer = |i: usize| {
        requests[i]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(bearer(0), "Bearer token-1");
    assert_eq!(bearer(1), "Bearer token-2");
    assert_eq!(app.api_requests().await.len(), 2);
}

#[tokio::test]
async fn server_errors_past_the_budget_dead_letter_as_retries_exhausted() {
    let mut app = TestApp::spawn_with(|s| {
        s.retry.initial_interval_ms = 100;
        s.retry.max_interval_ms = 400;
        s.retry.max_elapsed_secs = 3;
    })
    .await;
    let script = Script::new(vec![
        ResponseTemplate::new(500),
        zoom_error(503, 0, "Service unavailable"),
    ]);
    app.answer_patches(script.clone()).await;

    app.publish_json(event("e-exhausted", "U1", Some("Engineering"), "Sales"))
        .await;
    let letters = app.dead_letters(1).await;
    let letter = &letters[0];
    assert_eq!(
        header_str(letter, "failure-reason").as_deref(),
        Some("retries_exhausted")
    );
    assert_eq!(
        header_int(letter, "zoom-http-status"),
        Some(503),
        "the last status"
    );
    assert_eq!(
        header_str(letter, "zoom-error-message").as_deref(),
        Some("Service unavailable")
    );
    let attempts = header_int(letter, "failure-attempts").unwrap();
    assert_eq!(attempts as usize, script.times().len());
    assert!(attempts >= 2, "retried before giving up: {attempts}");
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}
