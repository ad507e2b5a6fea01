//! Publishing the plan's events: persistent JSON, `mandatory`, each
//! confirmed, with the run's id in the `reconcile-run-id` header and the
//! event id as `message_id`, so an audit can tie every event to its run.
//!
//! `broker::admin::Publisher::publish_json` sets no headers, and `broker/`
//! is being changed on another branch right now; this small publisher can
//! move there as `publish_json_with_headers` once both are merged.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::ExposeSecret;

use crate::config::AmqpSettings;
use crate::reconcile::Event;

/// The header that names the run.
pub const RUN_ID_HEADER: &str = "reconcile-run-id";

/// How long one broker operation may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker did not answer within {} s", OPERATION_TIMEOUT.as_secs())]
    Timeout,
    #[error("the broker refused {event_id}: {why}")]
    Refused { event_id: String, why: String },
}

pub struct EventPublisher {
    connection: Connection,
    channel: Channel,
}

impl EventPublisher {
    pub async fn connect(amqp: &AmqpSettings) -> Result<Self, PublishError> {
        let properties =
            ConnectionProperties::default().with_connection_name("zoom-dept-sync reconcile".into());
        let open = async {
            let connection = Connection::connect(amqp.url.expose_secret(), properties).await?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(Self {
                connection,
                channel,
            })
        };
        Ok(timed(open).await??)
    }

    /// One event to `queue`, confirmed by the broker.
    pub async fn publish(
        &self,
        queue: &str,
        event: &Event,
        run_id: &str,
    ) -> Result<(), PublishError> {
        let mut headers = FieldTable::default();
        headers.insert(
            RUN_ID_HEADER.into(),
            AMQPValue::LongString(LongString::from(run_id)),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(event.event_id.as_str().into())
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let publish = async {
            self.channel
                .basic_publish("".into(), queue.into(), options, &event.body, properties)
                .await?
                .await
        };
        let confirmation = timed(publish).await??;
        let refused = |why: String| PublishError::Refused {
            event_id: event.event_id.clone(),
            why,
        };
        if confirmation.is_nack() {
            return Err(refused("nacked".into()));
        }
        if let Some(returned) = confirmation.take_message() {
            return Err(refused(format!("unroutable ({})", returned.reply_text)));
        }
        Ok(())
    }

    pub async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.connection.close(200, "done".into()),
        )
        .await;
    }
}

async fn timed<T>(work: impl std::future::Future<Output = T>) -> Result<T, PublishError> {
    tokio::time::timeout(OPERATION_TIMEOUT, work)
        .await
        .map_err(|_| PublishError::Timeout)
}
