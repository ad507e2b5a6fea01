//! Settles each delivery exactly once, by its own acker: ack, dead-letter
//! then ack, or requeue.
//!
//! A dead letter is published with publisher confirms and `mandatory`, and
//! the original is acked only after the broker confirmed the dead letter *and*
//! did not return it as unroutable. RabbitMQ confirms a message sent to a
//! missing queue with an ack and drops it, so without both checks a deleted
//! dead-letter queue would silently lose events.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::confirm::publish_confirmed;
use super::outcomes::OutcomeTopology;
use super::topology::Topology;
use crate::worker::Processed;
use zds_core::outcome::{DeadLetter, FailureReason, Outcome};
use zds_core::trail::{OutcomeRecord, Stamp};

/// Persistent delivery mode.
const PERSISTENT: u8 = 2;

/// How settling went; `NotSettled` means the broker will redeliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Acked,
    DeadLettered,
    Requeued,
    /// The dead letter could not be published; the original was handed back.
    DeadLetterFailed(PublishError),
    /// The outcome record could not be published; the original was handed
    /// back (no event is acked without its record).
    OutcomeFailed(PublishError),
    /// The delivery belongs to a channel that is gone: the broker still
    /// holds it and redelivers it.
    NotSettled(String),
}

pub use zds_amqp::confirm::PublishError;

pub struct Settler {
    publisher: Channel,
    /// The publisher's connection: throwaway channels for checking the
    /// dead-letter queue before a reject.
    connection: Arc<Connection>,
    topology: Topology,
    /// Where outcome records go, when the audit trail is on.
    outcomes: Option<OutcomeTopology>,
    /// A broker under a memory or disk alarm never confirms: past this the
    /// dead letter counts as failed and the original goes back.
    confirm_timeout: Duration,
}

impl Settler {
    /// `publisher` must be in confirm mode, on a connection of its own (a
    /// broker blocking publishers must not stall acks).
    pub fn new(
        publisher: Channel,
        connection: Arc<Connection>,
        topology: Topology,
        outcomes: Option<OutcomeTopology>,
        confirm_timeout: Duration,
    ) -> Self {
        Self {
            publisher,
            connection,
            topology,
            outcomes,
            confirm_timeout,
        }
    }

    pub async fn settle(&self, delivery: &Delivery, processed: &Processed) -> Settled {
        match &processed.outcome {
            Outcome::Applied
            | Outcome::Added
            | Outcome::AlreadyApplied
            | Outcome::Skipped { .. }
            | Outcome::Stale { .. } => {
                self.record_then_ack(delivery, processed, Settled::Acked)
                    .await
            }
            Outcome::DeadLetter(dead_letter)
                if dead_letter.reason == FailureReason::TooLarge
                    && self.topology.broker_dead_letters() =>
            {
                self.reject_too_large(delivery, processed).await
            }
            Outcome::DeadLetter(dead_letter) => {
                // The record first: a record that fails sends the event back
                // before a dead letter exists, so no dead letter is ever
                // published twice (a stale copy could be replayed later).
                if let Err(error) = self.publish_outcome(delivery, processed).await {
                    let _ = requeue(delivery).await;
                    return Settled::OutcomeFailed(error);
                }
                match self
                    .publish_dead_letter(delivery, processed, dead_letter)
                    .await
                {
                    Ok(()) => ack(delivery, Settled::DeadLettered).await,
                    Err(error) => {
                        // Hand it back now rather than at the next reconnect.
                        let _ = requeue(delivery).await;
                        Settled::DeadLetterFailed(error)
                    }
                }
            }
            Outcome::Requeue { .. } => {
                // It goes back either way: the record is best effort.
                if let Err(error) = self.publish_outcome(delivery, processed).await {
                    tracing::warn!(why = %error.why, "the outcome of a requeued event was not published");
                }
                requeue(delivery).await
            }
            Outcome::Abandoned { .. } => requeue(delivery).await,
        }
    }

    /// A message over the size limit: the broker dead-letters it (the input
    /// queue's dead-letter exchange), so its body is never sent again. The
    /// dead-letter queue is checked (declared again if the daemon owns the
    /// topology) before the record and the reject: a reject into a missing
    /// queue is a silent drop, so without the queue the message goes back
    /// and consuming pauses, as for a dead letter that cannot be published.
    async fn reject_too_large(&self, delivery: &Delivery, processed: &Processed) -> Settled {
        let ensure = self.topology.ensure_dead_letter_queue(&self.connection);
        let missing = match tokio::time::timeout(self.confirm_timeout, ensure).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "checking the dead-letter queue {} took over {} s",
                self.topology.dead_letter_queue,
                self.confirm_timeout.as_secs()
            )),
        };
        if let Some(why) = missing {
            let _ = requeue(delivery).await;
            return Settled::DeadLetterFailed(PublishError {
                why,
                repaired: false,
            });
        }
        if let Err(error) = self.publish_outcome(delivery, processed).await {
            let _ = requeue(delivery).await;
            return Settled::OutcomeFailed(error);
        }
        reject(delivery).await
    }

    /// Publishes the outcome record (confirmed), then acks; a record that
    /// cannot be published sends the event back instead.
    async fn record_then_ack(
        &self,
        delivery: &Delivery,
        processed: &Processed,
        done: Settled,
    ) -> Settled {
        if let Err(error) = self.publish_outcome(delivery, processed).await {
            let _ = requeue(delivery).await;
            return Settled::OutcomeFailed(error);
        }
        ack(delivery, done).await
    }

    async fn publish_outcome(
        &self,
        delivery: &Delivery,
        processed: &Processed,
    ) -> Result<(), PublishError> {
        let Some(outcomes) = &self.outcomes else {
            return Ok(());
        };
        let Some(record) = OutcomeRecord::of(processed, run_id(delivery), stamp_now()) else {
            return Ok(());
        };
        outcomes
            .publish(
                &self.publisher,
                (&record, &record.id, record.routing_key()),
                self.confirm_timeout,
            )
            .await
    }

    /// Hands a delivery back unprocessed (shutdown grace over).
    pub async fn abandon(&self, delivery: &Delivery) -> Settled {
        requeue(delivery).await
    }

    async fn publish_dead_letter(
        &self,
        delivery: &Delivery,
        processed: &Processed,
        dead_letter: &DeadLetter,
    ) -> Result<(), PublishError> {
        let failed = |why: String| PublishError {
            why,
            repaired: false,
        };
        let headers = dead_letter_headers(
            delivery.properties.headers().clone().unwrap_or_default(),
            dead_letter,
            processed.attempts,
            &self.topology.queue,
        );
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_headers(headers);
        if let Some(content_type) = delivery.properties.content_type() {
            properties = properties.with_content_type(content_type.clone());
        }
        // A short string holds 255 bytes; a longer id stays in the body.
        if let Some(id) = processed
            .event_id
            .as_ref()
            .filter(|id| id.as_str().len() <= 255)
        {
            properties = properties.with_message_id(id.as_str().into());
        }
        let queue = &self.topology.dead_letter_queue;
        let publish = async {
            publish_confirmed(&self.publisher, "", queue, &delivery.data, properties)
                .await
                .map_err(|e| failed(format!("publish failed: {e}")))
        };
        let confirmation = tokio::time::timeout(self.confirm_timeout, publish)
            .await
            .map_err(|_| {
                failed(format!(
                    "no confirmation within {} s (is the broker blocking publishers?)",
                    self.confirm_timeout.as_secs()
                ))
            })??;
        if confirmation.is_nack() {
            return Err(failed("the broker nacked it".into()));
        }
        if let Some(returned) = confirmation.take_message() {
            tracing::error!(
                queue = %self.topology.dead_letter_queue,
                reply = %returned.reply_text,
                "the dead-letter queue is missing: the broker returned the dead letter as unroutable"
            );
            let repaired = self
                .topology
                .repair_dead_letter_queue(&self.publisher)
                .await;
            return Err(PublishError {
                why: format!("unroutable ({})", returned.reply_text),
                repaired,
            });
        }
        Ok(())
    }
}

/// Set by `reconcile --apply --allow-large` (with `reconcile-run-id`): the
/// plan was approved as large, so the brake does not hold it again.
pub const ALLOW_LARGE_HEADER: &str = "reconcile-allow-large";

/// Whether the operator published the event: through the default
/// exchange, which the operator's grant reaches and the receiver's does not
/// (the receiver writes only `amqp.input_exchange`). Headers that change
/// what the daemon does or records (the brake's exemption, the reconcile
/// run) are trusted only then: anyone holding the receiver's credentials
/// could set them otherwise.
fn from_operator(delivery: &Delivery) -> bool {
    delivery.exchange.as_str().is_empty()
}

/// Whether the event belongs to a reconcile plan approved as large: both
/// headers, the flag `"true"`, published by the operator.
pub(crate) fn approved_as_large(delivery: &Delivery) -> bool {
    if !from_operator(delivery) {
        return false;
    }
    let flag = delivery.properties.headers().as_ref().and_then(|h| {
        match h.inner().get(ALLOW_LARGE_HEADER)? {
            AMQPValue::LongString(s) => Some(s.as_bytes() == b"true"),
            AMQPValue::ShortString(s) => Some(s.as_str() == "true"),
            AMQPValue::Boolean(b) => Some(*b),
            _ => None,
        }
    });
    flag == Some(true) && run_id(delivery).is_some()
}

/// The `reconcile` run that published the event (its `reconcile-run-id`
/// header, from the operator only), for the audit trail.
fn run_id(delivery: &Delivery) -> Option<String> {
    if !from_operator(delivery) {
        return None;
    }
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("reconcile-run-id")? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// An ack or nack on a connection that died without lapin noticing yet may
/// never complete; the turn of the user's next event waits on it.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

async fn ack(delivery: &Delivery, done: Settled) -> Settled {
    let acked = tokio::time::timeout(SETTLE_TIMEOUT, delivery.ack(BasicAckOptions::default()));
    match acked.await {
        Ok(Ok(true)) => done,
        // lapin's answer for an acker of a channel that was lost.
        Ok(Ok(false)) => Settled::NotSettled("stale channel: the broker will redeliver it".into()),
        Ok(Err(e)) => Settled::NotSettled(format!("ack failed: {e}")),
        Err(_) => Settled::NotSettled("no answer to the ack: the broker will redeliver it".into()),
    }
}

async fn requeue(delivery: &Delivery) -> Settled {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    match tokio::time::timeout(SETTLE_TIMEOUT, delivery.nack(options)).await {
        Ok(Ok(true)) => Settled::Requeued,
        Ok(Ok(false)) => Settled::NotSettled("stale channel: the broker will redeliver it".into()),
        Ok(Err(e)) => Settled::NotSettled(format!("nack failed: {e}")),
        Err(_) => Settled::NotSettled("no answer to the nack: the broker will redeliver it".into()),
    }
}

/// Rejects without requeue: the input queue's dead-letter exchange routes
/// the message, as it is, to the dead-letter queue with `x-death` (reason
/// `rejected`). On a quorum queue with `dead-letter-strategy` `at-least-once`
/// the broker keeps it until the dead-letter queue has confirmed it
/// (https://www.rabbitmq.com/docs/quorum-queues#dead-lettering).
async fn reject(delivery: &Delivery) -> Settled {
    let options = BasicNackOptions {
        requeue: false,
        ..BasicNackOptions::default()
    };
    match tokio::time::timeout(SETTLE_TIMEOUT, delivery.nack(options)).await {
        Ok(Ok(true)) => Settled::DeadLettered,
        Ok(Ok(false)) => Settled::NotSettled("stale channel: the broker will redeliver it".into()),
        Ok(Err(e)) => Settled::NotSettled(format!("reject failed: {e}")),
        Err(_) => {
            Settled::NotSettled("no answer to the reject: the broker will redeliver it".into())
        }
    }
}

/// SPEC "Dead-letter messages" headers, over the original ones (kept so a
/// replay carries what the producer sent).
pub fn dead_letter_headers(
    mut headers: FieldTable,
    dead_letter: &DeadLetter,
    attempts: u32,
    source_queue: &str,
) -> FieldTable {
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    headers.insert("failure-reason".into(), text(dead_letter.reason.as_str()));
    if let Some(zoom) = &dead_letter.zoom {
        if let Some(status) = zoom.status {
            headers.insert(
                "zoom-http-status".into(),
                AMQPValue::LongLongInt(status.into()),
            );
        }
        if let Some(code) = zoom.code {
            headers.insert("zoom-error-code".into(), AMQPValue::LongLongInt(code));
        }
        if zoom.message_from_zoom {
            headers.insert("zoom-error-message".into(), text(&zoom.message));
        }
    }
    // Why, in words, when Zoom's body did not say it (a timeout, an HTML 502).
    let detail = dead_letter.detail.as_deref().or(dead_letter
        .zoom
        .as_ref()
        .filter(|z| !z.message_from_zoom && !z.message.is_empty())
        .map(|z| z.message.as_str()));
    if let Some(detail) = detail {
        headers.insert("detail".into(), text(detail));
    }
    headers.insert(
        "failure-attempts".into(),
        AMQPValue::LongLongInt(attempts.into()),
    );
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    headers.insert("failed-at".into(), text(&now));
    headers.insert("source-queue".into(), text(source_queue));
    headers
}

/// The record's time and id nonce: now, and a random number.
fn stamp_now() -> Stamp {
    Stamp {
        at: time::OffsetDateTime::now_utc(),
        nonce: fastrand::u64(..),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `triage` (no AMQP) spells the header itself: the two names are one.
    #[test]
    fn a_replay_removes_the_exemption_under_its_own_name() {
        let edit = zds_core::triage::replay_edit(
            &serde_json::Map::new(),
            "r1",
            time::OffsetDateTime::UNIX_EPOCH,
        );
        assert!(edit.remove.contains(&ALLOW_LARGE_HEADER));
    }
}
