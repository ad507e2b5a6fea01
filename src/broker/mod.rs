//! The only code that speaks AMQP.
//!
//! [`run`] supervises the broker connection: connect, declare, consume, and on
//! any loss start over with backoff. lapin's auto-recovery handles short
//! outages by itself, but can stay "connecting" forever once its own tries
//! run out, so a watchdog drops a connection that stays down too long and
//! this loop builds a new one.

mod consumer;
mod pause;
pub mod settle;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::worker::Worker;
pub use consumer::SessionEnd;
use topology::Topology;

/// What every session shares with the rest of the daemon.
#[derive(Clone)]
pub struct Daemon {
    pub worker: Arc<Worker>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub shutdown_grace: Duration,
    /// How long a connection may stay down (lapin recovering) before it is
    /// dropped and rebuilt.
    pub recovery_timeout: Duration,
}

/// An open connection with its two channels: one consumes, one publishes dead
/// letters in confirm mode (confirms on the consuming channel would slow acks).
pub struct Session {
    connection: Connection,
    consuming: Channel,
    publishing: Channel,
    topology: Topology,
}

impl Session {
    async fn open(settings: &Settings) -> Result<Self, lapin::Error> {
        let properties = ConnectionProperties::default()
            .enable_auto_recover()
            .with_connection_name(format!("zoom-dept-sync {}", settings.amqp.queue).into());
        let connection = Connection::connect(settings.amqp.url.expose_secret(), properties).await?;
        let topology = Topology::new(&settings.amqp);
        let consuming = connection.create_channel().await?;
        topology.ensure(&consuming).await?;
        consuming
            .basic_qos(settings.amqp.prefetch, BasicQosOptions::default())
            .await?;
        let publishing = connection.create_channel().await?;
        publishing
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            connection,
            consuming,
            publishing,
            topology,
        })
    }

    async fn close(&self) {
        for channel in [&self.consuming, &self.publishing] {
            let _ = channel.close(200, "shutting down".into()).await;
        }
        let _ = self.connection.close(200, "shutting down".into()).await;
    }
}

/// Consumes until `shutdown` fires, reconnecting as often as needed.
pub async fn run(settings: &Settings, daemon: Daemon, shutdown: CancellationToken) {
    let mut delays = reconnect_delays();
    let mut sessions = 0u64;
    loop {
        let end = match Session::open(settings).await {
            Ok(session) => {
                sessions += 1;
                if sessions > 1 {
                    daemon.metrics.broker_reconnects.inc();
                }
                tracing::info!(queue = %session.topology.queue, "connected to the broker; consuming");
                delays = reconnect_delays();
                let end = consumer::consume(&session, &daemon, &shutdown).await;
                session.close().await;
                end
            }
            Err(e) => SessionEnd::Lost(format!("cannot open a session: {e}")),
        };
        let reason = match end {
            SessionEnd::Shutdown => return,
            SessionEnd::Lost(reason) => reason,
        };
        daemon.health.broker_down(reason.clone());
        let delay = delays.next().unwrap_or(Duration::from_secs(30));
        tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "broker session ended; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

fn reconnect_delays() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}
