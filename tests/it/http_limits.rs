//! Both HTTP servers (the daemon's `http.listen`, the receiver's two
//! listeners) against clients that never finish: header-read, idle and
//! request timeouts, the connection cap, and a prompt exit on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use zoom_dept_sync::config::AmqpSettings;
use zoom_dept_sync::ingest::signature::Secrets;
use zoom_dept_sync::ingest::{self, Ingest, Listen};
use zoom_dept_sync::server::Limits;

use crate::helpers::{TestApp, amqp_url, free_local_port, unique_name};
use crate::process::DaemonProcess;
use crate::proxy::{Proxy, broker_addr, url_via};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Headers that never end (no blank line).
const HALF_HEADERS: &[u8] = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nwebhook-id: ";

/// Short limits, so each clock runs out in a test.
fn short() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(600),
        request_timeout: Duration::from_millis(800),
        max_connections: 4,
    }
}

struct Receiver {
    webhooks: SocketAddr,
    probes: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Publishing through `url` to a queue no one declared: these tests
    /// publish nothing.
    async fn start(limits: Limits, url: String) -> Self {
        let amqp = AmqpSettings {
            url: url.into(),
            queue: unique_name("limits"),
            ..AmqpSettings::default()
        };
        let listen = Listen {
            webhooks: SocketAddr::from(([127, 0, 0, 1], 0)),
            probes: SocketAddr::from(([127, 0, 0, 1], 0)),
            limits,
        };
        let ingest = Arc::new(Ingest::new(&amqp, Secrets::parse(SECRET).unwrap()));
        let shutdown = CancellationToken::new();
        let server = ingest::serve_with(listen, ingest, shutdown.clone())
            .await
            .expect("serve");
        Self {
            webhooks: server.local_addr,
            probes: server.probe_addr,
            shutdown,
            task: server.task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .expect("the receiver stops within 3 s")
            .expect("task");
    }
}

/// Reads until the server closes the connection; what it sent, or `None`
/// if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

async fn half_open(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(HALF_HEADERS).await.expect("write");
    stream
}

/// A whole GET on a new connection: the whole answer, or `None` if none
/// came within `within`.
async fn get_within(addr: SocketAddr, path: &str, within: Duration) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    closed_within(&mut stream, within).await
}

/// Headers that stop half-way are cut off after the header-read timeout,
/// on each listener (the daemon's own is checked below).
async fn assert_half_headers_are_cut(addr: SocketAddr, within: Duration) {
    let mut stream = half_open(addr).await;
    let started = Instant::now();
    let answer = closed_within(&mut stream, within).await;
    assert!(
        answer.is_some(),
        "{addr}: a request whose headers never end is still open after {within:?}"
    );
    eprintln!("{addr}: closed after {:?}", started.elapsed());
}

/// A kept-alive connection that sends nothing more is closed after the
/// idle timeout.
async fn assert_idle_keep_alive_is_closed(addr: SocketAddr, within: Duration) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    assert!(
        closed_within(&mut stream, within).await.is_some(),
        "{addr}: an idle keep-alive connection is still open after {within:?}"
    );
}

#[tokio::test]
async fn ingest_headers_that_never_end_are_cut_on_both_listeners() {
    let r = Receiver::start(short(), amqp_url()).await;
    assert_half_headers_are_cut(r.webhooks, Duration::from_secs(3)).await;
    assert_half_headers_are_cut(r.probes, Duration::from_secs(3)).await;
    r.stop().await;
}

#[tokio::test]
async fn ingest_an_idle_connection_is_closed() {
    let r = Receiver::start(short(), amqp_url()).await;
    assert_idle_keep_alive_is_closed(r.probes, Duration::from_secs(3)).await;
    // A connection that never sends a byte, on the public port.
    let mut silent = TcpStream::connect(r.webhooks).await.expect("connect");
    assert!(
        closed_within(&mut silent, Duration::from_secs(3))
            .await
            .is_some(),
        "a silent connection is still open"
    );
    r.stop().await;
}

#[tokio::test]
async fn ingest_a_body_that_never_ends_is_answered_408_and_closed() {
    let r = Receiver::start(short(), amqp_url()).await;
    let mut stream = TcpStream::connect(r.webhooks).await.expect("connect");
    stream
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"type\":",
        )
        .await
        .expect("write");
    let answer = closed_within(&mut stream, Duration::from_secs(3))
        .await
        .expect("answered and closed within 3 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    r.stop().await;
}

/// At the cap, a connection that only waits for a request makes room for
/// a new one: a real request is answered at once however many half-open
/// connections are held.
#[tokio::test]
async fn ingest_half_open_connections_at_the_cap_do_not_starve_a_request() {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..short()
    };
    let r = Receiver::start(limits, amqp_url()).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(half_open(r.webhooks).await);
    }
    // A GET: 405, but answered, long before any timeout.
    let status = get_within(r.webhooks, "/v1/events", Duration::from_secs(5)).await;
    assert!(
        status
            .as_deref()
            .is_some_and(|s| s.starts_with("HTTP/1.1 405")),
        "{status:?}"
    );
    // Only the cap's worth stay open: the oldest were closed.
    let mut open = 0;
    for stream in &mut held {
        if closed_within(stream, Duration::from_millis(50))
            .await
            .is_none()
        {
            open += 1;
        }
    }
    assert!(open <= 4, "{open} held connections still open, cap 4");
    r.stop().await;
}

/// When every place is handling a request, a new connection waits (in the
/// listen backlog) until one finishes.
#[tokio::test]
async fn ingest_at_the_cap_with_every_request_in_flight_a_new_one_waits() {
    let limits = Limits {
        request_timeout: Duration::from_secs(30),
        ..short()
    };
    let r = Receiver::start(limits, amqp_url()).await;
    let mut in_flight = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(r.webhooks).await.expect("connect");
        stream
            .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .await
            .expect("write");
        in_flight.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = tokio::spawn(get_within(r.webhooks, "/v1/events", Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "served over the cap");
    drop(in_flight);
    let status = waiting.await.expect("task");
    assert!(
        status
            .as_deref()
            .is_some_and(|s| s.starts_with("HTTP/1.1 405")),
        "{status:?}"
    );
    r.stop().await;
}

#[tokio::test]
async fn ingest_shutdown_does_not_wait_for_a_client_that_never_finishes() {
    let r = Receiver::start(Limits::default(), amqp_url()).await;
    let _half = half_open(r.webhooks).await;
    let _body = {
        let mut stream = TcpStream::connect(r.webhooks).await.expect("connect");
        stream
            .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .await
            .expect("write");
        stream
    };
    let _silent = TcpStream::connect(r.probes).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The waiting ones are closed at once; the one mid-body has at most
    // SHUTDOWN_GRACE (5 s) to finish.
    let started = Instant::now();
    r.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(7), r.task)
        .await
        .expect("stopped within the grace")
        .expect("task");
    eprintln!("stopped after {:?}", started.elapsed());
}

// ---- the receiver's probes ---------------------------------------------------

/// The answer's status line and body.
fn split(answer: &str) -> (&str, &str) {
    let status = answer.lines().next().unwrap_or_default();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body)
}

async fn readyz(r: &Receiver) -> String {
    get_within(r.probes, "/readyz", Duration::from_secs(3))
        .await
        .expect("/readyz answered")
}

/// A storm of `/readyz` during an outage opens no broker connection: the
/// answer is what the background check last saw, and names no host, port
/// or file.
#[tokio::test]
async fn ingest_readyz_storm_during_an_outage_opens_no_connection() {
    let proxy = Proxy::start(broker_addr(&amqp_url())).await;
    let r = Receiver::start(Limits::default(), url_via(&amqp_url(), proxy.addr)).await;
    let started = Instant::now();
    while !readyz(&r).await.starts_with("HTTP/1.1 200") {
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.block(true);
    proxy.cut();
    while readyz(&r).await.starts_with("HTTP/1.1 200") {
        assert!(started.elapsed() < Duration::from_secs(20), "still ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = proxy.attempts();
    for _ in 0..50 {
        let answer = readyz(&r).await;
        let (status, body) = split(&answer);
        assert!(status.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(body.starts_with("not ready: "), "{body}");
        for leak in ["/", "127.0.0.1", &proxy.addr.port().to_string()] {
            assert!(!body.contains(leak), "{leak:?} in {body}");
        }
    }
    let storm = proxy.attempts() - before;
    // At most the background check's one attempt (every 5 s) fell in it.
    assert!(storm <= 1, "{storm} connection attempts during 50 /readyz");
    r.stop().await;
}

/// The public port serves `/v1/...` only; the probes are on their own.
#[tokio::test]
async fn ingest_probes_are_not_on_the_webhook_port() {
    let r = Receiver::start(Limits::default(), amqp_url()).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let on_webhooks = get_within(r.webhooks, path, Duration::from_secs(3))
            .await
            .expect("answered");
        assert!(
            on_webhooks.starts_with("HTTP/1.1 404"),
            "{path}: {on_webhooks}"
        );
    }
    let metrics = get_within(r.probes, "/metrics", Duration::from_secs(3))
        .await
        .expect("answered");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("# EOF"), "{metrics}");
    r.stop().await;
}

// ---- the daemon's http.listen ---------------------------------------------

async fn daemon_with_short_limits() -> TestApp {
    TestApp::spawn_with(|s| {
        s.http.header_read_timeout_secs = 1;
        s.http.idle_timeout_secs = 1;
        s.http.max_connections = 4;
    })
    .await
}

#[tokio::test]
async fn daemon_headers_that_never_end_are_cut_and_idle_connections_closed() {
    let mut app = daemon_with_short_limits().await;
    assert_half_headers_are_cut(app.http, Duration::from_secs(4)).await;
    assert_idle_keep_alive_is_closed(app.http, Duration::from_secs(4)).await;
    app.stop().await;
}

#[tokio::test]
async fn daemon_half_open_connections_at_the_cap_do_not_starve_a_probe() {
    let mut app = TestApp::spawn_with(|s| s.http.max_connections = 4).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(half_open(app.http).await);
    }
    let status = get_within(app.http, "/healthz", Duration::from_secs(5)).await;
    assert!(
        status
            .as_deref()
            .is_some_and(|s| s.starts_with("HTTP/1.1 200")),
        "{status:?}"
    );
    app.stop().await;
}

// ---- the real binary and SIGTERM -------------------------------------------

/// Connects to `addr` once it listens (the process is starting).
async fn connect_when_listening(addr: SocketAddr) -> TcpStream {
    let started = Instant::now();
    loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            return stream;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{addr} never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_with_a_half_sent_request_ends_the_daemon_promptly() {
    let app = TestApp::prepare_with(|s| s.http.listen = free_local_port()).await;
    let mut daemon = DaemonProcess::start(&app.config_toml());
    let mut stream = connect_when_listening(app.http).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost")
        .await
        .expect("write");
    app.wait_until_consuming().await;
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(8)).await, Some(0));
}

#[tokio::test]
async fn sigterm_with_a_half_sent_request_ends_the_receiver_promptly() {
    let (webhooks, probes) = (free_local_port(), free_local_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[ingest]\nlisten = \"{webhooks}\"\nprobe_listen = \"{probes}\"\n\
             [amqp]\nqueue = \"{}\"\n[departments]\nSales = \"g\"\n",
            unique_name("limits")
        ),
    )
    .expect("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"))
        .args(["ingest", "--config"])
        .arg(&config)
        .env_clear()
        .env("ZDS_INGEST_SECRET", SECRET)
        .env("AMQP_URL", amqp_url())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start ingest");
    let mut half = connect_when_listening(webhooks).await;
    half.write_all(HALF_HEADERS).await.expect("write");
    let _silent = connect_when_listening(probes).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    crate::helpers::sigterm(&child);
    assert_eq!(
        crate::helpers::exit_code_within(&mut child, Duration::from_secs(8)).await,
        Some(0),
        "the receiver exits within 8 s of SIGTERM"
    );
}
