//! What the service manager hears (`Type=notify`; the unit is
//! `deploy/systemd/zoom-dept-sync.service`), through the `sd-notify` crate.
//!
//! - `READY=1` once the first broker session consumes, so `systemctl start`
//!   (and every unit ordered after this one) waits until events flow, and a
//!   daemon that never gets there fails its start instead of looking up.
//! - `STATUS=` one line, what the daemon does now: `consuming <queue>`,
//!   `broker unavailable: <reason>`, `paused: …`, `quarantined: …`. It is the
//!   state `/readyz` reports ([`crate::health::Health`] sends it on every
//!   change), and `systemctl status` shows it.
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC` (the unit's `WatchdogSec=`; at most 10 s),
//!   so systemd kills and restarts a daemon that hangs.
//! - `STOPPING=1` when SIGTERM or SIGINT arrives
//!   ([`crate::shutdown::on_signals_telling`]).
//!
//! **Who pings.** A timer task of its own would go on pinging while the
//! consume loop is stuck, which is exactly what the watchdog is for. So the
//! pings come from the loops themselves: the consume loop has a ping branch
//! in its `select!` (idle with no messages, it still wakes for it), and the
//! waits of the loops that are long by design run inside [`Systemd::pinging`]
//! (which polls the wait and pings from the same task): opening a session
//! (bounded by `amqp.recovery_timeout_secs`) and the back-off between
//! attempts while the broker is down (an outage is not a hang: the daemon
//! does what it should, and `STATUS=` says why it is not consuming), a pause
//! and a quarantine (they end by a timer or an operator). Waits on events (a drain, a probe) are fed only up to the longest
//! time an event may be held (the consumer timeout less its margin), with
//! [`Systemd::pinging_until`]: past that something is wrong. Events run in
//! tasks of their own, so a long Zoom call never holds the loop. Anything
//! else the loop awaits (an AMQP method the broker does not answer, a
//! blocked thread, a starved runtime) stops the pings, and systemd restarts
//! the daemon after `WatchdogSec=`. systemd arms the watchdog only while
//! the service runs (after `READY=1`, until it stops): `TimeoutStartSec=`
//! and `TimeoutStopSec=` bound start-up and shutdown instead.
//!
//! Without `NOTIFY_SOCKET` (not under systemd, a container, the tests'
//! in-process daemon) nothing is sent; without `WATCHDOG_USEC` (or with a
//! `WATCHDOG_PID` that is not this process) no `WATCHDOG=1` is. The loops
//! tick all the same (every [`LIVENESS_TICK`]): [`Systemd::liveness`] turns
//! the ticks into `/healthz`, the watchdog of a supervisor that only probes.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;

/// How often the loops tick without a watchdog.
pub const LIVENESS_TICK: Duration = Duration::from_secs(10);
/// Ticks missed this long make `/healthz` fail: well above the longest
/// unticked await of a healthy loop (about 21 s: closing a session, a
/// consumer cancel, a hand-back) plus one tick.
pub const LIVENESS_LIMIT: Duration = Duration::from_secs(60);

/// The consume loop has not turned for longer than [`LIVENESS_LIMIT`]: a hang.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the consume loop has not turned for {quiet_secs} s")]
pub struct Stalled {
    pub quiet_secs: u64,
}

/// The daemon's line to the service manager. One per process, shared.
pub struct Systemd {
    sink: Sink,
    /// How often the loops tick: half of `WATCHDOG_USEC`, or
    /// [`LIVENESS_TICK`] without a watchdog (the ticks then feed only
    /// [`Systemd::liveness`], for `/healthz`).
    ping_every: Duration,
    /// `WATCHDOG_USEC`, when systemd watches this process.
    watchdog: Option<Duration>,
    last_ping: Mutex<Instant>,
    sent: Mutex<Sent>,
}

enum Sink {
    /// No `NOTIFY_SOCKET`: nothing is sent.
    Off,
    /// `sd_notify::notify`, to the socket `NOTIFY_SOCKET` names.
    NotifySocket,
    /// What would have been sent, one string per datagram.
    #[cfg(test)]
    Record(Mutex<Vec<String>>),
}

/// `status` with control characters as spaces: the notify protocol is one
/// `KEY=value` per line, and a reason may quote a broker's or Zoom's text.
fn one_line(status: &str) -> String {
    status
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What was told already.
#[derive(Default)]
struct Sent {
    ready: bool,
    stopping: bool,
    status: String,
    /// A send failed once: later failures are logged at debug only.
    failed: bool,
}

impl Systemd {
    /// From the environment systemd sets: `NOTIFY_SOCKET`, `WATCHDOG_USEC`
    /// and `WATCHDOG_PID` (read with `sd_notify::watchdog_enabled`, which
    /// ignores a watchdog meant for another process).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        if !socket {
            return Self::disabled();
        }
        let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero());
        Self::new(Sink::NotifySocket, watchdog)
    }

    /// Tells nothing to no one: not under systemd.
    pub fn disabled() -> Self {
        Self::new(Sink::Off, None)
    }

    fn new(sink: Sink, watchdog: Option<Duration>) -> Self {
        Self {
            sink,
            ping_every: watchdog.map_or(LIVENESS_TICK, |d| (d / 2).min(LIVENESS_TICK)),
            watchdog,
            last_ping: Mutex::new(Instant::now()),
            sent: Mutex::default(),
        }
    }

    /// The watchdog's timeout (`WATCHDOG_USEC`), when systemd set one for
    /// this process.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Says what the daemon does now (`STATUS=`), when it changed; with
    /// `ready`, the first call also sends `READY=1`. Nothing after
    /// [`Systemd::stopping`].
    pub fn update(&self, status: &str, ready: bool) {
        let status = &one_line(status);
        let mut sent = self.lock_sent();
        if sent.stopping {
            return;
        }
        if ready && !sent.ready {
            sent.ready = true;
            self.send(
                &mut sent,
                &[NotifyState::Ready, NotifyState::Status(status)],
            );
        } else if sent.status != *status {
            self.send(&mut sent, &[NotifyState::Status(status)]);
        }
        status.clone_into(&mut sent.status);
    }

    /// `READY=1` (once) with `status`.
    pub fn ready(&self, status: &str) {
        self.update(status, true);
    }

    /// `STOPPING=1` (once) with `status`; later status changes are not sent.
    pub fn stopping(&self, status: &str) {
        let status = &one_line(status);
        let mut sent = self.lock_sent();
        if sent.stopping {
            return;
        }
        sent.stopping = true;
        self.send(
            &mut sent,
            &[NotifyState::Stopping, NotifyState::Status(status)],
        );
    }

    /// Resolves when the next tick is due. For a `select!` branch of a
    /// loop, followed by [`Systemd::ping`].
    pub async fn ping_due(&self) {
        tokio::time::sleep_until(self.last_ping() + self.ping_every).await;
    }

    /// Records a tick, if one is due (several loops may ask), and sends
    /// `WATCHDOG=1` when systemd watches.
    pub fn ping(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_ping.lock().unwrap_or_else(|e| e.into_inner());
            if now < *last + self.ping_every {
                return;
            }
            *last = now;
        }
        if self.watchdog.is_some() {
            let mut sent = self.lock_sent();
            self.send(&mut sent, &[NotifyState::Watchdog]);
        }
    }

    /// For `/healthz`: an error once the loops have not ticked for
    /// [`LIVENESS_LIMIT`] — the watchdog's verdict, for a supervisor that
    /// only probes (Kubernetes' liveness probe). Never while stopping: the
    /// shutdown does not tick, and is bounded by its own grace.
    pub fn liveness(&self) -> Result<(), Stalled> {
        let quiet = self.last_ping().elapsed();
        if quiet <= LIVENESS_LIMIT || self.lock_sent().stopping {
            return Ok(());
        }
        Err(Stalled {
            quiet_secs: quiet.as_secs(),
        })
    }

    /// Awaits `wait`, pinging while it is pending: for a wait of a loop that
    /// is long by design (see the module's notes on which).
    pub async fn pinging<F: Future>(&self, wait: F) -> F::Output {
        let mut wait = std::pin::pin!(wait);
        loop {
            tokio::select! {
                biased;
                out = &mut wait => return out,
                _ = self.ping_due() => self.ping(),
            }
        }
    }

    /// As [`Systemd::pinging`], but only until `deadline`: a wait that lasts
    /// longer than it ever should is a hang, and the watchdog may see it.
    pub async fn pinging_until<F: Future>(&self, deadline: Instant, wait: F) -> F::Output {
        let mut wait = std::pin::pin!(wait);
        tokio::select! {
            biased;
            out = &mut wait => return out,
            _ = self.pinging(tokio::time::sleep_until(deadline)) => {}
        }
        if self.watchdog.is_some() {
            tracing::warn!(
                "a wait of the consume loop outlasted its bound: no more watchdog pings until it ends"
            );
        }
        wait.await
    }

    fn last_ping(&self) -> Instant {
        *self.last_ping.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sent(&self) -> std::sync::MutexGuard<'_, Sent> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, sent: &mut Sent, states: &[NotifyState<'_>]) {
        let result = match &self.sink {
            Sink::Off => Ok(()),
            Sink::NotifySocket => sd_notify::notify(states),
            #[cfg(test)]
            Sink::Record(record) => {
                let text: String = states.iter().map(|s| format!("{s}\n")).collect();
                record.lock().unwrap().push(text);
                Ok(())
            }
        };
        if let Err(e) = result {
            if sent.failed {
                tracing::debug!(error = %e, "cannot notify systemd");
            } else {
                sent.failed = true;
                tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(watchdog: Option<Duration>) -> Systemd {
        Systemd::new(Sink::Record(Mutex::default()), watchdog)
    }

    fn sent(systemd: &Systemd) -> Vec<String> {
        match &systemd.sink {
            Sink::Record(record) => record.lock().unwrap().clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn ready_goes_once_with_the_status_and_a_status_only_when_it_changes() {
        let systemd = recording(None);
        systemd.update("broker unavailable: refused", false);
        systemd.update("broker unavailable: refused", false);
        systemd.ready("consuming q");
        systemd.update("consuming q", true);
        systemd.update("paused: 403", true);
        assert_eq!(
            sent(&systemd),
            [
                "STATUS=broker unavailable: refused\n",
                "READY=1\nSTATUS=consuming q\n",
                "STATUS=paused: 403\n",
            ]
        );
    }

    #[test]
    fn a_status_is_one_line_whatever_the_reason_says() {
        let systemd = recording(None);
        systemd.update("broker unavailable: bad\nREADY=1\r\tx", false);
        assert_eq!(
            sent(&systemd),
            ["STATUS=broker unavailable: bad READY=1  x\n"]
        );
    }

    #[test]
    fn nothing_but_pings_after_stopping() {
        let systemd = recording(None);
        systemd.ready("consuming q");
        systemd.stopping("stopping");
        systemd.stopping("stopping again");
        systemd.update("broker unavailable: shutting down", true);
        assert_eq!(
            sent(&systemd),
            [
                "READY=1\nSTATUS=consuming q\n",
                "STOPPING=1\nSTATUS=stopping\n"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_fed_at_half_the_watchdog_timeout() {
        let systemd = recording(Some(Duration::from_secs(10)));
        assert_eq!(systemd.watchdog(), Some(Duration::from_secs(10)));
        systemd
            .pinging(tokio::time::sleep(Duration::from_millis(20_500)))
            .await;
        assert_eq!(sent(&systemd), ["WATCHDOG=1\n"; 4], "at 5, 10, 15, 20 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_wait_is_fed_only_up_to_its_bound() {
        let systemd = recording(Some(Duration::from_secs(10)));
        let deadline = Instant::now() + Duration::from_secs(12);
        systemd
            .pinging_until(deadline, tokio::time::sleep(Duration::from_secs(60)))
            .await;
        assert_eq!(sent(&systemd).len(), 2, "at 5 and 10 s, none after 12 s");
    }

    #[tokio::test(start_paused = true)]
    async fn pings_are_not_sent_twice_when_two_loops_ask() {
        let systemd = recording(Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(5)).await;
        systemd.ping();
        systemd.ping();
        assert_eq!(sent(&systemd).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_watchdog_nothing_pings_and_a_wait_is_only_a_wait() {
        let systemd = recording(None);
        systemd
            .pinging(tokio::time::sleep(Duration::from_secs(60)))
            .await;
        systemd.ping();
        assert!(sent(&systemd).is_empty());
    }

    #[test]
    fn disabled_is_silent() {
        let systemd = Systemd::disabled();
        systemd.ready("consuming q");
        systemd.stopping("stopping");
        assert!(matches!(systemd.sink, Sink::Off));
        assert_eq!(systemd.watchdog(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_stops_turning_is_not_alive_unless_stopping() {
        // No watchdog (Kubernetes, no NOTIFY_SOCKET): the loop still ticks.
        let systemd = Systemd::disabled();
        let mut ticks = 0;
        let deadline = Instant::now() + LIVENESS_LIMIT * 2;
        while Instant::now() < deadline {
            tokio::select! {
                _ = systemd.ping_due() => { systemd.ping(); ticks += 1; }
            }
            assert_eq!(systemd.liveness(), Ok(()), "turning");
        }
        assert!(ticks >= 2, "{ticks} ticks");
        tokio::time::advance(LIVENESS_LIMIT + Duration::from_secs(1)).await;
        let stuck = systemd.liveness().unwrap_err().to_string();
        assert!(stuck.contains("has not turned for"), "{stuck}");
        systemd.stopping("stopping");
        assert_eq!(systemd.liveness(), Ok(()), "shutting down is not a hang");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_watchdog_ticks_send_nothing() {
        let systemd = recording(None);
        tokio::time::advance(LIVENESS_TICK * 3).await;
        systemd.ping();
        assert!(sent(&systemd).is_empty());
    }
}
