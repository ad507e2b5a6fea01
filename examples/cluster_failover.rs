//! Cluster failover benchmark (issue 23): the time from the death of the
//! RabbitMQ node the daemon is connected to until the next event is
//! applied, and the extra Zoom calls the loss costs.
//!
//! Starts a three-node cluster of its own (tests/support/rabbitmq-cluster.sh,
//! on free ports), then five times: a fresh quorum queue and stand-in Zoom,
//! the release binary given every node's address (`AMQP_URL` as a list),
//! 360 events for 60 people (six each, 30-50 ms per Zoom call, concurrency
//! 16); once a third are applied, SIGKILL the daemon's node. Prints a table.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-release cargo build --release --bin zoom-dept-sync
//! ZDS_BIN=/work/target-release/release/zoom-dept-sync cargo run --example cluster_failover
//! ```
//!
//! "Resumed" is the arrival at Zoom of the first move that no request
//! before the kill had asked for (an event started by the new session), so
//! a call already in flight when the node died does not count.

#[path = "support/daemon.rs"]
mod daemon;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use zoom_fake::{self as fake, FakeConfig, FakeHandle, Limits};

const RUNS: usize = 5;
const PEOPLE: usize = 60;
const EACH: usize = 6;
const CONCURRENCY: usize = 16;
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/rabbitmq-cluster.sh"
);
const LETTERS: [&str; 3] = ["a", "b", "c"];

fn cluster(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .env("OWNER_PID", std::process::id().to_string())
        .output()
        .expect("run the cluster script");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn seeded_zoom() -> FakeHandle {
    let mut seed = FakeConfig {
        limits: Limits::unlimited(),
        ..FakeConfig::default()
    };
    seed.faults.latency_ms = 30;
    seed.faults.latency_jitter_ms = 20;
    let seed = (0..=EACH).fold(seed, |seed, k| {
        seed.group(&format!("g{k}"), &format!("D{k}"))
    });
    let seed = (0..PEOPLE).fold(seed, |seed, p| {
        seed.user(&format!("P{p}"), &format!("p{p}@example.com"), &["g0"])
    });
    fake::spawn(seed, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("zoom-fake starts")
}

fn config(queue: &str, zoom: &FakeHandle, listen: u16) -> String {
    let departments: String = (0..=EACH).map(|k| format!("D{k} = \"g{k}\"\n")).collect();
    format!(
        "[amqp]\nqueue = \"{queue}\"\nqueue_type = \"quorum\"\nprefetch = 32\n\
         [worker]\nconcurrency = {CONCURRENCY}\n\
         [http]\nlisten = \"127.0.0.1:{listen}\"\n\
         [zoom]\napi_base_url = \"{}\"\noauth_token_url = \"{}\"\nallow_insecure_http = true\n\
         [zoom.rate_limits]\nlight = 1000\nmedium = 1000\nheavy = 1000\n\
         [brake]\nmax_changes = 0\n\
         [departments]\n{departments}",
        zoom.api_base_url(),
        zoom.token_url()
    )
}

fn events() -> Vec<String> {
    let mut events = Vec::new();
    for k in 1..=EACH {
        for p in 0..PEOPLE {
            events.push(
                serde_json::json!({
                    "event_id": format!("P{p}-{k}"),
                    "zoom_user_id": format!("P{p}"),
                    "email": format!("p{p}@example.com"),
                    "previous_department": format!("D{}", k - 1),
                    "new_department": format!("D{k}"),
                    "occurred_at": format!("2026-11-26T09:00:{k:02}Z"),
                })
                .to_string(),
            );
        }
    }
    events
}

async fn publish(url: &str, queue: &str) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect to a node");
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let properties = BasicProperties::default().with_delivery_mode(2);
    let mut confirms = Vec::new();
    for body in events() {
        let options = BasicPublishOptions::default();
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                options,
                body.as_bytes(),
                properties.clone(),
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    for confirm in confirms {
        assert!(confirm.await.unwrap().is_ack());
    }
    let _ = connection.close(200, "published".into()).await;
}

async fn readyz(listen: u16) -> Option<String> {
    let response = reqwest::get(format!("http://127.0.0.1:{listen}/readyz"))
        .await
        .ok()?;
    response.status().is_success().then_some(())?;
    response.text().await.ok()
}

async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The moves asked of Zoom: (path, body) of each PATCH.
fn moves(zoom: &FakeHandle) -> Vec<(String, Vec<u8>, Instant)> {
    zoom.api_requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| (r.path, r.body, r.at))
        .collect()
}

struct Run {
    reconnected: Duration,
    resume: Duration,
    extra: usize,
}

/// When the daemon logged its second "connected to the broker; consuming".
fn reconnected_at(log: &Path) -> Option<std::time::SystemTime> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .filter(|l| l.contains("connected to the broker; consuming"))
        .nth(1)?;
    let stamp = line.split_whitespace().next()?;
    let at =
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = u64::try_from(at.unix_timestamp_nanos()).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_nanos(nanos))
}

async fn one_run(dir: &Path, cluster_dir: &Path, urls: &[String], run: usize) -> Run {
    let zoom = seeded_zoom().await;
    let queue = format!("bench.cluster.{}.{run}", std::process::id());
    let listen = daemon::free_port();
    let mut child = daemon::start(
        &daemon::release_binary(),
        &config(&queue, &zoom, listen),
        &urls.join(","),
        dir,
        &format!("daemon-{run}"),
    );
    wait_for("the daemon is ready", Duration::from_secs(60), async || {
        readyz(listen).await.is_some()
    })
    .await;
    let body = readyz(listen).await.unwrap();
    let node = body
        .lines()
        .find_map(|l| l.strip_prefix("broker: "))
        .and_then(|at| urls.iter().position(|u| u.contains(&format!("@{at}/"))))
        .expect("readyz names a node");
    publish(&urls[(node + 2) % 3], &queue).await;
    wait_for("a third applied", Duration::from_secs(60), async || {
        moves(&zoom).len() >= PEOPLE * EACH / 3
    })
    .await;
    let asked: HashSet<(String, Vec<u8>)> =
        moves(&zoom).into_iter().map(|(p, b, _)| (p, b)).collect();
    let killed = Instant::now();
    let killed_wall = std::time::SystemTime::now();
    cluster(&["kill", cluster_dir.to_str().unwrap(), LETTERS[node]]);
    // The new session: the daemon's second "consuming" line.
    let log = dir.join(format!("daemon-{run}.log"));
    let reconnect =
        async || reconnected_at(&log).map(|at| at.duration_since(killed_wall).unwrap_or_default());
    wait_for(
        "the daemon reconnects",
        Duration::from_secs(120),
        async || reconnect().await.is_some(),
    )
    .await;
    let reconnected = reconnect().await.unwrap();
    // Its first move: asked after it consumed, by no request before the kill.
    let resumed = async || {
        moves(&zoom)
            .into_iter()
            .find(|(p, b, at)| {
                *at > killed + reconnected && !asked.contains(&(p.clone(), b.clone()))
            })
            .map(|(_, _, at)| at)
    };
    wait_for("a new move", Duration::from_secs(120), async || {
        resumed().await.is_some()
    })
    .await;
    let resume = resumed().await.unwrap() - killed;
    let everyone = async || zoom.state().users.iter().all(|u| u.groups == ["g6"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !everyone().await {
        if Instant::now() > deadline {
            let log =
                std::fs::read_to_string(dir.join(format!("daemon-{run}.log"))).unwrap_or_default();
            let notable: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            let mut groups = BTreeMap::new();
            for user in zoom.state().users {
                *groups.entry(user.groups.join(",")).or_insert(0) += 1;
            }
            panic!("not everyone in g6: {groups:?}\n{}", notable.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let extra = zoom.api_requests().len().saturating_sub(PEOPLE * EACH);
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    cluster(&["restart", cluster_dir.to_str().unwrap(), LETTERS[node]]);
    Run {
        reconnected,
        resume,
        extra,
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports: Vec<u16> = (0..3).map(|_| daemon::free_port()).collect();
    let cluster_dir = dir.path().join(format!("bench{}", std::process::id()));
    let started = Instant::now();
    let mut args = vec!["start".to_owned(), cluster_dir.to_str().unwrap().to_owned()];
    args.extend(ports.iter().map(u16::to_string));
    args.extend((0..3).map(|_| daemon::free_port().to_string()));
    cluster(&args.iter().map(String::as_str).collect::<Vec<_>>());
    eprintln!("cluster up in {:.1} s", started.elapsed().as_secs_f64());
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("amqp://guest:guest@127.0.0.1:{p}/%2f"))
        .collect();
    let mut runs = BTreeMap::new();
    for run in 0..RUNS {
        runs.insert(run, one_run(dir.path(), &cluster_dir, &urls, run).await);
    }
    cluster(&["stop", cluster_dir.to_str().unwrap()]);
    println!(
        "| run | node death → consuming again | node death → next applied event | extra Zoom calls |"
    );
    println!("|---|---|---|---|");
    for (run, r) in &runs {
        let (back, resume) = (r.reconnected.as_millis(), r.resume.as_millis());
        println!("| {} | {back} ms | {resume} ms | {} |", run + 1, r.extra);
    }
    let mut times: Vec<u128> = runs.values().map(|r| r.resume.as_millis()).collect();
    times.sort_unstable();
    let extras: Vec<usize> = runs.values().map(|r| r.extra).collect();
    println!(
        "\nmin / median / max: {} / {} / {} ms; extra calls: max {} (concurrency {CONCURRENCY})",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        extras.iter().max().unwrap()
    );
}
