//! The table's rows: each starts its own fake Zoom and queues, runs the bare
//! loop or the real daemon binary, and says what it measured against what.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use zoom_fake::{Counters, FakeHandle, Limits};

use crate::bare;
use crate::daemon;
use crate::measure::{ProcStats, Span, watch};
use crate::setup::{DaemonConfig, Events, Queues, amqp_url, fake_zoom, token};

/// One line of the table.
pub struct Row {
    pub name: String,
    pub inputs: String,
    pub result: String,
    pub target: String,
    pub limited_by: String,
}

/// How the daemon is run for a row.
#[derive(Clone, Copy)]
pub struct Shape {
    pub events: Events,
    pub count: usize,
    pub prefetch: usize,
    pub concurrency: usize,
    pub light: u32,
    pub medium: u32,
}

/// What one daemon run gave.
pub struct DaemonRun {
    pub span: Span,
    pub stats: ProcStats,
    pub metrics: String,
}

/// The release binary, or `ZDS_BIN`.
fn daemon_binary() -> PathBuf {
    let path = std::env::var_os("ZDS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/zoom-dept-sync")
        });
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --release --bin zoom-dept-sync` first",
        path.display()
    );
    path
}

/// Fills a queue with `shape.count` events, starts the daemon on it, and
/// waits until `done` says the fake saw the row through.
pub async fn run_daemon(
    row: &str,
    fake: &FakeHandle,
    shape: Shape,
    started: impl Fn(&Counters) -> bool,
    done: impl Fn(&Counters) -> bool,
) -> DaemonRun {
    let queues = Queues::declare(row).await;
    queues.fill(shape.events, shape.count).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = daemon::free_port();
    let config = DaemonConfig {
        queue: &queues.name,
        fake,
        prefetch: shape.prefetch,
        concurrency: shape.concurrency,
        light: shape.light,
        medium: shape.medium,
        http_port: port,
    };
    let mut child = daemon::start(
        &daemon_binary(),
        &config.toml(),
        &amqp_url(),
        dir.path(),
        row,
    );
    let span = watch(fake, Duration::from_secs(300), started, done).await;
    let stats = ProcStats::of(&child.id().to_string());
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("daemon /metrics")
        .text()
        .await
        .unwrap_or_default();
    stop(&mut child);
    queues.delete().await;
    DaemonRun {
        span,
        stats,
        metrics,
    }
}

/// SIGTERM, then wait: the daemon settles what it holds and exits.
fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Row 1: the bare loop as a child process of this bench.
pub async fn bare_loop(count: usize) -> (Row, f64) {
    let fake = fake_zoom(count, Limits::unlimited(), Duration::ZERO).await;
    let queues = Queues::declare("bare").await;
    queues.fill(Events::Moves, count).await;
    let args = bare::Args {
        amqp_url: amqp_url(),
        queue: queues.name.clone(),
        zoom: fake.base_url(),
        count,
        prefetch: 256,
        concurrency: 64,
    };
    let exe = std::env::current_exe().expect("this bench");
    let child = tokio::process::Command::new(exe)
        .args(args.to_argv())
        .output();
    let span = watch(
        &fake,
        Duration::from_secs(120),
        |c| c.total.calls > 0,
        |c| c.medium.ok >= count as u64,
    );
    let (output, span) = tokio::join!(child, span);
    let output = output.expect("bare loop ran");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace();
    let cpu: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let rss_kib: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    queues.delete().await;
    let rate = count as f64 / span.seconds();
    let row = Row {
        name: "1. bare loop: consume → PATCH → ack".into(),
        inputs: format!("{count} moves, prefetch 256, 64 in flight, instant fake"),
        result: format!(
            "**{rate:.0} events/s**; {:.2} CPU s / 1,000 events; peak RSS {:.0} MiB",
            cpu * 1000.0 / count as f64,
            rss_kib / 1024.0
        ),
        target: "this machine's ceiling".into(),
        limited_by: format!(
            "CPU: loop at {:.0} % of a core; broker and fake share the 2 cores",
            100.0 * cpu / span.seconds()
        ),
    };
    (row, rate)
}

/// Rows 1 and 2 run as `ratios.len()` pairs: the median and the lowest
/// ratio of row 2 to row 1.
pub fn paired(count: usize, ratios: &mut [f64]) -> Row {
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let each: Vec<String> = ratios.iter().map(|r| format!("{:.0}", 100.0 * r)).collect();
    Row {
        name: "2 / 1, paired".into(),
        inputs: format!("{} pairs of rows 1 and 2, {count} moves each", ratios.len()),
        result: format!(
            "median **{:.0} %**, lowest {:.0} % (sorted: {} %)",
            100.0 * median,
            100.0 * ratios[0],
            each.join(", ")
        ),
        target: "median ≥ 60 %".into(),
        limited_by: "the bare loop's rate swings between runs on 2 shared cores".into(),
    }
}

/// Row 2: the daemon against an instant fake, no limits in its way.
pub async fn daemon_instant(count: usize, ceiling: f64) -> (Row, DaemonRun) {
    let fake = fake_zoom(count, Limits::unlimited(), Duration::ZERO).await;
    let shape = Shape {
        events: Events::Moves,
        count,
        prefetch: 256,
        concurrency: 64,
        light: 100_000,
        medium: 100_000,
    };
    let run = run_daemon(
        "instant",
        &fake,
        shape,
        |c| c.total.calls > 0,
        |c| c.medium.ok >= count as u64,
    )
    .await;
    let rate = count as f64 / run.span.seconds();
    let row = Row {
        name: "2. zoom-dept-sync, instant fake".into(),
        inputs: format!("{count} moves, prefetch 256, concurrency 64, limits 100,000/s"),
        result: format!(
            "**{rate:.0} events/s** = {:.0} % of row 1",
            100.0 * rate / ceiling
        ),
        target: "≥ 60–85 % of row 1".into(),
        limited_by: format!(
            "CPU: daemon at {:.0} % of a core (info log line per event); broker and fake share the 2 cores",
            100.0 * run.stats.cpu.as_secs_f64() / run.span.seconds()
        ),
    };
    (row, run)
}

/// Row 3: Zoom answering after 100 ms, at one concurrency.
pub async fn latency(concurrency: usize) -> Row {
    const LATENCY: Duration = Duration::from_millis(100);
    let count = 30 * concurrency;
    let fake = fake_zoom(count, Limits::unlimited(), LATENCY).await;
    let shape = Shape {
        events: Events::Moves,
        count,
        prefetch: (4 * concurrency).min(256),
        concurrency,
        light: 100_000,
        medium: 100_000,
    };
    let run = run_daemon(
        &format!("latency{concurrency}"),
        &fake,
        shape,
        |c| c.total.calls > 0,
        |c| c.medium.ok >= count as u64,
    )
    .await;
    // The first call's answer comes a latency after it was seen.
    let rate = count as f64 / (run.span.seconds() + LATENCY.as_secs_f64());
    let ideal = concurrency as f64 / LATENCY.as_secs_f64();
    Row {
        name: format!("3. fake latency 100 ms, concurrency {concurrency}"),
        inputs: format!("{count} moves, prefetch {}", shape.prefetch),
        result: format!(
            "**{rate:.1} events/s** = {:.1} % of concurrency / latency = {ideal:.0}/s",
            100.0 * rate / ideal
        ),
        target: if concurrency >= 16 { "≥ 95 %" } else { "—" }.into(),
        limited_by: "Zoom's latency × concurrency".into(),
    }
}

/// Row 4: moves against a Medium limit of 20/s, the daemon set to 20/s.
pub async fn medium_limit(count: usize) -> Row {
    let limits = Limits {
        medium: Some(20),
        ..Limits::default()
    };
    let fake = fake_zoom(count, limits, Duration::ZERO).await;
    let shape = limited_shape(Events::Moves, count);
    let run = run_daemon(
        "medium",
        &fake,
        shape,
        |c| c.medium.calls > 0,
        |c| c.medium.ok >= count as u64,
    )
    .await;
    let medium = run.span.counters.medium;
    let rate = medium.ok as f64 / run.span.seconds();
    Row {
        name: "4. moves at a Medium limit of 20/s".into(),
        inputs: format!("{count} moves; fake Medium 20/s; daemon medium = 20, concurrency 64"),
        result: format!(
            "**{rate:.2} calls/s** = {:.1} % of the limit; {} of {} calls answered 429 ({:.2} %)",
            100.0 * rate / 20.0,
            medium.limited_qps,
            medium.calls,
            100.0 * medium.limited_qps as f64 / medium.calls.max(1) as f64
        ),
        target: "≥ 95 %, < 1 % 429".into(),
        limited_by: "the Medium limit".into(),
    }
}

/// Row 5: lookup-then-move events at Light 30/s and Medium 20/s.
pub async fn lookups(count: usize) -> Row {
    let limits = Limits {
        light: Some(30),
        medium: Some(20),
        ..Limits::default()
    };
    let fake = fake_zoom(count, limits, Duration::ZERO).await;
    let shape = Shape {
        light: 30,
        ..limited_shape(Events::LookupThenMove, count)
    };
    let run = run_daemon(
        "lookups",
        &fake,
        shape,
        |c| c.total.calls > 0,
        |c| c.medium.ok >= count as u64,
    )
    .await;
    let c = run.span.counters;
    let rate = count as f64 / run.span.seconds();
    Row {
        name: "5. lookup-then-move at Light 30/s + Medium 20/s".into(),
        inputs: format!(
            "{count} events (GET /users/{{id}}, then PATCH); daemon light = 30, medium = 20"
        ),
        result: format!(
            "**{rate:.2} events/s** = {:.1} % of 20/s; 429s: {} Light, {} Medium of {} calls ({:.2} %)",
            100.0 * rate / 20.0,
            c.light.limited_qps,
            c.medium.limited_qps,
            c.total.calls,
            100.0 * c.total.limited_qps as f64 / c.total.calls.max(1) as f64
        ),
        target: "≥ 95 % of 20/s, < 1 % 429".into(),
        limited_by: "the Medium limit (each event's PATCH); lookups draw from Light".into(),
    }
}

fn limited_shape(events: Events, count: usize) -> Shape {
    Shape {
        events,
        count,
        prefetch: 256,
        concurrency: 64,
        light: 1000,
        medium: 20,
    }
}

/// Row 6: another app spends 10 of the account's 20 Medium calls a second.
pub async fn shared_account(count: usize) -> Row {
    let limits = Limits {
        medium: Some(20),
        ..Limits::default()
    };
    let fake = fake_zoom(count, limits, Duration::ZERO).await;
    let other = OtherApp::start(&fake, 10).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let other_ok = Arc::clone(&other.ok);
    let daemon_ok = move |c: &Counters| c.medium.ok.saturating_sub(other_ok.load(Ordering::SeqCst));
    let other_at_start = other.ok.load(Ordering::SeqCst);
    let run = run_daemon(
        "shared",
        &fake,
        limited_shape(Events::Moves, count),
        |c| daemon_ok(c) > 0,
        |c| daemon_ok(c) >= count as u64,
    )
    .await;
    let other_during = other.ok.load(Ordering::SeqCst) - other_at_start;
    other.stop().await;
    let seconds = run.span.seconds();
    let left = 20.0 - other_during as f64 / seconds;
    let rate = count as f64 / seconds;
    let limited = metric(
        &run.metrics,
        "zoom_dept_sync_zoom_calls_total{method=\"PATCH\",status=\"429\"}",
    );
    let ok = metric(
        &run.metrics,
        "zoom_dept_sync_zoom_calls_total{method=\"PATCH\",status=\"204\"}",
    );
    Row {
        name: "6. a second app spends 10 of 20 Medium/s".into(),
        inputs: format!(
            "{count} moves; fake Medium 20/s; other app 10 GET /groups a second; daemon medium = 20"
        ),
        result: format!(
            "**{rate:.2} moves/s** = {:.1} % of the {left:.2}/s the other app leaves; {limited} of the daemon's {} calls answered 429 ({:.2} %)",
            100.0 * rate / left,
            limited + ok,
            100.0 * limited / (limited + ok).max(1.0)
        ),
        target: "≥ 80 % of what is left, < 2 % 429".into(),
        limited_by: "the other app's use: the adaptive share".into(),
    }
}

/// Row 7, from row 1's and row 2's runs.
pub fn footprint(count: usize, run: &DaemonRun) -> Row {
    Row {
        name: "7. the daemon's footprint".into(),
        inputs: format!("row 2: {count} moves, prefetch 256, concurrency 64"),
        result: format!(
            "**peak RSS {:.1} MiB; {:.3} CPU s / 1,000 events**",
            run.stats.peak_rss_mib(),
            run.stats.cpu.as_secs_f64() * 1000.0 / count as f64
        ),
        target: "≤ 32 MiB".into(),
        limited_by: "lapin's frame buffers: 2 per connection, 32 frames of frame_max (64 KiB, the daemon's default) each, zero-filled; 2 connections (consume, publish) = 8 MiB".into(),
    }
}

/// A sample's value in Prometheus text; 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Another app on the same account: `per_second` Medium calls
/// (`GET /groups`), evenly spaced, with its own token.
struct OtherApp {
    ok: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl OtherApp {
    async fn start(fake: &FakeHandle, per_second: u32) -> Self {
        let http = reqwest::Client::new();
        let token = token(&http, &fake.token_url(), "other").await;
        let url = format!("{}/groups", fake.api_base_url());
        let (ok, stop) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
        let (counted, stopped) = (Arc::clone(&ok), stop.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stopped.is_cancelled() {
                tick.tick().await;
                let answer = http.get(&url).bearer_auth(&token).send().await;
                if answer.is_ok_and(|a| a.status().is_success()) {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self { ok, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
