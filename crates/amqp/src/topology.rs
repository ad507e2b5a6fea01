//! The two queues the daemon needs: declared (durable) when it owns the
//! topology, only checked (passive) when the operator does.
//!
//! The input queue dead-letters to the dead-letter queue (default exchange,
//! routing key = its name), so the broker never drops an event: a message it
//! removes itself (a quorum queue's `delivery-limit`, which RabbitMQ 4 sets
//! to 20 by default, a TTL, a length limit) lands there with `x-death`. On
//! quorum queues dead-lettering is at-least-once (RabbitMQ 3.10 and later),
//! which needs `x-overflow = reject-publish`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};

use crate::settings::{AmqpSettings, QueueType};

/// Escapes the characters a RabbitMQ pattern (a policy's, a permission's:
/// a regular expression) treats specially, so it names exactly one resource.
pub fn regex_escape(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for c in name.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The quorum dead-letter queue's delivery limit: each toolbox read counts
/// one delivery on RabbitMQ before 4.3; two thousand million reads is out
/// of reach.
pub const DEAD_LETTER_DELIVERY_LIMIT: i32 = i32::MAX;

#[derive(Debug, Clone)]
pub struct Topology {
    pub queue: String,
    pub dead_letter_queue: String,
    /// The receiver's exchange (`amqp.input_exchange`), bound to the input
    /// queue with the queue's name as routing key.
    pub input_exchange: String,
    pub declare: bool,
    single_active_consumer: bool,
    queue_type: QueueType,
    /// The input queue was declared with the arguments above (so it
    /// dead-letters to the dead-letter queue), or the operator declares it
    /// (`declare_topology = false`, which docs/operator-guide.md requires to dead-letter).
    /// False when an existing queue refused those arguments: then a message
    /// the daemon rejects might be dropped, so it publishes dead letters
    /// itself instead.
    input_dead_letters: Arc<AtomicBool>,
}

impl Topology {
    pub fn new(settings: &AmqpSettings) -> Self {
        Self {
            queue: settings.queue.clone(),
            dead_letter_queue: settings.dead_letter_queue(),
            input_exchange: settings.input_exchange(),
            declare: settings.declare_topology,
            single_active_consumer: settings.single_active_consumer,
            queue_type: settings.queue_type,
            input_dead_letters: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether a rejected (not requeued) input message reaches the
    /// dead-letter queue through the broker: see `input_dead_letters`.
    pub fn broker_dead_letters(&self) -> bool {
        self.input_dead_letters.load(Ordering::Relaxed)
    }

    /// The arguments a queue is declared with; a redeclaration with other
    /// arguments fails, so they come from this one place.
    pub fn arguments(&self, queue: &str) -> FieldTable {
        if queue == self.queue {
            self.input_arguments()
        } else {
            self.dead_letter_arguments()
        }
    }

    /// The dead-letter queue's type follows `amqp.queue_type`: on a cluster
    /// it is a quorum queue, replicated like the input queue, so dead
    /// letters outlive the loss of a node. Reading it hands every message
    /// back with `basic.nack`, which RabbitMQ before 4.3 counts as a
    /// delivery; RabbitMQ 4.0 gives quorum queues a default delivery limit
    /// of 20, past which a message with nowhere to go is dropped. So the
    /// limit is set, and out of reach: [`DEAD_LETTER_DELIVERY_LIMIT`]
    /// (`-1`, 4.x's "no limit", drops every message at its first hand-back
    /// on 3.10). See docs/decisions/0033-replicated-dead-letter-queue.md.
    /// On a single node it stays a classic queue, which has no limit.
    fn dead_letter_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("quorum")),
            );
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(DEAD_LETTER_DELIVERY_LIMIT),
            );
        }
        arguments
    }

    fn input_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("quorum")),
            );
        }
        if self.single_active_consumer {
            arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        arguments.insert("x-dead-letter-exchange".into(), text(""));
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            text(&self.dead_letter_queue),
        );
        if self.queue_type == QueueType::Quorum {
            arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
            arguments.insert("x-overflow".into(), text("reject-publish"));
        }
        arguments
    }

    /// Declares both queues, or checks that they exist. A queue that exists
    /// with other arguments (declared by an older version: an input queue
    /// without dead-lettering, a quorum dead-letter queue) is used as it is,
    /// with a warning that says what it costs: RabbitMQ refuses a
    /// redeclaration with other arguments and closes the channel, so the
    /// usable channel is returned.
    pub async fn ensure(
        &self,
        connection: &Connection,
        channel: Channel,
    ) -> Result<Channel, lapin::Error> {
        let channel = self
            .ensure_or_accept(connection, channel, &self.dead_letter_queue)
            .await?;
        self.ensure_or_accept(connection, channel, &self.queue)
            .await
    }

    async fn ensure_or_accept(
        &self,
        connection: &Connection,
        channel: Channel,
        queue: &str,
    ) -> Result<Channel, lapin::Error> {
        let Err(declare_error) = self.ensure_queue(&channel, queue).await else {
            return Ok(channel);
        };
        if !self.declare {
            return Err(declare_error);
        }
        if queue == self.queue {
            // Its arguments are someone else's: its dead-lettering unknown.
            self.input_dead_letters.store(false, Ordering::Relaxed);
        }
        let channel = connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        if channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .is_err()
        {
            return Err(declare_error);
        }
        if is_access_refused(&declare_error) {
            tracing::warn!(
                queue = %queue,
                error = %declare_error,
                "the broker refused to declare this queue (no configure permission on it): using it as it is, \
                 declared by someone else; grant the daemon's user configure on it, or set amqp.declare_topology = false"
            );
        } else if queue == self.queue {
            tracing::warn!(
                queue = %self.queue,
                error = %declare_error,
                policy = %self.policy_command(),
                "the input queue exists with other arguments (no dead-letter target?): using it as it is; without a dead-letter target the broker deletes events it gives up on. Add one with this policy"
            );
        } else {
            tracing::warn!(
                queue = %queue,
                error = %declare_error,
                expected = %self.queue_type.name(),
                "the dead-letter queue exists with other arguments: using it as it is. A classic one on a cluster \
                 lives on one node and is lost with it; a quorum one without the daemon's delivery limit drops \
                 messages read 20 times on RabbitMQ 4.0-4.2, so `dead-letters` refuses to read it. Move its messages \
                 to a queue declared as the daemon declares it (docs/deployment.md: Running on a RabbitMQ cluster)"
            );
        }
        Ok(channel)
    }

    /// The receiver's exchange: declared (durable, direct) and bound to the
    /// input queue when the daemon owns the topology, only checked when the
    /// operator does. Never ends the session: the daemon consumes without
    /// it, and the receiver answers 503, naming it, until it exists.
    pub async fn ensure_input_exchange(&self, connection: &Connection) {
        let Err(error) = self.declare_input_exchange(connection).await else {
            return;
        };
        let exchange = &self.input_exchange;
        if self.declare {
            tracing::warn!(
                %exchange,
                queue = %self.queue,
                %error,
                "cannot declare the receiver's exchange or bind it to the input queue: the receiver cannot publish until it exists; \
                 grant the daemon's user configure and read on the exchange and write on the input queue (docs/deployment.md: Least privilege)"
            );
        } else {
            tracing::warn!(
                %exchange,
                queue = %self.queue,
                %error,
                "the receiver's exchange does not exist (declare_topology = false): declare it (durable, direct) and bind it \
                 to the input queue with the queue's name as routing key; until then the receiver cannot publish"
            );
        }
    }

    async fn declare_input_exchange(&self, connection: &Connection) -> Result<(), lapin::Error> {
        // A channel of its own: a refused declare closes it.
        let channel = connection.create_channel().await?;
        declare_exchange(
            &channel,
            &self.input_exchange,
            ExchangeKind::Direct,
            self.declare,
        )
        .await?;
        if self.declare {
            channel
                .queue_bind(
                    self.queue.as_str().into(),
                    self.input_exchange.as_str().into(),
                    self.queue.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let _ = channel.close(200, "topology checked".into()).await;
        Ok(())
    }

    /// The `rabbitmqctl` command that gives an existing input queue the
    /// dead-letter arguments the daemon would have declared.
    pub fn policy_command(&self) -> String {
        let mut definition = format!(
            r#"{{"dead-letter-exchange":"","dead-letter-routing-key":"{}""#,
            self.dead_letter_queue
        );
        if self.queue_type == QueueType::Quorum {
            definition
                .push_str(r#","dead-letter-strategy":"at-least-once","overflow":"reject-publish""#);
        }
        definition.push('}');
        format!(
            "rabbitmqctl set_policy zoom-dept-sync-dlx '^{}$' '{definition}' --apply-to queues",
            regex_escape(&self.queue)
        )
    }

    async fn ensure_queue(&self, channel: &Channel, queue: &str) -> Result<(), lapin::Error> {
        let options = QueueDeclareOptions {
            durable: true,
            passive: !self.declare,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.into(), options, self.arguments(queue))
            .await
            .map(drop)
    }

    /// Before a reject the broker dead-letters: RabbitMQ drops a message
    /// dead-lettered to a missing queue (classic queues; quorum queues with
    /// `at-least-once` keep it), so the queue must exist first. A passive
    /// declare on a channel of its own (a `NOT_FOUND` closes the channel it
    /// comes on), and when the queue is gone, the repair a returned dead
    /// letter gets. `Err` says why the message must go back instead.
    /// (https://www.rabbitmq.com/docs/dlx: classic queues dead-letter at most once).
    pub async fn ensure_dead_letter_queue(
        &self,
        connection: &Connection,
    ) -> Result<(), MissingDeadLetterQueue> {
        let queue = &self.dead_letter_queue;
        let unchecked = |e: lapin::Error| MissingDeadLetterQueue::Unchecked {
            queue: queue.clone(),
            detail: e.to_string(),
        };
        let channel = connection.create_channel().await.map_err(unchecked)?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
        {
            Ok(_) => {
                let _ = channel.close(200, "dead-letter queue checked".into()).await;
                return Ok(());
            }
            Err(e) if !is_not_found(&e) => return Err(unchecked(e)),
            Err(_) => {}
        }
        tracing::error!(
            %queue,
            "the dead-letter queue is missing: a message rejected now would be dropped by the broker"
        );
        let channel = connection.create_channel().await.map_err(unchecked)?;
        let repaired = self.repair_dead_letter_queue(&channel).await;
        let _ = channel
            .close(200, "dead-letter queue declared".into())
            .await;
        if repaired {
            Ok(())
        } else {
            Err(MissingDeadLetterQueue::Missing {
                queue: queue.clone(),
            })
        }
    }

    /// After a dead letter came back unroutable: declare the queue again so
    /// the next try lands, if the daemon owns the topology.
    /// `true` when the queue is back.
    pub async fn repair_dead_letter_queue(&self, channel: &Channel) -> bool {
        if !self.declare {
            tracing::error!(
                queue = %self.dead_letter_queue,
                "declare_topology = false: create the dead-letter queue; events are requeued until it exists"
            );
            return false;
        }
        match self.ensure_queue(channel, &self.dead_letter_queue).await {
            Ok(()) => {
                tracing::warn!(queue = %self.dead_letter_queue, "declared the dead-letter queue again");
                true
            }
            Err(e) => {
                tracing::error!(queue = %self.dead_letter_queue, error = %e, "cannot declare the dead-letter queue");
                false
            }
        }
    }
}

/// Why a message over the size limit cannot be rejected to the broker's
/// dead-lettering now: it goes back to the input queue instead.
#[derive(Debug, thiserror::Error)]
pub enum MissingDeadLetterQueue {
    #[error("the dead-letter queue {queue} does not exist and the daemon cannot declare it")]
    Missing { queue: String },
    #[error("cannot check that the dead-letter queue {queue} exists: {detail}")]
    Unchecked { queue: String, detail: String },
}

/// The broker's `NOT_FOUND` (404): the queue or exchange does not exist.
pub fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 404)
}

/// The broker's `ACCESS_REFUSED` (403): the user lacks a permission.
pub fn is_access_refused(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 403)
}

/// Declares a durable exchange, or only checks it (passive) when the
/// operator owns the topology (`declare` false): the input exchange and
/// the audit trail's exchange are set up alike.
pub(super) async fn declare_exchange(
    channel: &lapin::Channel,
    name: &str,
    kind: ExchangeKind,
    declare: bool,
) -> Result<(), lapin::Error> {
    let options = ExchangeDeclareOptions {
        durable: true,
        passive: !declare,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name.into(), kind, options, FieldTable::default())
        .await
}
