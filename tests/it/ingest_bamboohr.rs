//! `POST /v1/bamboohr`, in-process, against the real broker and a wiremock
//! BambooHR API: what reaches the input queue for each answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{basic_auth, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};
use zoom_dept_sync::config::{AmqpSettings, BambooHrSettings, RetrySettings};
use zoom_dept_sync::ingest::bamboohr::BambooHr;
use zoom_dept_sync::ingest::bamboohr::signature::{WebhookKey, sign};
use zoom_dept_sync::ingest::signature::Secrets;
use zoom_dept_sync::ingest::{self, Ingest};

use crate::helpers::{amqp_url, unique_name, unix_now};

const KEY: &str = "bamboo-webhook-key";
const API_KEY: &str = "bamboo-api-key";
const EMPLOYEE_PATH: &str = "/api/gateway.php/acme/v1/employees/42";

struct Receiver {
    base: String,
    queue: String,
    channel: Channel,
    _connection: Connection,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    client: reqwest::Client,
    api: MockServer,
}

impl Receiver {
    async fn start() -> Self {
        let api = MockServer::start().await;
        let queue = unique_name("ingest-bamboohr");
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .expect("declare");
        let amqp = AmqpSettings {
            url: amqp_url().into(),
            queue: queue.clone(),
            ..AmqpSettings::default()
        };
        let settings = BambooHrSettings {
            company_domain: "acme".into(),
            api_base_url: format!("{}/api/gateway.php", api.uri()),
        };
        let retry = RetrySettings {
            initial_interval_ms: 50,
            max_interval_ms: 200,
            max_elapsed_secs: 10,
        };
        let hr = BambooHr::new(
            &settings,
            &retry,
            WebhookKey::new(KEY).expect("key"),
            SecretString::from(API_KEY),
            false,
        )
        .expect("client");
        let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let shutdown = CancellationToken::new();
        let server = ingest::serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Arc::new(Ingest::new(&amqp, secrets).with_bamboohr(hr)),
            shutdown.clone(),
        )
        .await
        .expect("serve");
        Self {
            base: format!("http://{}", server.local_addr),
            queue,
            channel,
            _connection: connection,
            shutdown,
            task: server.task,
            client: reqwest::Client::new(),
            api,
        }
    }

    /// Answers the employee lookup with `response`.
    async fn api_answers(&self, response: ResponseTemplate) {
        Mock::given(method("GET"))
            .and(path(EMPLOYEE_PATH))
            .and(query_param("fields", "department,workEmail"))
            .and(header("accept", "application/json"))
            .and(basic_auth(API_KEY, "x"))
            .respond_with(response)
            .mount(&self.api)
            .await;
    }

    async fn post_signed(&self, ts: &str, body: &[u8]) -> (u16, Option<String>, String) {
        let signature = sign(&WebhookKey::new(KEY).expect("key"), ts, body);
        self.post(ts, &signature, body).await
    }

    async fn post(&self, ts: &str, signature: &str, body: &[u8]) -> (u16, Option<String>, String) {
        let response = self
            .client
            .post(format!("{}/v1/bamboohr", self.base))
            .header("X-BambooHR-Timestamp", ts)
            .header("X-BambooHR-Signature", signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("request");
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

    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.base);
        let response = self.client.get(url).send().await.expect("metrics");
        response.text().await.unwrap_or_default()
    }

    async fn ready_messages(&self) -> u32 {
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

    async fn api_calls(&self) -> usize {
        self.api.received_requests().await.unwrap_or_default().len()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        let _ = self
            .channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

fn webhook(fields: &[&str]) -> Vec<u8> {
    json!({"type": "employee.updated", "data": {"id": "42", "changedFields": fields}})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn ingest_bamboohr_a_department_change_publishes_the_api_state_once() {
    let r = Receiver::start().await;
    let employee = json!({"id": "42", "department": "Sales", "workEmail": "ann@example.com"});
    r.api_answers(ResponseTemplate::new(200).set_body_json(employee))
        .await;
    let ts = unix_now();
    let body = webhook(&["jobTitle", "department"]);
    let (status, _, text) = r.post_signed(&ts.to_string(), &body).await;
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("accepted"), "{text}");
    let got = r
        .channel
        .basic_get(r.queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("a message");
    let event: serde_json::Value = serde_json::from_slice(&got.delivery.data).expect("JSON");
    let event_id = format!("bamboohr-42-{ts}");
    let occurred_at = time::OffsetDateTime::from_unix_timestamp(ts)
        .expect("ts")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    assert_eq!(
        event,
        json!({
            "event_id": event_id,
            "email": "ann@example.com",
            "new_department": "Sales",
            "occurred_at": occurred_at,
        })
    );
    let message_id = got.delivery.properties.message_id().clone();
    assert_eq!(
        message_id.as_ref().map(|s| s.as_str()),
        Some(event_id.as_str())
    );

    // BambooHR retries the same webhook: answered, published once.
    let (status, _, text) = r.post_signed(&ts.to_string(), &body).await;
    assert_eq!((status, text.contains("duplicate")), (202, true), "{text}");
    assert_eq!(r.ready_messages().await, 0, "a repeat publishes nothing");
    let metrics = r.metrics().await;
    for line in [
        r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="accepted"} 1"#,
        r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="duplicate"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    r.stop().await;
}

#[tokio::test]
async fn ingest_bamboohr_other_changes_and_bad_signatures_publish_nothing() {
    let r = Receiver::start().await;
    let ts = unix_now().to_string();
    let (status, _, text) = r.post_signed(&ts, &webhook(&["jobTitle"])).await;
    assert_eq!((status, text.contains("ignored")), (202, true), "{text}");

    let body = webhook(&["department"]);
    let wrong = sign(&WebhookKey::new("other").expect("key"), &ts, &body);
    assert_eq!(r.post(&ts, &wrong, &body).await.0, 401, "wrong key");
    let stale = (unix_now() - 301).to_string();
    assert_eq!(r.post_signed(&stale, &body).await.0, 401, "stale");
    let (status, _, _) = r.post_signed(&ts, b"not json").await;
    assert_eq!(status, 400);

    assert_eq!(
        r.api_calls().await,
        0,
        "nothing unverified or ignored is looked up"
    );
    assert_eq!(r.ready_messages().await, 0);
    let metrics = r.metrics().await;
    for line in [
        r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="ignored"} 1"#,
        r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="bad_signature"} 2"#,
        r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="invalid"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    r.stop().await;
}

#[tokio::test]
async fn ingest_bamboohr_an_api_5xx_is_a_503_to_retry() {
    let r = Receiver::start().await;
    r.api_answers(ResponseTemplate::new(500)).await;
    let started = std::time::Instant::now();
    let (status, retry_after, text) = r
        .post_signed(&unix_now().to_string(), &webhook(&["department"]))
        .await;
    assert_eq!(status, 503, "{text}");
    assert!(retry_after.is_some(), "Retry-After");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(r.api_calls().await >= 2, "a short retry");
    assert_eq!(r.ready_messages().await, 0);
    r.stop().await;
}

#[tokio::test]
async fn ingest_bamboohr_an_api_4xx_is_a_422_not_retried() {
    let r = Receiver::start().await;
    r.api_answers(ResponseTemplate::new(404)).await;
    let (status, retry_after, text) = r
        .post_signed(&unix_now().to_string(), &webhook(&["department"]))
        .await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("404"), "{text}");
    assert_eq!(retry_after, None);
    assert_eq!(r.api_calls().await, 1, "a 4xx is not retried");
    assert_eq!(r.ready_messages().await, 0);
    let metrics = r.metrics().await;
    let line = r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="rejected"} 1"#;
    assert!(metrics.contains(line), "{line} in {metrics}");
    r.stop().await;
}
