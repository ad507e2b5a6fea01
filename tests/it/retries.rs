//! Transient failures are retried with backoff; 429 waits as Zoom says; a 401
//! refreshes the token; a budget that runs out dead-letters.

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zoom_fake::{FakeHandle, ScriptedFault};

use crate::helpers::{
    TOKEN_PATH, TestApp, assert_bearer_from, event, eventually, groups_of, header_int, header_str,
    one_engineer, spawn_on_fake, spawn_zoom, use_zoom, wait_for_calls,
};

/// The next `PATCH` answers `status` with Zoom's error body.
fn patch_fails(status: u16, message: &str) -> ScriptedFault {
    ScriptedFault::new("PATCH", status, 0, message)
}

/// zoom-fake with U1, and the daemon on it with `configure`.
async fn on_fake(
    configure: impl FnOnce(&mut zoom_dept_sync::config::Settings),
) -> (TestApp, FakeHandle) {
    let zoom = spawn_zoom(one_engineer()).await;
    let app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        configure(s);
    })
    .await;
    (app, zoom)
}

#[tokio::test]
async fn server_errors_are_retried_until_the_move_applies() {
    let zoom = spawn_zoom(one_engineer()).await;
    for (status, message) in [
        (500, "Internal error"),
        (502, "Bad gateway"),
        (503, "Unavailable"),
    ] {
        zoom.script(patch_fails(status, message).path_prefix("/v2/groups/grp_eng/members/U1"));
    }
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.retry.initial_interval_ms = 100;
        s.retry.max_interval_ms = 2000;
    })
    .await;

    app.publish_json(event("e-5xx", "U1", Some("Engineering"), "Sales"))
        .await;
    wait_for_calls(&zoom, 4).await;
    app.stop_and_assert_queues_empty().await;

    let calls = zoom.api_requests();
    let statuses: Vec<_> = calls.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [Some(500), Some(502), Some(503), Some(204)],
        "three failures, then the success; no more"
    );
    // Full jitter draws each wait from [0, step]: the gaps are random, but
    // together they never exceed the steps 100 + 200 + 400 ms (plus
    // scheduling slack). A wait added on top of the step would break this.
    let total = calls[3].at.duration_since(calls[0].at);
    let bound = Duration::from_millis(100 + 200 + 400 + 300);
    assert!(
        total <= bound,
        "three retries took {total:?}, over {bound:?}"
    );
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
}

/// A `Retry-After` of u64::MAX seconds used to overflow `Instant + wait` and
/// panic the worker. Capped at 24 h it is past the retry budget: the event
/// goes back to the queue and consuming pauses; nothing is lost.
#[tokio::test]
async fn a_huge_retry_after_neither_panics_nor_loses_the_event() {
    let (mut app, zoom) = on_fake(|_| {}).await;
    zoom.script(
        patch_fails(429, "Too many")
            .untyped()
            .retry_after("18446744073709551615"),
    );

    app.publish_json(event("e-huge", "U1", Some("Engineering"), "Sales"))
        .await;
    wait_for_calls(&zoom, 1).await;
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
    assert_eq!(zoom.api_requests().len(), 1, "no retry within the pause");
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 1, "kept");
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0);
    assert_eq!(groups_of(&zoom, "U1"), ["grp_eng"], "not applied");
}

/// `Retry-After: 0` on every answer used to mean "retry at once", hundreds
/// of calls a second; the exponential step still applies.
#[tokio::test]
async fn a_zero_retry_after_still_backs_off() {
    let (mut app, zoom) = on_fake(|s| {
        s.retry.initial_interval_ms = 100;
        s.retry.max_interval_ms = 400;
        s.retry.max_elapsed_secs = 2;
    })
    .await;
    zoom.script_until_cleared(patch_fails(503, "Service unavailable").retry_after("0"));

    app.publish_json(event("e-zero", "U1", Some("Engineering"), "Sales"))
        .await;
    let letters = app.dead_letters(1).await;
    assert_eq!(
        header_str(&letters[0], "failure-reason").as_deref(),
        Some("retries_exhausted")
    );
    let calls = zoom.api_requests().len();
    // 2 s of waits drawn from [0, 100/200/400 ms]: about 12 calls expected.
    assert!(calls <= 40, "{calls} PATCH calls in a 2 s budget");
    app.stop().await;
}

#[tokio::test]
async fn a_429_retry_is_not_sent_before_retry_after_in_seconds() {
    let (mut app, zoom) = on_fake(|_| {}).await;
    zoom.script(patch_fails(429, "Too many").untyped().retry_after("2"));

    app.publish_json(event("e-429", "U1", Some("Engineering"), "Sales"))
        .await;
    wait_for_calls(&zoom, 2).await;
    app.stop_and_assert_queues_empty().await;

    let calls = zoom.api_requests();
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at.duration_since(calls[0].at);
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
}

#[tokio::test]
async fn a_429_retry_is_not_sent_before_an_iso_8601_retry_after() {
    let (mut app, zoom) = on_fake(|_| {}).await;
    // Whole seconds, as Zoom writes it, at least two seconds ahead.
    let now = OffsetDateTime::now_utc();
    let (now_instant, at) = (
        Instant::now(),
        now.replace_nanosecond(0).unwrap() + time::Duration::seconds(3),
    );
    let at_instant = now_instant + Duration::try_from(at - now).expect("ahead");
    zoom.script(
        patch_fails(429, "You have reached the maximum daily rate limit")
            .untyped()
            .retry_after(&at.format(&Rfc3339).unwrap()),
    );

    app.publish_json(event("e-429-iso", "U1", Some("Engineering"), "Sales"))
        .await;
    wait_for_calls(&zoom, 2).await;
    app.stop_and_assert_queues_empty().await;

    let calls = zoom.api_requests();
    assert_eq!(calls.len(), 2);
    assert!(
        calls[1].at >= at_instant,
        "retried {:?} before {at}",
        at_instant.saturating_duration_since(calls[1].at)
    );
}

#[tokio::test]
async fn a_401_with_code_124_fetches_a_new_token_and_retries_once() {
    let (mut app, zoom) = spawn_on_fake(one_engineer()).await;
    zoom.script(ScriptedFault::new(
        "PATCH",
        401,
        124,
        "Invalid access token.",
    ));

    app.publish_json(event("e-401", "U1", Some("Engineering"), "Sales"))
        .await;
    let requests = wait_for_calls(&zoom, 2).await;
    app.stop_and_assert_queues_empty().await;

    let tokens = zoom
        .requests()
        .iter()
        .filter(|r| r.path == TOKEN_PATH)
        .count();
    assert_eq!(tokens, 2, "one token, then one refresh");
    let bearer = |i: usize| requests[i].header("authorization").unwrap().to_owned();
    assert_ne!(bearer(0), bearer(1), "the retry carries the new token");
    assert_bearer_from(&zoom, &requests[0]);
    assert_bearer_from(&zoom, &requests[1]);
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Some(401), Some(204)]
    );
    assert_eq!(zoom.api_requests().len(), 2);
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
}

#[tokio::test]
async fn server_errors_past_the_budget_dead_letter_as_retries_exhausted() {
    let (mut app, zoom) = on_fake(|s| {
        s.retry.initial_interval_ms = 100;
        s.retry.max_interval_ms = 400;
        s.retry.max_elapsed_secs = 3;
    })
    .await;
    zoom.script(patch_fails(500, "Internal error"));
    zoom.script_until_cleared(patch_fails(503, "Service unavailable"));

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
    assert_eq!(attempts as usize, zoom.api_requests().len());
    assert!(attempts >= 2, "retried before giving up: {attempts}");
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
    assert_eq!(groups_of(&zoom, "U1"), ["grp_eng"], "not applied");
}
