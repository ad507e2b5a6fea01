//! The integration tests' one support module. `TestApp`: one daemon,
//! in-process, against the real broker and zoom-fake (the one stand-in
//! Zoom), with its own queue pair. Every integration test starts here.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zoom_dept_sync::broker::topology::Topology;
use zoom_dept_sync::config::{
    AmqpSettings, HttpSettings, OutcomesSettings, RateLimitsFile, RetrySettings, Settings,
    WorkerSettings, ZoomCredentials, ZoomSettings,
};
use zoom_dept_sync::mapping::Mapping;
use zoom_fake::{self as fake, FakeConfig, FakeHandle, Limits};

pub const TOKEN_PATH: &str = "/oauth/token";
pub const CLIENT_ID: &str = "test-client-id";
pub const CLIENT_SECRET: &str = "test-client-secret";
pub const ACCOUNT_ID: &str = "test-account";

/// The mapping every test starts with.
pub const DEPARTMENTS: [(&str, &str); 4] = [
    ("Engineering", "grp_eng"),
    ("Sales", "grp_sales"),
    ("Support", "grp_support"),
    ("Marketing", "grp_mkt"),
];

/// The broker: `AMQP_URL` when set (CI, this machine), else a RabbitMQ
/// container started once for the whole test run (a laptop with Docker).
pub fn amqp_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("AMQP_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(start_rabbitmq_container)
    })
    .clone()
}

fn start_rabbitmq_container() -> String {
    use testcontainers::GenericImage;
    use testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;

    let (tx, rx) = std::sync::mpsc::channel();
    // The container lives on its own runtime for the whole run: each test's
    // runtime ends with the test.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime for the container");
        runtime.block_on(async move {
            let container = GenericImage::new("rabbitmq", "4.1-management")
                .with_exposed_port(5672.tcp())
                .with_wait_for(WaitFor::message_on_stdout("Server startup complete"))
                .start()
                .await
                .expect("AMQP_URL is not set and no RabbitMQ container could be started");
            let port = container
                .get_host_port_ipv4(5672)
                .await
                .expect("container port");
            tx.send(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
                .expect("send url");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("RabbitMQ container did not start")
}

/// Queue names no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "zds-test.{prefix}.{}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

/// A port nobody listens on right now, for the daemon's HTTP server.
pub fn free_local_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// Settings for a test: fast retries, no real rate limit, the test mapping.
pub fn test_settings(zoom: &FakeHandle, queue: &str, dead_letter_queue: &str) -> Settings {
    let departments: BTreeMap<String, String> = DEPARTMENTS
        .iter()
        .map(|(d, g)| ((*d).to_owned(), (*g).to_owned()))
        .collect();
    Settings {
        amqp: AmqpSettings {
            url: amqp_url().into(),
            queue: queue.to_owned(),
            dead_letter_queue: Some(dead_letter_queue.to_owned()),
            prefetch: 64,
            ..AmqpSettings::default()
        },
        zoom: ZoomSettings {
            api_base_url: zoom.api_base_url(),
            oauth_token_url: zoom.token_url(),
            rate_limits: RateLimitsFile {
                light: Some(1000),
                medium: Some(1000),
                heavy: Some(1000),
            },
            request_timeout_ms: 5000,
            allow_insecure_http: true,
            ..ZoomSettings::default()
        },
        retry: RetrySettings {
            initial_interval_ms: 50,
            max_interval_ms: 500,
            max_elapsed_secs: 10,
        },
        worker: WorkerSettings {
            concurrency: 16,
            ..WorkerSettings::default()
        },
        http: HttpSettings {
            listen: free_local_port(),
            ..HttpSettings::default()
        },
        outcomes: OutcomesSettings::default(),
        ingest: zoom_dept_sync::config::IngestSettings::default(),
        // Off, but in the brake's own tests: others move hundreds.
        brake: zoom_dept_sync::config::BrakeSettings {
            max_changes: 0,
            ..Default::default()
        },
        mapping: Mapping::new(&departments).expect("test mapping"),
        credentials: ZoomCredentials {
            account_id: ACCOUNT_ID.into(),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
        },
    }
}

pub struct TestApp {
    /// zoom-fake with the mapped groups and no users; a test that needs
    /// users starts its own ([`spawn_on_fake`]) and points the daemon there.
    pub zoom: FakeHandle,
    /// The daemon's /healthz, /readyz, /metrics address.
    pub http: std::net::SocketAddr,
    pub queue: String,
    pub dead_letter_queue: String,
    pub channel: Channel,
    pub connection: Connection,
    shutdown: CancellationToken,
    daemon: Option<JoinHandle<Result<(), zoom_dept_sync::startup::StartError>>>,
    pub settings: Settings,
}

impl TestApp {
    /// A daemon with the default test settings.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A daemon whose settings `configure` adjusts first.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let mut app = Self::prepare_with(configure).await;
        app.start().await;
        app
    }

    /// Starts the daemon of a prepared app, in-process.
    pub async fn start(&mut self) {
        let run = zoom_dept_sync::startup::run(self.settings.clone(), self.shutdown.clone());
        self.daemon = Some(tokio::spawn(run));
        self.wait_until_consuming().await;
    }

    /// Deletes the input queue and declares it again with `arguments`, as an
    /// operator (or an older version) might have.
    pub async fn redeclare_input_queue(&self, arguments: FieldTable) {
        self.delete_queue(&self.queue).await;
        self.channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions::durable(),
                arguments,
            )
            .await
            .expect("declare the input queue");
    }

    /// Queues, mock and settings, but no daemon: for tests that run the
    /// binary instead ([`TestApp::config_toml`]).
    pub async fn prepare_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let zoom = spawn_zoom(mapped_zoom()).await;
        let queue = unique_name("in");
        let dead_letter_queue = format!("{queue}.dead");
        let mut settings = test_settings(&zoom, &queue, &dead_letter_queue);
        configure(&mut settings);

        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("test connection to the broker");
        let channel = connection.create_channel().await.expect("test channel");
        // Declared here too, with the daemon's arguments, so a test can
        // publish before the daemon is up.
        let topology = Topology::new(&settings.amqp);
        for q in [&queue, &dead_letter_queue] {
            channel
                .queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions::durable(),
                    topology.arguments(q),
                )
                .await
                .expect("declare test queue");
        }
        declare_input_exchange(&settings.amqp).await;
        Self {
            zoom,
            http: settings.http.listen,
            queue,
            dead_letter_queue,
            channel,
            connection,
            shutdown: CancellationToken::new(),
            daemon: None,
            settings,
        }
    }

    /// The settings as a config file for the binary (secrets and the broker
    /// URL go in the environment, as in production).
    pub fn config_toml(&self) -> String {
        let s = &self.settings;
        let mut toml = format!(
            "[amqp]\nqueue = {:?}\ndead_letter_queue = {:?}\nprefetch = {}\nsingle_active_consumer = {}\n{}\n\
             [zoom]\napi_base_url = {:?}\noauth_token_url = {:?}\nrequest_timeout_ms = {}\nallow_insecure_http = {}\n\n\
             [zoom.rate_limits]\nlight = {}\nmedium = {}\nheavy = {}\n\n\
             [retry]\ninitial_interval_ms = {}\nmax_interval_ms = {}\nmax_elapsed_secs = {}\n\n\
             [worker]\nconcurrency = {}\nshutdown_grace_secs = {}\nset_primary = {}\n\n\
             [http]\nlisten = \"{}\"\n\n[departments]\n",
            s.amqp.queue,
            s.amqp.dead_letter_queue(),
            s.amqp.prefetch,
            s.amqp.single_active_consumer,
            tls_keys(&s.amqp),
            s.zoom.api_base_url,
            s.zoom.oauth_token_url,
            s.zoom.request_timeout_ms,
            s.zoom.allow_insecure_http,
            s.zoom.rate_limits().light,
            s.zoom.rate_limits().medium,
            s.zoom.rate_limits().heavy,
            s.retry.initial_interval_ms,
            s.retry.max_interval_ms,
            s.retry.max_elapsed_secs,
            s.worker.concurrency,
            s.worker.shutdown_grace_secs,
            s.worker.set_primary,
            s.http.listen,
        );
        for (department, group) in DEPARTMENTS {
            toml.push_str(&format!("{department:?} = {group:?}\n"));
        }
        if let Some(exchange) = &s.outcomes.exchange {
            toml.push_str(&format!("\n[outcomes]\nexchange = {exchange:?}\n"));
            if let Some(stream) = &s.outcomes.stream {
                toml.push_str(&format!("stream = {stream:?}\n"));
            }
        }
        toml.push_str(&format!(
            "\n[brake]\nmax_changes = {}\nmax_removals = {}\nwindow_secs = {}\n",
            s.brake.max_changes, s.brake.max_removals, s.brake.window_secs
        ));
        toml
    }

    pub async fn wait_until_consuming(&self) {
        eventually(
            "the daemon consumes the input queue",
            Duration::from_secs(20),
            || async { self.queue_state(&self.queue).await.1 >= 1 },
        )
        .await;
    }

    /// (ready messages, consumers) of a queue.
    pub async fn queue_state(&self, queue: &str) -> (u32, u32) {
        self.try_queue_state(queue).await.expect("queue exists")
    }

    /// `None` when the queue does not exist. On a channel of its own, since
    /// a failed passive declare closes the channel.
    pub async fn try_queue_state(&self, queue: &str) -> Option<(u32, u32)> {
        let channel = self.connection.create_channel().await.expect("channel");
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()?;
        let _ = channel.close(200, "".into()).await;
        Some((q.message_count(), q.consumer_count()))
    }

    /// Deletes a queue under the daemon, as an operator might.
    pub async fn delete_queue(&self, queue: &str) {
        self.channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .expect("delete queue");
    }

    pub async fn publish(&self, body: &[u8]) {
        self.publish_with(
            body,
            BasicProperties::default().with_content_type("application/json".into()),
        )
        .await;
    }

    pub async fn publish_json(&self, event: serde_json::Value) {
        self.publish(event.to_string().as_bytes()).await;
    }

    /// Publishes `count` moves (Engineering → Sales) for users `U0`, `U1`, ….
    pub async fn publish_moves(&self, count: usize) {
        for i in 0..count {
            self.publish_json(event(
                &format!("e{i}"),
                &format!("U{i}"),
                Some("Engineering"),
                "Sales",
            ))
            .await;
        }
    }

    pub async fn publish_with(&self, body: &[u8], properties: BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("publish confirm");
    }

    /// Waits for `count` dead letters and takes them off the queue. The queue
    /// may be missing for a while (a test deletes it): a failed get closes
    /// its channel, so each failure gets a new one.
    pub async fn dead_letters(&self, count: usize) -> Vec<Delivery> {
        let mut letters = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut channel = self.channel.clone();
        while letters.len() < count {
            let got = channel
                .basic_get(
                    self.dead_letter_queue.as_str().into(),
                    BasicGetOptions { no_ack: true },
                )
                .await;
            match got {
                Ok(Some(message)) => {
                    letters.push(message.delivery);
                    continue;
                }
                Ok(None) => {}
                Err(_) => channel = self.connection.create_channel().await.expect("new channel"),
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} dead letters, got {}",
                letters.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        letters
    }

    /// Stops the daemon gracefully; afterwards nothing is unacked, so queue
    /// counts are final.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(daemon) = self.daemon.take() {
            tokio::time::timeout(Duration::from_secs(40), daemon)
                .await
                .expect("daemon stops within the grace")
                .expect("daemon task")
                .expect("daemon result");
        }
    }

    /// Stops the daemon and asserts both queues are empty: every event was
    /// settled and none was dead-lettered.
    pub async fn stop_and_assert_queues_empty(&mut self) {
        self.stop().await;
        assert_eq!(
            self.queue_state(&self.queue).await.0,
            0,
            "input queue empty"
        );
        assert_eq!(
            self.queue_state(&self.dead_letter_queue).await.0,
            0,
            "dead-letter queue empty"
        );
    }

    /// GET on the daemon's HTTP server: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .expect("daemon HTTP server answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// How many times the daemon asked its Zoom for a token.
    pub fn token_requests(&self) -> usize {
        token_calls(&self.zoom)
    }
}

impl Drop for TestApp {
    /// Deletes the test's queues even when the test failed (the broker
    /// outlives the tests). Uses its own connection on its own thread: the
    /// test's runtime may be the one being dropped.
    fn drop(&mut self) {
        self.shutdown.cancel();
        let queues = [self.queue.clone(), self.dead_letter_queue.clone()];
        let exchange = self.settings.amqp.input_exchange();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(connection) =
                    Connection::connect(&amqp_url(), ConnectionProperties::default()).await
                else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for q in queues {
                        let _ = channel
                            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                    let _ = channel
                        .exchange_delete(exchange.as_str().into(), Default::default())
                        .await;
                }
                let _ = connection.close(200, "test done".into()).await;
            });
        })
        .join();
    }
}

/// A zoom-fake seed with the test mapping's groups and no rate limits; add
/// users (and other groups) with its builders.
pub fn mapped_zoom() -> FakeConfig {
    let seed = FakeConfig {
        limits: Limits::unlimited(),
        ..FakeConfig::default()
    };
    DEPARTMENTS.iter().fold(seed, |seed, (department, group)| {
        seed.group(group, department)
    })
}

/// Users `U0`.. (`u0@example.com`..) in Engineering, on [`mapped_zoom`].
pub fn engineers(count: usize) -> FakeConfig {
    (0..count).fold(mapped_zoom(), |seed, i| {
        seed.user(&format!("U{i}"), &format!("u{i}@example.com"), &["grp_eng"])
    })
}

/// U1 (`u1@example.com`) in Engineering, on [`mapped_zoom`].
pub fn one_engineer() -> FakeConfig {
    mapped_zoom().user("U1", "u1@example.com", &["grp_eng"])
}

/// zoom-fake, in-process, on a free port. It runs on a runtime of its own
/// (as wiremock did), so a test that waits on the binary with a blocking
/// call does not starve the stand-in Zoom the binary talks to.
pub async fn spawn_zoom(seed: FakeConfig) -> FakeHandle {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("zoom-fake")
            .enable_all()
            .build()
            .expect("zoom-fake's runtime")
    });
    runtime
        .spawn(fake::spawn(seed, "127.0.0.1:0".parse().expect("address")))
        .await
        .expect("zoom-fake's start task")
        .expect("zoom-fake starts")
}

/// Points the daemon's settings at zoom-fake.
pub fn use_zoom(settings: &mut Settings, zoom: &FakeHandle) {
    settings.zoom.api_base_url = zoom.api_base_url();
    settings.zoom.oauth_token_url = zoom.token_url();
}

/// TestApp on zoom-fake seeded with `seed`: the daemon talks to the fake
/// only.
pub async fn spawn_on_fake(seed: FakeConfig) -> (TestApp, FakeHandle) {
    let zoom = spawn_zoom(seed).await;
    let app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;
    (app, zoom)
}

/// The API calls zoom-fake received, once there are `count`; fails the test
/// after 30 s.
pub async fn wait_for_calls(zoom: &FakeHandle, count: usize) -> Vec<fake::ReceivedRequest> {
    eventually(
        &format!("zoom-fake receives {count} API calls"),
        Duration::from_secs(30),
        || async { zoom.api_requests().len() >= count },
    )
    .await;
    zoom.api_requests()
}

/// How many times the daemon asked zoom-fake for a token.
pub fn token_calls(zoom: &FakeHandle) -> usize {
    zoom.requests()
        .iter()
        .filter(|r| r.path == TOKEN_PATH)
        .count()
}

/// The call carried `Authorization: Bearer <a token zoom-fake issued>`.
pub fn assert_bearer_from(zoom: &FakeHandle, call: &fake::ReceivedRequest) {
    let token = call
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("no bearer token: {call:?}"));
    assert!(
        zoom.issued(token),
        "a token the fake did not issue: {call:?}"
    );
}

/// A user's groups in zoom-fake now, sorted; none for an unknown user.
pub fn groups_of(zoom: &FakeHandle, user: &str) -> Vec<String> {
    zoom.state()
        .users
        .into_iter()
        .find(|u| u.id == user)
        .map(|u| u.groups)
        .unwrap_or_default()
}

/// Polls `condition` until it holds; fails the test after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A valid event; `user` is a Zoom user id.
pub fn event(id: &str, user: &str, previous: Option<&str>, new: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": id,
        "zoom_user_id": user,
        "email": format!("{}@example.com", user.to_lowercase()),
        "previous_department": previous,
        "new_department": new,
        "occurred_at": "2026-11-26T09:00:00Z",
    })
}

/// A header of a delivered message, as text (strings) or as an integer.
pub fn header(delivery: &Delivery, name: &str) -> Option<AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
}

pub fn header_str(delivery: &Delivery, name: &str) -> Option<String> {
    match header(delivery, name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        other => panic!("header {name} is not a string: {other:?}"),
    }
}

pub fn header_int(delivery: &Delivery, name: &str) -> Option<i64> {
    match header(delivery, name)? {
        AMQPValue::LongLongInt(i) => Some(i),
        AMQPValue::LongInt(i) => Some(i.into()),
        AMQPValue::ShortInt(i) => Some(i.into()),
        other => panic!("header {name} is not an integer: {other:?}"),
    }
}

/// The `[amqp]` TLS keys that are set, one per line.
fn tls_keys(amqp: &zoom_dept_sync::config::AmqpSettings) -> String {
    [
        ("tls_ca_file", &amqp.tls_ca_file),
        ("tls_client_cert", &amqp.tls_client_cert),
        ("tls_client_key", &amqp.tls_client_key),
    ]
    .into_iter()
    .filter_map(|(key, path)| path.as_ref().map(|p| format!("{key} = {p:?}\n")))
    .collect()
}

/// Seconds since the Unix epoch, as webhook timestamps are written.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The receiver's exchange, declared and bound to `amqp.queue` as the
/// daemon does, for tests that run the receiver (or publish) without one.
pub async fn declare_input_exchange(amqp: &AmqpSettings) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("test connection to the broker");
    let owner = AmqpSettings {
        declare_topology: true,
        ..amqp.clone()
    };
    Topology::new(&owner)
        .ensure_input_exchange(&connection)
        .await;
    let _ = connection.close(200, "declared".into()).await;
}

/// The queue an in-process ingest receiver publishes to, with the
/// receiver's exchange (`<queue>.in`) bound to it, read and deleted through
/// a connection of the test's.
pub struct ReceiverQueue {
    pub queue: String,
    pub channel: Channel,
    _connection: Connection,
}

impl ReceiverQueue {
    /// `queue` when given (a daemon's, declared by its test app), else a
    /// new durable one named after `prefix`.
    pub async fn open(prefix: &str, queue: Option<String>) -> Self {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        let queue = match queue {
            Some(queue) => queue,
            None => {
                let queue = unique_name(prefix);
                channel
                    .queue_declare(
                        queue.as_str().into(),
                        QueueDeclareOptions::durable(),
                        FieldTable::default(),
                    )
                    .await
                    .expect("declare");
                queue
            }
        };
        Self {
            queue,
            channel,
            _connection: connection,
        }
    }

    /// The receiver's settings, publishing through `url`; declares and
    /// binds its exchange.
    pub async fn receiver_settings(&self, url: String) -> AmqpSettings {
        let amqp = AmqpSettings {
            url: url.into(),
            queue: self.queue.clone(),
            ..AmqpSettings::default()
        };
        declare_input_exchange(&amqp).await;
        amqp
    }

    /// Messages ready in the queue.
    pub async fn ready_messages(&self) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
            .await
            .expect("queue exists")
            .message_count()
    }

    /// Deletes the queue and the receiver's exchange.
    pub async fn delete(&self) {
        let _ = self
            .channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let exchange = format!("{}.in", self.queue);
        let _ = self
            .channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    }
}

/// A webhook answer as a test reads it: status, `Retry-After`, body.
pub async fn status_retry_after_body(response: reqwest::Response) -> (u16, Option<String>, String) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        retry_after,
        response.text().await.unwrap_or_default(),
    )
}

/// Sends SIGTERM to a child process (a binary the test started).
pub fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -TERM {pid}");
}

/// The child's exit code; fails the test if it does not exit `within`.
pub async fn exit_code_within(child: &mut tokio::process::Child, within: Duration) -> Option<i32> {
    tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the process did not exit within {within:?}"))
        .expect("wait")
        .code()
}

/// What the code under test logs on this test's thread, for waiting on a
/// log line instead of a fixed sleep. `#[tokio::test]` runs on one thread,
/// so tasks the test spawns log here too; other tests' lines do not.
pub struct LogCapture {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCapture {
    /// Captures every level until dropped.
    pub fn start() -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let lines = Arc::clone(&lines);
            move || CaptureWriter(Arc::clone(&lines))
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        Self {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// How many captured lines contain `text`.
    pub fn count(&self, text: &str) -> usize {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&lines)
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The binary's environment in a test: nothing inherited but the broker at
/// `amqp` and the test's Zoom credentials; no standard input.
pub fn clean_env<'a>(command: &'a mut Command, amqp: &str) -> &'a mut Command {
    command
        .env_clear()
        .env("AMQP_URL", amqp)
        .env("ZOOM_ACCOUNT_ID", ACCOUNT_ID)
        .env("ZOOM_CLIENT_ID", CLIENT_ID)
        .env("ZOOM_CLIENT_SECRET", CLIENT_SECRET)
        .stdin(Stdio::null())
}

/// The config file of `app`, written to a temp dir that lives as long as it.
pub struct Tool {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Tool {
    pub fn new(app: &TestApp, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.toml");
        let toml = app
            .config_toml()
            .replacen("[amqp]\n", &format!("[amqp]\n{extra}"), 1);
        std::fs::write(&config, toml).expect("write config");
        Self { dir, config }
    }

    /// The temp dir the config is in, for the test's other files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn config(&self) -> &std::path::Path {
        &self.config
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"));
        command.args(args).arg("--config").arg(&self.config);
        clean_env(&mut command, &amqp_url());
        command
    }

    /// Runs a command to its end: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        output(self.command(args).output().expect("run zoom-dept-sync"))
    }

    /// As [`Tool::run`], without blocking the runtime (for commands that
    /// talk to an in-process daemon).
    pub async fn run_async(&self, args: &[&str]) -> (i32, String, String) {
        let mut command = tokio::process::Command::from(self.command(args));
        output(command.output().await.expect("run zoom-dept-sync"))
    }
}

pub fn output(output: Output) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = output;
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Takes every message of `queue` (emptying it), head first.
pub async fn drain(app: &TestApp, queue: &str) -> Vec<Delivery> {
    let mut messages = Vec::new();
    while let Some(got) = app
        .channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        messages.push(got.delivery);
    }
    messages
}
