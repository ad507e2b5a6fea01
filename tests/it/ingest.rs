//! The webhook receiver, in-process, against the real broker: what each
//! answer means on the input queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::BasicGetOptions;
use tokio_util::sync::CancellationToken;
use zoom_dept_sync::config::AmqpSettings;
use zoom_dept_sync::ingest::signature::{Secrets, sign};
use zoom_dept_sync::ingest::{self, Ingest};

use crate::helpers::{ReceiverQueue, amqp_url, exit_code_within, sigterm, unix_now};
use crate::proxy::Proxy;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A receiver on a free port publishing to its own queue, through `url`.
struct Receiver {
    base: String,
    /// `/healthz`, `/readyz`, `/metrics` (`ingest.probe_listen`).
    probes: String,
    target: ReceiverQueue,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    client: reqwest::Client,
}

impl Receiver {
    async fn start() -> Self {
        Self::start_via(amqp_url()).await
    }

    async fn start_via(url: String) -> Self {
        let target = ReceiverQueue::open("ingest", None).await;
        let amqp = target.receiver_settings(url).await;
        let secrets = Secrets::parse(SECRET).expect("secret");
        let shutdown = CancellationToken::new();
        let server = ingest::serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Arc::new(Ingest::new(&amqp, secrets)),
            shutdown.clone(),
        )
        .await
        .expect("serve");
        Self {
            base: format!("http://{}", server.local_addr),
            probes: format!("http://{}", server.probe_addr),
            target,
            shutdown,
            task: server.task,
            client: reqwest::Client::new(),
        }
    }

    /// POSTs `body` signed with the test secret; the status, Retry-After
    /// and body.
    async fn post_signed(&self, id: &str, body: &[u8]) -> (u16, Option<String>, String) {
        post_signed_to(&self.client, &self.base, id, body).await
    }

    async fn post(
        &self,
        id: &str,
        ts: &str,
        signature: &str,
        body: Vec<u8>,
    ) -> (u16, Option<String>, String) {
        post_to(&self.client, &self.base, id, (ts, signature), body).await
    }

    /// GET on the probe listener.
    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.probes))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    async fn ready_messages(&self) -> u32 {
        self.target.ready_messages().await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.target.delete().await;
    }
}

/// POSTs `body` to the receiver at `base`, signed with the test secret.
async fn post_signed_to(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    body: &[u8],
) -> (u16, Option<String>, String) {
    let ts = unix_now().to_string();
    let secrets = Secrets::parse(SECRET).expect("secret");
    let signature = sign(&secrets, id, &ts, body);
    post_to(client, base, id, (&ts, &signature), body.to_vec()).await
}

/// POSTs `body` with `(timestamp, signature)`; the status, Retry-After and
/// body.
async fn post_to(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    (ts, signature): (&str, &str),
    body: Vec<u8>,
) -> (u16, Option<String>, String) {
    let response = client
        .post(format!("{base}/v1/events"))
        .header("webhook-id", id)
        .header("webhook-timestamp", ts)
        .header("webhook-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    crate::helpers::status_retry_after_body(response).await
}

fn event(id: &str) -> Vec<u8> {
    format!(r#"{{"event_id":"{id}","email":"ann@example.com","new_department":"Sales"}}"#)
        .into_bytes()
}

#[tokio::test]
async fn ingest_a_signed_event_is_published_as_sent() {
    let r = Receiver::start().await;
    // Odd spacing: the bytes are published as received, not re-serialised.
    let body = br#"{ "event_id":"e-1",  "zoom_user_id":"U1", "new_department":"Sales" }"#;
    let (status, _, text) = r.post_signed("msg_one", body).await;
    assert_eq!(status, 202, "{text}");
    let got = r
        .target
        .channel
        .basic_get(
            r.target.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("get")
        .expect("a message");
    assert_eq!(got.delivery.data, body.to_vec());
    let properties = &got.delivery.properties;
    assert_eq!(
        properties.message_id().as_ref().map(|s| s.as_str()),
        Some("msg_one")
    );
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    let (status, _, text) = r.post_signed("msg_one", body).await;
    assert_eq!((status, text.contains("duplicate")), (202, true), "{text}");
    assert_eq!(r.ready_messages().await, 0, "a repeat publishes nothing");
    let (status, metrics) = r.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"zoom_dept_sync_ingest_requests_total{source="events",result="accepted"} 1"#,
        r#"zoom_dept_sync_ingest_requests_total{source="events",result="duplicate"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert_eq!(r.get("/readyz").await.0, 200);
    assert_eq!(r.get("/healthz").await.0, 200);
    r.stop().await;
}

#[tokio::test]
async fn ingest_refusals_publish_nothing() {
    let r = Receiver::start().await;
    let ts = unix_now().to_string();
    let body = event("e-2");
    let wrong = sign(
        &Secrets::parse("whsec_b3RoZXI=").expect("secret"),
        "msg_2",
        &ts,
        &body,
    );
    let (status, _, _) = r.post("msg_2", &ts, &wrong, body.clone()).await;
    assert_eq!(status, 401, "wrong secret");
    let stale = (unix_now() - 301).to_string();
    let secrets = Secrets::parse(SECRET).expect("secret");
    let old = sign(&secrets, "msg_2", &stale, &body);
    assert_eq!(r.post("msg_2", &stale, &old, body).await.0, 401, "stale");

    let invalid = br#"{"event_id":"e-3","email":"ann@example.com"}"#;
    let (status, _, text) = r.post_signed("msg_3", invalid).await;
    assert_eq!(status, 400, "{text}");
    let error: serde_json::Value = serde_json::from_str(&text).expect("a JSON error");
    assert_eq!(error["field"], "new_department", "{text}");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("new_department"))
    );

    let big = vec![b' '; 65 * 1024];
    let (status, _, _) = r.post_signed("msg_4", &big).await;
    assert_eq!(status, 413);
    assert_eq!(r.ready_messages().await, 0);
    let (_, metrics) = r.get("/metrics").await;
    for result in ["bad_signature\"} 2", "invalid\"} 1", "too_large\"} 1"] {
        assert!(metrics.contains(result), "{result} in {metrics}");
    }
    r.stop().await;
}

#[tokio::test]
async fn ingest_without_a_broker_answers_503_in_time() {
    let upstream: SocketAddr = "127.0.0.1:5672".parse().expect("addr");
    let proxy = Proxy::start(upstream).await;
    let url = amqp_url().replace("127.0.0.1:5672", &proxy.addr.to_string());
    let r = Receiver::start_via(url).await;
    assert_eq!(r.post_signed("msg_a", &event("e-a")).await.0, 202);

    proxy.block(true);
    proxy.cut();
    let started = Instant::now();
    let (status, retry_after, text) = r.post_signed("msg_b", &event("e-b")).await;
    assert_eq!(status, 503, "{text}");
    assert!(retry_after.is_some(), "Retry-After");
    // The cause is the operator's (log, /readyz), not the sender's.
    assert_eq!(
        text,
        r#"{"error":"the event could not be queued now; retry later"}"#
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.get("/readyz").await.0, 503);
    assert_eq!(r.ready_messages().await, 1, "only the first");

    // Back: the sender's retry of the same id goes through, once.
    proxy.block(false);
    let (status, _, text) = r.post_signed("msg_b", &event("e-b")).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(r.post_signed("msg_b", &event("e-b")).await.0, 202);
    assert_eq!(r.ready_messages().await, 2);
    r.stop().await;
}

#[tokio::test]
async fn ingest_a_closed_port_answers_503_in_time() {
    let closed = crate::helpers::free_local_port();
    let r = Receiver::start_via(format!("amqp://guest:guest@{closed}/%2f")).await;
    let started = Instant::now();
    let (status, retry_after, _) = r.post_signed("msg_c", &event("e-c")).await;
    assert_eq!((status, retry_after.is_some()), (503, true));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(r.ready_messages().await, 0);
    r.stop().await;
}

/// The receiver's exchange is deleted under it: every webhook gets 503, and
/// `/readyz` names the missing exchange, steadily (no flapping to "ready"
/// each time the background check reconnects), until it is back.
#[tokio::test]
async fn ingest_without_its_exchange_readyz_names_it_until_it_is_back() {
    let logs = crate::helpers::LogCapture::start();
    let r = Receiver::start().await;
    let exchange = format!("{}.in", r.target.queue);
    r.target
        .channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .expect("delete the receiver's exchange");
    let (status, _, text) = r.post_signed("msg_x", &event("e-x")).await;
    assert_eq!(status, 503, "{text}");
    let named = format!("exchange {exchange} does not exist");
    // Until one round of the background check (every 5 s) has looked for
    // the exchange and logged that it failed: every read names it.
    let round = "trying again in 5 s";
    let rounds_before = logs.count(round);
    let started = Instant::now();
    let mut reads = 0;
    while logs.count(round) == rounds_before {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "no background check logged within 8 s"
        );
        let (status, body) = r.get("/readyz").await;
        assert_eq!(status, 503, "read {reads}: {body}");
        assert!(body.contains(&named), "read {reads}: {body}");
        reads += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, body) = r.get("/readyz").await;
    assert_eq!(status, 503, "after the round: {body}");
    assert!(body.contains(&named), "after the round: {body}");

    // Back (declared and bound): the background check sees it.
    let amqp = AmqpSettings {
        queue: r.target.queue.clone(),
        ..AmqpSettings::default()
    };
    crate::helpers::declare_input_exchange(&amqp).await;
    crate::helpers::eventually("ready again", Duration::from_secs(8), || async {
        r.get("/readyz").await.0 == 200
    })
    .await;
    assert_eq!(r.post_signed("msg_x", &event("e-x")).await.0, 202);
    assert_eq!(r.ready_messages().await, 1);
    r.stop().await;
}

#[tokio::test]
async fn ingest_a_thousand_concurrent_posts_are_a_thousand_messages() {
    let r = Arc::new(Receiver::start().await);
    let post_all = |ids: Vec<usize>| {
        let r = Arc::clone(&r);
        async move {
            let tasks: Vec<_> = ids
                .into_iter()
                .map(|n| {
                    let r = Arc::clone(&r);
                    tokio::spawn(async move {
                        r.post_signed(&format!("msg_{n}"), &event(&format!("e-{n}")))
                            .await
                            .0
                    })
                })
                .collect();
            let mut statuses = Vec::new();
            for task in tasks {
                statuses.push(task.await.expect("task"));
            }
            statuses
        }
    };
    let statuses = post_all((0..1000).collect()).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    assert_eq!(r.ready_messages().await, 1000);
    let statuses = post_all((0..1000).step_by(10).collect()).await;
    assert_eq!(statuses.len(), 100);
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    assert_eq!(r.ready_messages().await, 1000);
    let (_, metrics) = r.get("/metrics").await;
    assert!(metrics.contains("result=\"duplicate\"} 100"), "{metrics}");
    let Ok(r) = Arc::try_unwrap(r) else {
        panic!("receiver still shared")
    };
    r.stop().await;
}

/// `zoom-dept-sync ingest --config` with only `env` (no ZOOM_* secrets).
fn ingest_command(
    config: &str,
    env: &[(&str, &str)],
) -> (std::process::Command, tempfile::TempDir) {
    binary(&["ingest"], config, env)
}

/// The binary with `args`, then `--config` (a temp file holding `config`),
/// and only `env`.
fn binary(
    args: &[&str],
    config: &str,
    env: &[(&str, &str)],
) -> (std::process::Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("write config");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"));
    command
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null());
    (command, dir)
}

#[test]
fn ingest_without_a_valid_secret_exits_2_naming_it() {
    let config = "[departments]\nSales = \"grp_sales\"\n";
    for secret in [
        None,
        Some(""),
        Some("abc"),
        Some("whsec_!!"),
        Some("whsec_"),
    ] {
        let env: Vec<(&str, &str)> = secret
            .map(|s| vec![("ZDS_INGEST_SECRET", s)])
            .unwrap_or_default();
        let (mut command, _dir) = ingest_command(config, &env);
        let output = command.output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        assert_eq!(output.status.code(), Some(2), "{secret:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("ZDS_INGEST_SECRET"), "{stderr}");
        assert!(
            !stderr.contains("ZOOM_"),
            "ingest needs no Zoom secret: {stderr}"
        );
    }
}

/// Arguments, extra environment, the variable the error must name.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn ingest_bamboohr_without_its_secrets_exits_2_naming_them() {
    let config =
        "[ingest.bamboohr]\ncompany_domain = \"acme\"\n[departments]\nSales = \"grp_sales\"\n";
    let zoom = [
        ("ZOOM_ACCOUNT_ID", "x"),
        ("ZOOM_CLIENT_ID", "x"),
        ("ZOOM_CLIENT_SECRET", "x"),
    ];
    let cases: [Case; 4] = [
        (&["ingest"], &[], "BAMBOOHR_WEBHOOK_KEY"),
        (
            &["ingest"],
            &[("BAMBOOHR_WEBHOOK_KEY", " ")],
            "BAMBOOHR_WEBHOOK_KEY",
        ),
        (
            &["ingest"],
            &[("BAMBOOHR_WEBHOOK_KEY", "k")],
            "BAMBOOHR_API_KEY",
        ),
        (
            &["run", "--with-ingest"],
            &[("BAMBOOHR_API_KEY", "k")],
            "BAMBOOHR_WEBHOOK_KEY",
        ),
    ];
    for (args, extra, named) in cases {
        let mut env = vec![("ZDS_INGEST_SECRET", SECRET)];
        env.extend_from_slice(&zoom);
        env.extend_from_slice(extra);
        let (mut command, _dir) = binary(args, config, &env);
        let output = command.output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?} {extra:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(named), "{named} in {stderr}");
    }
}

#[tokio::test]
async fn ingest_the_binary_receives_without_zoom_secrets_and_stops_on_sigterm() {
    let listen = crate::helpers::free_local_port();
    let r = Receiver::start().await;
    let config = format!(
        "[amqp]\nqueue = \"{}\"\n[ingest]\nlisten = \"{listen}\"\n[departments]\nSales = \"grp_sales\"\n",
        r.target.queue
    );
    let url = amqp_url();
    let env = [("ZDS_INGEST_SECRET", SECRET), ("AMQP_URL", url.as_str())];
    let (command, _dir) = ingest_command(&config, &env);
    let mut child = tokio::process::Command::from(command)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ingest");
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "ingest did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, text) = post_signed_to(&client, &base, "msg_bin", &event("e-bin")).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(r.ready_messages().await, 1);
    sigterm(&child);
    assert_eq!(
        exit_code_within(&mut child, Duration::from_secs(10)).await,
        Some(0),
        "ingest stops on SIGTERM"
    );
    r.stop().await;
}

#[tokio::test]
async fn ingest_run_with_ingest_receives_and_consumes_in_one_process() {
    use crate::helpers::{ACCOUNT_ID, CLIENT_ID, CLIENT_SECRET, TestApp, groups_of, mapped_zoom};
    let seed = mapped_zoom().user("ANN1", "ann@example.com", &["grp_eng"]);
    let zoom = crate::helpers::spawn_zoom(seed).await;
    let app = TestApp::prepare_with(|s| crate::helpers::use_zoom(s, &zoom)).await;
    let listen = crate::helpers::free_local_port();
    let probes = crate::helpers::free_local_port();
    let config = format!(
        "{}\n[ingest]\nlisten = \"{listen}\"\nprobe_listen = \"{probes}\"\n",
        app.config_toml()
    );
    let url = amqp_url();
    let env = [
        ("ZDS_INGEST_SECRET", SECRET),
        ("AMQP_URL", url.as_str()),
        ("ZOOM_ACCOUNT_ID", ACCOUNT_ID),
        ("ZOOM_CLIENT_ID", CLIENT_ID),
        ("ZOOM_CLIENT_SECRET", CLIENT_SECRET),
    ];
    let (command, _dir) = binary(&["run", "--with-ingest"], &config, &env);
    let mut child = tokio::process::Command::from(command)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start run --with-ingest");
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    let started = Instant::now();
    while client
        .get(format!("http://{probes}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the receiver is not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, text) = post_signed_to(&client, &base, "msg_run", &event("e-run")).await;
    assert_eq!(status, 202, "{text}");
    // The consumer in the same process takes it and Ann moves in Zoom.
    crate::helpers::eventually("Ann is in Sales", Duration::from_secs(20), || async {
        groups_of(&zoom, "ANN1") == ["grp_sales"]
    })
    .await;
    sigterm(&child);
    assert_eq!(
        exit_code_within(&mut child, Duration::from_secs(40)).await,
        Some(0),
        "run --with-ingest stops on SIGTERM"
    );
    assert!(
        client.get(format!("{base}/healthz")).send().await.is_err(),
        "the receiver stopped too"
    );
}
