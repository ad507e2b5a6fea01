//! The only code that speaks AMQP.
//!
//! [`run`] supervises broker sessions: open one (two connections, one for
//! consuming and acks, one for publishing dead letters; declare; consume),
//! watch both, and on any loss end the session and build a fresh one with
//! backoff. lapin's own connection recovery is off: a lost session's
//! deliveries have dead ackers and the broker redelivers them, so its work
//! must stop rather than carry on.

// The AMQP transport is its own crate (crates/amqp); its modules keep
// their paths here.
pub use zds_amqp::{
    admin, confirm, connect, dead_letters, event_publisher, management, outcomes, redelivery,
    topology,
};

mod consumer;
mod delivery;
mod pause;
mod session;
pub mod settle;

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use futures_util::StreamExt;
use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection, Event};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::systemd::Systemd;
use crate::worker::Worker;
pub use connect::ConnectError;
pub use consumer::SessionEnd;
pub use dead_letters::dead_letter_reason;
use outcomes::OutcomeTopology;
use redelivery::Redeliveries;
use session::SessionCtx;
use settle::Settler;
use topology::Topology;
use zds_core::quarantine::Quarantines;

/// How long closing a channel or connection may take: a broker that blocks
/// the connection (an alarm) never answers.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What every session shares with the rest of the daemon.
#[derive(Clone)]
pub struct Daemon {
    pub worker: Arc<Worker>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub redeliveries: Arc<Redeliveries>,
    /// Stops consuming when most recent events fail the same way; outlives
    /// sessions, lifted by `POST /resume`.
    pub quarantines: Arc<Quarantines>,
    pub shutdown_grace: Duration,
    /// How long opening a session (connect, declare, consume) may take.
    pub open_timeout: Duration,
    pub confirm_timeout: Duration,
    /// First and longest wait of a pause.
    pub pause_first: Duration,
    pub pause_max: Duration,
    /// A delivery must be settled within this of its arrival (the broker's
    /// consumer timeout, less a margin).
    pub hold_limit: Duration,
    /// The longest an event takes once started: its retry budget, one more
    /// request, and a dead letter's confirm.
    pub run_time: Duration,
    /// The service manager: the loops below feed its watchdog (see
    /// [`crate::systemd`] for which waits do).
    pub systemd: Arc<Systemd>,
}

impl Daemon {
    pub fn new(
        settings: &Settings,
        worker: Arc<Worker>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        quarantines: Arc<Quarantines>,
        systemd: Arc<Systemd>,
    ) -> Self {
        Self {
            worker,
            health,
            metrics,
            quarantines,
            redeliveries: Arc::new(Redeliveries::new(settings.worker.max_redeliveries)),
            shutdown_grace: settings.worker.shutdown_grace(),
            open_timeout: settings.amqp.recovery_timeout(),
            confirm_timeout: settings.amqp.confirm_timeout(),
            pause_first: settings.worker.pause_first(),
            pause_max: settings.worker.pause_max(),
            hold_limit: settings.hold_limit(),
            run_time: settings.event_run_time(),
            systemd,
        }
    }
}

/// Two connections: one consumes, one publishes dead letters in confirm mode.
/// Publishing apart means a broker blocking publishers (an alarm, flow
/// control) cannot stall acks, and confirms do not slow the consumer.
pub struct Session {
    consuming_connection: Connection,
    /// Shared with the settler, which opens throwaway channels on it (a
    /// passive declare that fails closes its channel).
    publishing_connection: Arc<Connection>,
    consuming: Channel,
    publishing: Channel,
    topology: Topology,
    outcomes: Option<OutcomeTopology>,
    /// The node the consuming connection went to, and its place in
    /// `amqp.urls`: the next session starts with the address after it.
    address: connect::BrokerAddress,
    index: usize,
}

impl Session {
    /// Opens both connections, trying the addresses from `start` on; the
    /// publishing one tries the consuming one's node first.
    async fn open(settings: &Settings, start: usize) -> Result<Self, ConnectError> {
        // No lapin auto-recovery: a lost connection ends the session, whose
        // unstarted work stops at once, and the supervisor builds a new one.
        let connect = |role: &str, start: usize| {
            let name = format!("zoom-dept-sync {} ({role})", settings.amqp.queue);
            connect::connect_from(&settings.amqp, name, start)
        };
        let connect::Connected {
            connection: consuming_connection,
            index,
            address,
        } = connect("consume", start).await?;
        let topology = Topology::new(&settings.amqp);
        let consuming = consuming_connection.create_channel().await?;
        let consuming = topology.ensure(&consuming_connection, consuming).await?;
        topology.ensure_input_exchange(&consuming_connection).await;
        let outcomes = OutcomeTopology::new(&settings.outcomes, settings.amqp.declare_topology);
        if let Some(outcomes) = &outcomes {
            // No event may be acked without its record: without the
            // exchange, the session does not start.
            outcomes.ensure(&consuming_connection).await?;
        }
        consuming
            .basic_qos(settings.amqp.prefetch, BasicQosOptions::default())
            .await?;
        let publishing_connection = Arc::new(connect("publish", index).await?.connection);
        let publishing = publishing_connection.create_channel().await?;
        publishing
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            consuming_connection,
            publishing_connection,
            consuming,
            publishing,
            topology,
            outcomes,
            address,
            index,
        })
    }

    async fn close(&self) {
        for channel in [&self.consuming, &self.publishing] {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, "shutting down".into()))
                .await;
        }
        for connection in [&self.consuming_connection, &*self.publishing_connection] {
            let _ =
                tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "shutting down".into()))
                    .await;
        }
    }

    /// Watches both connections and the publishing channel; marks the
    /// session lost the moment one fails.
    fn watch(&self, ctx: &Arc<SessionCtx>, health: &Arc<Health>) {
        let mut events = futures_util::stream::select(
            self.consuming_connection
                .events_listener()
                .map(|e| (Role::Consuming, e)),
            self.publishing_connection
                .events_listener()
                .map(|e| (Role::Publishing, e)),
        );
        let statuses = [
            self.consuming_connection.status().clone(),
            self.publishing_connection.status().clone(),
        ];
        let publishing = self.publishing.status().clone();
        let (ctx, health) = (Arc::clone(ctx), Arc::clone(health));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = ctx.lost.cancelled() => return,
                    _ = tick.tick() => {
                        if !statuses.iter().all(|s| s.connected()) || !publishing.connected() {
                            return ctx.lose("a broker connection or the publishing channel closed".into());
                        }
                    }
                    event = events.next() => match event {
                        // lapin reports a channel's error here too (a
                        // passive declare's NOT_FOUND on a throwaway
                        // channel): only a connection that is down ends it.
                        Some((role, Event::Error(e))) if !statuses[role.index()].connected() => {
                            return ctx.lose(format!("{role} connection failed: {e}"));
                        }
                        Some((role, Event::Error(e))) => {
                            tracing::debug!(connection = %role, error = %e, "a channel closed on a broker error");
                        }
                        Some((role, Event::ConnectionBlocked(reason))) => {
                            tracing::warn!(connection = %role, %reason, "the broker blocks this connection (memory or disk alarm)");
                            health.note_blocked(Some(reason));
                        }
                        Some((_, Event::ConnectionUnblocked)) => health.note_blocked(None),
                        Some(_) => {}
                        None => return ctx.lose("the connection's events ended".into()),
                    },
                }
            }
        });
    }
}

/// Which of a session's two connections an event came from.
#[derive(Debug, Clone, Copy)]
enum Role {
    Consuming,
    Publishing,
}

impl Role {
    /// Its place in [`Session::watch`]'s statuses.
    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Consuming => "consuming",
            Self::Publishing => "publishing",
        })
    }
}

/// Consumes until `shutdown` fires, reconnecting as often as needed.
///
/// While the broker is down this loop feeds the systemd watchdog: opening a
/// session is bounded (`amqp.recovery_timeout_secs`) and so is the back-off,
/// and an outage is not a hang.
///
/// Fails only when the first session cannot open for a reason retrying
/// cannot fix (a TLS file, an untrusted certificate): the operator sees the
/// key to change at once. Once the daemon has consumed, the same reason is
/// logged as an error at every attempt and it keeps trying (a certificate
/// renewed on the broker side may need only a fixed CA file).
pub async fn run(
    settings: &Settings,
    daemon: Daemon,
    shutdown: CancellationToken,
) -> Result<(), ConnectError> {
    let mut delays = reconnect_delays();
    let mut sessions = 0u64;
    // Where the next session starts in `amqp.urls`.
    let mut start = 0;
    loop {
        let opened = tokio::select! {
            opened = daemon.systemd.pinging(
                tokio::time::timeout(daemon.open_timeout, Session::open(settings, start)),
            ) => opened,
            _ = shutdown.cancelled() => return Ok(()),
        };
        // `refused`: an operator must act (a changed password, a revoked
        // vhost): an ERROR per attempt, and the reason in /readyz.
        // A session that did not open may be a node that answers the
        // handshake and nothing else (cut off from its cluster): the next
        // try starts with the next address.
        start = start.wrapping_add(1);
        let (reason, refused) = match opened {
            Ok(Ok(session)) => {
                sessions += 1;
                if sessions > 1 {
                    daemon.metrics.broker_reconnects.inc();
                }
                delays = reconnect_delays();
                // A lost session may be a lost node: the next one starts
                // with the next address, and reaches this one last.
                start = session.index.wrapping_add(1);
                match run_session(session, &daemon, &shutdown).await {
                    SessionEnd::Shutdown => return Ok(()),
                    SessionEnd::Lost(reason) => (reason, false),
                }
            }
            Ok(Err(e)) if e.is_permanent() && sessions == 0 => return Err(e),
            Ok(Err(e)) => (format!("cannot open a session: {e}"), e.is_permanent()),
            Err(_) => (
                format!(
                    "cannot open a session: no answer within {} s",
                    daemon.open_timeout.as_secs()
                ),
                false,
            ),
        };
        daemon.health.broker_down(reason.clone());
        let delay = delays.next().unwrap_or(Duration::from_secs(30));
        let retry_in_ms = delay.as_millis() as u64;
        if refused {
            tracing::error!(%reason, retry_in_ms, "the broker refuses this daemon; trying again");
        } else {
            tracing::warn!(%reason, retry_in_ms, "broker unavailable; trying again");
        }
        tokio::select! {
            _ = daemon.systemd.pinging(tokio::time::sleep(delay)) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

async fn run_session(
    session: Session,
    daemon: &Daemon,
    shutdown: &CancellationToken,
) -> SessionEnd {
    tracing::info!(
        queue = %session.topology.queue,
        broker = %session.address,
        "connected to the broker; consuming"
    );
    daemon
        .health
        .broker_in_use(Some(session.address.to_string()));
    let settler = Settler::new(
        session.publishing.clone(),
        Arc::clone(&session.publishing_connection),
        session.topology.clone(),
        session.outcomes.clone(),
        daemon.confirm_timeout,
    );
    let ctx = Arc::new(SessionCtx::new(settler, daemon, shutdown.clone()));
    session.watch(&ctx, &daemon.health);
    let end = consumer::consume(&session, daemon, &ctx).await;
    daemon.health.broker_in_use(None);
    ctx.lost.cancel();
    session.close().await;
    end
}

fn reconnect_delays() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}
