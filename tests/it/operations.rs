//! Running unattended: connection loss, shutdown, long waits, auth outages,
//! health and metrics, failover.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use zoom_dept_sync::mapping::Mapping;

use zoom_fake::{FakeConfig, ScriptedFault};

use crate::helpers::{
    TOKEN_PATH, TestApp, amqp_url, engineers, event, eventually, groups_of, one_engineer,
    spawn_on_fake, spawn_zoom, use_zoom, wait_for_calls,
};
use crate::process::DaemonProcess;
use crate::proxy::{self, Proxy};

/// `seed` with every API answer `latency_ms` late.
fn slow(mut seed: FakeConfig, latency_ms: u64) -> FakeConfig {
    seed.faults.latency_ms = latency_ms;
    seed
}

/// Groups `g0`..`g{n}`, those of [`numbered_mapping`].
fn numbered_zoom(n: usize) -> FakeConfig {
    let seed = FakeConfig {
        limits: zoom_fake::Limits::unlimited(),
        ..FakeConfig::default()
    };
    (0..=n).fold(seed, |seed, i| {
        seed.group(&format!("g{i}"), &format!("D{i}"))
    })
}

/// How many different paths zoom-fake took a `PATCH` on (a replayed event
/// repeats its path).
fn distinct_patch_paths(zoom: &zoom_fake::FakeHandle) -> usize {
    let mut paths: Vec<String> = zoom
        .api_requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path)
        .collect();
    paths.sort();
    paths.dedup();
    paths.len()
}

/// Departments `D0`..`D{n}` mapped to groups `g0`..`g{n}`, so each move's
/// source group names the event it came from.
fn numbered_mapping(n: usize) -> Mapping {
    let table: BTreeMap<String, String> = (0..=n)
        .map(|i| (format!("D{i}"), format!("g{i}")))
        .collect();
    Mapping::new(&table).unwrap()
}

#[tokio::test]
async fn connection_cuts_lose_nothing_and_keep_per_user_order() {
    const USERS: usize = 30;
    const PER_USER: usize = 10;
    let proxy = Proxy::start(proxy::broker_addr(&amqp_url())).await;
    let via = proxy::url_via(&amqp_url(), proxy.addr);
    let seed = (0..USERS).fold(numbered_zoom(PER_USER), |seed, u| {
        seed.user(&format!("U{u}"), &format!("u{u}@example.com"), &["g0"])
    });
    let zoom = spawn_zoom(slow(seed, 20)).await;
    let mut app = TestApp::spawn_with(|s| {
        s.amqp.url = via.into();
        s.mapping = numbered_mapping(PER_USER);
        s.zoom.rate_limits.medium = Some(100);
        use_zoom(s, &zoom);
    })
    .await;

    for k in 0..PER_USER {
        for u in 0..USERS {
            let previous = format!("D{k}");
            let new = format!("D{}", k + 1);
            app.publish_json(event(
                &format!("u{u}-e{k}"),
                &format!("U{u}"),
                Some(&previous),
                &new,
            ))
            .await;
        }
    }
    let total = USERS * PER_USER;
    for cut_at in [total / 3, 2 * total / 3] {
        wait_for_calls(&zoom, cut_at).await;
        let connections = proxy.connections();
        proxy.cut();
        eventually("the daemon reconnects", Duration::from_secs(60), || async {
            proxy.connections() > connections
        })
        .await;
    }
    // Every event's move, at least once (a cut can replay an unacked one;
    // the replay finds the user moved already, and a lookup confirms it).
    eventually("every event applied", Duration::from_secs(90), || async {
        distinct_patch_paths(&zoom) == total
    })
    .await;
    app.stop_and_assert_queues_empty().await;

    // Per user: first applications in event order; the last move targets D10.
    let mut per_user: HashMap<String, Vec<usize>> = HashMap::new();
    for r in zoom.api_requests().iter().filter(|r| r.method == "PATCH") {
        let parts: Vec<&str> = r.path.split('/').collect();
        // /v2/groups/g{k}/members/U{u}
        let k: usize = parts[3].trim_start_matches('g').parse().unwrap();
        per_user.entry(parts[5].to_owned()).or_default().push(k);
    }
    assert_eq!(per_user.len(), USERS);
    for (user, ks) in per_user {
        let mut first_seen = Vec::new();
        for k in &ks {
            if !first_seen.contains(k) {
                first_seen.push(*k);
            }
        }
        assert_eq!(
            first_seen,
            (0..PER_USER).collect::<Vec<_>>(),
            "{user}: {ks:?}"
        );
        assert_eq!(
            *ks.last().unwrap(),
            PER_USER - 1,
            "{user} ends in the last target: {ks:?}"
        );
        assert_eq!(groups_of(&zoom, &user), [format!("g{PER_USER}")], "{user}");
    }
}

#[tokio::test]
async fn a_connection_that_does_not_recover_in_time_is_rebuilt() {
    let proxy = Proxy::start(proxy::broker_addr(&amqp_url())).await;
    let via = proxy::url_via(&amqp_url(), proxy.addr);
    let zoom = spawn_zoom(one_engineer()).await;
    let mut app = TestApp::spawn_with(|s| {
        s.amqp.url = via.into();
        s.amqp.recovery_timeout_secs = 2;
        use_zoom(s, &zoom);
    })
    .await;

    // The "broker" goes away for longer than the recovery timeout.
    proxy.block(true);
    proxy.cut();
    eventually(
        "/readyz reports the outage",
        Duration::from_secs(10),
        || async {
            let (status, body) = app.http_get("/readyz").await;
            status == 503 && body.contains("not consuming")
        },
    )
    .await;
    // Past the recovery timeout: the supervisor has given up on the lost
    // session and tried to open new ones, which the outage refused.
    let attempts_at_outage = proxy.attempts();
    eventually(
        "two refused attempts to open a new session",
        Duration::from_secs(20),
        || async {
            let (status, body) = app.http_get("/readyz").await;
            status == 503
                && body.contains("cannot open a session")
                && proxy.attempts() >= attempts_at_outage + 2
        },
    )
    .await;
    proxy.block(false);

    app.publish_json(event("e-after", "U1", Some("Engineering"), "Sales"))
        .await;
    eventually("U1 moved", Duration::from_secs(60), || async {
        groups_of(&zoom, "U1") == ["grp_sales"]
    })
    .await;
    eventually("ready again", Duration::from_secs(10), || async {
        app.http_get("/readyz").await.0 == 200
    })
    .await;
    let (_, metrics) = app.http_get("/metrics").await;
    let reconnects: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("zoom_dept_sync_broker_reconnects_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        reconnects >= 1,
        "the supervisor built a new connection:\n{metrics}"
    );
    app.stop_and_assert_queues_empty().await;
}

#[tokio::test]
async fn a_deleted_input_queue_is_declared_again_and_consumed() {
    let (mut app, zoom) = spawn_on_fake(one_engineer()).await;
    app.delete_queue(&app.queue).await;
    eventually(
        "the daemon declared the queue again and consumes it",
        Duration::from_secs(30),
        || async {
            app.try_queue_state(&app.queue)
                .await
                .is_some_and(|(_, consumers)| consumers == 1)
        },
    )
    .await;
    assert_eq!(app.http_get("/readyz").await.0, 200);
    assert_eq!(app.http_get("/healthz").await, (200, "ok\n".to_owned()));
    app.publish_json(event("e-after", "U1", Some("Engineering"), "Sales"))
        .await;
    wait_for_calls(&zoom, 1).await;
    app.stop_and_assert_queues_empty().await;
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
}

#[tokio::test]
async fn sigterm_finishes_in_flight_events_and_a_restart_does_the_rest() {
    let zoom = spawn_zoom(slow(engineers(20), 2000)).await;
    let app = TestApp::prepare_with(|s| {
        s.worker.concurrency = 10;
        s.amqp.prefetch = 20;
        use_zoom(s, &zoom);
    })
    .await;
    app.publish_moves(20).await;

    let mut first = DaemonProcess::start(&app.config_toml());
    wait_for_calls(&zoom, 10).await;
    first.signal("TERM");
    let code = first.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "clean exit; log:\n{}", first.log());
    let after_first = zoom.api_requests().len();
    assert_eq!(after_first, 10, "only the in-flight ten were sent");
    assert_eq!(
        app.queue_state(&app.queue).await.0,
        10,
        "the other ten are back in the queue"
    );

    let mut second = DaemonProcess::start(&app.config_toml());
    wait_for_calls(&zoom, 20).await;
    eventually(
        "the second daemon settles everything",
        Duration::from_secs(20),
        || async { app.queue_state(&app.queue).await.0 == 0 },
    )
    .await;
    second.signal("TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(30)).await, Some(0));

    let calls = zoom.api_requests();
    let mut paths: Vec<_> = calls.iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), 20, "each event applied exactly once");
    assert_eq!(calls.len(), 20);
    assert!(calls.iter().all(|r| r.status == Some(204)), "{calls:?}");
    for i in 0..20 {
        assert_eq!(groups_of(&zoom, &format!("U{i}")), ["grp_sales"], "U{i}");
    }
    assert_eq!(app.queue_state(&app.queue).await, (0, 0));
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0);
}

#[tokio::test]
async fn json_logs_carry_the_event_and_never_a_secret() {
    let zoom = spawn_zoom(one_engineer()).await;
    let app = TestApp::prepare_with(|s| use_zoom(s, &zoom)).await;
    let mut daemon = DaemonProcess::start_with_args(&app.config_toml(), &["--log-format", "json"]);
    app.publish_json(event("hr-json-1", "U1", Some("Engineering"), "Sales"))
        .await;
    let calls = wait_for_calls(&zoom, 1).await;
    // The token zoom-fake issued, as the daemon sent it.
    let token = calls[0]
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("a bearer token")
        .to_owned();
    assert!(zoom.issued(&token));
    eventually("the outcome is logged", Duration::from_secs(10), || async {
        daemon.log().contains("event processed")
    })
    .await;
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)).await, Some(0));

    let log = daemon.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let outcome = lines
        .iter()
        .find(|l| l["message"] == "event processed")
        .expect("an outcome line");
    assert_eq!(outcome["event_id"], "hr-json-1");
    assert_eq!(outcome["user"], "U1");
    assert_eq!(outcome["from_group"], "grp_eng");
    assert_eq!(outcome["to_group"], "grp_sales");
    assert_eq!(outcome["attempts"], 1);
    assert_eq!(outcome["outcome"], "applied");
    // Every line logged while the event was processed names it (the token
    // is fetched at start-up, before any event).
    let in_event: Vec<_> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "event")
        .collect();
    assert!(!in_event.is_empty(), "{log}");
    for line in in_event {
        assert_eq!(line["span"]["event_id"], "hr-json-1", "{line}");
    }
    for secret in [crate::helpers::CLIENT_SECRET, token.as_str(), "guest:guest"] {
        assert!(!log.contains(secret), "{secret:?} appears in the log");
    }
}

#[tokio::test]
async fn events_still_running_after_the_grace_go_back_to_the_queue() {
    let zoom = spawn_zoom(slow(engineers(3), 10_000)).await;
    let mut app = TestApp::spawn_with(|s| {
        s.worker.shutdown_grace_secs = 1;
        use_zoom(s, &zoom);
    })
    .await;
    app.publish_moves(3).await;
    wait_for_calls(&zoom, 3).await;
    app.stop().await;
    assert_eq!(
        app.queue_state(&app.queue).await,
        (3, 0),
        "requeued, not lost"
    );
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0);
}

#[tokio::test]
async fn a_daily_rate_limit_requeues_and_pauses_instead_of_dead_lettering() {
    let zoom = spawn_zoom(one_engineer()).await;
    // A 429 naming no limit type, whose wait (4 s) is far past the retry
    // budget (1 s).
    zoom.script(
        ScriptedFault::new("PATCH", 429, 429, "daily limit")
            .untyped()
            .retry_after("4"),
    );
    let mut app = TestApp::spawn_with(|s| {
        s.retry.max_elapsed_secs = 1;
        use_zoom(s, &zoom);
    })
    .await;

    app.publish_json(event("e-daily", "U1", Some("Engineering"), "Sales"))
        .await;
    wait_for_calls(&zoom, 1).await;
    eventually(
        "the event is back in the queue, nobody consuming",
        Duration::from_secs(10),
        || async { app.queue_state(&app.queue).await == (1, 0) },
    )
    .await;
    let (status, body) = app.http_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("paused") && body.contains("rate limit"),
        "{body}"
    );
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0);

    let calls = wait_for_calls(&zoom, 2).await;
    assert_eq!(
        calls.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Some(429), Some(204)]
    );
    assert!(calls[1].at.duration_since(calls[0].at) >= Duration::from_secs(4));
    eventually("ready again", Duration::from_secs(10), || async {
        app.http_get("/readyz").await.0 == 200
    })
    .await;
    app.stop_and_assert_queues_empty().await;
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
}

#[tokio::test]
async fn refused_credentials_pause_without_dead_letters_until_fixed() {
    let (mut app, zoom) = spawn_on_fake(engineers(3)).await;
    // Revoked while running: the token fetched at start-up is refused, and
    // so is every new one.
    zoom.revoke_credentials();
    app.publish_moves(3).await;
    eventually(
        "/readyz reports the auth failure",
        Duration::from_secs(10),
        || async {
            let (status, body) = app.http_get("/readyz").await;
            status == 503 && body.contains("credentials")
        },
    )
    .await;
    assert_eq!(app.http_get("/healthz").await.0, 200);
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0);
    let refused = zoom.requests();
    assert!(
        refused
            .iter()
            .any(|r| r.path == TOKEN_PATH && r.status == Some(401)),
        "a refused token request: {refused:?}"
    );
    assert!(
        refused.iter().all(|r| r.status != Some(204)),
        "nothing applied while revoked: {refused:?}"
    );

    // The operator fixes the credentials.
    zoom.restore_credentials();
    eventually("every move applied", Duration::from_secs(30), || async {
        (0..3).all(|i| groups_of(&zoom, &format!("U{i}")) == ["grp_sales"])
    })
    .await;
    eventually("ready again", Duration::from_secs(10), || async {
        app.http_get("/readyz").await.0 == 200
    })
    .await;
    app.stop_and_assert_queues_empty().await;
}

#[tokio::test]
async fn metrics_count_each_outcome() {
    let zoom = spawn_zoom(engineers(3).user("UGONE", "gone@example.com", &["grp_eng"])).await;
    zoom.script_until_cleared(
        ScriptedFault::new("PATCH", 404, 4130, "Group does not exist")
            .path_prefix("/v2/groups/grp_eng/members/UGONE"),
    );
    let mut app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;
    app.publish_json(event("ok1", "U1", Some("Engineering"), "Sales"))
        .await;
    app.publish_json(event("ok2", "U2", Some("Engineering"), "Sales"))
        .await;
    app.publish_json(event("gone", "UGONE", Some("Engineering"), "Sales"))
        .await;
    app.publish_json(event("unmapped", "U3", Some("Engineering"), "Legal"))
        .await;
    app.publish(b"not json").await;
    app.dead_letters(3).await;

    let (status, text) = app.http_get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "zoom_dept_sync_events_consumed_total 5",
        "zoom_dept_sync_events_total{outcome=\"applied\"} 2",
        "zoom_dept_sync_events_total{outcome=\"dead_lettered\"} 3",
        "zoom_dept_sync_dead_letters_total{reason=\"zoom_rejected\",zoom_code=\"4130\"} 1",
        "zoom_dept_sync_dead_letters_total{reason=\"invalid_payload\",zoom_code=\"\"} 1",
        "zoom_dept_sync_dead_letters_total{reason=\"unmapped_department\",zoom_code=\"\"} 1",
        "zoom_dept_sync_zoom_calls_total{method=\"PATCH\",status=\"204\"} 2",
        "zoom_dept_sync_zoom_calls_total{method=\"PATCH\",status=\"404\"} 1",
        "zoom_dept_sync_events_in_flight 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(
        text.contains("zoom_dept_sync_zoom_call_duration_seconds_count 4"),
        "{text}"
    );
    assert!(
        text.contains("zoom_dept_sync_last_success_timestamp_seconds"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn quorum_queues_with_a_single_active_consumer_work_end_to_end() {
    let zoom = spawn_zoom(engineers(3)).await;
    let mut app = TestApp::spawn_with(|s| {
        s.amqp.queue_type = zoom_dept_sync::config::QueueType::Quorum;
        s.amqp.single_active_consumer = true;
        use_zoom(s, &zoom);
    })
    .await;
    app.publish_moves(3).await;
    app.publish(b"{not json").await;
    wait_for_calls(&zoom, 3).await;
    let letters = app.dead_letters(1).await;
    assert_eq!(letters[0].data, b"{not json");
    app.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
    // The broker knows them as quorum queues: a classic redeclaration fails.
    let classic = app
        .channel
        .queue_declare(
            app.queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await;
    assert!(
        classic.is_err(),
        "the input queue was declared as a quorum queue"
    );
    for user in ["U0", "U1", "U2"] {
        assert_eq!(groups_of(&zoom, user), ["grp_sales"], "{user}");
    }
}

#[tokio::test]
async fn a_standby_replica_takes_over_when_the_active_one_dies() {
    let zoom = spawn_zoom(slow(engineers(100), 20)).await;
    let app = TestApp::prepare_with(|s| {
        s.amqp.single_active_consumer = true;
        s.zoom.rate_limits.medium = Some(50);
        use_zoom(s, &zoom);
    })
    .await;
    let config = app.config_toml();
    let active = DaemonProcess::start(&config);
    eventually(
        "the first replica consumes",
        Duration::from_secs(20),
        || async { app.queue_state(&app.queue).await.1 == 1 },
    )
    .await;
    // The standby gets its own HTTP port.
    let standby_config = config.replace(
        &app.settings.http.listen.to_string(),
        &crate::helpers::free_local_port().to_string(),
    );
    let mut standby = DaemonProcess::start(&standby_config);
    eventually(
        "the standby is subscribed",
        Duration::from_secs(20),
        || async { app.queue_state(&app.queue).await.1 == 2 },
    )
    .await;

    app.publish_moves(100).await;
    wait_for_calls(&zoom, 30).await;
    active.signal("KILL");
    drop(active);
    eventually("every event applied", Duration::from_secs(60), || async {
        distinct_patch_paths(&zoom) == 100
    })
    .await;
    eventually("the queue drained", Duration::from_secs(20), || async {
        app.queue_state(&app.queue).await.0 == 0
    })
    .await;
    standby.signal("TERM");
    assert_eq!(standby.wait_exit(Duration::from_secs(30)).await, Some(0));
    assert!(
        standby.log().contains("event processed"),
        "the standby took over"
    );
    assert_eq!(app.queue_state(&app.queue).await, (0, 0));
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0);
    for i in 0..100 {
        assert_eq!(groups_of(&zoom, &format!("U{i}")), ["grp_sales"], "U{i}");
    }
}
