//! The audit trail on the broker: a topic exchange the outcome records are
//! published to (routing key = result), and optionally a stream bound to it
//! that keeps them for `outcomes.max_age` and that `history` reads.
//!
//! A record is confirmed before its event is acked. A missing exchange makes
//! RabbitMQ close the publishing channel, which ends the session: the event
//! goes back unacked, and the next session declares the exchange again (or,
//! with `declare_topology = false`, does not start until it exists).

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};

use super::settle::PublishError;
use crate::config::OutcomesSettings;
use crate::outcomes::OutcomeRecord;

/// Persistent delivery mode.
const PERSISTENT: u8 = 2;

#[derive(Debug, Clone)]
pub struct OutcomeTopology {
    pub exchange: String,
    pub stream: Option<String>,
    max_age: String,
    declare: bool,
}

impl OutcomeTopology {
    /// `None` when outcomes are off.
    pub fn new(settings: &OutcomesSettings, declare: bool) -> Option<Self> {
        Some(Self {
            exchange: settings.exchange.clone()?,
            stream: settings.stream.clone(),
            max_age: settings.max_age.clone(),
            declare,
        })
    }

    /// Declares the exchange and the stream (bound to every routing key), or
    /// checks that they exist when the operator owns the topology.
    pub async fn ensure(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let options = ExchangeDeclareOptions {
            durable: true,
            passive: !self.declare,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                options,
                FieldTable::default(),
            )
            .await?;
        let Some(stream) = &self.stream else {
            return Ok(());
        };
        let options = QueueDeclareOptions {
            durable: true,
            passive: !self.declare,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(stream.as_str().into(), options, self.stream_arguments())
            .await?;
        if self.declare {
            channel
                .queue_bind(
                    stream.as_str().into(),
                    self.exchange.as_str().into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// A stream, kept for `max_age` (RabbitMQ drops whole old segments).
    pub fn stream_arguments(&self) -> FieldTable {
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), text("stream"));
        arguments.insert("x-max-age".into(), text(&self.max_age));
        arguments
    }

    /// Publishes one record and waits for the broker's confirm.
    pub async fn publish(
        &self,
        channel: &Channel,
        record: &OutcomeRecord,
        confirm_timeout: Duration,
    ) -> Result<(), PublishError> {
        let failed = |why: String| PublishError {
            why,
            repaired: false,
        };
        let body = serde_json::to_vec(record).map_err(|e| failed(format!("encoding: {e}")))?;
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_message_id(record.id.as_str().into());
        let publish = async {
            channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    record.routing_key().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await
                .map_err(|e| failed(format!("publish failed: {e}")))?
                .await
                .map_err(|e| failed(format!("no confirmation: {e}")))
        };
        let confirmation = tokio::time::timeout(confirm_timeout, publish)
            .await
            .map_err(|_| {
                failed(format!(
                    "no confirmation within {} s",
                    confirm_timeout.as_secs()
                ))
            })??;
        if confirmation.is_nack() {
            return Err(failed("the broker nacked it".into()));
        }
        Ok(())
    }
}
