//! The broker never drops an event; shutdown never hangs.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use zoom_dept_sync::broker::dead_letter_reason;
use zoom_dept_sync::broker::topology::Topology;
use zoom_dept_sync::config::QueueType;
use zoom_fake::{FakeConfig, FakeHandle, ScriptedFault};

use crate::helpers::{
    TestApp, amqp_url, event, eventually, free_local_port, header_str, one_engineer, spawn_zoom,
    use_zoom, wait_for_calls,
};
use crate::process::DaemonProcess;
use crate::proxy::{self, Proxy};

/// zoom-fake where every `PATCH` answers `status`/`code` until cleared.
async fn zoom_refusing_moves(
    seed: FakeConfig,
    status: u16,
    code: u32,
    message: &str,
) -> FakeHandle {
    let zoom = spawn_zoom(seed).await;
    zoom.script_until_cleared(ScriptedFault::new("PATCH", status, code, message));
    zoom
}

/// Point 5: a quorum queue's delivery limit dead-letters (with `x-death`)
/// instead of deleting the event.
#[tokio::test]
async fn a_quorum_delivery_limit_dead_letters_instead_of_dropping() {
    let zoom = zoom_refusing_moves(one_engineer(), 403, 104, "does not contain scopes").await;
    let mut app = TestApp::prepare_with(|s| {
        use_zoom(s, &zoom);
        s.amqp.queue_type = QueueType::Quorum;
        s.worker.pause_initial_ms = 200;
    })
    .await;
    let mut arguments = Topology::new(&app.settings.amqp).arguments(&app.queue);
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(2));
    app.redeclare_input_queue(arguments).await;
    app.start().await;

    app.publish_json(event("limited", "U1", Some("Engineering"), "Sales"))
        .await;
    let letters = app.dead_letters(1).await;
    app.stop().await;
    assert_eq!(
        letters[0].data,
        event("limited", "U1", Some("Engineering"), "Sales")
            .to_string()
            .into_bytes()
    );
    assert_eq!(
        dead_letter_reason(letters[0].properties.headers().as_ref()).as_deref(),
        Some("delivery_limit"),
        "the broker's x-death reason is read like ours"
    );
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}

/// Point 5: on a classic queue the daemon counts redeliveries it did not
/// cause itself; past `worker.max_redeliveries` the event is dead-lettered.
#[tokio::test]
async fn past_max_redeliveries_an_event_is_dead_lettered() {
    let proxy = Proxy::start(proxy::broker_addr(&amqp_url())).await;
    let via = proxy::url_via(&amqp_url(), proxy.addr);
    // Every call is slow: the connection is cut while one is in flight.
    let mut seed = one_engineer();
    seed.faults.latency_ms = 800;
    let zoom = spawn_zoom(seed).await;
    let mut app = TestApp::spawn_with(|s| {
        s.amqp.url = via.into();
        s.worker.max_redeliveries = 1;
        use_zoom(s, &zoom);
    })
    .await;
    // Without `occurred_at`: a call that completes after the cut would
    // otherwise be remembered as applied, and the redelivery settled as
    // `already_applied` without a call (decision 0034), ending the loop
    // this test needs.
    let mut poison = event("poison", "U1", Some("Engineering"), "Sales");
    poison.as_object_mut().unwrap().remove("occurred_at");
    app.publish_json(poison).await;
    for n in 1..=2 {
        wait_for_calls(&zoom, n).await;
        proxy.cut();
    }
    let letters = app.dead_letters(1).await;
    app.stop().await;
    assert_eq!(
        header_str(&letters[0], "failure-reason").as_deref(),
        Some("redelivery_limit")
    );
    assert_eq!(
        dead_letter_reason(letters[0].properties.headers().as_ref()).as_deref(),
        Some("redelivery_limit")
    );
    let calls = zoom.api_requests();
    assert_eq!(calls.len(), 2, "no third call: {calls:?}");
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}

/// Point 5: a queue declared without the dead-letter arguments still works,
/// and the log gives the policy command that adds them.
#[tokio::test]
async fn an_input_queue_without_dead_lettering_works_and_the_log_says_how_to_add_it() {
    let zoom = spawn_zoom(one_engineer()).await;
    let app = TestApp::prepare_with(|s| use_zoom(s, &zoom)).await;
    app.redeclare_input_queue(FieldTable::default()).await;
    let mut daemon = DaemonProcess::start(&app.config_toml());
    app.publish_json(event("old-queue", "U1", Some("Engineering"), "Sales"))
        .await;
    wait_for_calls(&zoom, 1).await;
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)).await, Some(0));
    let log = daemon.log();
    assert!(
        log.contains("rabbitmqctl set_policy") && log.contains("dead-letter-routing-key"),
        "{log}"
    );
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
    assert_eq!(crate::helpers::groups_of(&zoom, "U1"), ["grp_sales"]);
}

/// Point 7: with no broker to reach, the daemon says so, and SIGTERM ends
/// it at once, cleanly.
#[tokio::test]
async fn sigterm_with_the_broker_unreachable_exits_cleanly() {
    let app = TestApp::prepare_with(|s| s.worker.shutdown_grace_secs = 5).await;
    let nowhere = format!("amqp://guest:guest@{}/%2f", free_local_port());
    let mut daemon = DaemonProcess::start_against(&app.config_toml(), &[], &nowhere);
    eventually("the daemon warns", Duration::from_secs(10), || async {
        daemon.log().contains("broker unavailable")
    })
    .await;
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)).await, Some(0));
    let log = daemon.log();
    assert!(log.contains("WARN") && log.contains("retry_in_ms"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Point 7: paused (refused scopes), SIGTERM ends the daemon well within
/// the grace, and the event is back in the queue.
#[tokio::test]
async fn sigterm_while_paused_exits_within_the_grace() {
    let zoom = zoom_refusing_moves(one_engineer(), 403, 104, "does not contain scopes").await;
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.worker.pause_initial_ms = 60_000;
        s.worker.shutdown_grace_secs = 3;
    })
    .await;
    app.publish_json(event("paused", "U1", Some("Engineering"), "Sales"))
        .await;
    eventually("paused", Duration::from_secs(10), || async {
        app.http_get("/readyz").await.1.contains("paused")
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), app.stop())
        .await
        .expect("stopped within the grace");
    assert_eq!(app.queue_state(&app.queue).await, (1, 0));
}

/// The pid of the broker connection whose name contains `name`.
fn connection_pid(name: &str) -> Option<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl (installed with the broker)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(name))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
}

/// Point 8: dead letters go out on a connection of their own, and the
/// watchdog notices when it closes: the session is rebuilt and dead letters
/// and moves flow again.
#[tokio::test]
async fn a_closed_publishing_connection_is_noticed_and_rebuilt() {
    let zoom = spawn_zoom(one_engineer()).await;
    let mut app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;
    let publishing = format!("{} (publish)", app.queue);
    let consuming = format!("{} (consume)", app.queue);
    assert!(
        connection_pid(&consuming).is_some(),
        "a consuming connection"
    );
    let pid = connection_pid(&publishing).expect("a publishing connection of its own");
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", &pid, "test closes the publisher"])
        .status()
        .expect("rabbitmqctl");
    assert!(closed.success());
    eventually(
        "a new publishing connection",
        Duration::from_secs(15),
        || async { connection_pid(&publishing).is_some_and(|p| p != pid) },
    )
    .await;
    app.wait_until_consuming().await;
    app.publish(b"not json").await;
    app.publish_json(event("after", "U1", Some("Engineering"), "Sales"))
        .await;
    let letters = app.dead_letters(1).await;
    assert_eq!(letters[0].data, b"not json");
    wait_for_calls(&zoom, 1).await;
    let (_, metrics) = app.http_get("/metrics").await;
    assert!(
        metrics.contains("zoom_dept_sync_broker_reconnects_total 1"),
        "{metrics}"
    );
    app.stop_and_assert_queues_empty().await;
}

/// Point 3: a call still running when the consuming connection dies may
/// finish, but its outcome is not published: a rejection found by the lost
/// session is not dead-lettered, since the broker redelivers the event and
/// the new session dead-letters it once. (The publishing connection is
/// still up, so nothing else would stop a second dead letter.)
#[tokio::test]
async fn a_lost_session_does_not_dead_letter_what_the_broker_redelivers() {
    let mut seed = one_engineer();
    seed.faults.latency_ms = 1500;
    let zoom = zoom_refusing_moves(seed, 404, 4130, "Group does not exist: grp_sales.").await;
    let mut app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;
    let consuming = format!("{} (consume)", app.queue);
    let pid = connection_pid(&consuming).expect("a consuming connection");
    app.publish_json(event("e1", "U1", Some("Engineering"), "Sales"))
        .await;
    eventually("the first call", Duration::from_secs(10), || async {
        zoom.counters().total.calls >= 1
    })
    .await;
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", &pid, "test closes the consumer"])
        .status()
        .expect("rabbitmqctl");
    assert!(closed.success());
    eventually("a dead letter", Duration::from_secs(15), || async {
        app.queue_state(&app.dead_letter_queue).await.0 >= 1
    })
    .await;
    // Both calls answered (the lost session's and the redelivery's), and
    // nothing left in flight that could still dead-letter.
    eventually("both answers handled", Duration::from_secs(15), || async {
        let metrics = app.http_get("/metrics").await.1;
        metrics.contains("zoom_dept_sync_zoom_calls_total{method=\"PATCH\",status=\"404\"} 2")
            && metrics.contains("\nzoom_dept_sync_events_in_flight 0\n")
    })
    .await;
    assert_eq!(
        app.queue_state(&app.dead_letter_queue).await.0,
        1,
        "one dead letter for one event"
    );
    let letters = app.dead_letters(1).await;
    assert_eq!(
        header_str(&letters[0], "failure-reason").as_deref(),
        Some("zoom_rejected")
    );
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}
