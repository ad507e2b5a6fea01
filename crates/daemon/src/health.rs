//! What `/readyz` reports: ready only while connected, consuming and not
//! paused or quarantined. Each part of the daemon sets its own piece; nothing else decides.
//! Under systemd the same state is its `STATUS=` line, and the first
//! `consuming` its `READY=1` ([`Health::telling`]).

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::systemd::{Stalled, Systemd};

#[derive(Default)]
pub struct Health {
    state: Mutex<State>,
    /// Told every change, with the queue's name for `consuming <queue>`.
    systemd: Option<(Arc<Systemd>, String)>,
}

#[derive(Default)]
struct State {
    /// `None` while consuming; else why not.
    broker_down: Option<String>,
    /// The broker node of the current session (`host:port`), for `/readyz`.
    broker: Option<String>,
    /// Why consumption is paused, and until when if known.
    paused: Option<(String, Option<Instant>)>,
    /// The broker blocks a connection (memory or disk alarm).
    blocked: Option<String>,
    /// Consuming stopped until an operator resumes it; what to tell them.
    quarantined: Option<String>,
    /// The brake holds a burst of writes until an operator lets it through.
    braked: Option<String>,
    /// Start-up has no Zoom token yet: why (refused credentials, or the
    /// token endpoint is away). Consuming starts once it has one.
    zoom: Option<String>,
    started: bool,
}

impl Health {
    /// Health that also tells systemd: `STATUS=` on every change (from now:
    /// "connecting to the broker"), and `READY=1` with the first
    /// [`Health::consuming`].
    pub fn telling(systemd: Arc<Systemd>, queue: &str) -> Self {
        let health = Self {
            state: Mutex::default(),
            systemd: Some((systemd, queue.to_owned())),
        };
        health.change(|_| {});
        health
    }

    /// `Ok` while the consume loop turns (see [`Systemd::liveness`]).
    pub fn liveness(&self) -> Result<(), Stalled> {
        match &self.systemd {
            Some((systemd, _)) => systemd.liveness(),
            None => Ok(()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A change of state: systemd hears of it (under the lock, so two
    /// changes cannot reach it out of order).
    fn change(&self, f: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state);
        if let Some((systemd, queue)) = &self.systemd {
            systemd.update(&state.status_line(queue), state.started);
        }
    }

    pub fn consuming(&self) {
        self.change(|s| {
            s.started = true;
            s.broker_down = None;
        });
    }

    pub fn broker_down(&self, why: impl Into<String>) {
        let why = why.into();
        self.change(|s| s.broker_down = Some(why));
    }

    /// The node a session is connected to (`host:port`, never the
    /// password), or `None` between sessions.
    pub fn broker_in_use(&self, address: Option<String>) {
        self.change(|s| s.broker = address);
    }

    /// `broker: host:port`, or `broker: none connected`.
    pub fn broker_line(&self) -> String {
        self.with(|s| match &s.broker {
            Some(address) => format!("broker: {address}"),
            None => "broker: none connected".to_owned(),
        })
    }

    pub fn paused(&self, why: impl Into<String>, until: Option<Instant>) {
        let why = why.into();
        self.change(|s| s.paused = Some((why, until)));
    }

    /// The broker blocked (`Some(reason)`) or unblocked a connection.
    pub fn note_blocked(&self, reason: Option<String>) {
        self.change(|s| s.blocked = reason);
    }

    /// Consuming stopped until `resume` (`Some(why)`), or the quarantine was
    /// lifted. Outranks every other reason: only an operator ends it.
    pub fn quarantined(&self, why: Option<String>) {
        self.change(|s| s.quarantined = why);
    }

    /// The brake engaged (`Some(why)`) or was released.
    pub fn braked(&self, why: Option<String>) {
        self.change(|s| s.braked = why);
    }

    /// Start-up waits for a Zoom token (`Some(why)`), or has one.
    pub fn zoom_token(&self, why: Option<String>) {
        self.change(|s| s.zoom = why);
    }

    pub fn resumed(&self) {
        self.change(|s| s.paused = None);
    }

    /// What the daemon does now, in a few words (systemd's `STATUS=`).
    pub fn status_line(&self, queue: &str) -> String {
        self.with(|s| s.status_line(queue))
    }

    /// `Ok` when ready, else a one-line reason.
    pub fn readiness(&self) -> Result<(), NotReady> {
        match self.with(|s| s.not_ready()) {
            Some(why) => Err(NotReady(why)),
            None => Ok(()),
        }
    }
}

/// Why `/readyz` answers 503, in the operator's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

impl State {
    /// Why the daemon is not ready, or `None` when it is.
    fn not_ready(&self) -> Option<String> {
        if let Some(why) = self.quarantined.as_ref().or(self.braked.as_ref()) {
            return Some(why.clone());
        }
        if let Some(why) = &self.zoom {
            return Some(why.clone());
        }
        if let (false, Some(why)) = (self.started, &self.broker_down) {
            return Some(format!("not connected to the broker yet: {why}"));
        }
        if !self.started {
            return Some("not connected to the broker yet".into());
        }
        if let Some(why) = &self.broker_down {
            return Some(format!("not consuming: {why}"));
        }
        if let Some(why) = &self.blocked {
            return Some(format!("the broker blocks publishing: {why}"));
        }
        match &self.paused {
            Some((why, Some(until))) => Some(format!(
                "paused for {} s more: {why}",
                until.saturating_duration_since(Instant::now()).as_secs()
            )),
            Some((why, None)) => Some(format!("paused: {why}")),
            None => None,
        }
    }
}

impl State {
    fn status_line(&self, queue: &str) -> String {
        if let Some(why) = self
            .quarantined
            .as_ref()
            .or(self.braked.as_ref())
            .or(self.zoom.as_ref())
        {
            return why.clone();
        }
        if let Some(why) = &self.broker_down {
            return format!("broker unavailable: {why}");
        }
        if !self.started {
            return "connecting to the broker".into();
        }
        if let Some((why, _)) = &self.paused {
            return format!("paused: {why}");
        }
        match &self.blocked {
            Some(why) => format!("consuming {queue}; the broker blocks publishing: {why}"),
            None => format!("consuming {queue}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_the_first_session_readiness_gives_why_the_broker_is_unusable() {
        let health = Health::default();
        assert_eq!(
            health.readiness(),
            Err(NotReady("not connected to the broker yet".to_owned()))
        );
        health.broker_down("cannot open a session: ACCESS_REFUSED");
        assert_eq!(
            health.readiness(),
            Err(NotReady(
                "not connected to the broker yet: cannot open a session: ACCESS_REFUSED".to_owned()
            ))
        );
    }

    #[test]
    fn the_status_line_follows_the_state() {
        let health = Health::default();
        assert_eq!(health.status_line("q"), "connecting to the broker");
        health.broker_down("connection refused");
        assert_eq!(
            health.status_line("q"),
            "broker unavailable: connection refused"
        );
        health.consuming();
        assert_eq!(health.status_line("q"), "consuming q");
        health.note_blocked(Some("low on memory".into()));
        assert_eq!(
            health.status_line("q"),
            "consuming q; the broker blocks publishing: low on memory"
        );
        health.paused("Zoom refused the credentials", None);
        assert_eq!(
            health.status_line("q"),
            "paused: Zoom refused the credentials"
        );
        health.quarantined(Some("quarantined: 4130 on most events".into()));
        assert_eq!(health.status_line("q"), "quarantined: 4130 on most events");
    }
}
