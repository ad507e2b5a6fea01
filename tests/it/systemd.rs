//! `Type=notify` with a stand-in systemd: the test binds the datagram socket
//! that `NOTIFY_SOCKET` names, runs the binary with `WATCHDOG_USEC`, and
//! reads what it sends: `READY=1` only once it consumes, `WATCHDOG=1` while
//! it is idle, busy with a slow Zoom call or waiting for a broker that is
//! down, `STOPPING=1` on SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::time::Instant;
use zoom_fake::FaultsConfig;

use crate::helpers::{
    TestApp, event, free_local_port, mapped_zoom, spawn_zoom, use_zoom, wait_for_calls,
};
use crate::process::DaemonProcess;

/// 400 ms: the daemon pings every 200 ms.
const WATCHDOG_USEC: &str = "400000";

/// The service manager's end of `NOTIFY_SOCKET`.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Manager {
    fn bind() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        socket.set_nonblocking(true).expect("non-blocking");
        let socket = UnixDatagram::from_std(socket).expect("tokio socket");
        Self {
            socket,
            path,
            _dir: dir,
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("UTF-8 path")
    }

    /// The next datagram, or `None` after `within`.
    async fn next(&self, within: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(within, self.socket.recv(&mut buf))
            .await
            .ok()?
            .expect("recv");
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Datagrams until one has the line `line`; fails after `within`.
    async fn until_line(&self, line: &str, within: Duration) -> (String, Vec<String>) {
        let deadline = Instant::now() + within;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(message) if message.lines().any(|l| l == line) => return (message, before),
                Some(message) => before.push(message),
                None => panic!("no {line} within {within:?}; got {before:?}"),
            }
        }
    }

    /// How many datagrams with `WATCHDOG=1` arrive in `window`, counting
    /// no further than `enough` (the wait ends as soon as that many came).
    async fn watchdog_pings(&self, enough: usize, window: Duration) -> usize {
        let deadline = Instant::now() + window;
        let mut pings = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || pings >= enough {
                return pings;
            }
            if let Some(message) = self.next(left).await {
                pings += message.lines().filter(|l| *l == "WATCHDOG=1").count();
            }
        }
    }
}

fn status(message: &str) -> Option<&str> {
    message.lines().find_map(|l| l.strip_prefix("STATUS="))
}

#[tokio::test]
async fn systemd_hears_ready_once_consuming_then_watchdog_pings_idle_and_busy_then_stopping() {
    // One slow Zoom call: the loop must go on pinging while it runs.
    let mut seed = mapped_zoom().user("U1", "u1@example.com", &["grp_eng"]);
    seed.faults = FaultsConfig {
        latency_ms: 3000,
        ..FaultsConfig::default()
    };
    let zoom = spawn_zoom(seed).await;
    let app = TestApp::prepare_with(|s| use_zoom(s, &zoom)).await;
    let manager = Manager::bind();
    let mut daemon = DaemonProcess::start_with_env(
        &app.config_toml(),
        &[],
        &[
            ("NOTIFY_SOCKET", Some(manager.path())),
            ("WATCHDOG_USEC", Some(WATCHDOG_USEC)),
        ],
    );

    let (ready, _) = manager.until_line("READY=1", Duration::from_secs(20)).await;
    let (_, consumers) = app.queue_state(&app.queue).await;
    assert!(
        consumers >= 1,
        "READY=1 came before the daemon consumed; log:\n{}",
        daemon.log()
    );
    assert_eq!(
        status(&ready),
        Some(format!("consuming {}", app.queue).as_str()),
        "READY=1 carries what the daemon does: {ready:?}"
    );

    // Idle: no messages at all.
    let idle = manager.watchdog_pings(3, Duration::from_secs(1)).await;
    assert!(idle >= 3, "{idle} WATCHDOG=1 in 1 s while idle");

    // Busy: one event's Zoom call takes 3 s, in its own task.
    app.publish_json(event("sd-1", "U1", Some("Engineering"), "Sales"))
        .await;
    wait_for_calls(&zoom, 1).await;
    let busy = manager.watchdog_pings(3, Duration::from_millis(1500)).await;
    assert!(
        busy >= 3,
        "{busy} WATCHDOG=1 in 1.5 s during a slow Zoom call"
    );

    daemon.signal("TERM");
    manager
        .until_line("STOPPING=1", Duration::from_secs(5))
        .await;
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)).await, Some(0));
}

#[tokio::test]
async fn systemd_hears_watchdog_pings_and_why_while_the_broker_is_down_but_no_ready() {
    let app = TestApp::prepare_with(|_| {}).await;
    let manager = Manager::bind();
    // Nothing listens there: the supervisor backs off and tries again.
    let nowhere = format!("amqp://guest:guest@{}/%2f", free_local_port());
    let mut daemon = DaemonProcess::start_with_env(
        &app.config_toml(),
        &[],
        &[
            ("AMQP_URL", Some(nowhere.as_str())),
            ("NOTIFY_SOCKET", Some(manager.path())),
            ("WATCHDOG_USEC", Some(WATCHDOG_USEC)),
        ],
    );

    // Until six pings and a reason came (at most 3 s): no READY=1 among them.
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut pings, mut statuses) = (0, Vec::<String>::new());
    let why = |s: &String| s.starts_with("broker unavailable: ");
    while pings < 6 || !statuses.iter().any(why) {
        let Some(message) = manager
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
        else {
            break;
        };
        assert!(
            !message.lines().any(|l| l == "READY=1"),
            "READY=1 without a broker: {message:?}"
        );
        pings += message.lines().filter(|l| *l == "WATCHDOG=1").count();
        statuses.extend(status(&message).map(str::to_owned));
    }
    assert!(
        pings >= 6,
        "{pings} WATCHDOG=1 in 3 s with the broker down; log:\n{}",
        daemon.log()
    );
    assert!(statuses.iter().any(why), "STATUS says why: {statuses:?}");

    daemon.signal("TERM");
    manager
        .until_line("STOPPING=1", Duration::from_secs(5))
        .await;
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn systemd_hears_no_watchdog_pings_meant_for_another_process() {
    // WATCHDOG_PID names another process (a wrapper that did not unset it):
    // sd_watchdog_enabled says no watchdog, and the daemon sends none.
    let app = TestApp::prepare_with(|_| {}).await;
    let manager = Manager::bind();
    let daemon = DaemonProcess::start_with_env(
        &app.config_toml(),
        &[],
        &[
            ("NOTIFY_SOCKET", Some(manager.path())),
            ("WATCHDOG_USEC", Some(WATCHDOG_USEC)),
            ("WATCHDOG_PID", Some("1")),
        ],
    );
    let (_, before) = manager.until_line("READY=1", Duration::from_secs(20)).await;
    let after = manager.watchdog_pings(1, Duration::from_secs(1)).await;
    let early = before
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count();
    assert_eq!(
        (early, after),
        (0, 0),
        "no WATCHDOG=1 for pid {}",
        daemon.id()
    );
}

#[tokio::test]
async fn systemd_hears_ready_from_the_receiver_once_it_listens_with_its_secret_from_a_file() {
    let manager = Manager::bind();
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("zds_ingest_secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").expect("write");
    let config = dir.path().join("config.toml");
    let listen = free_local_port();
    std::fs::write(
        &config,
        format!("[ingest]\nlisten = \"{listen}\"\n[departments]\nSales = \"grp_sales\"\n"),
    )
    .expect("write");
    let url = crate::helpers::amqp_url();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"))
        .args(["ingest", "--config"])
        .arg(&config)
        .env_clear()
        .env("AMQP_URL", &url)
        // Also a figment override's prefix: must not read as a config key.
        .env("ZDS_INGEST_SECRET_FILE", &secret)
        .env("NOTIFY_SOCKET", manager.path())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start ingest");

    let (ready, _) = manager.until_line("READY=1", Duration::from_secs(10)).await;
    assert_eq!(
        status(&ready),
        Some(format!("receiving webhooks on {listen}").as_str())
    );
    tokio::net::TcpStream::connect(listen)
        .await
        .expect("it listens once READY=1 came");

    crate::helpers::sigterm(&child);
    manager
        .until_line("STOPPING=1", Duration::from_secs(5))
        .await;
    assert_eq!(
        crate::helpers::exit_code_within(&mut child, Duration::from_secs(10)).await,
        Some(0),
        "ingest stops on SIGTERM"
    );
}

/// Each unit's `LimitNOFILE=` covers the connection caps of the listeners
/// it runs at their defaults (the daemon's unit may run `run --with-ingest`:
/// `http.listen` and the receiver's two), plus the broker connections,
/// stdio and the listeners themselves.
#[test]
fn the_units_set_limit_nofile_above_the_connection_caps() {
    use zoom_dept_sync::config::http_limits::MAX_CONNECTIONS;
    const RESERVE: u64 = 64;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    for (unit, listeners) in [
        ("zoom-dept-sync.service", 3),
        ("zoom-dept-sync-ingest.service", 2),
    ] {
        let text = std::fs::read_to_string(dir.join(unit)).expect("unit file");
        let limits: Vec<u64> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("LimitNOFILE="))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{unit}: LimitNOFILE={v}"))
            })
            .collect();
        assert_eq!(limits.len(), 1, "{unit}: one LimitNOFILE=");
        let needed = listeners * u64::from(MAX_CONNECTIONS) + RESERVE;
        assert!(
            limits[0] >= needed,
            "{unit}: LimitNOFILE={} is below {needed}",
            limits[0]
        );
    }
}
