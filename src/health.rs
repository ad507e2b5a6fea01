//! What `/readyz` reports: ready only while connected, consuming and not
//! paused or quarantined. Each part of the daemon sets its own piece; nothing else decides.

use std::sync::Mutex;

use tokio::time::Instant;

#[derive(Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `None` while consuming; else why not.
    broker_down: Option<String>,
    /// Why consumption is paused, and until when if known.
    paused: Option<(String, Option<Instant>)>,
    /// The broker blocks a connection (memory or disk alarm).
    blocked: Option<String>,
    /// Consuming stopped until an operator resumes it; what to tell them.
    quarantined: Option<String>,
    started: bool,
}

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn consuming(&self) {
        self.with(|s| {
            s.started = true;
            s.broker_down = None;
        });
    }

    pub fn broker_down(&self, why: impl Into<String>) {
        let why = why.into();
        self.with(|s| s.broker_down = Some(why));
    }

    pub fn paused(&self, why: impl Into<String>, until: Option<Instant>) {
        let why = why.into();
        self.with(|s| s.paused = Some((why, until)));
    }

    /// The broker blocked (`Some(reason)`) or unblocked a connection.
    pub fn note_blocked(&self, reason: Option<String>) {
        self.with(|s| s.blocked = reason);
    }

    /// Consuming stopped until `resume` (`Some(why)`), or the quarantine was
    /// lifted. Outranks every other reason: only an operator ends it.
    pub fn quarantined(&self, why: Option<String>) {
        self.with(|s| s.quarantined = why);
    }

    pub fn resumed(&self) {
        self.with(|s| s.paused = None);
    }

    /// `Ok` when ready, else a one-line reason.
    pub fn readiness(&self) -> Result<(), String> {
        self.with(|s| {
            if let Some(why) = &s.quarantined {
                return Err(why.clone());
            }
            if let (false, Some(why)) = (s.started, &s.broker_down) {
                return Err(format!("not connected to the broker yet: {why}"));
            }
            if !s.started {
                return Err("not connected to the broker yet".into());
            }
            if let Some(why) = &s.broker_down {
                return Err(format!("not consuming: {why}"));
            }
            if let Some(why) = &s.blocked {
                return Err(format!("the broker blocks publishing: {why}"));
            }
            match &s.paused {
                Some((why, Some(until))) => Err(format!(
                    "paused for {} s more: {why}",
                    until.saturating_duration_since(Instant::now()).as_secs()
                )),
                Some((why, None)) => Err(format!("paused: {why}")),
                None => Ok(()),
            }
        })
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
            Err("not connected to the broker yet".to_owned())
        );
        health.broker_down("cannot open a session: ACCESS_REFUSED");
        assert_eq!(
            health.readiness(),
            Err(
                "not connected to the broker yet: cannot open a session: ACCESS_REFUSED".to_owned()
            )
        );
    }
}
