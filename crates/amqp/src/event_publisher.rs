//! A long-lived, confirmed publisher of events to the input queue, for the
//! webhook receiver: one connection and one confirm-mode channel shared by
//! every request, opened on first use and opened again after a failure.
//!
//! Events go through the receiver's own exchange (`amqp.input_exchange`,
//! bound to the input queue), never the default exchange: the receiver's
//! user needs write on that exchange alone, so it can reach neither the
//! dead-letter queue nor the audit trail.
//!
//! Every publish is persistent and `mandatory`, and succeeds only once the
//! broker confirms it: an exchange bound to no queue returns the event, a
//! missing exchange closes the channel with `NOT_FOUND`; both are errors
//! that name the exchange, never a silent drop. Callers pass a deadline, and every await here (the
//! connection lock, connect, channel, publish, confirm) ends by it: a broker
//! that is down or blocked (an alarm) costs the caller its deadline, never
//! more.
//!
//! Readiness is what the last attempt showed ([`EventPublisher::readiness`]),
//! kept fresh by one background task ([`EventPublisher::keep`]): a storm of
//! `/readyz` calls during an outage opens no connection at all. A missing
//! exchange is a state of its own, named in `/readyz`: it holds until a
//! publish passes or the background check finds the exchange (a passive
//! declare on a channel of its own), so a fresh connection, which opens
//! fine without it, does not make the receiver look ready.

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::confirm::publish_confirmed;
use crate::connect::{ConnectError, connect_from};
use crate::settings::AmqpSettings;

/// Why an event was not published; each means "try again later".
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot reach the broker: {0}")]
    Unavailable(String),
    /// The broker refused the login or the vhost, or TLS cannot work:
    /// retrying cannot help until an operator acts.
    #[error("{0}")]
    Misconfigured(ConnectError),
    #[error("the broker did not confirm in time")]
    Timeout,
    #[error("the broker refused the event: {0}")]
    Refused(String),
    #[error(
        "exchange {exchange} does not exist: the daemon declares it (amqp.declare_topology = true); \
         otherwise declare it (durable, direct) and bind it to queue {queue} with routing key {queue}"
    )]
    NoExchange { exchange: String, queue: String },
}

/// Why the receiver cannot publish now, as `/readyz` says it: no host,
/// no file (the log has the details).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("not connected to the broker yet")]
    NotYet,
    #[error("cannot reach the broker")]
    Unreachable,
    #[error("the broker did not answer in time")]
    Slow,
    #[error("the connection to the broker was lost")]
    Lost,
    /// `ACCESS_REFUSED` answering the login (a changed password or user).
    #[error("the broker refuses the login of user {user}: check AMQP_URL's user and password")]
    LoginRefused { user: String },
    /// `NOT_ALLOWED` answering the vhost.
    #[error(
        "the broker refuses user {user} the vhost {vhost}: check that the vhost in AMQP_URL \
         exists and that the user has permissions on it"
    )]
    VhostRefused { user: String, vhost: String },
    /// The broker answered `NOT_FOUND` for the receiver's exchange.
    #[error(
        "exchange {exchange} does not exist: the daemon declares it (declare_topology = true) \
         or create it and bind it to the input queue"
    )]
    NoExchange { exchange: String },
}

/// The background check reconnects this often while the link is down.
const KEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// A background connection attempt gives up after this.
const CONNECT_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

struct Link {
    connection: Connection,
    channel: Channel,
    /// Tells links apart, so a request whose publish failed drops the link
    /// it used, not a fresh one another request has opened since.
    generation: u64,
}

pub struct EventPublisher {
    /// The broker's URL and TLS files.
    amqp: AmqpSettings,
    queue: String,
    exchange: String,
    link: Mutex<Option<Link>>,
    generations: std::sync::atomic::AtomicU64,
    /// Where in `amqp.urls` the next link starts: the address after the
    /// last link's, since a link is only opened again once it was lost.
    next_address: std::sync::atomic::AtomicUsize,
    /// The last attempt's outcome: what `/readyz` says while the link is
    /// busy or absent.
    last: std::sync::Mutex<Result<(), NotReady>>,
}

impl EventPublisher {
    /// Does not connect: the first publish (or readiness probe) does.
    pub fn new(amqp: &AmqpSettings) -> Self {
        Self {
            amqp: amqp.clone(),
            queue: amqp.queue.clone(),
            exchange: amqp.input_exchange(),
            link: Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(0),
            next_address: std::sync::atomic::AtomicUsize::new(0),
            last: std::sync::Mutex::new(Err(NotReady::NotYet)),
        }
    }

    /// Publishes `body` with `message_id`, waiting for the broker's confirm.
    pub async fn publish(
        &self,
        body: &[u8],
        message_id: &str,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let (channel, generation) = self.channel(deadline).await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message_id.into());
        let publish = publish_confirmed(&channel, &self.exchange, &self.queue, body, properties);
        let confirmation = match timeout_at(deadline, publish).await {
            Ok(Ok(confirmation)) => confirmation,
            Ok(Err(e)) => {
                // The broker closed the channel either way.
                let error = self.failed(&e);
                let why = match &error {
                    PublishError::NoExchange { exchange, .. } => NotReady::NoExchange {
                        exchange: exchange.clone(),
                    },
                    _ => NotReady::Lost,
                };
                self.drop_link(generation, why).await;
                return Err(error);
            }
            Err(_) => {
                // The channel may be blocked (an alarm) or lost: start over.
                self.drop_link(generation, NotReady::Lost).await;
                return Err(PublishError::Timeout);
            }
        };
        if confirmation.is_nack() {
            return Err(PublishError::Refused("nacked".into()));
        }
        if let Some(returned) = confirmation.take_message() {
            return Err(PublishError::Refused(format!(
                "exchange {} routes nothing to queue {} ({}): bind it to the queue with routing key {}",
                self.exchange, self.queue, returned.reply_text, self.queue
            )));
        }
        // The exchange is there (again).
        self.record(Ok(()));
        Ok(())
    }

    /// Ready when the link is open; else what the last attempt showed.
    /// Never waits, never connects.
    pub fn readiness(&self) -> Result<(), NotReady> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if matches!(last, Err(NotReady::NoExchange { .. })) {
            // An open link says nothing about the exchange.
            return last;
        }
        if let Ok(link) = self.link.try_lock() {
            match link.as_ref() {
                Some(open) if open.is_connected() => return Ok(()),
                Some(_) => return Err(NotReady::Lost),
                None => {}
            }
        }
        last
    }

    /// Until `shutdown`: connects at once, then every [`KEEP_EVERY`] while
    /// the link is down, so readiness follows the broker without a request
    /// (and without a probe) having to connect.
    pub async fn keep(&self, shutdown: CancellationToken) {
        loop {
            if let Err(why) = self.readiness()
                && let Err(e) = self.check(why, Instant::now() + CONNECT_WITHIN).await
            {
                if matches!(e, PublishError::Misconfigured(_)) {
                    tracing::error!(error = %e, "the broker refuses the receiver; trying again in 5 s");
                } else {
                    tracing::warn!(error = %e, "the receiver cannot publish; trying again in 5 s");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(KEEP_EVERY) => {}
            }
        }
    }

    /// The receiver's first connection, at start-up: a refusal no retry
    /// can fix (the login, the vhost, TLS) is the caller's to report (exit
    /// 2, as the daemon does); a broker merely unreachable or slow is not,
    /// and the background check keeps trying.
    pub async fn connect_first(&self, deadline: Instant) -> Result<(), ConnectError> {
        match self.channel(deadline).await {
            Err(PublishError::Misconfigured(e)) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "the receiver cannot publish yet; trying again in 5 s");
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    /// One round of the background check: connect when the link is down;
    /// when the exchange was missing, look for it again.
    async fn check(&self, why: NotReady, deadline: Instant) -> Result<(), PublishError> {
        self.channel(deadline).await?;
        if !matches!(why, NotReady::NoExchange { .. }) {
            return Ok(());
        }
        // The link's lock is held only to open the channel: requests do
        // not wait on the declare.
        let channel = {
            let link = timeout_at(deadline, self.link.lock())
                .await
                .map_err(|_| PublishError::Timeout)?;
            let Some(open) = link.as_ref() else {
                return Ok(());
            };
            timeout_at(deadline, open.connection.create_channel()).await
        };
        let channel = channel
            .map_err(|_| PublishError::Timeout)?
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        let found = timeout_at(deadline, self.exchange_exists(channel))
            .await
            .map_err(|_| PublishError::Timeout)?;
        match found {
            Ok(()) => {
                tracing::info!(exchange = %self.exchange, "the receiver's exchange exists again");
                self.record(Ok(()));
                Ok(())
            }
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// A passive declare of the receiver's exchange, on a channel of its
    /// own (not the publishing one): the broker closes the channel a
    /// `NOT_FOUND` comes on.
    async fn exchange_exists(&self, channel: Channel) -> Result<(), lapin::Error> {
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Direct,
                passive,
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "exchange checked".into()).await;
        Ok(())
    }

    /// Whether the last attempt found the exchange missing.
    fn exchange_missing(&self) -> bool {
        matches!(
            *self.last.lock().unwrap_or_else(|p| p.into_inner()),
            Err(NotReady::NoExchange { .. })
        )
    }

    fn record(&self, outcome: Result<(), NotReady>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
    }

    /// A missing exchange is the broker's `NOT_FOUND` (404) channel error.
    fn failed(&self, error: &lapin::Error) -> PublishError {
        let missing = matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 404)
            || error.to_string().contains("NOT_FOUND");
        if missing {
            PublishError::NoExchange {
                exchange: self.exchange.clone(),
                queue: self.queue.clone(),
            }
        } else {
            PublishError::Unavailable(error.to_string())
        }
    }

    /// Closes the connection, if open (at shutdown, after the last request).
    pub async fn close(&self) {
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        if let Ok(mut link) = timeout_at(deadline, self.link.lock()).await
            && let Some(link) = link.take()
        {
            let _ = timeout_at(deadline, link.connection.close(200, "shutting down".into())).await;
        }
    }

    /// The open channel, or a new connection and channel.
    async fn channel(&self, deadline: Instant) -> Result<(Channel, u64), PublishError> {
        let mut link = timeout_at(deadline, self.link.lock())
            .await
            .map_err(|_| PublishError::Timeout)?;
        if let Some(open) = link.as_ref()
            && open.is_connected()
        {
            return Ok((open.channel.clone(), open.generation));
        }
        if let Some(dead) = link.take() {
            close_later(dead);
        }
        let open = match timeout_at(deadline, self.open()).await {
            Ok(Ok(open)) => open,
            Ok(Err(e)) => return Err(self.not_opened(e)),
            Err(_) => {
                self.record(Err(NotReady::Slow));
                return Err(PublishError::Timeout);
            }
        };
        // A missing exchange stays the reason until it is found again.
        if !self.exchange_missing() {
            self.record(Ok(()));
        }
        let answer = (open.channel.clone(), open.generation);
        *link = Some(open);
        Ok(answer)
    }

    /// Records why no link opened, as `/readyz` says it: a refused login
    /// or vhost by name, anything else as unreachable.
    fn not_opened(&self, error: ConnectError) -> PublishError {
        let why = match &error {
            ConnectError::LoginRefused { user, .. } => {
                NotReady::LoginRefused { user: user.clone() }
            }
            ConnectError::VhostRefused { user, vhost, .. } => NotReady::VhostRefused {
                user: user.clone(),
                vhost: vhost.clone(),
            },
            _ => NotReady::Unreachable,
        };
        self.record(Err(why));
        if error.is_permanent() {
            PublishError::Misconfigured(error)
        } else {
            PublishError::Unavailable(error.to_string())
        }
    }

    async fn open(&self) -> Result<Link, ConnectError> {
        use std::sync::atomic::Ordering::Relaxed;
        let name = format!("zoom-dept-sync ingest ({})", self.queue);
        // Moved on before trying: an attempt cut short (a request's
        // deadline, a hung address) must not start at the same address
        // next time, or a hung first address would keep every attempt.
        let start = self.next_address.fetch_add(1, Relaxed);
        let connected = connect_from(&self.amqp, name, start).await?;
        self.next_address
            .store(connected.index.wrapping_add(1), Relaxed);
        tracing::info!(broker = %connected.address, "the receiver connected to the broker");
        let connection = connected.connection;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Link {
            connection,
            channel,
            generation,
        })
    }

    /// After a failed publish: the link is given up on, and `why` is what
    /// `/readyz` says until the next attempt.
    async fn drop_link(&self, generation: u64, why: NotReady) {
        self.record(Err(why));
        let deadline = Instant::now() + std::time::Duration::from_millis(200);
        let Ok(mut link) = timeout_at(deadline, self.link.lock()).await else {
            return;
        };
        if link.as_ref().is_some_and(|l| l.generation == generation)
            && let Some(failed) = link.take()
        {
            close_later(failed);
        }
    }
}

impl Link {
    fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

/// Closes a link given up on, without making a request wait for it (a
/// blocked broker may never answer the close).
fn close_later(link: Link) {
    tokio::spawn(async move {
        let close = link.connection.close(200, "reconnecting".into());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), close).await;
    });
}
