//! The brake: a mass change on the live path stops before it is made.
//!
//! An HR bulk import that sets 3,000 departments by mistake would move
//! 3,000 people within minutes; Entra ID holds provisioning past an
//! "accidental deletions" threshold and Okta pauses at 20 % unassignments.
//! Here every write to Zoom (a move, an add, a removal) asks the brake
//! first. When the next write would pass `max_changes` writes, or
//! `max_removals` removals, within the last `window_secs`, the brake
//! engages: that write is not made, its event goes back to the broker and
//! consuming stops, so it and everything after it wait on the queue in
//! order, until an operator lets the burst through (`resume`). After that
//! the brake does not engage again until a whole window has passed.
//!
//! Domain only, like the quarantine: no I/O, the clock is passed in.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::BrakeSettings;

/// What a write does to a person's memberships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// A move or an add: a change.
    Change,
    /// A removal from a group (a `leave` event, an extra group): a change
    /// and a removal.
    Removal,
}

/// Why the brake holds: the counts in the window and the limit passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engaged {
    pub changes: u32,
    pub removals: u32,
    pub max_changes: u32,
    pub max_removals: u32,
    pub window: Duration,
}

impl fmt::Display for Engaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "brake engaged: {} changes ({} removals) in the last {} s; the next would pass brake.max_changes = {} or brake.max_removals = {}",
            self.changes,
            self.removals,
            self.window.as_secs(),
            self.max_changes,
            self.max_removals
        )
    }
}

/// The daemon's brake, shared by the workers that write and the HTTP
/// endpoint that releases it. It outlives broker sessions.
pub struct Brake {
    settings: BrakeSettings,
    state: Mutex<State>,
    released: Notify,
}

#[derive(Default)]
struct State {
    /// The writes made in the window, oldest first.
    writes: VecDeque<(Instant, Write)>,
    /// Set while held.
    engaged: Option<Engaged>,
    /// After a release: the burst goes through until then.
    released_until: Option<Instant>,
}

impl Brake {
    pub fn new(settings: BrakeSettings) -> Self {
        Self {
            settings,
            state: Mutex::default(),
            released: Notify::new(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.settings.window_secs)
    }

    /// Asks to make one write at `now`: `Ok` (and it is counted), or the
    /// brake is (now) engaged and the write must not be made.
    /// `max_changes = 0` turns the brake off.
    pub fn admit(&self, write: Write, now: Instant) -> Result<(), Engaged> {
        if self.settings.max_changes == 0 {
            return Ok(());
        }
        let window = self.window();
        self.with(|s| {
            while let Some((at, _)) = s.writes.front()
                && now.saturating_duration_since(*at) >= window
            {
                s.writes.pop_front();
            }
            if let Some(engaged) = &s.engaged {
                return Err(engaged.clone());
            }
            let released = s.released_until.is_some_and(|until| now < until);
            let (changes, removals) = counts(&s.writes);
            let removal = u32::from(write == Write::Removal);
            let over = changes + 1 > self.settings.max_changes
                || removals + removal > self.settings.max_removals;
            if over && !released {
                let engaged = Engaged {
                    changes,
                    removals,
                    max_changes: self.settings.max_changes,
                    max_removals: self.settings.max_removals,
                    window,
                };
                s.engaged = Some(engaged.clone());
                return Err(engaged);
            }
            // Kept short: only what the window can still need.
            if s.writes.len() < (self.settings.max_changes as usize).saturating_mul(2) {
                s.writes.push_back((now, write));
            }
            Ok(())
        })
    }

    /// Whether the brake holds now.
    pub fn engaged(&self) -> Option<Engaged> {
        self.with(|s| s.engaged.clone())
    }

    /// Lets the held burst through: the brake does not engage again until
    /// a whole window has passed. `None` when it was not engaged.
    pub fn release(&self, now: Instant) -> Option<Engaged> {
        let window = self.window();
        let released = self.with(|s| {
            let engaged = s.engaged.take()?;
            s.released_until = Some(now + window);
            Some(engaged)
        });
        self.released.notify_waiters();
        released
    }

    /// Resolves once the brake is released (or at once if it is not held).
    pub async fn released(&self) {
        loop {
            let notified = self.released.notified();
            if self.engaged().is_none() {
                return;
            }
            notified.await;
        }
    }
}

fn counts(writes: &VecDeque<(Instant, Write)>) -> (u32, u32) {
    let changes = u32::try_from(writes.len()).unwrap_or(u32::MAX);
    let removals = writes.iter().filter(|(_, w)| *w == Write::Removal).count();
    (changes, u32::try_from(removals).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brake(max_changes: u32, max_removals: u32) -> Brake {
        Brake::new(BrakeSettings {
            max_changes,
            max_removals,
            window_secs: 60,
        })
    }

    #[test]
    fn the_write_past_the_limit_is_held_and_so_is_every_later_one() {
        let brake = brake(3, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(brake.admit(Write::Change, t0).is_ok());
        }
        let held = brake.admit(Write::Change, t0).unwrap_err();
        assert_eq!((held.changes, held.max_changes), (3, 3));
        assert!(
            brake
                .admit(Write::Change, t0 + Duration::from_secs(120))
                .is_err()
        );
        assert!(brake.engaged().is_some());
    }

    #[test]
    fn removals_have_their_own_limit() {
        let brake = brake(10, 1);
        let t0 = Instant::now();
        assert!(brake.admit(Write::Removal, t0).is_ok());
        assert!(brake.admit(Write::Change, t0).is_ok());
        let held = brake.admit(Write::Removal, t0).unwrap_err();
        assert_eq!((held.changes, held.removals), (2, 1));
    }

    #[test]
    fn writes_older_than_the_window_do_not_count() {
        let brake = brake(2, 2);
        let t0 = Instant::now();
        assert!(brake.admit(Write::Change, t0).is_ok());
        assert!(brake.admit(Write::Change, t0).is_ok());
        assert!(
            brake
                .admit(Write::Change, t0 + Duration::from_secs(60))
                .is_ok()
        );
    }

    #[test]
    fn a_release_lets_the_burst_through_for_a_window() {
        let brake = brake(1, 1);
        let t0 = Instant::now();
        assert!(brake.admit(Write::Change, t0).is_ok());
        assert!(brake.admit(Write::Change, t0).is_err());
        assert!(brake.release(t0).is_some());
        assert!(brake.release(t0).is_none(), "nothing left to release");
        for _ in 0..100 {
            assert!(
                brake
                    .admit(Write::Removal, t0 + Duration::from_secs(30))
                    .is_ok()
            );
        }
        // A window after the release it counts again, the burst's writes
        // too while they are in the window; once they are out, as before.
        assert!(
            brake
                .admit(Write::Change, t0 + Duration::from_secs(61))
                .is_err()
        );
        brake.release(t0 + Duration::from_secs(61));
        let later = t0 + Duration::from_secs(61 + 60);
        assert!(brake.admit(Write::Change, later).is_ok());
        assert!(brake.admit(Write::Change, later).is_err());
    }

    #[test]
    fn max_changes_zero_turns_it_off() {
        let brake = brake(0, 0);
        for _ in 0..1000 {
            assert!(brake.admit(Write::Removal, Instant::now()).is_ok());
        }
    }
}
