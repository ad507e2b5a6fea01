//! The daemon's promise under faults: a hand-back keeps a user's order, one
//! person is one line, a lost session stops its work, the invariant holds
//! after partial work, a scope error does not flap.

use std::time::Duration;

use wiremock::ResponseTemplate;

use crate::fake_zoom::FakeZoom;
use crate::helpers::{TestApp, amqp_url, event, eventually, zoom_error};
use crate::proxy::{self, Proxy};

fn email_only(id: &str, email: &str, previous: Option<&str>, new: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": id, "email": email,
        "previous_department": previous, "new_department": new,
    })
}

/// Point 1: a 403 on a user's first event requeues it; the second event of
/// that user, already taken from the queue, must not run before it.
#[tokio::test]
async fn a_handed_back_event_keeps_the_users_later_events_behind_it() {
    let mut app = TestApp::spawn_with(|s| s.worker.pause_initial_ms = 300).await;
    let fake = FakeZoom::default();
    fake.add_user("U1", "u1@example.com", &["grp_eng"]);
    fake.fail_next(
        "PATCH",
        zoom_error(403, 104, "Invalid access token, does not contain scopes."),
    );
    fake.mount(&app.zoom).await;

    app.publish_json(event("a-b", "U1", Some("Engineering"), "Sales"))
        .await;
    app.publish_json(event("b-c", "U1", Some("Sales"), "Support"))
        .await;
    eventually("U1 ends in Support", Duration::from_secs(20), || async {
        fake.groups_of("U1") == ["grp_support"]
    })
    .await;
    app.stop_and_assert_queues_empty().await;
    assert_eq!(fake.groups_of("U1"), ["grp_support"]);
}

/// Point 2: `{id, email}` then email-only for the same person share a line.
#[tokio::test]
async fn events_by_id_and_by_email_of_one_person_share_one_line() {
    let mut app = TestApp::spawn().await;
    let fake = FakeZoom::default();
    for i in 0..8 {
        fake.add_user(&format!("P{i}"), &format!("p{i}@example.com"), &["grp_eng"]);
        // Each first move fails once and is retried after a backoff.
        fake.fail_next("PATCH", zoom_error(503, 0, "busy"));
    }
    fake.mount(&app.zoom).await;
    for i in 0..8 {
        app.publish_json(event(
            &format!("p{i}-1"),
            &format!("P{i}"),
            Some("Engineering"),
            "Sales",
        ))
        .await;
        app.publish_json(email_only(
            &format!("p{i}-2"),
            &format!("p{i}@example.com"),
            Some("Sales"),
            "Support",
        ))
        .await;
    }
    eventually(
        "everyone ends in Support",
        Duration::from_secs(20),
        || async { (0..8).all(|i| fake.groups_of(&format!("P{i}")) == ["grp_support"]) },
    )
    .await;
    app.stop().await;
    assert_eq!(
        app.queue_state(&app.dead_letter_queue).await.0,
        0,
        "no false dead letters"
    );
}

/// Point 3: after a cut, deliveries of the lost session that had not called
/// Zoom yet do not call it; running ones do not retry.
#[tokio::test]
async fn a_lost_session_stops_its_work() {
    const EVENTS: usize = 48;
    const CONCURRENCY: usize = 4;
    let proxy = Proxy::start(proxy::broker_addr(&amqp_url())).await;
    let via = proxy::url_via(&amqp_url(), proxy.addr);
    let mut app = TestApp::spawn_with(|s| {
        s.amqp.url = via.into();
        s.worker.concurrency = CONCURRENCY;
    })
    .await;
    let fake = FakeZoom::with_delay(Duration::from_millis(100));
    for i in 0..EVENTS {
        fake.add_user(&format!("U{i}"), &format!("u{i}@example.com"), &["grp_eng"]);
    }
    fake.mount(&app.zoom).await;
    app.publish_moves(EVENTS).await;

    app.wait_for_api_requests(EVENTS / 4).await;
    proxy.cut();
    eventually("every user moved", Duration::from_secs(30), || async {
        (0..EVENTS).all(|i| fake.groups_of(&format!("U{i}")) == ["grp_sales"])
    })
    .await;
    eventually(
        "the queue settles soon after",
        Duration::from_secs(5),
        || async { app.queue_state(&app.queue).await == (0, 1) },
    )
    .await;
    app.stop_and_assert_queues_empty().await;
    let calls = app.api_requests().await.len();
    eprintln!("{calls} calls for {EVENTS} events and one cut");
    assert!(
        calls <= EVENTS + 2 * CONCURRENCY,
        "{calls} calls for {EVENTS} events and one cut"
    );
}

/// Point 9: a missing scope (403 on every write) does not flap: after the
/// first pause, one event at a time probes, with growing waits.
#[tokio::test]
async fn a_missing_scope_probes_with_one_event_instead_of_flapping() {
    let mut app = TestApp::spawn_with(|s| s.worker.pause_initial_ms = 300).await;
    let fake = FakeZoom::default();
    for i in 0..10 {
        fake.add_user(&format!("U{i}"), &format!("u{i}@example.com"), &["grp_eng"]);
    }
    fake.fail_always(
        "PATCH",
        zoom_error(403, 104, "Invalid access token, does not contain scopes."),
    );
    fake.mount(&app.zoom).await;
    app.publish_moves(10).await;
    // Waits of 0.3, 0.6, 1.2, 2.4 s: four probes in 7 s.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let calls = app.api_requests().await.len();
    assert!(
        calls <= 10 + 5,
        "{calls} calls: the first burst, then one event per probe"
    );
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0);

    fake.heal();
    eventually(
        "all applied after the fix",
        Duration::from_secs(20),
        || async { (0..10).all(|i| fake.groups_of(&format!("U{i}")) == ["grp_sales"]) },
    )
    .await;
    eventually("ready again", Duration::from_secs(10), || async {
        app.http_get("/readyz").await.0 == 200
    })
    .await;
    app.stop_and_assert_queues_empty().await;
}

/// Point 10: a redelivered move finds the user already in the target but
/// still in another managed group: the other group is left.
#[tokio::test]
async fn a_redelivered_move_restores_the_invariant() {
    let mut app = TestApp::spawn().await;
    let fake = FakeZoom::default();
    // A first try added the target but was cut before the old group was left.
    fake.add_user("U1", "u1@example.com", &["grp_sales", "grp_support"]);
    fake.add_user("U2", "u2@example.com", &["grp_sales", "grp_mkt", "other"]);
    fake.mount(&app.zoom).await;
    app.publish_json(event("known", "U1", Some("Engineering"), "Sales"))
        .await;
    app.publish_json(event("unknown", "U2", None, "Sales"))
        .await;
    eventually("both in Sales only", Duration::from_secs(10), || async {
        fake.groups_of("U1") == ["grp_sales"] && fake.groups_of("U2") == ["grp_sales", "other"]
    })
    .await;
    app.stop_and_assert_queues_empty().await;
}

/// Point 6: `retry.max_elapsed_secs` bounds the whole event (lookup, move and
/// check together), not each call.
#[tokio::test]
async fn the_retry_budget_bounds_the_whole_event() {
    let mut app = TestApp::spawn_with(|s| {
        s.retry.initial_interval_ms = 100;
        s.retry.max_interval_ms = 200;
        s.retry.max_elapsed_secs = 2;
    })
    .await;
    let fake = FakeZoom::default();
    fake.add_user("U1", "u1@example.com", &["grp_eng"]);
    fake.mount(&app.zoom).await;
    // Every GET fails for 1.2 s, then every PATCH fails.
    fake.fail_for(
        "GET",
        ResponseTemplate::new(503),
        Duration::from_millis(1200),
    );
    fake.fail_always("PATCH", ResponseTemplate::new(503));
    app.publish_json(email_only(
        "slow",
        "u1@example.com",
        Some("Engineering"),
        "Sales",
    ))
    .await;
    let letters = app.dead_letters(1).await;
    app.stop().await;
    assert_eq!(
        crate::helpers::header_str(&letters[0], "failure-reason").as_deref(),
        Some("retries_exhausted")
    );
    let requests = app.api_requests().await;
    assert!(requests.iter().any(|r| r.method.as_str() == "PATCH"));
    // wiremock does not time requests: the fake's log does.
    let span = fake.first_to_last();
    // One budget per call: about 1.2 s of lookups, then 2 s of moves.
    assert!(
        span <= Duration::from_millis(2600),
        "{span:?} from the first call to the last: the budget was per call"
    );
}
