//! Draining and pausing.
//!
//! A *drain* stops the consumer and hands back every delivery of this
//! session that has not started, each after the earlier events of its
//! person, so no event runs ahead of one that went back to the broker. A
//! drain may carry a *pause*: Zoom cannot take calls (a long rate limit,
//! refused credentials or scopes) or dead letters cannot be published. Then
//! events wait in the broker, not in the daemon, until the cause is over;
//! one event probes (half-open) before consuming resumes fully, and every
//! failed probe doubles the next wait.
//!
//! A *quarantine* ([`zds_core::quarantine`]) stops consuming the same way, but
//! with no timer: most recent events failed with one Zoom code, which only
//! an operator can put right. It waits for `resume` (or shutdown), then one
//! event probes as after a pause.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Daemon;
use super::session::{DrainSignal, SessionCtx, SessionEnd};
use zds_core::brake::Engaged;
use zds_core::outcome::RequeueCause;
use zds_core::quarantine::Quarantine;

/// Waits until the pause is over. `false` if shutdown came first.
pub(super) async fn wait_out_pause(
    daemon: &Daemon,
    signal: &DrainSignal,
    (cause, why): &(RequeueCause, String),
    shutdown: &CancellationToken,
) -> bool {
    let backoff = signal.next_wait();
    let until = match cause {
        RequeueCause::RateLimited { until } => {
            Instant::from_std(*until).max(Instant::now() + backoff)
        }
        _ => Instant::now() + backoff,
    };
    daemon.health.paused(why, Some(until));
    tracing::warn!(
        resume_in_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64,
        reason = %why,
        "pausing consumption"
    );
    tokio::select! {
        _ = tokio::time::sleep_until(until) => {}
        _ = shutdown.cancelled() => return false,
    }
    if !matches!(cause, RequeueCause::Auth) {
        return true;
    }
    // Refused credentials: the token endpoint must work before an event is
    // risked on a probe.
    loop {
        match daemon.worker.probe_credentials().await {
            Ok(()) => return true,
            Err(e) => tracing::error!(error = %e, "Zoom still refuses the credentials"),
        }
        tokio::select! {
            _ = tokio::time::sleep(signal.next_wait()) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

/// Says why consuming stops: `/readyz`, the `quarantined` gauge and one
/// WARN line. Called once, when the window trips.
pub(super) fn show_quarantine(daemon: &Daemon, q: &Quarantine) {
    daemon.health.quarantined(Some(format!(
        "quarantined: {q}; fix it, then run `zoom-dept-sync resume`"
    )));
    daemon
        .metrics
        .quarantine_started(q.code, q.department.as_deref());
    tracing::warn!(
        code = q.code,
        department = q.department.as_deref().unwrap_or("-"),
        group = q.group.as_deref().unwrap_or("-"),
        count = q.count,
        window = q.window,
        "quarantined: {q}; consuming stops until `zoom-dept-sync resume`"
    );
}

/// Waits until an operator lets the held burst through (`POST /resume`):
/// `/readyz` names the brake and its counts, the gauge is 1 meanwhile.
pub(super) async fn wait_for_brake(
    daemon: &Daemon,
    ctx: &SessionCtx,
    engaged: &Engaged,
) -> Result<(), SessionEnd> {
    let why = format!("{engaged}; run `zoom-dept-sync resume` to let it through");
    daemon.health.braked(Some(why.clone()));
    daemon.metrics.brake_engaged.set(1);
    tracing::warn!(
        changes = engaged.changes,
        removals = engaged.removals,
        "{why}; the held events wait on the queue, in order"
    );
    let brake = daemon.worker.brake();
    tokio::select! {
        _ = brake.released() => {}
        _ = ctx.shutdown.cancelled() => return Err(SessionEnd::Shutdown),
        _ = ctx.lost.cancelled() => return Err(SessionEnd::Lost(ctx.lost_reason())),
    }
    daemon.health.braked(None);
    daemon.metrics.brake_engaged.set(0);
    daemon
        .health
        .paused("brake released: one event goes first", None);
    Ok(())
}

/// Waits until an operator lifts the quarantine (`POST /resume`). No timer:
/// the cause is in Zoom's configuration and does not pass by itself.
pub(super) async fn wait_for_resume(daemon: &Daemon, ctx: &SessionCtx) -> Result<(), SessionEnd> {
    tokio::select! {
        _ = daemon.quarantines.resumed() => {}
        _ = ctx.shutdown.cancelled() => return Err(SessionEnd::Shutdown),
        _ = ctx.lost.cancelled() => return Err(SessionEnd::Lost(ctx.lost_reason())),
    }
    daemon.health.paused("resumed: one event goes first", None);
    Ok(())
}
