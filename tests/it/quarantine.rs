//! Quarantine: when most recent events are dead-lettered with one Zoom code
//! (a group deleted in Zoom), the daemon stops consuming and says so, until
//! `zoom-dept-sync resume`; the rest of the queue stays in the broker.

use std::time::Duration;

use zoom_dept_sync::config::Settings;
use zoom_dept_sync::control::{ResumeError, request_resume};
use zoom_fake::{FakeHandle, ScriptedFault};

use crate::helpers::{TestApp, amqp_url, engineers, eventually, groups_of, spawn_zoom, use_zoom};
use crate::proxy::{self, Proxy};

/// zoom-fake with users `U0`.. in Engineering, where every `PATCH` answers
/// that the target group does not exist (404, code 4130), as after the
/// group was deleted in Zoom, until [`FakeHandle::clear_faults`].
async fn zoom_without_the_sales_group(users: usize) -> FakeHandle {
    let zoom = spawn_zoom(engineers(users)).await;
    zoom.script_until_cleared(ScriptedFault::new(
        "PATCH",
        404,
        4130,
        "Group does not exist: grp_sales.",
    ));
    zoom
}

/// A daemon on `zoom`, with `configure`'s settings.
async fn app_on(zoom: &FakeHandle, configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::spawn_with(|s| {
        use_zoom(s, zoom);
        configure(s);
    })
    .await
}

fn users_in_sales(zoom: &FakeHandle, users: usize) -> usize {
    (0..users)
        .filter(|i| groups_of(zoom, &format!("U{i}")) == ["grp_sales"])
        .count()
}

/// (dead letters, ready in the input queue) once the daemon has stopped
/// consuming and nothing is unacknowledged any more.
async fn wait_until_stopped(app: &TestApp, events: u32) -> (u32, u32) {
    eventually(
        "the daemon stops consuming",
        Duration::from_secs(30),
        || async {
            let (ready, consumers) = app.queue_state(&app.queue).await;
            let dead = app.queue_state(&app.dead_letter_queue).await.0;
            consumers == 0 && ready + dead == events
        },
    )
    .await;
    (
        app.queue_state(&app.dead_letter_queue).await.0,
        app.queue_state(&app.queue).await.0,
    )
}

/// The case: 60 events whose target group answers 404/4130 with the
/// default rule (50 of the last 100). The daemon stops after the threshold,
/// says why, and applies the rest once the group is back and it is resumed.
#[tokio::test]
async fn sixty_events_for_a_deleted_group_stop_the_daemon_until_resume() {
    const EVENTS: usize = 60;
    let zoom = zoom_without_the_sales_group(EVENTS).await;
    let mut app = app_on(&zoom, |s| s.worker.concurrency = 4).await;
    app.publish_moves(EVENTS).await;

    let (dead, ready) = wait_until_stopped(&app, EVENTS as u32).await;
    assert!(
        (50..EVENTS as u32).contains(&dead),
        "{dead} dead letters: at least the threshold, not the whole queue"
    );
    assert_eq!(
        ready,
        EVENTS as u32 - dead,
        "the rest wait in the input queue"
    );
    let (status, why) = app.http_get("/readyz").await;
    assert_eq!(status, 503, "{why}");
    for needle in ["4130", "Sales", "grp_sales", "zoom-dept-sync resume"] {
        assert!(why.contains(needle), "/readyz names {needle}: {why}");
    }
    let metrics = app.http_get("/metrics").await.1;
    assert!(
        metrics.contains("zoom_dept_sync_quarantined{code=\"4130\",department=\"Sales\"} 1"),
        "{metrics}"
    );

    zoom.clear_faults();
    let answer = request_resume(app.http).await.expect("resume is accepted");
    assert!(answer.contains("resumed"), "{answer}");
    eventually("the rest is applied", Duration::from_secs(20), || async {
        users_in_sales(&zoom, EVENTS) == EVENTS - dead as usize
    })
    .await;
    eventually("consuming again", Duration::from_secs(10), || async {
        app.queue_state(&app.queue).await == (0, 1) && app.http_get("/readyz").await.0 == 200
    })
    .await;
    let metrics = app.http_get("/metrics").await.1;
    assert!(
        metrics.contains("zoom_dept_sync_quarantined{code=\"4130\",department=\"Sales\"} 0"),
        "{metrics}"
    );
    let again = request_resume(app.http).await;
    assert!(
        matches!(again, Err(ResumeError::NotQuarantined(_))),
        "{again:?}"
    );
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, dead);
}

/// Half-open after a resume: one event goes first; when it fails with the
/// same code the daemon quarantines again at once, without a second burst.
#[tokio::test]
async fn a_resume_before_the_fix_costs_one_event_and_quarantines_again() {
    const EVENTS: usize = 12;
    let zoom = zoom_without_the_sales_group(EVENTS).await;
    let mut app = app_on(&zoom, |s| {
        s.worker.concurrency = 1;
        s.worker.quarantine_window = 10;
        s.worker.quarantine_threshold = 5;
    })
    .await;
    app.publish_moves(EVENTS).await;
    assert_eq!(wait_until_stopped(&app, EVENTS as u32).await, (5, 7));

    request_resume(app.http).await.expect("resume is accepted");
    eventually(
        "the probe is dead-lettered",
        Duration::from_secs(10),
        || async { app.queue_state(&app.dead_letter_queue).await.0 == 6 },
    )
    .await;
    assert_eq!(wait_until_stopped(&app, EVENTS as u32).await, (6, 6));
    let (status, why) = app.http_get("/readyz").await;
    assert!(status == 503 && why.contains("4130"), "{status} {why}");

    zoom.clear_faults();
    request_resume(app.http).await.expect("resume is accepted");
    eventually("the rest is applied", Duration::from_secs(20), || async {
        users_in_sales(&zoom, EVENTS) == EVENTS - 6
    })
    .await;
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 6);
}

/// `worker.quarantine = false`: the old behaviour, every event dead-lettered.
#[tokio::test]
async fn with_quarantine_off_every_failing_event_is_dead_lettered() {
    const EVENTS: usize = 60;
    let zoom = zoom_without_the_sales_group(EVENTS).await;
    let mut app = app_on(&zoom, |s| s.worker.quarantine = false).await;
    app.publish_moves(EVENTS).await;
    eventually("all dead-lettered", Duration::from_secs(30), || async {
        app.queue_state(&app.dead_letter_queue).await.0 == EVENTS as u32
    })
    .await;
    assert_eq!(app.http_get("/readyz").await.0, 200);
    assert!(matches!(
        request_resume(app.http).await,
        Err(ResumeError::NotQuarantined(_))
    ));
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}

/// Shutdown while quarantined is prompt (no timer to wait out) and leaves
/// the rest in the input queue.
#[tokio::test]
async fn a_quarantined_daemon_shuts_down_with_the_rest_still_queued() {
    const EVENTS: usize = 6;
    let zoom = zoom_without_the_sales_group(EVENTS).await;
    let mut app = app_on(&zoom, |s| {
        s.worker.concurrency = 1;
        s.worker.quarantine_window = 4;
        s.worker.quarantine_threshold = 2;
    })
    .await;
    app.publish_moves(EVENTS).await;
    assert_eq!(wait_until_stopped(&app, EVENTS as u32).await, (2, 4));

    let started = std::time::Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?} to stop",
        started.elapsed()
    );
    assert_eq!(app.queue_state(&app.queue).await, (4, 0));
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 2);
}

/// A lost broker connection does not lift a quarantine: the new session
/// waits for `resume` too.
#[tokio::test]
async fn a_quarantine_outlives_a_reconnect() {
    const EVENTS: usize = 6;
    let proxy = Proxy::start(proxy::broker_addr(&amqp_url())).await;
    let via = proxy::url_via(&amqp_url(), proxy.addr);
    let zoom = zoom_without_the_sales_group(EVENTS).await;
    let mut app = app_on(&zoom, |s| {
        s.amqp.url = via.into();
        s.worker.concurrency = 1;
        s.worker.quarantine_window = 4;
        s.worker.quarantine_threshold = 2;
    })
    .await;
    app.publish_moves(EVENTS).await;
    assert_eq!(wait_until_stopped(&app, EVENTS as u32).await, (2, 4));

    proxy.cut();
    eventually("a new session is open", Duration::from_secs(20), || async {
        app.http_get("/metrics")
            .await
            .1
            .contains("zoom_dept_sync_broker_reconnects_total 1")
    })
    .await;
    // The new session has had time to consume, had it been going to.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.queue_state(&app.queue).await, (4, 0), "still stopped");
    let (status, why) = app.http_get("/readyz").await;
    assert!(status == 503 && why.contains("4130"), "{status} {why}");

    zoom.clear_faults();
    request_resume(app.http).await.expect("resume is accepted");
    eventually("the rest is applied", Duration::from_secs(20), || async {
        users_in_sales(&zoom, EVENTS) == EVENTS - 2
    })
    .await;
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}

/// 70 events for people Zoom does not know (404, code 1001: a per-event
/// failure) are dead-lettered one by one and never stop the others: the
/// daemon keeps consuming, and a known person's event after them lands.
#[tokio::test]
async fn seventy_unknown_users_leave_the_daemon_consuming() {
    const EVENTS: usize = 70;
    let seed = crate::helpers::mapped_zoom().user("K", "k@example.com", &["grp_eng"]);
    let zoom = spawn_zoom(seed).await;
    let mut app = app_on(&zoom, |s| s.worker.concurrency = 4).await;
    app.publish_moves(EVENTS).await;
    app.publish_json(crate::helpers::event(
        "known",
        "K",
        Some("Engineering"),
        "Sales",
    ))
    .await;
    eventually("all settled", Duration::from_secs(30), || async {
        let dead = app.queue_state(&app.dead_letter_queue).await.0;
        dead == EVENTS as u32 && groups_of(&zoom, "K") == ["grp_sales"]
    })
    .await;
    let (ready, consumers) = app.queue_state(&app.queue).await;
    assert_eq!((ready, consumers), (0, 1), "still consuming");
    let (status, body) = app.http_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let letters = app.dead_letters(EVENTS).await;
    assert!(
        letters
            .iter()
            .all(|l| crate::helpers::header_int(l, "zoom-error-code") == Some(1001)),
        "each dead-lettered with Zoom's 1001"
    );
    app.stop_and_assert_queues_empty().await;
}

/// Issue 21: a browser page on another origin can POST to loopback (a
/// `text/plain` form needs no preflight). `POST /resume` and
/// `POST /brake/clear` refuse any request with an `Origin` header or without
/// a JSON content type (403), and the quarantine stays; the CLI's request
/// passes.
#[tokio::test]
async fn a_cross_site_resume_is_refused_and_the_quarantine_stays() {
    const EVENTS: usize = 8;
    let zoom = zoom_without_the_sales_group(EVENTS).await;
    let mut app = app_on(&zoom, |s| {
        s.worker.concurrency = 1;
        s.worker.quarantine_window = 10;
        s.worker.quarantine_threshold = 3;
    })
    .await;
    app.publish_moves(EVENTS).await;
    assert_eq!(wait_until_stopped(&app, EVENTS as u32).await, (3, 5));

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let json = "application/json";
    let attempts: [(&str, Option<&str>, Option<&str>); 6] = [
        ("resume", Some(json), Some("http://evil.example")),
        ("resume", Some(json), Some("null")),
        ("resume", Some("text/plain"), None),
        ("resume", Some("application/x-www-form-urlencoded"), None),
        ("resume", None, None),
        ("brake/clear", Some("text/plain"), None),
    ];
    for (path, content_type, origin) in attempts {
        let mut request = client
            .post(format!("http://{}/{path}", app.http))
            .body("{}");
        if let Some(value) = content_type {
            request = request.header("content-type", value);
        }
        if let Some(value) = origin {
            request = request.header("origin", value);
        }
        let answer = request.send().await.expect("the daemon answers");
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap_or_default();
        assert_eq!(
            status, 403,
            "{path} with {content_type:?} from {origin:?}: {body}"
        );
        assert!(
            body.contains("Origin") && body.contains("application/json"),
            "{body}"
        );
    }
    let (status, why) = app.http_get("/readyz").await;
    assert!(
        status == 503 && why.contains("4130"),
        "still quarantined: {why}"
    );
    assert_eq!(
        app.queue_state(&app.queue).await,
        (5, 0),
        "nothing consumed"
    );

    zoom.clear_faults();
    request_resume(app.http)
        .await
        .expect("the CLI's resume passes");
    eventually("the rest is applied", Duration::from_secs(20), || async {
        users_in_sales(&zoom, EVENTS) == EVENTS - 3
    })
    .await;
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}
