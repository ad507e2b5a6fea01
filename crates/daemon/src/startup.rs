//! Wires the parts together; `main` and the integration tests both start the
//! daemon through [`run`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::broker::{self, Daemon};
use crate::config::Settings;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::systemd::Systemd;
use crate::worker::Worker;
use zds_core::quarantine::Quarantines;

/// Why the daemon stopped other than on a signal.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Something the operator must change (a TLS file, an untrusted
    /// certificate): restarting cannot help, so it exits 2 like a bad
    /// config, which supervisors are told not to restart.
    #[error("cannot connect to the broker: {0}")]
    Misconfigured(broker::ConnectError),
    #[error("{0}")]
    Client(#[from] zds_zoom::HttpClientError),
    #[error("{0}")]
    Listen(#[from] zds_server::ListenError),
}

/// Runs the daemon until `shutdown` is cancelled and in-flight work is
/// settled or handed back.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), StartError> {
    run_telling(settings, shutdown, Arc::new(Systemd::disabled())).await
}

/// As [`run`], telling `systemd` how it goes: `STATUS=` on every change of
/// health, `READY=1` once consuming, `WATCHDOG=1` from the consume loop.
pub async fn run_telling(
    settings: Settings,
    shutdown: CancellationToken,
    systemd: Arc<Systemd>,
) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::telling(Arc::clone(&systemd), &settings.amqp.queue));
    let worker = Arc::new(Worker::new(&settings, Arc::clone(&metrics))?);
    let rates = worker.rate_budgets();
    let brake = worker.brake();
    let quarantines = Arc::new(Quarantines::new(
        settings.worker.quarantine,
        settings.worker.quarantine_window as usize,
        settings.worker.quarantine_threshold as usize,
    ));
    let daemon = Daemon::new(
        &settings,
        worker,
        Arc::clone(&health),
        Arc::clone(&metrics),
        Arc::clone(&quarantines),
        Arc::clone(&systemd),
    );
    // The HTTP server stops after the broker loop, so /readyz reports the
    // shutdown while in-flight events finish.
    let http_stop = CancellationToken::new();
    let http = crate::http::serve(
        settings.http.listen,
        settings.http.limits(),
        health,
        metrics,
        crate::http::Holds { quarantines, brake },
        rates,
        http_stop.clone(),
    )
    .await?;
    let limits = settings.zoom.rate_limits();
    tracing::info!(
        queue = %settings.amqp.queue,
        dead_letter_queue = %settings.amqp.dead_letter_queue(),
        concurrency = settings.worker.concurrency,
        light_per_second = limits.light,
        medium_per_second = limits.medium,
        heavy_per_second = limits.heavy,
        watchdog_ms = systemd.watchdog().map(|d| d.as_millis() as u64),
        "zoom-dept-sync starting"
    );
    if let Some(old) = settings.zoom.requests_per_second {
        tracing::warn!(
            "zoom.requests_per_second = {old} is read as zoom.rate_limits.medium; \
             write `[zoom.rate_limits]` `medium = {old}` instead (Light and Heavy calls take the plan's defaults)"
        );
    }
    // No event is consumed (and none dead-lettered) on credentials Zoom
    // refuses: /readyz says which variables to check until a token comes.
    let token =
        crate::token_gate::wait_for_token(&daemon.worker, &daemon.health, &systemd, &shutdown)
            .await;
    let consumed = if token {
        broker::run(&settings, daemon, shutdown).await
    } else {
        Ok(())
    };
    http_stop.cancel();
    let _ = http.await;
    consumed.map_err(StartError::Misconfigured)?;
    tracing::info!("zoom-dept-sync stopped");
    Ok(())
}
