//! The daemon on a three-node RabbitMQ cluster (issue 23), started and
//! stopped by the test itself on ports of its own (`cluster_harness`):
//! quorum queues, several hundred events for dozens of people, and a node
//! lost mid-stream. Every person must end at their last event's group,
//! each person's moves in order, nothing dead-lettered or lost, and the
//! extra Zoom calls within twice the concurrency.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zoom_dept_sync::config::{QueueType, Settings};
use zoom_dept_sync::mapping::Mapping;
use zoom_fake::{FakeConfig, FakeHandle, Limits};

use crate::cluster_harness::{CLUSTER_LOCK, RabbitCluster};
use crate::helpers::{eventually, free_local_port, spawn_zoom, test_settings, unique_name};

const PEOPLE: usize = 60;
/// Person `P<p>` starts in `g0`; event `k` (1..=EACH) moves them to `g<k>`:
/// a distinct group per event, so the order of a person's moves is read
/// straight off Zoom's request log.
const EACH: usize = 6;
const CONCURRENCY: usize = 16;

fn department(k: usize) -> String {
    format!("D{k}")
}

fn group(k: usize) -> String {
    format!("g{k}")
}

fn person(p: usize) -> String {
    format!("P{p}")
}

fn seed() -> FakeConfig {
    let mut seed = FakeConfig {
        limits: Limits::unlimited(),
        ..FakeConfig::default()
    };
    // Slow enough that a node dies while events are being applied.
    seed.faults.latency_ms = 30;
    seed.faults.latency_jitter_ms = 20;
    let seed = (0..=EACH).fold(seed, |seed, k| seed.group(&group(k), &department(k)));
    (0..PEOPLE).fold(seed, |seed, p| {
        let email = format!("{}@example.com", person(p).to_lowercase());
        seed.user(&person(p), &email, &[group(0).as_str()])
    })
}

/// Round `k` moves everyone once: a person's events are spread out, and
/// many people's are in flight at once.
fn events() -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    for k in 1..=EACH {
        for p in 0..PEOPLE {
            events.push(serde_json::json!({
                "event_id": format!("{}-{k}", person(p)),
                "zoom_user_id": person(p),
                "email": format!("{}@example.com", person(p).to_lowercase()),
                "previous_department": department(k - 1),
                "new_department": department(k),
                "occurred_at": format!("2026-11-26T09:00:{k:02}Z"),
            }));
        }
    }
    events
}

/// The daemon, in-process, on the cluster.
struct Daemon {
    settings: Settings,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), zoom_dept_sync::startup::StartError>>,
}

/// The daemon's settings for the cluster: every node's address, quorum
/// queues, the test's seven departments.
fn cluster_settings(cluster: &RabbitCluster, zoom: &FakeHandle) -> Settings {
    let queue = unique_name("cluster");
    let mut settings = test_settings(zoom, &queue, &format!("{queue}.dead"));
    settings.amqp.urls = cluster.urls().into_iter().map(Into::into).collect();
    settings.amqp.queue_type = QueueType::Quorum;
    settings.amqp.prefetch = 32;
    settings.worker.concurrency = CONCURRENCY;
    settings.http.listen = free_local_port();
    let departments: BTreeMap<String, String> =
        (0..=EACH).map(|k| (department(k), group(k))).collect();
    settings.mapping = Mapping::new(&departments).expect("mapping");
    settings
}

/// Declares both queues as the daemon would, through the node at `url`:
/// a quorum queue's leader starts on the node that declares it.
async fn declare_on(url: &str, settings: &Settings) {
    let (connection, channel) = channel_to(url).await;
    let topology = zoom_dept_sync::broker::topology::Topology::new(&settings.amqp);
    for queue in [
        settings.amqp.dead_letter_queue(),
        settings.amqp.queue.clone(),
    ] {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                topology.arguments(&queue),
            )
            .await
            .expect("declare");
    }
    let _ = connection.close(200, "declared".into()).await;
}

impl Daemon {
    async fn start(settings: Settings) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(zoom_dept_sync::startup::run(
            settings.clone(),
            shutdown.clone(),
        ));
        let daemon = Self {
            settings,
            shutdown,
            task,
        };
        eventually("the daemon consumes", Duration::from_secs(30), || async {
            daemon.readyz().await.0 == 200
        })
        .await;
        daemon
    }

    async fn readyz(&self) -> (u16, String) {
        let url = format!("http://{}/readyz", self.settings.http.listen);
        match reqwest::get(url).await {
            Ok(response) => (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// The node the daemon is connected to, from `/readyz`'s `broker:` line.
    async fn node(&self, cluster: &RabbitCluster) -> usize {
        let (_, body) = self.readyz().await;
        let line = body
            .lines()
            .find_map(|l| l.strip_prefix("broker: "))
            .unwrap_or_else(|| panic!("no broker line in {body}"));
        cluster
            .urls()
            .iter()
            .position(|url| url.contains(&format!("@{line}/")))
            .unwrap_or_else(|| panic!("{line} is none of the cluster's nodes"))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the daemon stops")
            .expect("daemon task")
            .expect("daemon result");
    }
}

/// A confirmed publisher connected to one node.
async fn channel_to(url: &str) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("a test connection to a cluster node");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    (connection, channel)
}

async fn publish_all(channel: &Channel, queue: &str, events: &[serde_json::Value]) {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let mut confirms = Vec::new();
    for event in events {
        let body = event.to_string();
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties.clone(),
            )
            .await
            .expect("publish");
        confirms.push(confirm);
    }
    for confirm in confirms {
        let confirmation = confirm.await.expect("confirm");
        assert!(confirmation.is_ack(), "the cluster refused an event");
    }
}

/// Ready messages in `queue`, asked of the node at `url`.
async fn ready(url: &str, queue: &str) -> u32 {
    let (connection, channel) = channel_to(url).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .expect("the queue exists");
    let _ = connection.close(200, "done".into()).await;
    declared.message_count()
}

/// Each person's moves as Zoom saw them: the target groups' numbers, in
/// the order the moves came (the path names the person).
fn moves_by_person(zoom: &FakeHandle) -> BTreeMap<String, Vec<usize>> {
    let mut moves: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for request in zoom.api_requests() {
        if request.method != "PATCH" || request.status != Some(204) {
            continue;
        }
        let who = request
            .path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let target = request
            .json()
            .and_then(|b| b["target_group_id"].as_str().map(str::to_owned));
        if let Some(k) = target.and_then(|g| g.strip_prefix('g').and_then(|k| k.parse().ok())) {
            moves.entry(who).or_default().push(k);
        }
    }
    moves
}

/// Every person ends in their last event's group, and each person's moves
/// never go back to an earlier event's group.
fn assert_final_and_in_order(zoom: &FakeHandle) {
    let state = zoom.state();
    for p in 0..PEOPLE {
        let user = state
            .users
            .iter()
            .find(|u| u.id == person(p))
            .expect("seeded");
        assert_eq!(
            user.groups,
            [group(EACH)],
            "{} ends in the last group",
            person(p)
        );
    }
    for (who, moves) in moves_by_person(zoom) {
        assert!(
            moves.windows(2).all(|pair| pair[0] <= pair[1]),
            "{who}'s moves went back: {moves:?}"
        );
    }
}

/// Calls beyond one move per event: a move whose ack died with the node is
/// made again (and meets "not a member", then a lookup).
fn extra_calls(zoom: &FakeHandle) -> usize {
    zoom.api_requests().len().saturating_sub(PEOPLE * EACH)
}

/// Zoom's calls by method and answer, for a failure message.
fn calls_by_kind(zoom: &FakeHandle) -> BTreeMap<(String, Option<u16>), usize> {
    let mut kinds = BTreeMap::new();
    for request in zoom.api_requests() {
        *kinds.entry((request.method, request.status)).or_default() += 1;
    }
    kinds
}

/// Publishes every event through `via`, waits until `after` moves were
/// made, then runs `lose` (a node's death), and waits for the rest.
async fn run_through_a_loss(
    cluster: &RabbitCluster,
    zoom: &FakeHandle,
    daemon: &Daemon,
    via: usize,
    lose: impl AsyncFnOnce(),
) {
    publish_via(&cluster.url(via), &daemon.settings.amqp.queue, &events()).await;
    eventually(
        "a third of the moves are made",
        Duration::from_secs(60),
        || async { zoom.api_requests().len() >= PEOPLE * EACH / 3 },
    )
    .await;
    lose().await;
    everyone_in_the_last_group(zoom).await;
}

/// Waits (at most 90 s) until every person is in their last event's group.
async fn everyone_in_the_last_group(zoom: &FakeHandle) {
    let done = || async {
        let state = zoom.state();
        (0..PEOPLE).all(|p| {
            state
                .users
                .iter()
                .any(|u| u.id == person(p) && u.groups == [group(EACH)])
        })
    };
    eventually(
        "every person reaches their last group",
        Duration::from_secs(90),
        done,
    )
    .await;
}

/// Publishes `events` (confirmed) through the node at `url`.
async fn publish_via(url: &str, queue: &str, events: &[serde_json::Value]) {
    let (connection, channel) = channel_to(url).await;
    publish_all(&channel, queue, events).await;
    let _ = connection.close(200, "published".into()).await;
}

async fn assert_nothing_left(cluster: &RabbitCluster, node: usize, daemon: &Daemon) {
    let url = cluster.url(node);
    eventually(
        "the input queue is empty",
        Duration::from_secs(30),
        || async { ready(&url, &daemon.settings.amqp.queue).await == 0 },
    )
    .await;
    let dead = daemon.settings.amqp.dead_letter_queue();
    assert_eq!(ready(&url, &dead).await, 0, "nothing dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_node_dies_mid_stream_and_every_person_still_lands_in_order() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = RabbitCluster::start().await;
    let zoom = spawn_zoom(seed()).await;
    let daemon = Daemon::start(cluster_settings(&cluster, &zoom)).await;
    let node = daemon.node(&cluster).await;
    let via = (node + 2) % 3;
    run_through_a_loss(&cluster, &zoom, &daemon, via, async || {
        cluster.kill(node).await;
    })
    .await;
    let moved_on = daemon.node(&cluster).await;
    assert_ne!(moved_on, node, "the daemon moved to another node");
    assert_final_and_in_order(&zoom);
    let extra = extra_calls(&zoom);
    eprintln!("extra calls: {extra}: {:?}", calls_by_kind(&zoom));
    assert!(
        extra <= 2 * CONCURRENCY,
        "{extra} extra calls: {:?}",
        calls_by_kind(&zoom)
    );
    assert_nothing_left(&cluster, via, &daemon).await;
    daemon.stop().await;
    cluster.restart(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_leader_dies_mid_stream_and_every_person_still_lands_in_order() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = RabbitCluster::start().await;
    let zoom = spawn_zoom(seed()).await;
    let settings = cluster_settings(&cluster, &zoom);
    // Declared through the second node, which leads the queue; the daemon
    // connects to the first address.
    declare_on(&cluster.url(1), &settings).await;
    let daemon = Daemon::start(settings).await;
    let node = daemon.node(&cluster).await;
    let leader = cluster.leader(&daemon.settings.amqp.queue).await;
    assert_ne!(leader, node, "the leader is not the daemon's node");
    let via = 3 - node - leader;
    run_through_a_loss(&cluster, &zoom, &daemon, via, async || {
        cluster.kill(leader).await;
    })
    .await;
    let stayed = daemon.node(&cluster).await;
    assert_eq!(
        stayed, node,
        "the daemon's own node lives: its session stays"
    );
    assert_final_and_in_order(&zoom);
    let extra = extra_calls(&zoom);
    eprintln!("extra calls: {extra}: {:?}", calls_by_kind(&zoom));
    assert!(
        extra <= 2 * CONCURRENCY,
        "{extra} extra calls: {:?}",
        calls_by_kind(&zoom)
    );
    assert_nothing_left(&cluster, via, &daemon).await;
    daemon.stop().await;
    cluster.restart(leader).await;
}

/// Zoom does not know these people: each event is a dead letter (Zoom's
/// 1001), written to the quorum dead-letter queue.
fn unknown_people(count: usize) -> Vec<serde_json::Value> {
    (0..count)
        .map(|i| {
            serde_json::json!({
                "event_id": format!("ghost-{i}"),
                "zoom_user_id": format!("GHOST{i}"),
                "previous_department": department(0),
                "new_department": department(1),
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_written_before_a_node_is_lost_are_all_readable_after() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = RabbitCluster::start().await;
    let zoom = spawn_zoom(seed()).await;
    let daemon = Daemon::start(cluster_settings(&cluster, &zoom)).await;
    let dead = daemon.settings.amqp.dead_letter_queue();
    let leader = cluster.leader(&dead).await;
    let via = (leader + 1) % 3;
    publish_via(
        &cluster.url(via),
        &daemon.settings.amqp.queue,
        &unknown_people(10),
    )
    .await;
    let url = cluster.url(via);
    eventually("ten dead letters", Duration::from_secs(60), || async {
        ready(&url, &dead).await == 10
    })
    .await;
    let settings = daemon.settings.clone();
    daemon.stop().await;
    // In the order they failed (people's events run side by side).
    let before = list_dead_letters(&cluster, &settings).await;
    let mut all = before.clone();
    all.sort();
    let expected: Vec<String> = (0..10).map(|i| format!("ghost-{i}")).collect();
    assert_eq!(all, expected);
    cluster.kill(leader).await;
    // The toolbox, given every address, reads them all, in the same order.
    assert_eq!(list_dead_letters(&cluster, &settings).await, before);
    let again = list_dead_letters(&cluster, &settings).await;
    assert_eq!(again, before, "a second read finds the same");
    cluster.restart(leader).await;
}

/// `dead-letters list --json` through the binary, with `AMQP_URL` holding
/// every node's address: the event ids, head first.
async fn list_dead_letters(cluster: &RabbitCluster, settings: &Settings) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let toml = format!(
        "[amqp]\nqueue = {:?}\ndead_letter_queue = {:?}\nqueue_type = \"quorum\"\n[departments]\nD0 = \"g0\"\n",
        settings.amqp.queue,
        settings.amqp.dead_letter_queue()
    );
    std::fs::write(&config, toml).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"));
    command
        .args(["dead-letters", "list", "--json", "--config"])
        .arg(&config);
    crate::helpers::clean_env(command.as_std_mut(), &cluster.urls().join(","));
    let (code, out, err) = crate::helpers::output(command.output().await.unwrap());
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect(&out);
    rows.iter()
        .map(|row| row["event_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_all_three_nodes_during_a_run_loses_nothing() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = RabbitCluster::start().await;
    let zoom = spawn_zoom(seed()).await;
    let daemon = Daemon::start(cluster_settings(&cluster, &zoom)).await;
    let queue = daemon.settings.amqp.queue.clone();
    let rounds: Vec<Vec<serde_json::Value>> = events().chunks(PEOPLE).map(<[_]>::to_vec).collect();
    let mut rounds = rounds.into_iter();
    for node in 0..3 {
        let via = cluster.url((node + 1) % 3);
        publish_via(&via, &queue, &rounds.next().unwrap()).await;
        cluster.stop_node(node).await;
        publish_via(&via, &queue, &rounds.next().unwrap()).await;
        cluster.restart(node).await;
    }
    everyone_in_the_last_group(&zoom).await;
    assert_final_and_in_order(&zoom);
    assert_nothing_left(&cluster, 0, &daemon).await;
    daemon.stop().await;
}
