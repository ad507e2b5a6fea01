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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use event_listener::Event;

use crate::event::DepartmentChange;
use crate::mapping::Mapping;

/// How `/readyz` begins while the brake holds (see [`Engaged`]'s text).
pub const ENGAGED_TEXT: &str = "brake engaged";

/// What the brake holds on the input queue, as `status` shows it: how many
/// events and where they would go, `new_department → group` (`leave` for a
/// leave event, `invalid` for a body the daemon would refuse, `(unmapped)`
/// for a department without a group).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    pub events: usize,
    /// Only the first events were read (the peek's cap): more wait.
    pub capped: bool,
    pub by_target: BTreeMap<String, usize>,
}

impl Held {
    /// Groups the held message bodies, head first, by where they would go.
    pub fn of<'a>(mapping: &Mapping, bodies: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut held = Self::default();
        for body in bodies {
            held.events += 1;
            *held.by_target.entry(target(mapping, body)).or_insert(0) += 1;
        }
        held
    }
}

fn target(mapping: &Mapping, body: &[u8]) -> String {
    match DepartmentChange::parse(body) {
        Err(_) => "invalid".into(),
        Ok(change) if change.leave => "leave".into(),
        Ok(change) => {
            let department = change.new_department.as_str();
            match mapping.group_of(department) {
                Some(group) => format!("{department} → {}", group.as_str()),
                None => format!("{department} → (unmapped)"),
            }
        }
    }
}

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
    /// Wakes the waiters of a change (event-listener: no runtime needed).
    released: Event,
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
            released: Event::new(),
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
        match write {
            Write::Change => self.admit_all(1, 0, now),
            Write::Removal => self.admit_all(0, 1, now),
        }
    }

    /// Asks for every write one event will make, at once: all are counted,
    /// or none and the brake engages. So an event is never stopped half
    /// way (moved, but its removal from another group held).
    pub fn admit_all(&self, changes: u32, removals: u32, now: Instant) -> Result<(), Engaged> {
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
            // A released burst goes through uncounted; a window after the
            // release, counting starts afresh.
            if s.released_until.is_some_and(|until| now < until) {
                return Ok(());
            }
            let (made, removed) = counts(&s.writes);
            let over = made + changes + removals > self.settings.max_changes
                || removed + removals > self.settings.max_removals;
            if over {
                let engaged = Engaged {
                    changes: made,
                    removals: removed,
                    max_changes: self.settings.max_changes,
                    max_removals: self.settings.max_removals,
                    window,
                };
                s.engaged = Some(engaged.clone());
                return Err(engaged);
            }
            let writes = std::iter::repeat_n(Write::Change, changes as usize)
                .chain(std::iter::repeat_n(Write::Removal, removals as usize));
            s.writes.extend(writes.map(|w| (now, w)));
            Ok(())
        })
    }

    /// The held burst was refused (moved to the dead-letter queue): stop
    /// holding, with no release window; the window starts empty, so a
    /// replay of the burst (or any new one) is held again past the limits.
    /// `None` when it was not engaged.
    pub fn clear(&self) -> Option<Engaged> {
        let cleared = self.with(|s| {
            let engaged = s.engaged.take()?;
            // The refused burst is gone: counting starts afresh, so the
            // next ordinary event is not held at once.
            s.writes.clear();
            Some(engaged)
        });
        self.released.notify(usize::MAX);
        cleared
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
            s.released_until = Some(now.checked_add(window).unwrap_or(now));
            Some(engaged)
        });
        self.released.notify(usize::MAX);
        released
    }

    /// Resolves once the brake is released (or at once if it is not held).
    pub async fn released(&self) {
        loop {
            let notified = self.released.listen();
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

/// `[brake]`: how many writes to Zoom the live path may make within a
/// window before it stops and waits for an operator .
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrakeSettings {
    /// Writes (moves, adds, removals) allowed within `window_secs`; 0 turns
    /// the brake off.
    pub max_changes: u32,
    /// Of which removals (`leave` events, extra groups left).
    pub max_removals: u32,
    pub window_secs: u64,
}

impl Default for BrakeSettings {
    fn default() -> Self {
        Self {
            max_changes: 200,
            max_removals: 50,
            window_secs: 3600,
        }
    }
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
        // A window after the release, counting starts afresh.
        let later = t0 + Duration::from_secs(61);
        assert!(brake.admit(Write::Change, later).is_ok());
        assert!(brake.admit(Write::Change, later).is_err());
    }

    #[test]
    fn held_events_are_grouped_by_department_and_target_group() {
        let table = [("Sales".to_owned(), "grp_sales".to_owned())].into();
        let mapping = Mapping::new(&table).unwrap();
        let bodies: [&[u8]; 5] = [
            br#"{"event_id":"e1","zoom_user_id":"U1","new_department":"Sales"}"#,
            br#"{"event_id":"e2","zoom_user_id":"U2","new_department":"Sales"}"#,
            br#"{"event_id":"e3","zoom_user_id":"U3","action":"leave"}"#,
            br#"{"event_id":"e4","zoom_user_id":"U4","new_department":"Legal"}"#,
            b"not json",
        ];
        let held = Held::of(&mapping, bodies);
        assert_eq!(held.events, 5);
        let by_target: Vec<(&str, usize)> = held
            .by_target
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            by_target,
            [
                ("Legal → (unmapped)", 1),
                ("Sales → grp_sales", 2),
                ("invalid", 1),
                ("leave", 1)
            ]
        );
    }

    #[test]
    fn readyz_names_the_brake_as_engaged_text_says() {
        let engaged = Engaged {
            changes: 1,
            removals: 0,
            max_changes: 1,
            max_removals: 1,
            window: Duration::from_secs(60),
        };
        assert!(engaged.to_string().starts_with(ENGAGED_TEXT));
    }

    /// All of one event's writes are admitted together, or none.
    #[test]
    fn an_events_writes_are_admitted_together_or_not_at_all() {
        let brake = brake(10, 2);
        let t0 = Instant::now();
        assert!(brake.admit_all(1, 2, t0).is_ok(), "a move and two removals");
        let held = brake.admit_all(1, 1, t0).unwrap_err();
        assert_eq!((held.changes, held.removals), (3, 2));
    }

    /// After a refusal the window starts empty: ordinary events go on.
    #[test]
    fn a_clear_forgets_the_refused_burst() {
        let brake = brake(2, 2);
        let t0 = Instant::now();
        assert!(brake.admit(Write::Change, t0).is_ok());
        assert!(brake.admit(Write::Change, t0).is_ok());
        assert!(brake.admit(Write::Change, t0).is_err());
        assert!(brake.clear().is_some());
        assert!(brake.admit(Write::Change, t0).is_ok());
        assert!(brake.admit(Write::Change, t0).is_ok());
        assert!(
            brake.admit(Write::Change, t0).is_err(),
            "a new burst is held"
        );
    }

    #[test]
    fn max_changes_zero_turns_it_off() {
        let brake = brake(0, 0);
        for _ in 0..1000 {
            assert!(brake.admit(Write::Removal, Instant::now()).is_ok());
        }
    }
}
