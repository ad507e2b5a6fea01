//! Pausing consumption while Zoom cannot take calls (a daily rate limit,
//! refused credentials) or dead letters cannot be published, so events wait
//! in the broker instead of cycling through the daemon or sitting unacked.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Daemon;
use crate::outcome::RequeueCause;

/// First wait after Zoom refused the credentials; doubles up to the maximum.
const AUTH_RETRY_FIRST: Duration = Duration::from_secs(2);
const AUTH_RETRY_MAX: Duration = Duration::from_secs(300);
/// How long to stop consuming after a dead letter could not be published, so
/// a missing dead-letter queue does not make events cycle through the broker.
pub(super) const DEAD_LETTER_RETRY_WAIT: Duration = Duration::from_secs(5);

/// A request to stop consuming for a while, set by a requeued event, plus
/// the current wait between credential probes (it grows while auth fails).
pub(super) struct PauseRequest {
    slot: Mutex<Option<(RequeueCause, String)>>,
    requested: Notify,
    auth_wait: Mutex<Duration>,
}

impl PauseRequest {
    pub(super) fn new() -> Self {
        Self {
            slot: Mutex::default(),
            requested: Notify::new(),
            auth_wait: Mutex::new(AUTH_RETRY_FIRST),
        }
    }

    pub(super) fn set(&self, cause: RequeueCause, why: &str) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        // A rate-limit pause with a later end wins over an earlier one.
        let keep = matches!(
            (&*slot, cause),
            (Some((RequeueCause::RateLimited { until: a }, _)), RequeueCause::RateLimited { until: b }) if *a >= b
        );
        if !keep {
            *slot = Some((cause, why.to_owned()));
        }
        self.requested.notify_one();
    }

    pub(super) fn take(&self) -> Option<(RequeueCause, String)> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Resolves once a pause is requested.
    pub(super) async fn wait(&self) {
        while self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            self.requested.notified().await;
        }
    }

    /// The wait before the next credential probe; doubles it for the one after.
    pub(super) fn next_auth_wait(&self) -> Duration {
        let mut wait = self.auth_wait.lock().unwrap_or_else(|e| e.into_inner());
        let current = *wait;
        *wait = (current * 2).min(AUTH_RETRY_MAX);
        current
    }

    /// Zoom accepted a call: auth waits start small again.
    pub(super) fn zoom_worked(&self) {
        *self.auth_wait.lock().unwrap_or_else(|e| e.into_inner()) = AUTH_RETRY_FIRST;
    }
}

/// Waits until the cause of a pause is over. `false` if shutdown came first.
pub(super) async fn wait_out_pause(
    daemon: &Daemon,
    cause: RequeueCause,
    why: &str,
    pause: &PauseRequest,
    shutdown: &CancellationToken,
) -> bool {
    match cause {
        RequeueCause::RateLimited { until }
        | RequeueCause::DeadLetterQueueUnavailable { until } => {
            daemon.health.paused(why, Some(until));
            tracing::warn!(
                resume_in_secs = until.saturating_duration_since(Instant::now()).as_secs(),
                reason = why,
                "pausing consumption"
            );
            tokio::select! {
                _ = tokio::time::sleep_until(until) => true,
                _ = shutdown.cancelled() => false,
            }
        }
        RequeueCause::Auth => loop {
            let wait = pause.next_auth_wait();
            daemon.health.paused(why, None);
            tracing::error!(
                retry_in_secs = wait.as_secs(),
                reason = why,
                "pausing consumption: Zoom refuses the app's credentials"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return false,
            }
            match daemon.worker.probe_credentials().await {
                Ok(()) => return true,
                Err(e) => tracing::error!(error = %e, "Zoom still refuses the credentials"),
            }
        },
    }
}
