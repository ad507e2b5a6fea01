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

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Daemon;
use super::consumer::SessionEnd;
use super::delivery::SessionCtx;
use zds_core::brake::Engaged;
use zds_core::outcome::RequeueCause;
use zds_core::quarantine::Quarantine;

/// A request to drain, with the pause it needs (if any).
#[derive(Debug, Clone)]
pub(super) struct DrainRequest {
    pub(super) pause: Option<(RequeueCause, String)>,
}

/// Set by tasks, taken by the consume loop. Pauses win over plain drains,
/// and a later rate-limit end over an earlier one.
pub(super) struct DrainSignal {
    slot: Mutex<Option<DrainRequest>>,
    requested: Notify,
    /// Consecutive pauses whose probe failed: each doubles the wait.
    failures: Mutex<u32>,
    first_wait: Duration,
    max_wait: Duration,
}

impl DrainSignal {
    pub(super) fn new(first_wait: Duration, max_wait: Duration) -> Self {
        Self {
            slot: Mutex::default(),
            requested: Notify::new(),
            failures: Mutex::new(0),
            first_wait,
            max_wait,
        }
    }

    /// Asks for a drain; `pause` says why consuming must also wait.
    pub(super) fn request(&self, pause: Option<(RequeueCause, String)>) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let merged = match (slot.take(), pause) {
            (Some(old), None) => old,
            (None, pause) => DrainRequest { pause },
            (Some(old), Some(new)) => DrainRequest {
                pause: Some(later_pause(old.pause, new)),
            },
        };
        *slot = Some(merged);
        self.requested.notify_one();
    }

    pub(super) fn take(&self) -> Option<DrainRequest> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Resolves once a drain is requested.
    pub(super) async fn wait(&self) {
        loop {
            let notified = self.requested.notified();
            if self
                .slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
            {
                return;
            }
            notified.await;
        }
    }

    /// Zoom accepted a call: the next pause starts small again.
    pub(super) fn zoom_worked(&self) {
        *self.failures.lock().unwrap_or_else(|e| e.into_inner()) = 0;
    }

    /// The wait of the next pause; doubles it for the one after.
    fn next_wait(&self) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let factor = 2u32.saturating_pow((*failures).min(20));
        *failures = failures.saturating_add(1);
        self.first_wait
            .checked_mul(factor)
            .unwrap_or(self.max_wait)
            .min(self.max_wait)
    }
}

/// Of two pauses, the one that lasts longer (a rate limit's end is known).
fn later_pause(
    old: Option<(RequeueCause, String)>,
    new: (RequeueCause, String),
) -> (RequeueCause, String) {
    match (old, &new.0) {
        (
            Some(old @ (RequeueCause::RateLimited { until: a }, _)),
            RequeueCause::RateLimited { until: b },
        ) if a >= *b => old,
        _ => new,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_maximum_and_reset_when_zoom_works() {
        let signal = DrainSignal::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| signal.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        signal.zoom_worked();
        assert_eq!(signal.next_wait().as_millis(), 100);
    }

    #[test]
    fn a_pause_is_not_lost_to_a_later_plain_drain() {
        let signal = DrainSignal::new(Duration::from_millis(1), Duration::from_millis(1));
        signal.request(Some((RequeueCause::Auth, "403".into())));
        signal.request(None);
        assert!(signal.take().unwrap().pause.is_some());
        assert!(signal.take().is_none());
    }
}
