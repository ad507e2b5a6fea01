//! The operator commands' broker work: read a queue without changing it,
//! move or drop selected messages one at a time, publish with confirms.
//!
//! Reading takes every message with `basic.get` (unacknowledged) and hands
//! them all back at the end with one `basic.nack` (requeue). A classic queue
//! puts requeued messages back in their original positions; a quorum queue
//! serves what was handed back first, in the order handed back. Either way
//! the queue keeps its order, provided a read takes the *whole* queue before
//! handing anything back: a quorum queue would put a head handed back early
//! behind the rest. So a read that stops early (a cap, a sweep told to stop)
//! still takes the rest first ([`take_the_rest`]). `basic.nack` is what
//! RabbitMQ 4.3 does not count toward a delivery limit (`basic.reject`
//! would be); before 4.3 every hand-back counts, hence the quorum
//! dead-letter queue's out-of-reach limit (see `topology`).
//!
//! A sweep (replay, purge) decides message by message. A message that moves
//! is published to its new queue with `mandatory` and a publisher confirm,
//! and only then acked in the old one; a message that stays is held and
//! handed back at the end, in its place. Killed half-way, the broker hands
//! back everything not yet acked: each message is in exactly one queue,
//! except one moved message if the process dies between its confirm and its
//! ack (then it is in both; its `replay-id` tells them apart).

use std::time::{Duration, Instant};

use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::confirm::publish_confirmed;
use crate::settings::AmqpSettings;
use crate::topology::Topology;
use zds_core::triage::{HeaderEdit, HeaderValue, LISTED_BODY_BYTES, StoredMessage};

/// How long one broker operation of a command may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A [`super::ConnectError`]'s text: it names the broker's host and port.
    #[error("{0}")]
    Connect(String),
    #[error("queue {queue} does not exist")]
    MissingQueue { queue: String },
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker did not answer within {} s", OPERATION_TIMEOUT.as_secs())]
    Timeout,
    #[error("the broker refused the message to {queue}: {why}")]
    NotPublished { queue: String, why: String },
}

/// Ready messages and consumers of a queue.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct QueueCounts {
    pub ready: u32,
    pub consumers: u32,
}

/// What a sweep does with one message.
#[derive(Debug)]
pub enum Step {
    /// Leave it where it is, in its place.
    Keep,
    /// Publish it to `queue` with the headers edited, then remove it here.
    MoveTo { queue: String, edit: HeaderEdit },
    /// Remove it (the caller saved what it needs first).
    Drop,
    /// Stop the sweep here; this message and the rest stay.
    Stop,
}

/// How a sweep went.
#[derive(Debug, Default, Clone, Copy)]
pub struct SweepSummary {
    pub moved: usize,
    pub dropped: usize,
    /// The sweep stopped early (a signal, the decider, or the hold limit).
    pub stopped: bool,
}

/// Limits of a sweep.
pub struct SweepLimits {
    /// Messages moved or dropped per second, at most.
    pub rate: Option<f64>,
    /// Cancelled by SIGINT or SIGTERM: finish the message in hand, stop.
    pub stop: CancellationToken,
    /// Held messages must go back before the broker's consumer timeout.
    pub hold_for: Duration,
}

pub struct Admin {
    connection: Connection,
}

impl Admin {
    /// Connects to the first of the broker addresses that answers; each
    /// attempt is bounded ([`crate::connect::ATTEMPT_TIMEOUT`]).
    pub async fn connect(amqp: &AmqpSettings, command: &str) -> Result<Self, AdminError> {
        let connection = crate::connect::connect(amqp, format!("zoom-dept-sync {command}"))
            .await
            .map_err(|e| AdminError::Connect(e.to_string()))?;
        Ok(Self { connection })
    }

    /// A new channel, within [`OPERATION_TIMEOUT`] (a connection that broke
    /// under us may never answer).
    async fn channel(&self) -> Result<Channel, AdminError> {
        tokio::time::timeout(OPERATION_TIMEOUT, self.connection.create_channel())
            .await
            .map_err(|_| AdminError::Timeout)?
            .map_err(AdminError::from)
    }

    /// Hands each message body of a stream, from `since` (its start when
    /// `None`), to `visit`, without consuming anything: a stream keeps its
    /// messages. Stops when `visit` breaks, or once no message came for
    /// `idle` (a stream has no end). Returns how many bodies were visited.
    pub async fn read_stream(
        &self,
        stream: &str,
        since: Option<time::OffsetDateTime>,
        idle: Duration,
        mut visit: impl FnMut(&[u8]) -> std::ops::ControlFlow<()>,
    ) -> Result<usize, AdminError> {
        use futures_util::StreamExt;
        let channel = self.channel().await?;
        // A stream needs a prefetch and explicit acks (which move nothing).
        channel
            .basic_qos(500, lapin::options::BasicQosOptions::default())
            .await?;
        let offset = match since {
            Some(at) => AMQPValue::Timestamp(u64::try_from(at.unix_timestamp()).unwrap_or(0)),
            None => AMQPValue::LongString(LongString::from("first")),
        };
        let mut arguments = FieldTable::default();
        arguments.insert("x-stream-offset".into(), offset);
        let mut consumer = channel
            .basic_consume(
                stream.into(),
                "zoom-dept-sync history".into(),
                lapin::options::BasicConsumeOptions::default(),
                arguments,
            )
            .await
            .map_err(|e| missing_or(e, stream))?;
        let mut visited = 0;
        while let Ok(Some(delivery)) = tokio::time::timeout(idle, consumer.next()).await {
            let delivery = delivery?;
            delivery
                .ack(lapin::options::BasicAckOptions::default())
                .await?;
            visited += 1;
            if visit(&delivery.data).is_break() {
                break;
            }
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(visited)
    }

    pub async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.connection.close(200, "done".into()),
        )
        .await;
    }

    /// `None` when the queue does not exist.
    /// Whether an exchange exists (a passive declare, on a channel of its
    /// own: a failed one closes its channel).
    pub async fn exchange_exists(&self, exchange: &str) -> Result<bool, AdminError> {
        let channel = self.channel().await?;
        let passive = lapin::options::ExchangeDeclareOptions {
            passive: true,
            ..lapin::options::ExchangeDeclareOptions::default()
        };
        let declared = channel
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Topic,
                passive,
                FieldTable::default(),
            )
            .await;
        if declared.is_ok() {
            let _ = channel.close(200, "checked".into()).await;
        }
        Ok(declared.is_ok())
    }

    pub async fn counts(&self, queue: &str) -> Result<Option<QueueCounts>, AdminError> {
        // A failed passive declare closes its channel: one of its own.
        let channel = self.channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await;
        Ok(declared.ok().map(|q| QueueCounts {
            ready: q.message_count(),
            consumers: q.consumer_count(),
        }))
    }

    /// `Ok(())` when `queue` exists with exactly the arguments the daemon
    /// declares it with; else the broker's words on the difference.
    pub async fn check_arguments(
        &self,
        topology: &Topology,
        queue: &str,
    ) -> Result<(), AdminError> {
        self.check_declared_with(queue, topology.arguments(queue))
            .await
    }

    /// Whether `queue` is a classic queue with no other arguments (which
    /// has no delivery limit). Asked with an explicit `x-queue-type`: on
    /// RabbitMQ 4 a vhost's default queue type fills in a missing one, so
    /// an empty redeclaration could match a quorum queue.
    pub async fn is_plain_classic(&self, queue: &str) -> bool {
        let mut classic = FieldTable::default();
        classic.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("classic")),
        );
        self.check_declared_with(queue, classic).await.is_ok()
    }

    /// `Ok(())` when `queue` exists and a redeclaration with `arguments`
    /// matches it (a classic queue: no arguments at all).
    pub async fn check_declared_with(
        &self,
        queue: &str,
        arguments: FieldTable,
    ) -> Result<(), AdminError> {
        if self.counts(queue).await?.is_none() {
            return Err(AdminError::MissingQueue {
                queue: queue.to_owned(),
            });
        }
        let channel = self.channel().await?;
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(queue.into(), options, arguments)
            .await;
        let _ = channel.close(200, "checked".into()).await;
        Ok(declared.map(drop)?)
    }

    /// Every message of `queue`, head first; the queue is left as it was.
    /// Each body is kept up to [`LISTED_BODY_BYTES`] (with its length).
    pub async fn peek(&self, queue: &str) -> Result<Vec<StoredMessage>, AdminError> {
        Ok(self.peek_at_most(queue, usize::MAX).await?.0)
    }

    /// The first `cap` messages of `queue`, head first, and whether more
    /// were there; the queue is left as it was. Each message read is handed
    /// back once, which a quorum queue counts as a delivery.
    pub async fn peek_at_most(
        &self,
        queue: &str,
        cap: usize,
    ) -> Result<(Vec<StoredMessage>, bool), AdminError> {
        let channel = self.channel().await?;
        let mut messages = Vec::new();
        let mut last_tag = None;
        let mut capped = false;
        while let Some(got) = get(&channel, queue).await? {
            last_tag = Some(got.delivery.delivery_tag);
            if messages.len() == cap {
                capped = true;
                let remaining = got.message_count;
                last_tag = take_the_rest(&channel, queue, last_tag, remaining).await?;
                break;
            }
            messages.push(stored(messages.len(), &got, LISTED_BODY_BYTES));
        }
        hand_back(&channel, last_tag).await?;
        Ok((messages, capped))
    }

    /// Goes through `queue` head first and does to each message what
    /// `decide` says (see [`Step`]); everything kept goes back in its place.
    pub async fn sweep(
        &self,
        queue: &str,
        limits: &SweepLimits,
        mut decide: impl FnMut(&StoredMessage) -> Step,
    ) -> Result<SweepSummary, AdminError> {
        let channel = self.channel().await?;
        let publisher = self.channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let started = Instant::now();
        let mut summary = SweepSummary::default();
        let mut pacer = limits.rate.map(pacer);
        let mut last_kept = None;
        // Behind the last message taken, as the broker counted them.
        let mut remaining = 0;
        let mut position = 0;
        let result = loop {
            if limits.stop.is_cancelled() || started.elapsed() > limits.hold_for {
                summary.stopped = true;
                break Ok(());
            }
            let got = match get(&channel, queue).await {
                Ok(Some(got)) => got,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let tag = got.delivery.delivery_tag;
            remaining = got.message_count;
            // One message at a time, whole: `purge --export` writes it.
            let message = stored(position, &got, usize::MAX);
            position += 1;
            let step = decide(&message);
            if matches!(step, Step::MoveTo { .. } | Step::Drop)
                && let Some(pacer) = pacer.as_mut()
            {
                pacer.tick().await;
            }
            let applied = self.apply(&publisher, &got, step).await;
            // Only held messages are handed back: a nack naming a tag that
            // was acked already is a channel error.
            if !matches!(applied, Ok(Applied::Moved | Applied::Dropped)) {
                last_kept = Some(tag);
            }
            match applied {
                Ok(Applied::Kept) => {}
                Ok(Applied::Moved) => summary.moved += 1,
                Ok(Applied::Dropped) => summary.dropped += 1,
                Ok(Applied::Stopped) => {
                    summary.stopped = true;
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        if summary.stopped && result.is_ok() {
            last_kept = take_the_rest(&channel, queue, last_kept, remaining).await?;
        }
        hand_back(&channel, last_kept).await?;
        result.map(|()| summary)
    }

    async fn apply(
        &self,
        publisher: &Channel,
        got: &BasicGetMessage,
        step: Step,
    ) -> Result<Applied, AdminError> {
        match step {
            Step::Keep => Ok(Applied::Kept),
            Step::Stop => Ok(Applied::Stopped),
            Step::Drop => {
                ack(got).await?;
                Ok(Applied::Dropped)
            }
            Step::MoveTo { queue, edit } => {
                let properties = edited(&got.delivery.properties, &edit);
                publish(publisher, &queue, &got.delivery.data, properties).await?;
                ack(got).await?;
                Ok(Applied::Moved)
            }
        }
    }

    /// A channel in confirm mode, for publishing many messages.
    pub async fn publisher(&self) -> Result<Publisher, AdminError> {
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }
}

/// Publishes with confirms on one channel.
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// A persistent JSON message, confirmed.
    pub async fn publish_json(&self, queue: &str, body: &[u8]) -> Result<(), AdminError> {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        publish(&self.channel, queue, body, properties).await
    }

    /// A persistent JSON event with its id as `message_id` and string
    /// headers (e.g. `reconcile-run-id`), confirmed.
    pub async fn publish_event(
        &self,
        queue: &str,
        body: &[u8],
        message_id: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), AdminError> {
        let mut table = FieldTable::default();
        for (name, value) in headers {
            table.insert(
                (*name).into(),
                AMQPValue::LongString(LongString::from(*value)),
            );
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(table);
        // A short string holds 255 bytes; a longer id stays in the body.
        if message_id.len() <= 255 {
            properties = properties.with_message_id(message_id.into());
        }
        publish(&self.channel, queue, body, properties).await
    }
}

enum Applied {
    Kept,
    Moved,
    Dropped,
    Stopped,
}

/// Ticks at most `rate` times a second.
fn pacer(rate: f64) -> tokio::time::Interval {
    let period = Duration::from_secs_f64(1.0 / rate.clamp(0.001, 100_000.0));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

async fn get(channel: &Channel, queue: &str) -> Result<Option<BasicGetMessage>, AdminError> {
    let get = channel.basic_get(queue.into(), BasicGetOptions { no_ack: false });
    match tokio::time::timeout(OPERATION_TIMEOUT, get).await {
        Err(_) => Err(AdminError::Timeout),
        Ok(Ok(got)) => Ok(got),
        Ok(Err(e)) if e.to_string().contains("NOT_FOUND") => Err(AdminError::MissingQueue {
            queue: queue.into(),
        }),
        Ok(Err(e)) => Err(e.into()),
    }
}

async fn ack(got: &BasicGetMessage) -> Result<(), AdminError> {
    let acked = got.delivery.acker.ack(BasicAckOptions::default());
    tokio::time::timeout(OPERATION_TIMEOUT, acked)
        .await
        .map_err(|_| AdminError::Timeout)??;
    Ok(())
}

/// Takes (holds) every message left in `queue`, so that the hand-back that
/// follows returns the whole queue in order (see the module's comment).
/// Returns the last tag held: `last_held`, or a later one.
///
/// Only the `remaining` messages the broker counted behind the last one
/// taken: a message that arrives meanwhile is behind everything held
/// anyway, and a queue that keeps filling (the daemon dead-lettering, a
/// webhook burst) must not keep the read going forever.
async fn take_the_rest(
    channel: &Channel,
    queue: &str,
    mut last_held: Option<u64>,
    remaining: u32,
) -> Result<Option<u64>, AdminError> {
    for _ in 0..remaining {
        match get(channel, queue).await? {
            Some(got) => last_held = Some(got.delivery.delivery_tag),
            None => break,
        }
    }
    Ok(last_held)
}

/// Hands back every message still held on `channel` (up to `last_held`,
/// which must be held, not acked), each to its original place, and closes
/// the channel.
async fn hand_back(channel: &Channel, last_held: Option<u64>) -> Result<(), AdminError> {
    if let Some(tag) = last_held {
        let options = BasicNackOptions {
            multiple: true,
            requeue: true,
        };
        tokio::time::timeout(OPERATION_TIMEOUT, channel.basic_nack(tag, options))
            .await
            .map_err(|_| AdminError::Timeout)??;
    }
    let _ = tokio::time::timeout(OPERATION_TIMEOUT, channel.close(200, "done".into())).await;
    Ok(())
}

async fn publish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), AdminError> {
    let publish = publish_confirmed(channel, "", queue, body, properties);
    let confirmation = tokio::time::timeout(OPERATION_TIMEOUT, publish)
        .await
        .map_err(|_| AdminError::Timeout)??;
    let refused = |why: &str| AdminError::NotPublished {
        queue: queue.into(),
        why: why.into(),
    };
    if confirmation.is_nack() {
        return Err(refused("nacked"));
    }
    if let Some(returned) = confirmation.take_message() {
        return Err(refused(&format!("unroutable ({})", returned.reply_text)));
    }
    Ok(())
}

/// The message as [`StoredMessage`], keeping at most `keep` bytes of its
/// body (see [`LISTED_BODY_BYTES`]).
fn stored(position: usize, got: &BasicGetMessage, keep: usize) -> StoredMessage {
    let properties = &got.delivery.properties;
    let headers = properties
        .headers()
        .as_ref()
        .map(table_to_json)
        .unwrap_or_default();
    let message_id = properties.message_id().as_ref().map(|id| id.to_string());
    StoredMessage::of(position, headers, message_id, &got.delivery.data, keep)
}

/// The message's properties with its headers edited.
fn edited(properties: &BasicProperties, edit: &HeaderEdit) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        if !edit.remove.contains(&key.as_str()) {
            kept.insert(key.clone(), value.clone());
        }
    }
    headers = kept;
    for (key, value) in &edit.set {
        let value = match value {
            HeaderValue::Int(n) => AMQPValue::LongLongInt(*n),
            HeaderValue::Text(t) => AMQPValue::LongString(LongString::from(t.as_str())),
        };
        headers.insert(key.as_str().into(), value);
    }
    properties.clone().with_headers(headers)
}

/// AMQP header values as JSON: numbers, text, booleans, tables, arrays;
/// timestamps as Unix seconds, byte arrays as lossy text.
pub fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(key, value)| (key.to_string(), to_json(value)))
        .collect()
}

fn to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::Float(f) => Value::from(*f),
        AMQPValue::Double(d) => Value::from(*d),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => Value::from(s.to_string()),
        AMQPValue::ByteArray(b) => Value::from(String::from_utf8_lossy(b.as_slice()).into_owned()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(to_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(table_to_json(t)),
        AMQPValue::DecimalValue(d) => Value::from(format!("{d:?}")),
        AMQPValue::Void => Value::Null,
    }
}

/// A consume on a queue that does not exist fails with 404: say which.
fn missing_or(error: lapin::Error, queue: &str) -> AdminError {
    if error.to_string().contains("NOT_FOUND") || error.to_string().contains("404") {
        AdminError::MissingQueue {
            queue: queue.to_owned(),
        }
    } else {
        AdminError::Broker(error)
    }
}
