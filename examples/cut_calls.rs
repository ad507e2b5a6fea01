//! Extra Zoom calls per connection cut: how much work a lost broker session
//! costs. Runs the real binary (the release build by default) through a TCP
//! proxy against the broker at `AMQP_URL` and a stateful fake Zoom:
//!
//! ```sh
//! cargo build --release --bin zoom-dept-sync
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example cut_calls
//! ```
//!
//! Each run publishes 48 moves (Engineering → Sales, one per user) for a
//! daemon at concurrency 4 whose Zoom answers after 100 ms, cuts the proxied
//! connection once a quarter of them reached Zoom, and waits until every user
//! is in Sales and the queue is empty (ready and unacked). A move is one
//! `PATCH` when nothing goes wrong; everything above 48 calls is the price of
//! the cut. The target is at most `2 × concurrency` extra calls per cut: an
//! event whose call was running when the session died is redelivered, finds
//! the user already moved (`PATCH` answers 4134) and confirms it with a `GET`.

#[path = "support/daemon.rs"]
mod daemon;

#[path = "../tests/it/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const RUNS: usize = 5;
const EVENTS: usize = 48;
const CONCURRENCY: usize = 4;
const ZOOM_DELAY: Duration = Duration::from_millis(100);

/// Each user's one group, and every API call by method.
#[derive(Default)]
struct State {
    groups: HashMap<String, String>,
    calls: HashMap<String, usize>,
}

/// A Zoom whose moves only work from the group the user is in.
#[derive(Clone, Default)]
struct FakeZoom(Arc<Mutex<State>>);

impl FakeZoom {
    fn new() -> Self {
        let fake = Self::default();
        let mut state = fake.0.lock().unwrap();
        for i in 0..EVENTS {
            state.groups.insert(format!("U{i}"), "grp_eng".into());
        }
        drop(state);
        fake
    }

    fn all_in(&self, group: &str) -> bool {
        self.0.lock().unwrap().groups.values().all(|g| g == group)
    }

    fn calls(&self, method: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .calls
            .get(method)
            .copied()
            .unwrap_or(0)
    }
}

impl Respond for FakeZoom {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap();
        *state
            .calls
            .entry(request.method.as_str().to_owned())
            .or_default() += 1;
        let segments: Vec<&str> = request.url.path_segments().into_iter().flatten().collect();
        let answer = match (request.method.as_str(), segments.as_slice()) {
            ("PATCH", ["v2", "groups", from, "members", id]) => {
                let body: serde_json::Value = request.body_json().unwrap_or_default();
                let to = body["target_group_id"].as_str().unwrap_or_default();
                match state.groups.get_mut(*id) {
                    Some(group) if group == from => {
                        *group = to.to_owned();
                        ResponseTemplate::new(204)
                    }
                    _ => ResponseTemplate::new(400).set_body_json(serde_json::json!({
                        "code": 4134, "message": "The user is not a member of this group."
                    })),
                }
            }
            ("GET", ["v2", "users", id]) => match state.groups.get(*id) {
                Some(group) => ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "id": id, "email": format!("{id}@example.com"), "group_ids": [group],
                })),
                None => ResponseTemplate::new(404),
            },
            _ => ResponseTemplate::new(404),
        };
        answer.set_delay(ZOOM_DELAY)
    }
}

fn start_daemon(zoom: &MockServer, queue: &str, amqp_url: &str, dir: &tempfile::TempDir) -> Child {
    let config = format!(
        "[amqp]\nqueue = {queue:?}\nprefetch = {prefetch}\n\
         [worker]\nconcurrency = {CONCURRENCY}\n\
         [zoom]\napi_base_url = \"{uri}/v2\"\noauth_token_url = \"{uri}/oauth/token\"\nrequest_timeout_ms = 10000\nallow_insecure_http = true\n[zoom.rate_limits]\nlight = 200\nmedium = 200\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\
         [departments]\nEngineering = \"grp_eng\"\nSales = \"grp_sales\"\n",
        uri = zoom.uri(),
        port = daemon::free_port(),
        prefetch = 2 * CONCURRENCY,
    );
    daemon::start(
        &daemon::release_binary(),
        &config,
        amqp_url,
        dir.path(),
        "daemon",
    )
}

/// Messages of `queue`, ready and unacknowledged, as the broker counts them.
fn messages_in(queue: &str) -> Option<u64> {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "--no-table-headers",
            "--quiet",
            "name",
            "messages",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(queue))
                .then(|| fields.next()?.parse().ok())
                .flatten()
        })
}

/// On a channel of its own: a failed passive declare closes the channel.
async fn ready_messages(connection: &Connection, queue: &str) -> u32 {
    let Ok(channel) = connection.create_channel().await else {
        return u32::MAX;
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .map_or(u32::MAX, |q| q.message_count())
}

async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

struct Run {
    patch: usize,
    get: usize,
    settled_after: Option<Duration>,
    dead_letters: u32,
    note: &'static str,
}

async fn one_run(connection: &Connection, amqp_url: &str, n: usize) -> Run {
    let channel = connection.create_channel().await.expect("channel");
    let dir = tempfile::tempdir().unwrap();
    let zoom = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"access_token": "t", "expires_in": 3600})),
        )
        .mount(&zoom)
        .await;
    let fake = FakeZoom::new();
    Mock::given(wiremock::matchers::path_regex("^/v2/"))
        .respond_with(fake.clone())
        .mount(&zoom)
        .await;
    let queue = format!("zds-cut.{}.{n}", std::process::id());
    let proxy = proxy::Proxy::start(proxy::broker_addr(amqp_url)).await;
    let mut daemon = start_daemon(&zoom, &queue, &proxy::url_via(amqp_url, proxy.addr), &dir);
    let declared = until(Duration::from_secs(20), || messages_in(&queue).is_some()).await;
    for i in 0..EVENTS {
        let body = format!(
            r#"{{"event_id":"cut-{n}-{i}","zoom_user_id":"U{i}","previous_department":"Engineering","new_department":"Sales"}}"#
        );
        let properties = BasicProperties::default().with_delivery_mode(2);
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await
            .expect("publish");
    }
    let mut note = if declared {
        ""
    } else {
        "queue not declared in 20 s"
    };
    until(Duration::from_secs(30), || {
        fake.calls("PATCH") >= EVENTS / 4
    })
    .await;
    proxy.cut();
    let applied = until(Duration::from_secs(60), || fake.all_in("grp_sales")).await;
    let applied_at = Instant::now();
    if !applied {
        note = "not every user moved within 60 s";
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        eprintln!("daemon log:\n{log}");
    }
    let settled = until(Duration::from_secs(60), || messages_in(&queue) == Some(0)).await;
    let settled_after = settled.then(|| applied_at.elapsed());
    let dead_letters = ready_messages(connection, &format!("{queue}.dead")).await;
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    for q in [queue.clone(), format!("{queue}.dead")] {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    Run {
        patch: fake.calls("PATCH"),
        get: fake.calls("GET"),
        settled_after,
        dead_letters,
        note,
    }
}

#[tokio::main]
async fn main() {
    let amqp_url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&amqp_url, ConnectionProperties::default())
        .await
        .expect("broker");
    println!("binary: {}", daemon::release_binary().display());
    println!(
        "{EVENTS} moves, concurrency {CONCURRENCY}, Zoom answers after {} ms, one cut each run\n",
        ZOOM_DELAY.as_millis()
    );
    println!(
        "| run | PATCH | GET | extra calls | target | queue empty after last move | dead letters | note |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for n in 1..=RUNS {
        let run = one_run(&connection, &amqp_url, n).await;
        let extra = (run.patch + run.get).saturating_sub(EVENTS);
        let settled = run.settled_after.map_or("not within 60 s".into(), |d| {
            format!("{} ms", d.as_millis())
        });
        println!(
            "| {n} | {} | {} | {extra} | ≤ {} | {settled} | {} | {} |",
            run.patch,
            run.get,
            2 * CONCURRENCY,
            run.dead_letters,
            run.note
        );
    }
}
