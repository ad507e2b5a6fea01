//! The daemon's peak memory against the number of distinct people: each
//! event is the only one of its person (its own id, email and `occurred_at`),
//! so the stale check's history and the identity pairs fill up as they would
//! on a big account. Runs the real binary (the release build by default,
//! `ZDS_BIN` to choose) against the broker at `AMQP_URL` and zoom-fake in
//! this process (no rate limit, no latency), with prefetch 256 and
//! concurrency 64 as benchmark row 2:
//!
//! ```sh
//! cargo build --release --bin zoom-dept-sync
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --release --example distinct_people
//! PEOPLE=150000 ZDS_BIN=/path/to/other/zoom-dept-sync cargo run --release --example distinct_people
//! ```
//!
//! Each row fills a fresh queue before the daemon starts (so it measures
//! consuming only), waits until the fake has answered every `PATCH`, reads
//! the daemon's peak RSS (`VmHWM` in /proc/PID/status), then stops it.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/zoom.rs"]
mod zoom_seed;

use std::time::{Duration, Instant};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use zoom_fake::{FakeHandle, Limits};

/// `PEOPLE`, comma-separated (default 20000,150000).
fn rows() -> Vec<usize> {
    std::env::var("PEOPLE")
        .unwrap_or_else(|_| "20000,150000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("PEOPLE: numbers, comma-separated"))
        .collect()
}

/// Person `i`'s one event: id and email (so the two are paired), a time
/// (so it enters the stale check's history), a move.
fn body(i: usize, occurred_at: &str) -> Vec<u8> {
    serde_json::json!({
        "event_id": format!("people-{i}"),
        "zoom_user_id": format!("u{i}"),
        "email": format!("u{i}@example.com"),
        "occurred_at": occurred_at,
        "previous_department": "Engineering",
        "new_department": "Sales",
    })
    .to_string()
    .into_bytes()
}

async fn fill(channel: &Channel, queue: &str, people: usize) {
    for q in [queue.to_owned(), format!("{queue}.dead")] {
        channel
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .expect("declare");
    }
    let occurred_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a time");
    let mut confirms = Vec::with_capacity(1000);
    for i in 0..people {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(i, &occurred_at),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into()),
            )
            .await
            .expect("publish");
        confirms.push(confirm);
        if confirms.len() == 1000 {
            for confirm in confirms.drain(..) {
                confirm.await.expect("confirmed");
            }
        }
    }
    for confirm in confirms {
        confirm.await.expect("confirmed");
    }
}

fn config(zoom: &FakeHandle, queue: &str) -> String {
    format!(
        "[amqp]\nqueue = {queue:?}\nprefetch = 256\ndeclare_topology = false\n\n\
         [zoom]\napi_base_url = {api:?}\noauth_token_url = {token:?}\nallow_insecure_http = true\n\n\
         [zoom.rate_limits]\nlight = 100000\nmedium = 100000\nheavy = 1000\n\n\
         [retry]\ninitial_interval_ms = 100\nmax_interval_ms = 2000\nmax_elapsed_secs = 120\n\n\
         [worker]\nconcurrency = 64\n\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [brake]\nmax_changes = 0\n\n\
         [departments]\nEngineering = \"grp_eng\"\nSales = \"grp_sales\"\n",
        api = zoom.api_base_url(),
        token = zoom.token_url(),
        port = daemon::free_port(),
    )
}

/// (events a second, peak RSS in MiB) for `people` one-event people.
async fn run_row(channel: &Channel, people: usize) -> (f64, f64) {
    let zoom = zoom_seed::fake_zoom(people, Limits::unlimited(), Duration::ZERO).await;
    let queue = format!("bench-people-{}", fastrand::u32(..));
    fill(channel, &queue, people).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = daemon::start(
        &daemon::release_binary(),
        &config(&zoom, &queue),
        &daemon::amqp_url(),
        dir.path(),
        "people",
    );
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first = None;
    loop {
        let counters = zoom.counters();
        if first.is_none() && counters.total.calls > 0 {
            first = Some(Instant::now());
        }
        if counters.medium.ok >= people as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "not done: {counters:?}");
        assert!(child.try_wait().ok().flatten().is_none(), "daemon exited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = first.map_or(1e-3, |f| f.elapsed().as_secs_f64().max(1e-3));
    let peak = daemon::peak_rss_mib(child.id());
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    for q in [queue.clone(), format!("{queue}.dead")] {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    (people as f64 / seconds, peak)
}

#[tokio::main]
async fn main() {
    let connection = Connection::connect(&daemon::amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ at AMQP_URL");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    println!("binary: {}", daemon::release_binary().display());
    println!("| distinct people (one event each) | events/s | peak RSS (VmHWM) |");
    println!("|---|---|---|");
    for people in rows() {
        let (rate, peak) = run_row(&channel, people).await;
        println!("| {people} | {rate:.0} | **{peak:.1} MiB** |");
    }
}
