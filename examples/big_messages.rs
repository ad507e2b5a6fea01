//! The daemon's peak memory while a queue of messages over the 64 KiB limit
//! drains: each is rejected unread (the broker dead-letters it), so what the
//! daemon holds at once is at most `amqp.prefetch` deliveries. Runs the real
//! binary (the release build by default, `ZDS_BIN` to choose) against the
//! broker at `AMQP_URL` and zoom-fake (never called: no message is valid):
//!
//! ```sh
//! cargo build --release --bin zoom-dept-sync
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example big_messages
//! ```
//!
//! Each row fills a fresh input queue before the daemon starts, waits until
//! every message is in the dead-letter queue, and reads the daemon's peak
//! RSS (`VmHWM` in /proc/PID/status) before stopping it with SIGTERM. The
//! broker must accept the row's message size (`max_message_size`: 128 MiB
//! on RabbitMQ 3.x, 16 MiB on 4.x; the shipped configs set 1 MiB).

#[path = "support/daemon.rs"]
mod daemon;

use std::process::Child;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use zoom_dept_sync::broker::topology::Topology;
use zoom_dept_sync::config::AmqpSettings;
use zoom_fake::{self as fake, FakeConfig, FakeHandle};

const MIB: usize = 1024 * 1024;

/// (what, message size, messages, prefetch).
const ROWS: [(&str, usize, usize, u16); 5] = [
    ("just over the limit", 64 * 1024 + 1, 2000, 32),
    ("the shipped max_message_size", MIB, 300, 32),
    ("the shipped max_message_size, prefetch 64", MIB, 300, 64),
    ("RabbitMQ 4's default max_message_size", 16 * MIB, 20, 32),
    (
        "the issue's five 20 MiB messages (3.x default)",
        20 * MIB,
        5,
        32,
    ),
];

fn start_daemon(zoom: &FakeHandle, queue: &str, prefetch: u16, dir: &tempfile::TempDir) -> Child {
    let config = format!(
        "[amqp]\nqueue = {queue:?}\nprefetch = {prefetch}\n\
         [worker]\nconcurrency = {concurrency}\n\
         [zoom]\napi_base_url = {api:?}\noauth_token_url = {token:?}\nallow_insecure_http = true\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\
         [departments]\nEngineering = \"grp_eng\"\n",
        api = zoom.api_base_url(),
        token = zoom.token_url(),
        port = daemon::free_port(),
        // Half the prefetch, as the defaults (32, 16): the consumer-timeout
        // check refuses more than two rounds of the retry budget.
        concurrency = prefetch / 2,
    );
    daemon::start(
        &daemon::release_binary(),
        &config,
        &daemon::amqp_url(),
        dir.path(),
        queue,
    )
}

async fn ready(channel: &Channel, queue: &str) -> u32 {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .map(|q| q.message_count())
        .unwrap_or(0)
}

/// Declares both queues as the daemon does and fills the input queue.
async fn fill(channel: &Channel, queue: &str, size: usize, count: usize) {
    let settings = AmqpSettings {
        queue: queue.into(),
        ..AmqpSettings::default()
    };
    let topology = Topology::new(&settings);
    for q in [queue.to_owned(), settings.dead_letter_queue()] {
        channel
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::durable(),
                topology.arguments(&q),
            )
            .await
            .expect("declare");
    }
    let body = vec![b'x'; size];
    for _ in 0..count {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
}

struct Row {
    peak_mib: f64,
    seconds: f64,
}

async fn run_row(channel: &Channel, zoom: &FakeHandle, row: (&str, usize, usize, u16)) -> Row {
    let (_, size, count, prefetch) = row;
    let queue = format!("bench-big-{}", fastrand::u32(..));
    let dead = format!("{queue}.dead");
    fill(channel, &queue, size, count).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let mut child = start_daemon(zoom, &queue, prefetch, &dir);
    let deadline = Instant::now() + Duration::from_secs(600);
    while ready(channel, &dead).await < count as u32 {
        assert!(Instant::now() < deadline, "the row did not drain");
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "the daemon exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak_mib = daemon::peak_rss_mib(child.id());
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    for q in [&queue, &dead] {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    Row { peak_mib, seconds }
}

#[tokio::main]
async fn main() {
    let connection = Connection::connect(&daemon::amqp_url(), ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    let zoom = fake::spawn(FakeConfig::default(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("zoom-fake");
    println!("| row | message size | messages | prefetch | peak RSS (VmHWM) | drained in |");
    println!("|---|---|---|---|---|---|");
    for row in ROWS {
        let result = run_row(&channel, &zoom, row).await;
        let (what, size, count, prefetch) = row;
        println!(
            "| {what} | {size} B | {count} | {prefetch} | **{:.1} MiB** | {:.1} s |",
            result.peak_mib, result.seconds
        );
    }
}
