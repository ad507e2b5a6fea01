//! What every row needs: a fake Zoom seeded with the row's users, queues
//! filled before the consumer starts, the daemon's config, and cleaning up.

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use zoom_fake::FakeHandle;

pub use crate::daemon::amqp_url;
pub use crate::zoom_seed::fake_zoom;

/// What each event asks for.
#[derive(Clone, Copy)]
pub enum Events {
    /// Id and previous department: one `PATCH` each.
    Moves,
    /// Id only, source unknown: `GET /users/{id}` (Light), then `PATCH`.
    LookupThenMove,
}

impl Events {
    pub fn body(self, i: usize) -> Vec<u8> {
        let event = match self {
            Events::Moves => serde_json::json!({
                "event_id": format!("bench-{i}"), "zoom_user_id": format!("u{i}"),
                "previous_department": "Engineering", "new_department": "Sales",
            }),
            Events::LookupThenMove => serde_json::json!({
                "event_id": format!("bench-{i}"), "zoom_user_id": format!("u{i}"),
                "new_department": "Sales",
            }),
        };
        event.to_string().into_bytes()
    }
}

/// An input queue and its dead-letter queue, declared plainly by the bench
/// (the daemon runs with `declare_topology = false`), so the queue can be
/// filled before the consumer starts and the row measures consuming only.
pub struct Queues {
    pub name: String,
    connection: Connection,
    channel: Channel,
}

impl Queues {
    pub async fn declare(row: &str) -> Self {
        let name = format!("bench.{row}.{}", std::process::id());
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ at AMQP_URL");
        let channel = connection.create_channel().await.expect("channel");
        for queue in [name.clone(), format!("{name}.dead")] {
            let options = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.as_str().into(), options, FieldTable::default())
                .await
                .expect("declare");
        }
        Self {
            name,
            connection,
            channel,
        }
    }

    /// Publishes `count` events, persistent, and waits for every confirm.
    pub async fn fill(&self, events: Events, count: usize) {
        let channel = self.connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let mut confirms = Vec::with_capacity(count);
        for i in 0..count {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    self.name.as_str().into(),
                    BasicPublishOptions::default(),
                    &events.body(i),
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for confirm in confirms {
            confirm.await.expect("confirmed");
        }
        let _ = channel.close(200, "".into()).await;
    }

    pub async fn delete(self) {
        for queue in [self.name.clone(), format!("{}.dead", self.name)] {
            let _ = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "".into()).await;
    }
}

/// The daemon's settings for a row.
pub struct DaemonConfig<'a> {
    pub queue: &'a str,
    pub fake: &'a FakeHandle,
    pub prefetch: usize,
    pub concurrency: usize,
    pub light: u32,
    pub medium: u32,
    pub http_port: u16,
}

impl DaemonConfig<'_> {
    pub fn toml(&self) -> String {
        format!(
            "[amqp]\nqueue = {queue:?}\nprefetch = {prefetch}\ndeclare_topology = false\n\n\
             [zoom]\napi_base_url = {api:?}\noauth_token_url = {token:?}\nallow_insecure_http = true\n\n\
             [zoom.rate_limits]\nlight = {light}\nmedium = {medium}\nheavy = 1000\n\n\
             [retry]\ninitial_interval_ms = 100\nmax_interval_ms = 2000\nmax_elapsed_secs = 120\n\n\
             [worker]\nconcurrency = {concurrency}\n\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [brake]\nmax_changes = 0\n\n\
             [departments]\nEngineering = \"grp_eng\"\nSales = \"grp_sales\"\n",
            queue = self.queue,
            prefetch = self.prefetch,
            api = self.fake.api_base_url(),
            token = self.fake.token_url(),
            light = self.light,
            medium = self.medium,
            concurrency = self.concurrency,
            port = self.http_port,
        )
    }
}

/// A token from the fake's token endpoint (`token_url`), for `account`.
pub async fn token(http: &reqwest::Client, token_url: &str, account: &str) -> String {
    let answer: serde_json::Value = http
        .post(format!(
            "{token_url}?grant_type=account_credentials&account_id={account}"
        ))
        .basic_auth(account, Some(account))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    answer["access_token"].as_str().expect("a token").to_owned()
}
