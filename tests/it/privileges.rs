//! Least privilege, proved on the real broker: the daemon, the receiver's
//! publisher and the operator's commands each run as a broker user
//! that holds exactly the permissions docs/deployment.md's "Least privilege" section
//! gives (the regexes below are built the same way, for each test's own
//! queue names), and two controls without `configure` show that the tests
//! can fail.
//!
//! Users are created with the management HTTP API
//! (`RABBITMQ_MANAGEMENT_URL`, else port 15672 of `AMQP_URL`'s host, with
//! `AMQP_URL`'s credentials) and deleted at the end, failed or not.

use std::process::{Command, Output};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;
use zoom_dept_sync::broker::admin::Admin;
use zoom_dept_sync::broker::event_publisher::EventPublisher;
use zoom_dept_sync::broker::topology::{Topology, regex_escape};
use zoom_dept_sync::config::{AmqpSettings, Settings};
use zoom_fake::FakeHandle;

use crate::helpers::{
    TestApp, Tool, amqp_url, event, eventually, header_int, header_str, unique_name,
};
use crate::trail::{self, Trail};

/// One user's configure, write and read regexes on the vhost.
#[derive(Clone, Debug)]
struct Permissions {
    configure: String,
    write: String,
    read: String,
}

const DEFAULT_EXCHANGE: &str = r"^amq\.default$";

/// docs/deployment.md: the daemon; `declare` is `amqp.declare_topology`.
fn daemon(queue: &str, declare: bool) -> Permissions {
    let q = regex_escape(queue);
    if declare {
        // The receiver's exchange `<queue>.in` too: declare it, bind the
        // input queue to it (write on the queue, read on the exchange).
        Permissions {
            configure: format!(r"^{q}(\.dead|\.in)?$"),
            write: format!(r"^(amq\.default|{q})$"),
            read: format!(r"^{q}(\.in)?$"),
        }
    } else {
        Permissions {
            configure: String::new(),
            write: DEFAULT_EXCHANGE.into(),
            read: format!("^{q}$"),
        }
    }
}

/// docs/deployment.md: the daemon with `[outcomes] exchange` and `stream`.
fn daemon_with_trail(queue: &str, exchange: &str, stream: &str, declare: bool) -> Permissions {
    let (q, x, s) = (
        regex_escape(queue),
        regex_escape(exchange),
        regex_escape(stream),
    );
    if declare {
        Permissions {
            configure: format!(r"^({q}(\.dead|\.in)?|{x}|{s})$"),
            write: format!(r"^(amq\.default|{q}|{x}|{s})$"),
            read: format!(r"^({q}(\.in)?|{x})$"),
        }
    } else {
        Permissions {
            configure: String::new(),
            write: format!(r"^(amq\.default|{x})$"),
            read: format!("^{q}$"),
        }
    }
}

/// docs/deployment.md: the receiver alone (`ingest`, `run --with-ingest`'s receiver).
fn receiver(amqp: &AmqpSettings) -> Permissions {
    Permissions {
        configure: String::new(),
        write: format!("^{}$", regex_escape(&amqp.input_exchange())),
        read: String::new(),
    }
}

/// docs/deployment.md: an operator (`check`, `status`, `dead-letters`, `publish`,
/// `reconcile --apply`, `history` of `stream`).
fn operator(queue: &str, stream: &str) -> Permissions {
    let (q, s) = (regex_escape(queue), regex_escape(stream));
    Permissions {
        configure: format!(r"^{q}(\.dead)?$"),
        write: DEFAULT_EXCHANGE.into(),
        read: format!(r"^({q}\.dead|{s})$"),
    }
}

/// The broker's management API, as the admin of `AMQP_URL`.
#[derive(Clone)]
struct Management {
    base: String,
    user: String,
    password: String,
    vhost: String,
}

impl Management {
    fn from_env() -> Self {
        let amqp = Url::parse(&amqp_url()).expect("AMQP_URL is a URL");
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let base = std::env::var("RABBITMQ_MANAGEMENT_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("http://{}:15672", amqp.host_str().unwrap_or("127.0.0.1")));
        let vhost = decode(amqp.path().trim_start_matches('/'));
        Self {
            base: base.trim_end_matches('/').to_owned(),
            user: decode(amqp.username()),
            password: decode(amqp.password().unwrap_or("")),
            vhost: if vhost.is_empty() { "/".into() } else { vhost },
        }
    }

    fn encoded_vhost(&self) -> String {
        utf8_percent_encode(&self.vhost, NON_ALPHANUMERIC).to_string()
    }

    async fn put(&self, path: &str, body: serde_json::Value) {
        let response = reqwest::Client::new()
            .put(format!("{}/api/{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("management API at {}: {e}", self.base));
        let status = response.status();
        assert!(
            status.is_success(),
            "PUT /api/{path}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }

    async fn delete_user(&self, name: &str) {
        let _ = reqwest::Client::new()
            .delete(format!("{}/api/users/{name}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await;
    }
}

/// A broker user of its own, deleted when dropped (even when the test
/// failed).
struct BrokerUser {
    name: String,
    password: String,
    management: Management,
}

impl BrokerUser {
    /// A new user with `tags` ("" or e.g. "management") and `permissions`
    /// on `AMQP_URL`'s vhost.
    async fn create(role: &str, tags: &str, permissions: &Permissions) -> Self {
        let management = Management::from_env();
        let name = format!(
            "zds-test-{role}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        );
        let password = format!("pw-{}", fastrand::u64(..));
        management
            .put(
                &format!("users/{name}"),
                serde_json::json!({"password": password, "tags": tags}),
            )
            .await;
        let user = Self {
            name,
            password,
            management,
        };
        user.set(permissions).await;
        user
    }

    async fn set(&self, permissions: &Permissions) {
        self.management
            .put(
                &format!(
                    "permissions/{}/{}",
                    self.management.encoded_vhost(),
                    self.name
                ),
                serde_json::json!({
                    "configure": permissions.configure,
                    "write": permissions.write,
                    "read": permissions.read,
                }),
            )
            .await;
    }

    /// `AMQP_URL` with this user's credentials.
    fn url(&self) -> String {
        let mut url = Url::parse(&amqp_url()).expect("AMQP_URL is a URL");
        url.set_username(&self.name).expect("set user");
        url.set_password(Some(&self.password))
            .expect("set password");
        url.to_string()
    }

    /// `amqp` connecting as this user.
    fn amqp(&self, amqp: &AmqpSettings) -> AmqpSettings {
        AmqpSettings {
            url: self.url().into(),
            ..amqp.clone()
        }
    }
}

impl Drop for BrokerUser {
    /// On a thread with its own runtime: the test's runtime may be the one
    /// being dropped.
    fn drop(&mut self) {
        let (management, name) = (self.management.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(management.delete_user(&name));
            }
        })
        .join();
    }
}

/// A daemon in-process with its own settings (the test's `TestApp` keeps
/// the admin's, to look at the queues).
struct Daemon {
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), zoom_dept_sync::startup::StartError>>>,
}

impl Daemon {
    fn spawn(settings: &Settings) -> Self {
        let shutdown = CancellationToken::new();
        let run = zoom_dept_sync::startup::run(settings.clone(), shutdown.clone());
        Self {
            shutdown,
            task: Some(tokio::spawn(run)),
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(40), task)
                .await
                .expect("the daemon stops within its grace")
                .expect("daemon task")
                .expect("daemon result");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The admin's settings, connecting as `user`.
fn as_user(app: &TestApp, user: &BrokerUser) -> Settings {
    let mut settings = app.settings.clone();
    settings.amqp = user.amqp(&app.settings.amqp);
    settings
}

async fn wait_until_consuming(app: &TestApp) {
    eventually(
        "the daemon consumes the input queue",
        Duration::from_secs(20),
        || async {
            app.try_queue_state(&app.queue)
                .await
                .is_some_and(|(_, consumers)| consumers >= 1)
        },
    )
    .await;
}

const GOOD_USER: &str = "PrivOk1";
const GOOD_PATCH: &str = "/v2/groups/grp_eng/members/PrivOk1";

/// zoom-fake with `GOOD_USER` in Engineering, and no `nobody@example.com`.
async fn privileged_zoom() -> FakeHandle {
    crate::helpers::spawn_zoom(crate::helpers::mapped_zoom().user(
        GOOD_USER,
        "privok1@example.com",
        &["grp_eng"],
    ))
    .await
}

fn good_event(id: &str) -> serde_json::Value {
    event(id, GOOD_USER, Some("Engineering"), "Sales")
}

/// An event for a person Zoom does not know: dead-lettered.
fn unknown_person(id: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": id, "email": "nobody@example.com", "new_department": "Sales",
    })
}

/// `GOOD_USER`'s moves zoom-fake took.
fn patches(zoom: &FakeHandle) -> usize {
    zoom.api_requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == GOOD_PATCH && r.status == Some(204))
        .count()
}

/// The good event was applied (Zoom got its PATCH) and the other one is
/// in the dead-letter queue, rejected by Zoom.
async fn assert_applied_and_dead_lettered(app: &TestApp, zoom: &FakeHandle, bad_id: &str) {
    eventually("Zoom gets the PATCH", Duration::from_secs(20), || async {
        patches(zoom) == 1
    })
    .await;
    assert_eq!(crate::helpers::groups_of(zoom, GOOD_USER), ["grp_sales"]);
    let letters = app.dead_letters(1).await;
    assert_eq!(
        letters[0]
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some(bad_id)
    );
    assert_eq!(
        header_str(&letters[0], "failure-reason").as_deref(),
        Some("zoom_rejected")
    );
    assert_eq!(header_int(&letters[0], "zoom-error-code"), Some(1001));
}

/// `amqp.declare_topology = true` on a fresh broker: the daemon declares
/// both queues (the input queue with its dead-letter arguments), consumes,
/// applies one event and dead-letters another, with nothing more than the
/// documented regexes.
#[tokio::test]
async fn the_daemon_that_declares_its_queues_needs_only_the_documented_permissions() {
    let zoom = privileged_zoom().await;
    let app = TestApp::prepare_with(|s| {
        s.amqp.declare_topology = true;
        crate::helpers::use_zoom(s, &zoom);
    })
    .await;
    // A fresh deployment: the daemon creates the queues itself.
    app.delete_queue(&app.queue).await;
    app.delete_queue(&app.dead_letter_queue).await;
    let exchange = app.settings.amqp.input_exchange();
    app.channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .expect("delete the receiver's exchange");
    let user = BrokerUser::create("daemon", "", &daemon(&app.queue, true)).await;

    let daemon = Daemon::spawn(&as_user(&app, &user));
    wait_until_consuming(&app).await;
    app.publish_json(good_event("priv-a-ok")).await;
    app.publish_json(unknown_person("priv-a-bad")).await;
    assert_applied_and_dead_lettered(&app, &zoom, "priv-a-bad").await;
    daemon.stop().await;

    assert_eq!(app.queue_state(&app.queue).await.0, 0, "input queue empty");
    // Declared by the daemon with the arguments it declares them with.
    let guest = Admin::connect(&app.settings.amqp, "test").await.unwrap();
    let topology = Topology::new(&app.settings.amqp);
    for queue in [&app.queue, &app.dead_letter_queue] {
        guest
            .check_arguments(&topology, queue)
            .await
            .unwrap_or_else(|e| panic!("{queue}: {e}"));
    }
    guest.close().await;
    // And the receiver's exchange, bound: the receiver's events arrive.
    let receiver = BrokerUser::create("ingest", "", &receiver(&app.settings.amqp)).await;
    let publish = EventPublisher::new(&receiver.amqp(&app.settings.amqp));
    let deadline = Instant::now() + Duration::from_secs(10);
    publish
        .publish(
            good_event("priv-a-in").to_string().as_bytes(),
            "priv-a-in",
            deadline,
        )
        .await
        .unwrap_or_else(|e| panic!("through the exchange the daemon declared: {e}"));
    publish.close().await;
    assert_eq!(
        app.queue_state(&app.queue).await.0,
        1,
        "routed to the input queue"
    );
}

/// No exchange (`declare_topology = false` and the operator has not made
/// it): the receiver's publish fails with an error that names it, rather
/// than the event vanishing.
#[tokio::test]
async fn without_its_exchange_the_receiver_says_which_is_missing() {
    let app = TestApp::prepare_with(|s| s.amqp.input_exchange = Some(unique_name("nowhere"))).await;
    let exchange = app.settings.amqp.input_exchange();
    app.channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .expect("delete the receiver's exchange");
    let publish = EventPublisher::new(&app.settings.amqp);
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = publish
        .publish(b"{}", "priv-g", deadline)
        .await
        .expect_err("no exchange, no publish");
    assert!(
        error
            .to_string()
            .contains(&format!("exchange {exchange} does not exist")),
        "{error}"
    );
    // Bound to nothing: the broker returns the event (mandatory).
    app.channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let error = publish
        .publish(b"{}", "priv-g", deadline)
        .await
        .expect_err("no binding, no publish");
    assert!(
        error.to_string().contains("routes nothing to queue"),
        "{error}"
    );
    publish.close().await;
    let _ = app
        .channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}

/// `amqp.declare_topology = false`: the queues exist (the operator's), the
/// daemon only checks them (passive declares need no permission) and needs
/// write on the default exchange and read on the input queue. The events
/// come through the receiver's publisher, whose user may only write to the
/// default exchange.
#[tokio::test]
async fn the_daemon_on_an_existing_topology_needs_only_write_and_read() {
    let zoom = privileged_zoom().await;
    let app = TestApp::prepare_with(|s| {
        s.amqp.declare_topology = false;
        crate::helpers::use_zoom(s, &zoom);
    })
    .await;
    let user = BrokerUser::create("daemon", "", &daemon(&app.queue, false)).await;
    let receiver = BrokerUser::create("ingest", "", &receiver(&app.settings.amqp)).await;

    let daemon = Daemon::spawn(&as_user(&app, &user));
    wait_until_consuming(&app).await;
    let publish = EventPublisher::new(&receiver.amqp(&app.settings.amqp));
    for (id, body) in [
        ("priv-b-ok", good_event("priv-b-ok")),
        ("priv-b-bad", unknown_person("priv-b-bad")),
    ] {
        let deadline = Instant::now() + Duration::from_secs(10);
        publish
            .publish(body.to_string().as_bytes(), id, deadline)
            .await
            .unwrap_or_else(|e| panic!("the receiver publishes {id}: {e}"));
    }
    publish.close().await;
    assert_applied_and_dead_lettered(&app, &zoom, "priv-b-bad").await;
    daemon.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0, "input queue empty");
}

/// The control: `declare_topology = true` without `configure` on a broker
/// where the dead-letter queue does not exist yet. The daemon cannot open a
/// session (the broker refuses the declare), so it does not consume: the
/// event stays in the queue, Zoom gets nothing and `/readyz` stays 503.
/// Granting the documented `configure` lets the next attempt through,
/// without a restart.
#[tokio::test]
async fn without_configure_the_daemon_cannot_declare_its_queues() {
    let zoom = privileged_zoom().await;
    let app = TestApp::prepare_with(|s| {
        s.amqp.declare_topology = true;
        crate::helpers::use_zoom(s, &zoom);
    })
    .await;
    app.delete_queue(&app.dead_letter_queue).await;
    let documented = daemon(&app.queue, true);
    let refused = Permissions {
        configure: String::new(),
        ..documented.clone()
    };
    let user = BrokerUser::create("daemon", "", &refused).await;
    app.publish_json(good_event("priv-c-ok")).await;

    let daemon = Daemon::spawn(&as_user(&app, &user));
    eventually(
        "/readyz names the refusal",
        Duration::from_secs(10),
        || async {
            // The daemon may not listen yet: that is "not yet", not a failure.
            let url = format!("http://{}/readyz", app.http);
            match reqwest::get(url).await {
                Ok(r) => r
                    .text()
                    .await
                    .unwrap_or_default()
                    .contains("ACCESS_REFUSED"),
                Err(_) => false,
            }
        },
    )
    .await;
    // Refused, and a second long for a consumer or a Zoom call to appear.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(
            app.queue_state(&app.queue).await,
            (1, 0),
            "the event stays in the queue and nobody consumes it"
        );
        assert_eq!(patches(&zoom), 0, "Zoom gets nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = app.http_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("not connected to the broker yet") && body.contains("ACCESS_REFUSED"),
        "readiness says why: {body}"
    );
    assert!(
        app.try_queue_state(&app.dead_letter_queue).await.is_none(),
        "the dead-letter queue was not declared"
    );

    // Why: the same user connects, and the broker refuses it the declare.
    let connection = Connection::connect(&user.url(), ConnectionProperties::default())
        .await
        .expect("the user may connect to the vhost");
    let channel = connection.create_channel().await.unwrap();
    let topology = Topology::new(&app.settings.amqp);
    let declared = channel
        .queue_declare(
            app.dead_letter_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            topology.arguments(&app.dead_letter_queue),
        )
        .await;
    let error = declared.expect_err("no configure, no declare").to_string();
    assert!(error.contains("ACCESS_REFUSED"), "{error}");
    let _ = connection.close(200, "done".into()).await;

    user.set(&documented).await;
    eventually(
        "the daemon consumes once it may declare",
        Duration::from_secs(20),
        || async { patches(&zoom) == 1 },
    )
    .await;
    daemon.stop().await;
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
}

/// The audit trail: with `declare_topology = true` the daemon declares the
/// exchange and the stream and binds them; with `false` it only checks them
/// and publishes to the exchange. `history` needs read on the stream.
#[tokio::test]
async fn the_audit_trail_and_history_need_only_the_documented_permissions() {
    let trail = Trail::new();
    let zoom = privileged_zoom().await;
    let app = TestApp::prepare_with(|s| {
        s.outcomes = trail.settings("1h");
        crate::helpers::use_zoom(s, &zoom);
    })
    .await;

    let runs = [(true, "priv-d-declared"), (false, "priv-d-checked")];
    for (declare, id) in runs {
        // Each run moves GOOD_USER out of Engineering again.
        zoom.reset();
        let permissions = daemon_with_trail(&app.queue, &trail.exchange, &trail.stream, declare);
        let user = BrokerUser::create("daemon", "", &permissions).await;
        let mut settings = as_user(&app, &user);
        settings.amqp.declare_topology = declare;
        let daemon = Daemon::spawn(&settings);
        wait_until_consuming(&app).await;
        app.publish_json(good_event(id)).await;
        eventually("the event is settled", Duration::from_secs(20), || async {
            app.queue_state(&app.queue).await.0 == 0 && patches(&zoom) == 1
        })
        .await;
        daemon.stop().await;
    }

    // Both records are there, and an operator reads them with `history`.
    let records = trail.records(&app).await;
    for id in ["priv-d-declared", "priv-d-checked"] {
        assert_eq!(trail::of(&records, id).len(), 1, "{id}: {records:?}");
    }
    let reader = BrokerUser::create("operator", "", &operator(&app.queue, &trail.stream)).await;
    let commands = Commands::new(&app, &reader, "");
    let (code, out, err) = commands
        .run(&["history", "--user", GOOD_USER, "--json"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("priv-d-declared") && out.contains("priv-d-checked"),
        "{out}{err}"
    );
    trail.delete(&app).await;
}

/// A dead letter as the daemon writes it (the headers `dead-letters` reads).
async fn put_dead_letter(app: &TestApp, id: &str) {
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    let mut headers = FieldTable::default();
    headers.insert("failure-reason".into(), text("zoom_rejected"));
    headers.insert("failed-at".into(), text("2026-11-26T10:00:00Z"));
    headers.insert("failure-attempts".into(), AMQPValue::LongLongInt(1));
    headers.insert("source-queue".into(), text(&app.queue));
    headers.insert("zoom-error-code".into(), AMQPValue::LongLongInt(1001));
    headers.insert("zoom-http-status".into(), AMQPValue::LongLongInt(404));
    app.channel
        .basic_publish(
            "".into(),
            app.dead_letter_queue.as_str().into(),
            BasicPublishOptions::default(),
            good_event(id).to_string().as_bytes(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(id.into())
                .with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

/// The binary, configured for `app` and connecting as `user`.
struct Commands {
    tool: Tool,
    url: String,
}

impl Commands {
    fn new(app: &TestApp, user: &BrokerUser, extra: &str) -> Self {
        Self {
            tool: Tool::new(app, extra),
            url: user.url(),
        }
    }

    /// (exit code, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"));
        command.args(args).arg("--config").arg(self.tool.config());
        crate::helpers::clean_env(&mut command, &self.url);
        let Output {
            status,
            stdout,
            stderr,
        } = tokio::process::Command::from(command)
            .output()
            .await
            .expect("run zoom-dept-sync");
        (
            status.code().unwrap_or(-1),
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        )
    }
}

/// The operator's commands with the documented operator permissions and
/// the `management` tag (for `status`'s management API call): `check`,
/// `status`, `dead-letters list | replay | purge` and `publish`. Without
/// `configure`, `dead-letters` cannot even list: it redeclares the
/// dead-letter queue to check its arguments.
#[tokio::test]
async fn the_operator_commands_need_only_the_documented_permissions() {
    let app = TestApp::prepare_with(|_| {}).await;
    let management = Management::from_env();
    // Read on a trail too, as docs/deployment.md gives it (`history` is proved above).
    let stream = unique_name("trail");
    let permissions = operator(&app.queue, &stream);
    let user = BrokerUser::create("operator", "management", &permissions).await;
    let commands = Commands::new(
        &app,
        &user,
        &format!("management_url = {:?}\n", management.base),
    );
    put_dead_letter(&app, "priv-e-1").await;
    put_dead_letter(&app, "priv-e-2").await;

    let (code, out, err) = commands.run(&["check"]).await;
    for queue in [&app.queue, &app.dead_letter_queue] {
        assert!(
            out.contains(&format!(
                "[ok]   queue: {queue} exists with the expected arguments"
            )),
            "{code}\n{out}{err}"
        );
    }
    assert!(
        out.contains(&format!(
            "[ok]   input exchange: {} exists (the receiver publishes through it)",
            app.settings.amqp.input_exchange()
        )),
        "{code}\n{out}{err}"
    );

    let (code, out, err) = commands.run(&["dead-letters", "list", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("priv-e-1") && out.contains("priv-e-2"),
        "{out}"
    );

    // Exit 1 only because no daemon answers `/readyz` here.
    let (code, out, err) = commands.run(&["status", "--json"]).await;
    assert_eq!(code, 1, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(status["readyz"].is_null(), "{status}");
    assert_eq!(status["input"]["ready"], 0, "{status}");
    assert_eq!(status["dead_letters"], 2, "{status}");
    assert_eq!(status["dead_letters_by_reason"]["zoom_rejected"], 2);
    assert!(status["management_error"].is_null(), "{status}");
    assert_eq!(status["details"]["consumers"], 0, "{status}");

    let (code, out, err) = commands
        .run(&["dead-letters", "replay", "--event-id", "priv-e-1", "--yes"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(app.queue_state(&app.queue).await.0, 1, "replayed");

    let (code, out, err) = commands
        .run(&["dead-letters", "purge", "--all", "--no-export", "--yes"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(app.queue_state(&app.dead_letter_queue).await.0, 0, "purged");

    let file = commands.tool.dir().join("events.jsonl");
    std::fs::write(&file, good_event("priv-e-3").to_string()).unwrap();
    let (code, out, err) = commands
        .run(&["publish", "--file", file.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(app.queue_state(&app.queue).await.0, 2, "published");

    // The control: no configure, and `dead-letters` stops at its check.
    user.set(&Permissions {
        configure: String::new(),
        ..permissions
    })
    .await;
    put_dead_letter(&app, "priv-e-4").await;
    let (code, out, err) = commands.run(&["dead-letters", "list", "--json"]).await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("ACCESS_REFUSED") && err.contains("needs configure and read"),
        "{err}"
    );
}

/// Why a forged publish was not taken.
#[derive(Debug, thiserror::Error)]
enum NotTaken {
    #[error("no confirm")]
    NoConfirm,
    #[error("nacked")]
    Nacked,
    #[error("{0}")]
    Broker(#[from] lapin::Error),
}

/// As `user`, publishes `body` through `exchange` with `routing_key`,
/// `mandatory`, and waits for the confirm: `Ok(true)` routed and taken,
/// `Ok(false)` returned unroutable, `Err` refused (the broker closes the
/// channel: ACCESS_REFUSED).
async fn forge(
    user: &BrokerUser,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<bool, NotTaken> {
    let connection = Connection::connect(&user.url(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    let confirmed = zoom_dept_sync::broker::confirm::publish_confirmed(
        &channel,
        exchange,
        routing_key,
        body,
        properties,
    );
    let answer = match tokio::time::timeout(Duration::from_secs(10), confirmed).await {
        Err(_) => Err(NotTaken::NoConfirm),
        Ok(Err(e)) => Err(NotTaken::Broker(e)),
        Ok(Ok(confirmation)) if confirmation.is_nack() => Err(NotTaken::Nacked),
        Ok(Ok(confirmation)) => Ok(confirmation.take_message().is_none()),
    };
    let _ = connection.close(200, "done".into()).await;
    answer
}

/// The receiver's documented grant publishes events end to end, and
/// nothing else: neither a dead letter (the dead-letter queue, through the
/// default exchange or through its own exchange) nor an audit-trail record
/// (the outcome exchange), which `dead-letters` and `history` would show as
/// genuine.
#[tokio::test]
async fn the_receiver_publishes_events_but_can_forge_no_dead_letter_and_no_trail_record() {
    let trail = Trail::new();
    let zoom = privileged_zoom().await;
    let mut app = TestApp::prepare_with(|s| {
        s.outcomes = trail.settings("1h");
        crate::helpers::use_zoom(s, &zoom);
    })
    .await;
    app.start().await;
    let receiver = BrokerUser::create("ingest", "", &receiver(&app.settings.amqp)).await;

    let publish = EventPublisher::new(&receiver.amqp(&app.settings.amqp));
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = good_event("priv-f-ok").to_string();
    publish
        .publish(body.as_bytes(), "priv-f-ok", deadline)
        .await
        .unwrap_or_else(|e| panic!("the receiver publishes an event: {e}"));
    publish.close().await;
    eventually("Zoom gets the PATCH", Duration::from_secs(20), || async {
        patches(&zoom) == 1
    })
    .await;

    let mut headers = FieldTable::default();
    headers.insert(
        "failure-reason".into(),
        AMQPValue::LongString(LongString::from("zoom_rejected")),
    );
    let forged_letter = BasicProperties::default()
        .with_message_id("priv-f-forged".into())
        .with_headers(headers);
    let forged = good_event("priv-f-forged").to_string();
    let dead = app.dead_letter_queue.clone();
    let exchange = app.settings.amqp.input_exchange();
    for (through, key) in [("", dead.as_str()), (exchange.as_str(), dead.as_str())] {
        let sent = forge(
            &receiver,
            through,
            key,
            forged.as_bytes(),
            forged_letter.clone(),
        )
        .await;
        assert!(
            !matches!(sent, Ok(true)),
            "a dead letter through {through:?} must be refused or unroutable: {sent:?}"
        );
    }
    let record = serde_json::json!({
        "id": "forged", "event_id": "priv-f-forged", "result": "applied",
        "processed_at": "2026-12-01T00:00:00Z", "attempts": 1, "duration_ms": 1,
    });
    let sent = forge(
        &receiver,
        &trail.exchange,
        "applied",
        record.to_string().as_bytes(),
        BasicProperties::default(),
    )
    .await;
    assert!(
        matches!(&sent, Err(e) if e.to_string().contains("ACCESS_REFUSED")),
        "a trail record must be refused: {sent:?}"
    );

    app.stop().await;
    assert_eq!(
        app.queue_state(&app.dead_letter_queue).await.0,
        0,
        "no dead letter"
    );
    let records = trail.records(&app).await;
    assert!(
        trail::of(&records, "priv-f-forged").is_empty(),
        "{records:?}"
    );
    assert_eq!(trail::of(&records, "priv-f-ok").len(), 1, "{records:?}");
    trail.delete(&app).await;
}
