//! Transient failures are retried with backoff; 429 waits as Zoom says; a 401
//! refreshes the token; a budget that runs out dead-letters.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    Script, TOKEN_PATH, TestApp, event, eventually, header_int, header_str, zoom_error,
};

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
    // Full jitter draws each wait from [0, step]: the gaps are random, but
    // together they never exceed the steps 100 + 200 + 400 ms (plus
    // scheduling slack). A wait added on top of the step would break this.
    let total = times[3].duration_since(times[0]).unwrap();
    let bound = Duration::from_millis(100 + 200 + 400 + 300);
    assert!(
        total <= bound,
        "three retries took {total:?}, over {bound:?}"
    );
}

/// A `Retry-After` of u64::MAX seconds used to overflow `Instant + wait` and
/// panic the worker. Capped at 24 h it is past the retry budget: the event
/// goes back to the queue and consuming pauses; nothing is lost.
#[tokio::test]
async fn a_huge_retry_after_neither_panics_nor_loses_the_event() {
    let mut app = TestApp::spawn().await;
    let script = Script::new(vec![
        ResponseTemplate::new(429).insert_header("retry-after", "18446744073709551615"),
        ResponseTemplate::new(204),
    ]);
    app.answer_patches(script.clone()).await;

    app.publish_json(event("e-huge", "U1", Some("Engineering"), "Sales"))
        .await;
    app.wait_for_api_requests(1).await;
    eventually("consuming pauses", Duration::from_secs(20), || async {
        let (status, body) = app.http_get("/readyz").await;
        status == 503 && body.contains("paused")
    })
    .await;
    eventually(
        "the event is back in the input queue",
        Duration::from_secs(20),
        || async { app.queue_state(&app.queue).await.0 == 1 },
    )
    .await;
    assert_eq!(app.http_get("/healthz").await.0, 200, "the daemon runs");
    assert_eq!(script.times().len(), 1, "no retry within the pause");
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 1, "kept");
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0);
}

/// `Retry-After: 0` on every answer used to mean "retry at once", hundreds
/// of calls a second; the exponential step still applies.
#[tokio::test]
async fn a_zero_retry_after_still_backs_off() {
    let mut app = TestApp::spawn_with(|s| {
        s.retry.initial_interval_ms = 100;
        s.retry.max_interval_ms = 400;
        s.retry.max_elapsed_secs = 2;
    })
    .await;
    let script = Script::new(vec![
        zoom_error(503, 0, "Service unavailable").insert_header("retry-after", "0"),
    ]);
    app.answer_patches(script.clone()).await;

    app.publish_json(event("e-zero", "U1", Some("Engineering"), "Sales"))
        .await;
    let letters = app.dead_letters(1).await;
    assert_eq!(
        header_str(&letters[0], "failure-reason").as_deref(),
        Some("retries_exhausted")
    );
    let calls = app.api_requests().await.len();
    // 2 s of waits drawn from [0, 100/200/400 ms]: about 12 calls expected.
    assert!(calls <= 40, "{calls} PATCH calls in a 2 s budget");
    app.stop().await;
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
    // The scripted token endpoint is there before the daemon starts: it
    // fetches its first token at start-up.
    let mut app = TestApp::prepare_with(|_| {}).await;
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
    app.start().await;
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
