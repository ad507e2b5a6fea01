//! The daemon's promise under faults: a hand-back keeps a user's order, one
//! person is one line, a lost session stops its work, the invariant holds
//! after partial work, a scope error does not flap.

use std::time::Duration;

use zoom_fake::{FakeHandle, ScriptedFault};

use crate::helpers::{
    TestApp, amqp_url, engineers, event, eventually, groups_of, mapped_zoom, spawn_zoom, use_zoom,
};
use crate::proxy::{self, Proxy};

/// Zoom's answer to a token without the write scope.
fn missing_scope() -> ScriptedFault {
    ScriptedFault::new(
        "PATCH",
        403,
        104,
        "Invalid access token, does not contain scopes.",
    )
}

/// API calls zoom-fake received.
fn calls(zoom: &FakeHandle) -> u64 {
    zoom.counters().total.calls
}

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
    let zoom = spawn_zoom(mapped_zoom().user("U1", "u1@example.com", &["grp_eng"])).await;
    zoom.script(missing_scope());
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.worker.pause_initial_ms = 300;
    })
    .await;

    app.publish_json(event("a-b", "U1", Some("Engineering"), "Sales"))
        .await;
    app.publish_json(event("b-c", "U1", Some("Sales"), "Support"))
        .await;
    eventually("U1 ends in Support", Duration::from_secs(20), || async {
        groups_of(&zoom, "U1") == ["grp_support"]
    })
    .await;
    app.stop_and_assert_queues_empty().await;
    assert_eq!(groups_of(&zoom, "U1"), ["grp_support"]);
    assert_eq!(zoom.counters().medium.faults, 1, "the 403 was answered");
}

/// Point 2: `{id, email}` then email-only for the same person share a line.
#[tokio::test]
async fn events_by_id_and_by_email_of_one_person_share_one_line() {
    let seed = (0..8).fold(mapped_zoom(), |seed, i| {
        seed.user(&format!("P{i}"), &format!("p{i}@example.com"), &["grp_eng"])
    });
    let zoom = spawn_zoom(seed).await;
    // Each first move fails once and is retried after a backoff.
    zoom.script(ScriptedFault::new("PATCH", 503, 0, "busy").times(8));
    let mut app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;
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
        || async { (0..8).all(|i| groups_of(&zoom, &format!("P{i}")) == ["grp_support"]) },
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
    let mut seed = engineers(EVENTS);
    seed.faults.latency_ms = 100;
    let zoom = spawn_zoom(seed).await;
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.amqp.url = via.into();
        s.worker.concurrency = CONCURRENCY;
    })
    .await;
    app.publish_moves(EVENTS).await;

    eventually(
        "a quarter of the calls",
        Duration::from_secs(30),
        || async { calls(&zoom) >= (EVENTS / 4) as u64 },
    )
    .await;
    proxy.cut();
    eventually("every user moved", Duration::from_secs(30), || async {
        (0..EVENTS).all(|i| groups_of(&zoom, &format!("U{i}")) == ["grp_sales"])
    })
    .await;
    eventually(
        "the queue settles soon after",
        Duration::from_secs(5),
        || async { app.queue_state(&app.queue).await == (0, 1) },
    )
    .await;
    app.stop_and_assert_queues_empty().await;
    let calls = calls(&zoom);
    eprintln!("{calls} calls for {EVENTS} events and one cut");
    assert!(
        calls <= (EVENTS + 2 * CONCURRENCY) as u64,
        "{calls} calls for {EVENTS} events and one cut"
    );
}

/// Point 9: a missing scope (403 on every write) does not flap: after the
/// first pause, one event at a time probes, with growing waits.
#[tokio::test]
async fn a_missing_scope_probes_with_one_event_instead_of_flapping() {
    let zoom = spawn_zoom(engineers(10)).await;
    zoom.script_until_cleared(missing_scope());
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.worker.pause_initial_ms = 300;
    })
    .await;
    app.publish_moves(10).await;
    // Waits of 0.3, 0.6, 1.2, 2.4 s: the fourth probe comes 4.5 s after the
    // first burst. A flapping daemon would have sent bursts meanwhile.
    eventually("four probes", Duration::from_secs(15), || async {
        zoom.first_to_last() >= Duration::from_secs(4)
    })
    .await;
    let calls = calls(&zoom);
    assert!(
        calls <= 10 + 5,
        "{calls} calls: the first burst, then one event per probe"
    );
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0);

    zoom.clear_faults();
    eventually(
        "all applied after the fix",
        Duration::from_secs(20),
        || async { (0..10).all(|i| groups_of(&zoom, &format!("U{i}")) == ["grp_sales"]) },
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
    // A first try added the target but was cut before the old group was left.
    let seed = mapped_zoom()
        .group("other", "Not managed")
        .user("U1", "u1@example.com", &["grp_sales", "grp_support"])
        .user("U2", "u2@example.com", &["grp_sales", "grp_mkt", "other"]);
    let zoom = spawn_zoom(seed).await;
    let mut app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;
    app.publish_json(event("known", "U1", Some("Engineering"), "Sales"))
        .await;
    app.publish_json(event("unknown", "U2", None, "Sales"))
        .await;
    eventually("both in Sales only", Duration::from_secs(10), || async {
        groups_of(&zoom, "U1") == ["grp_sales"] && groups_of(&zoom, "U2") == ["grp_sales", "other"]
    })
    .await;
    app.stop_and_assert_queues_empty().await;
}

/// Point 6: `retry.max_elapsed_secs` bounds the whole event (lookup, move and
/// check together), not each call.
#[tokio::test]
async fn the_retry_budget_bounds_the_whole_event() {
    let zoom = spawn_zoom(mapped_zoom().user("U1", "u1@example.com", &["grp_eng"])).await;
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.retry.initial_interval_ms = 100;
        s.retry.max_interval_ms = 200;
        s.retry.max_elapsed_secs = 2;
    })
    .await;
    // Every GET fails for 1.2 s, then every PATCH fails.
    let unavailable = |method| ScriptedFault::new(method, 503, 503, "Service unavailable.");
    zoom.script_for(unavailable("GET"), Duration::from_millis(1200));
    zoom.script_until_cleared(unavailable("PATCH"));
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
    assert!(zoom.counters().medium.faults > 0, "a PATCH was tried");
    let span = zoom.first_to_last();
    // One budget per call: about 1.2 s of lookups, then 2 s of moves.
    assert!(
        span <= Duration::from_millis(2600),
        "{span:?} from the first call to the last: the budget was per call"
    );
}
