//! The two queues the daemon needs: declared (durable) when it owns the
//! topology, only checked (passive) when the operator does.

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::config::{AmqpSettings, QueueType};

#[derive(Debug, Clone)]
pub struct Topology {
    pub queue: String,
    pub dead_letter_queue: String,
    pub declare: bool,
    single_active_consumer: bool,
    queue_type: QueueType,
}

impl Topology {
    pub fn new(settings: &AmqpSettings) -> Self {
        Self {
            queue: settings.queue.clone(),
            dead_letter_queue: settings.dead_letter_queue(),
            declare: settings.declare_topology,
            single_active_consumer: settings.single_active_consumer,
            queue_type: settings.queue_type,
        }
    }

    /// The arguments a queue is declared with; a redeclaration with other
    /// arguments fails, so they come from this one place.
    pub fn arguments(&self, queue: &str) -> FieldTable {
        let mut arguments = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("quorum")),
            );
        }
        if self.single_active_consumer && queue == self.queue {
            arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        arguments
    }

    /// Declares both queues, or checks that they exist.
    pub async fn ensure(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for queue in [&self.queue, &self.dead_letter_queue] {
            self.ensure_queue(channel, queue).await?;
        }
        Ok(())
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
