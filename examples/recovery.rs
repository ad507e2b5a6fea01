//! Recovery benchmark: how long the daemon takes to apply events again after
//! the broker connection is cut, after the broker closes it, and after the
//! active replica is killed (single-active-consumer failover).
//!
//! Runs the real binary against the broker at `AMQP_URL` and a wiremock Zoom:
//!
//! ```sh
//! cargo build && AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example recovery
//! ```
//!
//! A publisher sends one event every 20 ms on its own connection. For each
//! disruption at time t0, "recovery" is the time from t0 until Zoom receives
//! the first event that was published after t0. Prints a table.

#[path = "support/daemon.rs"]
mod daemon;

#[path = "../tests/it/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const RUNS: usize = 5;
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// Records when each event (by its sequence number in the user id) reached Zoom.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<(u64, SystemTime)>>>);

impl Respond for Arrivals {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let n = request
            .url
            .path()
            .rsplit('/')
            .next()
            .and_then(|user| user.trim_start_matches('U').parse().ok());
        if let Some(n) = n {
            self.0.lock().unwrap().push((n, SystemTime::now()));
        }
        ResponseTemplate::new(204)
    }
}

/// Sequence numbers and publish times of the events sent so far.
type Published = Arc<Mutex<Vec<(u64, SystemTime)>>>;

fn binary() -> PathBuf {
    std::env::var_os("ZDS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("current exe");
            exe.parent()
                .and_then(|p| p.parent())
                .expect("target dir")
                .join("zoom-dept-sync")
        })
}

fn config(zoom: &MockServer, queue: &str, single_active_consumer: bool, http_port: u16) -> String {
    format!(
        "[amqp]\nqueue = {queue:?}\nsingle_active_consumer = {single_active_consumer}\n\
         [zoom]\napi_base_url = \"{uri}/v2\"\noauth_token_url = \"{uri}/oauth/token\"\nrequest_timeout_ms = 10000\nallow_insecure_http = true\n[zoom.rate_limits]\nlight = 200\nmedium = 200\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [departments]\nEngineering = \"grp_eng\"\nSales = \"grp_sales\"\n",
        uri = zoom.uri()
    )
}

fn start_daemon(config: &str, amqp_url: &str, dir: &tempfile::TempDir, name: &str) -> Child {
    daemon::start(&binary(), config, amqp_url, dir.path(), name)
}

async fn publish_forever(
    channel: Channel,
    queue: String,
    published: Published,
    stop: CancellationToken,
) {
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let body = format!(
            r#"{{"event_id":"bench-{n}","zoom_user_id":"U{n}","previous_department":"Engineering","new_department":"Sales"}}"#
        );
        let sent = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await;
        if sent.is_ok() {
            published.lock().unwrap().push((n, SystemTime::now()));
        }
        n += 1;
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
}

/// Time from `t0` until Zoom got the first event published after `t0`.
async fn recovery_after(
    t0: SystemTime,
    published: &Published,
    arrivals: &Arrivals,
) -> Option<Duration> {
    for _ in 0..1200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let first_after = published
            .lock()
            .unwrap()
            .iter()
            .find(|(_, at)| *at > t0)
            .map(|(n, _)| *n);
        let Some(first) = first_after else { continue };
        let arrived = arrivals
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|(n, _)| *n >= first)
            .map(|(_, at)| *at);
        if let Some(at) = arrived {
            return at.duration_since(t0).ok();
        }
    }
    None
}

/// The broker-side pid of the connection whose name contains `queue`.
fn broker_connection_pid(queue: &str) -> Option<String> {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "--no-table-headers",
            "--quiet",
            "pid",
            "client_properties",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|line| line.contains(queue))
        .and_then(|line| line.split_whitespace().next().map(str::to_owned))
}

struct Scenario {
    name: &'static str,
    times: Vec<Duration>,
    note: String,
}

#[tokio::main]
async fn main() {
    let amqp_url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&amqp_url, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let mut table = Vec::new();

    for name in [
        "TCP reset (proxy cut)",
        "broker closes connection",
        "failover: kill -9 active replica",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let zoom = MockServer::start().await;
        let arrivals = Arrivals::default();
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"access_token": "t", "expires_in": 3600})),
            )
            .mount(&zoom)
            .await;
        Mock::given(method("PATCH"))
            .respond_with(arrivals.clone())
            .mount(&zoom)
            .await;
        let queue = format!("zds-bench.{}.{}", std::process::id(), table.len());
        let failover = name.starts_with("failover");
        let proxy = proxy::Proxy::start(proxy::broker_addr(&amqp_url)).await;
        let daemon_url = if name.starts_with("TCP") {
            proxy::url_via(&amqp_url, proxy.addr)
        } else {
            amqp_url.clone()
        };

        let mut daemons = vec![start_daemon(
            &config(&zoom, &queue, failover, daemon::free_port()),
            &daemon_url,
            &dir,
            "a",
        )];
        tokio::time::sleep(Duration::from_secs(2)).await;
        let published: Published = Arc::default();
        let stop = CancellationToken::new();
        let publisher = tokio::spawn(publish_forever(
            channel.clone(),
            queue.clone(),
            Arc::clone(&published),
            stop.clone(),
        ));
        let mut scenario = Scenario {
            name,
            times: Vec::new(),
            note: String::new(),
        };

        for run in 0..RUNS {
            if failover {
                // A fresh standby each run; the active one is the older.
                daemons.push(start_daemon(
                    &config(&zoom, &queue, true, daemon::free_port()),
                    &daemon_url,
                    &dir,
                    &format!("s{run}"),
                ));
                tokio::time::sleep(Duration::from_secs(3)).await;
            } else {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let mut t0 = SystemTime::now();
            if failover {
                let mut active = daemons.remove(0);
                let _ = active.kill();
                let _ = active.wait();
            } else if name.starts_with("TCP") {
                proxy.cut();
            } else {
                let Some(pid) = broker_connection_pid(&queue) else {
                    scenario.note = "rabbitmqctl could not find the connection".into();
                    break;
                };
                let _ = Command::new("rabbitmqctl")
                    .args(["close_connection", &pid, "benchmark"])
                    .output();
                // rabbitmqctl takes a while to start: count from when it is done.
                t0 = SystemTime::now();
            }
            match recovery_after(t0, &published, &arrivals).await {
                Some(took) => scenario.times.push(took),
                None => scenario.note = "did not recover within 60 s".into(),
            }
        }
        stop.cancel();
        let _ = publisher.await;
        let total = published.lock().unwrap().len();
        for _ in 0..200 {
            let mut applied: Vec<u64> =
                arrivals.0.lock().unwrap().iter().map(|(n, _)| *n).collect();
            applied.sort_unstable();
            applied.dedup();
            if applied.len() >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for mut daemon in daemons {
            let _ = Command::new("kill")
                .args(["-TERM", &daemon.id().to_string()])
                .status();
            let _ = daemon.wait();
        }
        let mut applied: Vec<u64> = arrivals.0.lock().unwrap().iter().map(|(n, _)| *n).collect();
        applied.sort_unstable();
        applied.dedup();
        if applied.len() != total {
            scenario.note = format!(
                "{} of {total} events applied when the daemons stopped",
                applied.len()
            );
        } else if scenario.note.is_empty() {
            scenario.note = format!("all {total} events applied");
        }
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = channel
            .queue_delete(
                format!("{queue}.dead").as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
        table.push(scenario);
    }

    println!("\n| disruption | runs | min | median | max | note |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for s in table {
        let mut t = s.times.clone();
        t.sort();
        let ms = |d: Option<&Duration>| d.map_or("-".into(), |d| format!("{} ms", d.as_millis()));
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            s.name,
            t.len(),
            ms(t.first()),
            ms(t.get(t.len() / 2)),
            ms(t.last()),
            s.note
        );
    }
}
