//! RabbitMQ's management API, for what AMQP does not tell: how many
//! deliveries are unacknowledged, and which consumer is active under single
//! active consumer, and what a policy sets on a queue. `status` and
//! `dead-letters` use it, only when `amqp.management_url` is set.

use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::settings::AmqpSettings;

#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("amqp.url is not a URL: {0}")]
    BadAmqpUrl(String),
    #[error("management API: {0}")]
    Http(String),
}

/// One queue as the management API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct QueueDetails {
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    pub consumers: u64,
    /// Consumers delivering now (`up` or `single_active`).
    pub active_consumers: u64,
    /// Consumers standing by under single active consumer.
    pub waiting_consumers: u64,
    /// The `delivery-limit` a policy (or operator policy) sets on the
    /// queue: the smaller of it and the queue's own argument applies.
    pub policy_delivery_limit: Option<i64>,
}

#[derive(Deserialize)]
struct RawQueue {
    #[serde(default)]
    messages_ready: u64,
    #[serde(default)]
    messages_unacknowledged: u64,
    #[serde(default)]
    consumers: u64,
    #[serde(default)]
    consumer_details: Vec<RawConsumer>,
    #[serde(default)]
    effective_policy_definition: serde_json::Value,
}

#[derive(Deserialize)]
struct RawConsumer {
    #[serde(default)]
    activity_status: String,
}

/// `GET /api/queues/{vhost}/{queue}` with the AMQP URL's credentials.
pub async fn queue_details(
    amqp: &AmqpSettings,
    base: &str,
    queue: &str,
) -> Result<QueueDetails, ManagementError> {
    // The nodes of a cluster share their users: the first address's.
    let url = url::Url::parse(amqp.addresses()[0].expose_secret())
        .map_err(|e| ManagementError::BadAmqpUrl(e.to_string()))?;
    let vhost = percent_encoding::percent_decode_str(url.path().trim_start_matches('/'))
        .decode_utf8_lossy()
        .into_owned();
    let vhost = if vhost.is_empty() {
        "/".to_owned()
    } else {
        vhost
    };
    let user = percent_encoding::percent_decode_str(url.username()).decode_utf8_lossy();
    let password = url.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    let endpoint = format!(
        "{}/api/queues/{}/{}",
        base.trim_end_matches('/'),
        utf8_percent_encode(&vhost, NON_ALPHANUMERIC),
        utf8_percent_encode(queue, NON_ALPHANUMERIC),
    );
    // Named without the path (the vhost and queue) and never with the
    // credentials; with the cause (a name that does not resolve).
    let at = zds_http_client::safe_url(base);
    let http = |e: reqwest::Error| {
        ManagementError::Http(format!(
            "{at}: {}",
            zds_http_client::with_causes(&e.without_url())
        ))
    };
    // No proxy, whatever HTTP_PROXY says: the request carries the broker's
    // Basic credentials, which an `http://` URL would hand to the proxy in
    // the clear. The management API sits next to the broker, which this
    // command reaches directly over AMQP anyway, so no proxy is needed.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(http)?;
    let response = client
        .get(endpoint)
        .basic_auth(user, password)
        .send()
        .await
        .map_err(http)?;
    if !response.status().is_success() {
        return Err(ManagementError::Http(format!(
            "{at}: HTTP {}",
            response.status()
        )));
    }
    let raw: RawQueue = response.json().await.map_err(http)?;
    let waiting = raw
        .consumer_details
        .iter()
        .filter(|c| c.activity_status == "waiting")
        .count() as u64;
    Ok(QueueDetails {
        messages_ready: raw.messages_ready,
        messages_unacknowledged: raw.messages_unacknowledged,
        consumers: raw.consumers,
        active_consumers: raw.consumers.saturating_sub(waiting),
        waiting_consumers: waiting,
        policy_delivery_limit: raw.effective_policy_definition["delivery-limit"].as_i64(),
    })
}
