//! What one broker session's parts share: how the session ended, the
//! signal that asks the consume loop to drain (and pause), and the context
//! every delivery task of the session holds. Its own module so the consume
//! loop, the delivery tasks and the pauses each depend on it, never on one
//! another in a circle.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Daemon;
use super::settle::Settler;
use zds_core::outcome::RequeueCause;

/// Why a session's loop ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was asked for; in-flight work is settled or requeued.
    Shutdown,
    /// The connection or the consumer is gone; the supervisor reconnects.
    Lost(String),
}

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
    pub(super) fn next_wait(&self) -> Duration {
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

/// What the tasks of one session share.
pub(super) struct SessionCtx {
    /// Cancelled when the connection or a channel is lost: deliveries of this
    /// session that have not called Zoom must not (their acker is dead and
    /// the broker redelivers them); running calls do not retry.
    pub(super) lost: CancellationToken,
    lost_reason: Mutex<String>,
    pub(super) shutdown: CancellationToken,
    /// The shutdown grace is over: running events go back too.
    pub(super) abandon: CancellationToken,
    pub(super) drain: DrainSignal,
    pub(super) settler: Settler,
    /// Generations up to this one are drained: their unstarted tasks go back.
    drained: AtomicU64,
    /// Dispatched tasks that have neither started nor given up.
    waiting: AtomicUsize,
    waiting_changed: Notify,
    /// How long a delivery may stay unacknowledged (the consumer timeout,
    /// less a margin), and how long an event may take once started.
    pub(super) hold_limit: Duration,
    pub(super) run_time: Duration,
}

/// Why a delivery does not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The session is gone: nothing can settle it; the broker redelivers.
    Lost,
    /// Shutdown, a drain, or too little time left: hand it back.
    HandBack(&'static str),
}

impl SessionCtx {
    pub(super) fn new(settler: Settler, daemon: &Daemon, shutdown: CancellationToken) -> Self {
        Self {
            lost: CancellationToken::new(),
            lost_reason: Mutex::new(String::new()),
            shutdown,
            abandon: CancellationToken::new(),
            drain: DrainSignal::new(daemon.pause_first, daemon.pause_max),
            settler,
            drained: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            waiting_changed: Notify::new(),
            hold_limit: daemon.hold_limit,
            run_time: daemon.run_time,
        }
    }

    /// Marks the session lost (first reason wins).
    pub(super) fn lose(&self, why: String) {
        let mut reason = self.lost_reason.lock().unwrap_or_else(|e| e.into_inner());
        if reason.is_empty() {
            *reason = why;
        }
        self.lost.cancel();
    }

    pub(super) fn lost_reason(&self) -> String {
        let reason = self.lost_reason.lock().unwrap_or_else(|e| e.into_inner());
        if reason.is_empty() {
            "the broker session was lost".into()
        } else {
            reason.clone()
        }
    }

    pub(super) fn end_generation(&self, generation: u64) {
        self.drained.fetch_max(generation, Ordering::SeqCst);
    }

    /// Resolves when no dispatched task is still waiting to start.
    pub(super) async fn all_started(&self) {
        loop {
            let changed = self.waiting_changed.notified();
            if self.waiting.load(Ordering::SeqCst) == 0 {
                return;
            }
            changed.await;
        }
    }

    /// A task was dispatched: it waits to start.
    pub(super) fn dispatched(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn started_or_gave_up(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.waiting_changed.notify_waiters();
    }

    pub(super) fn refusal(&self, generation: u64) -> Option<Refusal> {
        if self.lost.is_cancelled() {
            Some(Refusal::Lost)
        } else if self.shutdown.is_cancelled() {
            Some(Refusal::HandBack("shutting down: event not started"))
        } else if generation <= self.drained.load(Ordering::SeqCst) {
            Some(Refusal::HandBack(
                "an earlier event went back: this one follows it",
            ))
        } else {
            None
        }
    }
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
