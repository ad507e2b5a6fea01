//! The edges of issue 23's change (several broker addresses, a quorum
//! dead-letter queue, a repeated event known by its id and time), found by
//! an adversarial review: each test failed on the change as first merged.
//! Hung or half-alive first addresses, re-sent and corrected events, reads
//! of a queue that keeps filling, a delivery-limit policy on the quorum
//! dead-letter queue.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::time::Instant;
use zoom_dept_sync::broker::admin::Admin;
use zoom_dept_sync::broker::event_publisher::EventPublisher;
use zoom_dept_sync::config::QueueType;

use crate::helpers::{
    TestApp, Tool, amqp_url, drain, eventually, groups_of, mapped_zoom, spawn_zoom, unique_name,
    use_zoom, wait_for_calls,
};

fn move_at(id: &str, new: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": id, "zoom_user_id": "U1",
        "previous_department": "Engineering", "new_department": new,
        "occurred_at": "2026-11-27T10:00:00Z",
    })
}

async fn settled(app: &TestApp) {
    eventually(
        "the input queue is empty",
        Duration::from_secs(15),
        || async { app.queue_state(&app.queue).await.0 == 0 },
    )
    .await;
    // The last delivery may still be in flight: a moment for its ack.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Q1: the person was moved back by hand in Zoom (here: the fake's
/// directory reset to its seed), and the same event is sent again on
/// purpose (a sender's re-send, `publish` of the same line, or `dead-letters
/// replay` of a copy). It is a new message (not `redelivered`), yet the
/// daemon acks it as `already_applied` from memory, without looking at
/// Zoom: the person stays where the hand put them. Before issue 23's
/// change the daemon moved them again.
#[tokio::test]
async fn the_same_event_sent_again_after_a_hand_move_is_applied_again() {
    let zoom = spawn_zoom(mapped_zoom().user("U1", "u1@example.com", &["grp_eng"])).await;
    let mut app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;
    app.wait_until_consuming().await;
    app.publish_json(move_at("e1", "Sales")).await;
    wait_for_calls(&zoom, 1).await;
    settled(&app).await;
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
    // Moved back by hand.
    zoom.reset();
    assert_eq!(groups_of(&zoom, "U1"), ["grp_eng"]);
    app.publish_json(move_at("e1", "Sales")).await;
    settled(&app).await;
    app.stop_and_assert_queues_empty().await;
    assert_eq!(
        groups_of(&zoom, "U1"),
        ["grp_sales"],
        "the event sent again was acked from memory, without a Zoom call"
    );
}

/// Q1: a sender that reuses an event id (say one id per employee and day,
/// with a day's time) for a correction: same id, same `occurred_at`,
/// another department. The hash covers the id only, so the correction is
/// acked as `already_applied` and never applied. (Equal times are not
/// stale, so without the new check it would be applied.)
#[tokio::test]
async fn an_event_id_reused_for_another_change_is_not_taken_for_a_repeat() {
    let zoom = spawn_zoom(mapped_zoom().user("U1", "u1@example.com", &["grp_eng"])).await;
    let mut app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;
    app.wait_until_consuming().await;
    app.publish_json(move_at("emp-1-2026-11-27", "Sales")).await;
    wait_for_calls(&zoom, 1).await;
    settled(&app).await;
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
    let mut correction = move_at("emp-1-2026-11-27", "Support");
    correction["previous_department"] = "Sales".into();
    app.publish_json(correction).await;
    settled(&app).await;
    app.stop_and_assert_queues_empty().await;
    assert_eq!(
        groups_of(&zoom, "U1"),
        ["grp_support"],
        "another change under the same id and time was acked as already applied"
    );
}

/// A "node" that accepts TCP connections and never answers: a frozen VM,
/// a node cut off behind a firewall that completes handshakes. The
/// listener is kept open; nothing accepts, the kernel's backlog does.
fn hung_address() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut url = url::Url::parse(&amqp_url()).expect("AMQP_URL is a URL");
    url.set_port(Some(listener.local_addr().unwrap().port()))
        .unwrap();
    (listener, url.to_string())
}

/// Q2: the receiver's every connection attempt is bounded by the request
/// (1.8 s, `ANSWER_WITHIN`) or the background check (3 s), shorter than
/// one address's 10 s (`ATTEMPT_TIMEOUT`); `next_address` moves only on a
/// success. So with the first address hung, no attempt ever reaches the
/// second, live, one: every webhook is answered 503, forever.
#[tokio::test]
async fn the_receiver_passes_over_a_hung_first_address() {
    let app = TestApp::prepare_with(|_| {}).await;
    let (_hung, hung) = hung_address();
    let mut amqp = app.settings.amqp.clone();
    amqp.urls = vec![hung.into(), amqp_url().into()];
    let publisher = EventPublisher::new(&amqp);
    let body = crate::helpers::event("r1", "U1", None, "Sales").to_string();
    let started = Instant::now();
    let mut published = false;
    // Eight webhooks, one after another, each given the receiver's 1.8 s:
    // 14 s in all, past the hung address's 10 s.
    for _ in 0..8 {
        let deadline = Instant::now() + Duration::from_millis(1800);
        if publisher
            .publish(body.as_bytes(), "r1", deadline)
            .await
            .is_ok()
        {
            published = true;
            break;
        }
    }
    publisher.close().await;
    assert!(
        published,
        "no webhook published in {:?}: every attempt starts again at the hung address",
        started.elapsed()
    );
}

/// Q2: the daemon's session open is bounded by `amqp.recovery_timeout_secs`
/// (any value from 1 is accepted), and `start` moves only once a session
/// opened. Set below one address's 10 s, a hung first address keeps the
/// daemon off the live second one for good.
#[tokio::test]
async fn the_daemon_passes_over_a_hung_first_address_whatever_its_recovery_timeout() {
    let zoom = spawn_zoom(mapped_zoom()).await;
    let (_hung, hung) = hung_address();
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.amqp.urls = vec![hung.clone().into(), amqp_url().into()];
        s.amqp.recovery_timeout_secs = 5;
    })
    .await;
    let consuming = tokio::time::timeout(Duration::from_secs(30), async {
        while app.queue_state(&app.queue).await.1 == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    app.stop().await;
    assert!(
        consuming.is_ok(),
        "the daemon never consumed in 30 s: each open gives up at 5 s, before the hung address's 10 s"
    );
}

/// Q4: a read that stops early takes "the rest" of the queue, with no bound
/// in time or count. While messages keep arriving (the daemon dead-letters
/// a burst of invalid events, a producer floods the queue), the rest has no
/// end: a capped `list` (here `peek_at_most(queue, 1)`) does not return,
/// and holds ever more unacked messages toward the consumer timeout.
/// A bound (the queue's `message_count` at the first `basic.get`) ends it.
#[tokio::test]
async fn a_capped_read_ends_while_messages_keep_arriving() {
    let app = TestApp::prepare_with(|_| {}).await;
    let flood = Flood::start(&app, "review-flood").await;
    let queue = flood.queue.clone();
    let admin = Admin::connect(&app.settings.amqp, "review").await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(15), admin.peek_at_most(&queue, 1)).await;
    admin.close().await;
    flood.stop(&app).await;
    let (head, capped) = read
        .expect("a capped read of one message did not end in 15 s while messages kept arriving")
        .expect("read");
    assert!(capped && head.len() == 1);
}

/// Q5: the quorum dead-letter queue's `x-delivery-limit` is the argument's;
/// a policy with a smaller `delivery-limit` matching the queue wins (the
/// minimum of the two applies). A vhost-wide `delivery-limit` policy for
/// quorum queues is RabbitMQ's own advice for poison messages, and its
/// pattern catches the dead-letter queue too.
/// `dead-letters` checks only the declared arguments, so it reads such a
/// queue, and each read is a delivery: the dead letters are dropped. The
/// classic dead-letter queue this replaced was immune (the test this
/// change removed, `reading_does_not_count_toward_a_delivery_limit`).
#[tokio::test]
async fn a_delivery_limit_policy_on_the_quorum_dead_letter_queue_loses_nothing() {
    let app = TestApp::prepare_with(|s| s.amqp.queue_type = QueueType::Quorum).await;
    let mut published = Vec::new();
    for i in 0..5 {
        let id = format!("d{i}");
        let body = serde_json::json!({
            "event_id": id, "zoom_user_id": format!("U{i}"), "new_department": "Sales",
        });
        let mut headers = FieldTable::default();
        headers.insert(
            "failure-reason".into(),
            lapin::types::AMQPValue::LongString("zoom_rejected".into()),
        );
        app.channel
            .basic_publish(
                "".into(),
                app.dead_letter_queue.as_str().into(),
                BasicPublishOptions::default(),
                body.to_string().as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(headers),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        published.push(id);
    }
    let policy = format!("zds-review-limit-{}", app.queue);
    let pattern = format!("^{}$", app.dead_letter_queue.replace('.', "\\."));
    let set = std::process::Command::new("rabbitmqctl")
        .args([
            "set_policy",
            &policy,
            &pattern,
            r#"{"delivery-limit":2}"#,
            "--apply-to",
            "queues",
        ])
        .output()
        .expect("rabbitmqctl");
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    // A policy is set long before anyone reads; the management API shows
    // it once its statistics catch up (about 5 s).
    let url = format!(
        "http://127.0.0.1:15672/api/queues/%2f/{}",
        app.dead_letter_queue
    );
    eventually(
        "the management API shows the policy",
        Duration::from_secs(15),
        || async {
            let got = reqwest::Client::new()
                .get(&url)
                .basic_auth("guest", Some("guest"))
                .send()
                .await;
            let body: serde_json::Value = match got {
                Ok(response) => response.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            body["effective_policy_definition"]["delivery-limit"] == 2
        },
    )
    .await;
    // The check needs the management API (`.ci/run` enables it).
    let tool = Tool::new(
        &app,
        "queue_type = \"quorum\"\nmanagement_url = \"http://127.0.0.1:15672\"\n",
    );
    let mut refused = None;
    for _ in 0..4 {
        let (code, _, err) = tool.run_async(&["dead-letters", "list", "--json"]).await;
        if code != 0 {
            refused = Some(err);
            break;
        }
    }
    let _ = std::process::Command::new("rabbitmqctl")
        .args(["clear_policy", &policy])
        .output();
    let left: Vec<String> = drain(&app, &app.dead_letter_queue)
        .await
        .iter()
        .map(|d| {
            let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
            body["event_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        refused.is_some() || left == published,
        "read four times under a delivery-limit policy of 2, the dead letters left are {left:?} of {published:?}"
    );
}

/// Control for the test above: with the default `recovery_timeout_secs`
/// (60 s) the same hung first address is passed over (after its 10 s), so
/// the failure above is the short open bound, not the harness.
#[tokio::test]
async fn control_the_daemon_passes_over_a_hung_first_address_with_the_default_timeout() {
    let zoom = spawn_zoom(mapped_zoom()).await;
    let (_hung, hung) = hung_address();
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.amqp.urls = vec![hung.clone().into(), amqp_url().into()];
    })
    .await;
    app.wait_until_consuming().await;
    app.stop().await;
}

/// Q4: a sweep told to stop because its held messages near the consumer
/// timeout (`hold_for`) then takes "the rest", with no time bound at all:
/// the one stop that exists to end the hold prolongs it. Here `hold_for`
/// is zero and messages keep arriving: the sweep does not come back.
#[tokio::test]
async fn a_sweep_stopped_by_its_hold_limit_ends_while_messages_keep_arriving() {
    use zoom_dept_sync::broker::admin::{Step, SweepLimits};
    let app = TestApp::prepare_with(|_| {}).await;
    let flood = Flood::start(&app, "review-flood-sweep").await;
    let queue = flood.queue.clone();
    let admin = Admin::connect(&app.settings.amqp, "review").await.unwrap();
    let limits = SweepLimits {
        rate: None,
        stop: tokio_util::sync::CancellationToken::new(),
        hold_for: Duration::ZERO,
    };
    let swept = tokio::time::timeout(
        Duration::from_secs(15),
        admin.sweep(&queue, &limits, |_| Step::Keep),
    )
    .await;
    admin.close().await;
    flood.stop(&app).await;
    let summary = swept
        .expect("a sweep past its hold limit did not end in 15 s while messages kept arriving")
        .expect("sweep");
    assert!(summary.stopped);
}

/// A queue of its own that a steady stream (about a thousand messages a
/// second) keeps filling, with a head start of 1,000, so a read of it
/// never finds it empty.
struct Flood {
    queue: String,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Flood {
    async fn start(app: &TestApp, prefix: &str) -> Self {
        let queue = unique_name(prefix);
        app.channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare");
        let channel = app.connection.create_channel().await.unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(stream_into(channel, queue.clone(), stop.clone()));
        eventually(
            "the flood fills the queue",
            Duration::from_secs(10),
            || async { app.queue_state(&queue).await.0 >= 1000 },
        )
        .await;
        Self { queue, stop, task }
    }

    /// Stops the stream and deletes the queue.
    async fn stop(self, app: &TestApp) {
        self.stop.cancel();
        let _ = self.task.await;
        let _ = app
            .channel
            .queue_delete(self.queue.as_str().into(), Default::default())
            .await;
    }
}

async fn stream_into(
    channel: lapin::Channel,
    queue: String,
    stop: tokio_util::sync::CancellationToken,
) {
    while !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let sent = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                b"{}",
                BasicProperties::default(),
            )
            .await;
        if sent.is_err() {
            break;
        }
    }
}

/// A node that completes the AMQP handshake and then answers nothing on
/// any channel (`channel.open` and after): a node cut off from its cluster
/// whose queue and channel processes hang, a node in a partition's
/// minority. A proxy to the real broker that forwards the connection's own
/// frames (channel 0: the handshake, heartbeats) and drops every other.
async fn half_alive_address() -> (tokio::task::JoinHandle<()>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = url::Url::parse(&amqp_url()).expect("AMQP_URL is a URL");
    let upstream = format!(
        "{}:{}",
        live.host_str().unwrap(),
        live.port().unwrap_or(5672)
    );
    let mut url = live.clone();
    url.set_port(Some(listener.local_addr().unwrap().port()))
        .unwrap();
    let proxy = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
            tokio::spawn(async move {
                let mut header = [0u8; 8];
                if client_read.read_exact(&mut header).await.is_err()
                    || server_write.write_all(&header).await.is_err()
                {
                    return;
                }
                loop {
                    let mut frame = [0u8; 7];
                    if client_read.read_exact(&mut frame).await.is_err() {
                        return;
                    }
                    let channel = u16::from_be_bytes([frame[1], frame[2]]);
                    let size = u32::from_be_bytes([frame[3], frame[4], frame[5], frame[6]]);
                    let mut rest = vec![0u8; size as usize + 1];
                    if client_read.read_exact(&mut rest).await.is_err() {
                        return;
                    }
                    if channel == 0
                        && (server_write.write_all(&frame).await.is_err()
                            || server_write.write_all(&rest).await.is_err())
                    {
                        return;
                    }
                }
            });
        }
    });
    (proxy, url.to_string())
}

/// Q2: the address is rotated only once a session opened (`start =
/// session.index + 1`); a session that connects but cannot open (its node
/// answers the handshake, then nothing) fails by `recovery_timeout_secs`
/// and the next attempt starts at the same address again: the live second
/// address is never tried. (12 s: above one address's 10 s, so this is not
/// the short-timeout case above.)
#[tokio::test]
async fn the_daemon_passes_over_a_node_that_connects_but_opens_no_channel() {
    let zoom = spawn_zoom(mapped_zoom()).await;
    let (proxy, half_alive) = half_alive_address().await;
    let app = TestApp::prepare_with(|s| {
        use_zoom(s, &zoom);
        s.amqp.urls = vec![half_alive.clone().into(), amqp_url().into()];
        s.amqp.recovery_timeout_secs = 12;
    })
    .await;
    // The proxy does what it says: the handshake passes, a channel does not.
    let probe = tokio::time::timeout(
        Duration::from_secs(5),
        lapin::Connection::connect(&half_alive, lapin::ConnectionProperties::default()),
    )
    .await
    .expect("the handshake through the proxy is answered")
    .expect("the login through the proxy passes");
    let channel = tokio::time::timeout(Duration::from_secs(2), probe.create_channel()).await;
    assert!(channel.is_err(), "no channel opens through the proxy");
    drop(probe);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let daemon = tokio::spawn(zoom_dept_sync::startup::run(
        app.settings.clone(),
        shutdown.clone(),
    ));
    let consuming = tokio::time::timeout(Duration::from_secs(40), async {
        while app.queue_state(&app.queue).await.1 == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;
    proxy.abort();
    assert!(
        consuming.is_ok(),
        "in 40 s (three session attempts) the daemon never reached the live second address"
    );
}
