//! A signed webhook while 1,000 half-open connections are held: how long
//! its answer takes, and the receiver's peak RSS. Runs the real binary (the
//! release build by default, or `ZDS_BIN`) as `zoom-dept-sync ingest` under
//! `ulimit -n 1024`, with its default limits, against the broker at
//! `AMQP_URL`:
//!
//! ```sh
//! cargo build --release --bin zoom-dept-sync
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example half_open
//! ```
//!
//! 1,000 tasks each open one connection whose request headers never end
//! and hold it; in the second row each opens it again as soon as the
//! receiver closes it (a connection flood). Once all are open, a correctly
//! signed webhook (Standard Webhooks, the crate's own `sign`) is sent every
//! second, five times, on a new connection each; then SIGTERM, with the
//! connections still held. Prints one Markdown table. `BENCH_OLD=1` runs a binary from before
//! `ingest.probe_listen` (its `/readyz` on the webhook port), first row only.

#[path = "support/daemon.rs"]
mod daemon;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use zoom_dept_sync::ingest::signature::{Secrets, sign};

/// `BENCH_HELD` sets another count (the issue saw 1,100 time a webhook out).
const HELD: usize = 1_000;
const WEBHOOKS: usize = 5;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HALF_HEADERS: &[u8] = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nwebhook-id: ";
/// A webhook not answered in this is counted as lost (senders wait 3 s or
/// more, some up to 30 s).
const GIVE_UP: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() {
    let amqp_url = std::env::var("AMQP_URL").expect("AMQP_URL");
    let old = std::env::var_os("BENCH_OLD").is_some();
    println!(
        "| attacker | signed webhook answers (5, 1 s apart) | receiver peak RSS | receiver fds | SIGTERM to exit |"
    );
    println!("|---|---|---|---|---|");
    // The old receiver never closes a half-open connection: nothing to reopen.
    // `BENCH_ROWS=1`: the first row only.
    let first_only = old || std::env::var("BENCH_ROWS").is_ok_and(|r| r == "1");
    let rows: &[bool] = if first_only { &[false] } else { &[false, true] };
    for &reopen in rows {
        println!("{}", scenario(&amqp_url, old, reopen).await);
    }
}

/// One receiver, `HELD` half-open connections (opened again when closed,
/// if `reopen`), five signed webhooks, SIGTERM: one table row.
async fn scenario(amqp_url: &str, old: bool, reopen: bool) -> String {
    let queue = format!("zds-bench.half-open.{}.{reopen}", std::process::id());
    let connection = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    // The receiver publishes through `<queue>.in`, which the consumer
    // declares and binds: here, no consumer runs.
    let exchange = format!("{queue}.in");
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare the exchange");
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            queue.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let dir = tempfile::tempdir().expect("temp dir");
    let (webhooks, probes) = (daemon::free_port(), daemon::free_port());
    let mut receiver = start(&dir, &queue, amqp_url, webhooks, probes, old);
    let pid = receiver.id();
    wait_ready(if old { webhooks } else { probes }).await;

    let held = std::env::var("BENCH_HELD")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(HELD);
    let stop = CancellationToken::new();
    let reopened = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    for _ in 0..held {
        let attacker = Attacker {
            port: webhooks,
            reopen,
            stop: stop.clone(),
            open: Arc::clone(&open),
            reopened: Arc::clone(&reopened),
        };
        tokio::spawn(attacker.hold());
    }
    let started = Instant::now();
    while open.load(Ordering::Relaxed) < held && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let opening = started.elapsed();
    let mut answers = Vec::new();
    for n in 0..WEBHOOKS {
        answers.push(signed_webhook(webhooks, &format!("{reopen}_{n}")).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let peak = daemon::peak_rss_mib(pid);
    let term = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = wait_exit(&mut receiver, Duration::from_secs(90)).await;
    let stopped = term.elapsed();
    stop.cancel();
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let shown: Vec<String> = answers.iter().map(show).collect();
    let attacker = if reopen {
        format!(
            "{held} half-open, each opened again as soon as the receiver closes it ({} reopened)",
            reopened.load(Ordering::Relaxed)
        )
    } else {
        format!("{held} half-open connections held (none reopened)")
    };
    format!(
        "| {attacker}; {} of them open after {:.1} s | {} | {peak:.1} MiB | {fds} | {} |",
        open.load(Ordering::Relaxed),
        opening.as_secs_f64(),
        shown.join(", "),
        match exit {
            Some(code) => format!("{:.2} s (exit {code})", stopped.as_secs_f64()),
            None => format!("not within {:.0} s", stopped.as_secs_f64()),
        },
    )
}

struct Attacker {
    port: u16,
    reopen: bool,
    stop: CancellationToken,
    open: Arc<AtomicUsize>,
    reopened: Arc<AtomicUsize>,
}

impl Attacker {
    /// One connection whose headers never end; opened again when closed
    /// if `reopen`, else held until closed.
    async fn hold(self) {
        let mut first = true;
        while !self.stop.is_cancelled() {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if stream.write_all(HALF_HEADERS).await.is_err() {
                continue;
            }
            if first {
                self.open.fetch_add(1, Ordering::Relaxed);
                first = false;
            } else {
                self.reopened.fetch_add(1, Ordering::Relaxed);
            }
            let mut buf = [0u8; 256];
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = async { while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {} } => {}
            }
            if !self.reopen {
                self.stop.cancelled().await;
                return;
            }
        }
    }
}

/// Why a webhook got no status line, in the table's words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
struct Unanswered(String);

/// The status and the time from connect to the answer's status line.
async fn signed_webhook(port: u16, n: &str) -> Result<(u16, Duration), Unanswered> {
    let secrets = Secrets::parse(SECRET).expect("secret");
    let id = format!("msg_bench_{n}_{}", std::process::id());
    let body =
        format!(r#"{{"event_id":"{id}","email":"ann@example.com","new_department":"Sales"}}"#);
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    let signature = sign(&secrets, &id, &ts, body.as_bytes());
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         webhook-id: {id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {signature}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let started = Instant::now();
    let exchange = async {
        let unanswered = |why: String| Unanswered(why);
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| unanswered(format!("connect: {e}")))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| unanswered(format!("write: {e}")))?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) => return Err(unanswered("closed without an answer".to_owned())),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => return Err(unanswered(format!("read: {e}"))),
            }
        }
        let line = String::from_utf8_lossy(&answer).into_owned();
        line.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(unanswered(format!("no status in {line:?}")))
    };
    match tokio::time::timeout(GIVE_UP, exchange).await {
        Ok(Ok(status)) => Ok((status, started.elapsed())),
        Ok(Err(e)) => Err(Unanswered(format!(
            "{e} after {:.2} s",
            started.elapsed().as_secs_f64()
        ))),
        Err(_) => Err(Unanswered(format!("no answer in {} s", GIVE_UP.as_secs()))),
    }
}

fn show(answer: &Result<(u16, Duration), Unanswered>) -> String {
    match answer {
        Ok((status, took)) => format!("{status} in {:.3} s", took.as_secs_f64()),
        Err(e) => e.to_string(),
    }
}

fn start(
    dir: &tempfile::TempDir,
    queue: &str,
    amqp_url: &str,
    webhooks: u16,
    probes: u16,
    old: bool,
) -> Child {
    let probe_line = if old {
        String::new()
    } else {
        format!("probe_listen = \"127.0.0.1:{probes}\"\n")
    };
    let config = dir.path().join("ingest.toml");
    std::fs::write(
        &config,
        format!(
            "[amqp]\nqueue = {queue:?}\n[ingest]\nlisten = \"127.0.0.1:{webhooks}\"\n{probe_line}\
             [departments]\nSales = \"g\"\n"
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.path().join("ingest.log")).expect("log");
    // `exec` keeps the pid: the shell's limit becomes the receiver's.
    Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" ingest --config \"$1\"")
        .arg(daemon::release_binary())
        .arg(&config)
        .env_clear()
        .env("AMQP_URL", amqp_url)
        .env("ZDS_INGEST_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start zoom-dept-sync ingest (build it first, or set ZDS_BIN)")
}

async fn wait_ready(port: u16) {
    let started = Instant::now();
    loop {
        let ready = async {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            stream
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.ok()?;
            answer.starts_with("HTTP/1.1 200").then_some(())
        };
        if ready.await.is_some() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the receiver never got ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
