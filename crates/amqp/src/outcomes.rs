//! The audit trail on the broker: a topic exchange the outcome records are
//! published to (routing key = result), and optionally a stream bound to it
//! that keeps them for `outcomes.max_age` and that `history` reads.
//!
//! A record is confirmed before its event is acked. A missing exchange makes
//! RabbitMQ close the publishing channel, which ends the session: the event
//! goes back unacked, and the next session declares the exchange again (or,
//! with `declare_topology = false`, does not start until it exists).

use std::time::Duration;

use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

use crate::confirm::PublishError;
use crate::confirm::publish_confirmed;
use crate::settings::OutcomesSettings;

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
    /// checks that they exist when the operator owns the topology. On
    /// channels of its own: a failed passive declare closes its channel.
    ///
    /// A stream that exists already is used as it is: RabbitMQ refuses a
    /// redeclaration with another `x-max-age`, and a changed
    /// `outcomes.max_age` must not stop consuming (set it on an existing
    /// stream with a policy).
    pub async fn ensure(&self, connection: &Connection) -> Result<(), lapin::Error> {
        let channel = connection.create_channel().await?;
        crate::topology::declare_exchange(
            &channel,
            &self.exchange,
            ExchangeKind::Topic,
            self.declare,
        )
        .await?;
        if let Some(stream) = &self.stream {
            self.ensure_stream(connection, &channel, stream).await?;
        }
        let _ = channel.close(200, "topology checked".into()).await;
        Ok(())
    }

    async fn ensure_stream(
        &self,
        connection: &Connection,
        channel: &Channel,
        stream: &str,
    ) -> Result<(), lapin::Error> {
        let probe = connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let exists = probe
            .queue_declare(stream.into(), passive, FieldTable::default())
            .await
            .is_ok();
        let _ = probe.close(200, "probed".into()).await;
        if !exists {
            if !self.declare {
                return channel
                    .queue_declare(stream.into(), passive, FieldTable::default())
                    .await
                    .map(drop);
            }
            let options = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(stream.into(), options, self.stream_arguments())
                .await?;
        }
        if self.declare {
            self.bind(channel, stream).await?;
        }
        Ok(())
    }

    /// The stream takes every record (`#`).
    async fn bind(&self, channel: &Channel, stream: &str) -> Result<(), lapin::Error> {
        channel
            .queue_bind(
                stream.into(),
                self.exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    /// After a record came back unroutable (the stream or its binding was
    /// deleted): declare and bind the stream again, if the daemon owns the
    /// topology. `true` when it is back.
    async fn repair(&self, channel: &Channel) -> bool {
        let Some(stream) = self.stream.as_deref().filter(|_| self.declare) else {
            return false;
        };
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(stream.into(), options, self.stream_arguments())
            .await;
        let bound = match declared {
            Ok(_) => self.bind(channel, stream).await,
            Err(e) => Err(e),
        };
        match bound {
            Ok(()) => {
                tracing::warn!(%stream, "declared and bound the outcome stream again");
                true
            }
            Err(e) => {
                tracing::error!(%stream, error = %e, "cannot declare the outcome stream");
                false
            }
        }
    }

    /// A stream, kept for `max_age` (RabbitMQ drops whole old segments).
    pub fn stream_arguments(&self) -> FieldTable {
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), text("stream"));
        arguments.insert("x-max-age".into(), text(&self.max_age));
        arguments
    }

    /// Publishes one record (the audit trail's JSON, `id` its message id,
    /// routed by `routing_key`) and waits for the broker's confirm.
    pub async fn publish(
        &self,
        channel: &Channel,
        (record, id, routing_key): (&impl serde::Serialize, &str, &str),
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
            .with_message_id(id.into());
        // A record the exchange routes nowhere is confirmed and dropped:
        // `mandatory` makes it come back.
        let publish = async {
            publish_confirmed(channel, &self.exchange, routing_key, &body, properties)
                .await
                .map_err(|e| failed(format!("publish failed: {e}")))
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
        if let Some(returned) = confirmation.take_message() {
            tracing::error!(
                exchange = %self.exchange,
                reply = %returned.reply_text,
                "the outcome exchange routes the record to no queue: set outcomes.stream or bind a queue to it"
            );
            let repaired = self.repair(channel).await;
            return Err(PublishError {
                why: format!(
                    "unroutable ({}): no queue is bound to {}",
                    returned.reply_text, self.exchange
                ),
                repaired,
            });
        }
        Ok(())
    }
}
