//! Quarantine: when most recent events fail the same way, stop and say so
//! instead of dead-lettering the whole queue.
//!
//! One Zoom code behind many dead letters in a row (4130: a group deleted in
//! Zoom) is the account's state, not the events' fault: every further event
//! of that department would be dead-lettered too, and each would have to be
//! replayed by hand. So once `threshold` of the last `window` settled events
//! were dead-lettered with one code, consuming stops until an operator fixes
//! the cause and resumes (or restarts the daemon).
//!
//! Only codes that say the account or a mapped group is wrong count
//! ([`ACCOUNT_CODES`]); a per-event code (1001: Zoom does not know this
//! person; 4131: not a member) is dead-lettered one by one and never stops
//! the others, however many arrive together.
//!
//! Domain only: the broker feeds it settled outcomes and acts on the answer;
//! the HTTP server lifts it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use event_listener::Event;

use crate::outcome::Outcome;

/// Zoom codes that describe the account or a mapped group, not the event
/// (Zoom's API reference for the group-member calls; fixtures in
/// `fixtures/vendor/zoom/`):
/// - 4130 "A group with this {groupId} does not exist": a mapped group was
///   deleted or the mapping names a wrong id;
/// - 1010 "Group does not belong to this account": the mapping names
///   another account's group, or the app is installed on another account;
/// - 200 "Only available for Paid account": the account lost its plan;
/// - 300 on a member write: the request the daemon builds is refused as
///   malformed, so every event fails alike (a Zoom API change).
pub const ACCOUNT_CODES: [i64; 4] = [4130, 1010, 200, 300];

/// Why consuming stopped: the Zoom code most recent events failed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    /// Zoom's error code shared by the dead letters.
    pub code: i64,
    /// The most common `new_department` among them, with its group.
    pub department: Option<String>,
    pub group: Option<String>,
    /// Dead letters with `code` in the window.
    pub count: usize,
    /// Settled events in the window (at most its size).
    pub window: usize,
}

impl fmt::Display for Quarantine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of the last {} events were dead-lettered with Zoom code {}",
            self.count, self.window, self.code
        )?;
        match (&self.department, &self.group) {
            (Some(department), Some(group)) => {
                write!(f, " (mostly department {department} → group {group})")
            }
            (Some(department), None) => write!(f, " (mostly department {department})"),
            _ => Ok(()),
        }
    }
}

/// One settled event, as the window remembers it.
#[derive(Debug, Clone)]
struct Entry {
    /// The Zoom code of a dead letter; `None` for anything else.
    code: Option<i64>,
    department: Option<String>,
    group: Option<String>,
}

/// The last `size` settled events and how many dead letters each Zoom code
/// has among them.
#[derive(Debug)]
pub struct Window {
    size: usize,
    threshold: usize,
    entries: VecDeque<Entry>,
    by_code: HashMap<i64, usize>,
}

impl Window {
    /// `threshold` is at least 1 and at most `size` (the configuration
    /// checks it); out-of-range values are clamped rather than trusted.
    pub fn new(size: usize, threshold: usize) -> Self {
        let size = size.max(1);
        Self {
            size,
            threshold: threshold.clamp(1, size),
            entries: VecDeque::with_capacity(size),
            by_code: HashMap::new(),
        }
    }

    /// Records one event's outcome. Only settled outcomes count: an event
    /// that went back to the broker (requeued, handed back) comes again and
    /// is counted then. `Some` when this event makes one code reach the
    /// threshold.
    pub fn record(
        &mut self,
        outcome: &Outcome,
        department: Option<&str>,
        group: Option<&str>,
    ) -> Option<Quarantine> {
        let code = match outcome {
            Outcome::Requeue { .. } | Outcome::Abandoned { .. } => return None,
            _ => zoom_code(outcome),
        };
        if self.entries.len() == self.size
            && let Some(old) = self.entries.pop_front().and_then(|e| e.code)
            && let Some(n) = self.by_code.get_mut(&old)
        {
            *n -= 1;
        }
        self.entries.push_back(Entry {
            code,
            department: department.map(str::to_owned),
            group: group.map(str::to_owned),
        });
        let code = code?;
        let count = self.by_code.entry(code).or_default();
        *count += 1;
        (*count >= self.threshold).then(|| self.quarantine(code))
    }

    /// Forgets every event: after a resume, old failures must not count.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.by_code.clear();
    }

    /// Describes the dead letters with `code`: how many, and the department
    /// most of them were for (the first one seen on a tie).
    fn quarantine(&self, code: i64) -> Quarantine {
        let mut departments: Vec<(&Entry, usize)> = Vec::new();
        for entry in self.entries.iter().filter(|e| e.code == Some(code)) {
            match departments
                .iter_mut()
                .find(|(seen, _)| seen.department == entry.department)
            {
                Some((_, n)) => *n += 1,
                None => departments.push((entry, 1)),
            }
        }
        let mut top: Option<(&Entry, usize)> = None;
        for (entry, n) in departments {
            if top.is_none_or(|(_, best)| n > best) {
                top = Some((entry, n));
            }
        }
        let top = top.map(|(entry, _)| entry);
        Quarantine {
            code,
            department: top.and_then(|e| e.department.clone()),
            group: top.and_then(|e| e.group.clone()),
            count: self.by_code.get(&code).copied().unwrap_or_default(),
            window: self.entries.len(),
        }
    }
}

/// The daemon's quarantine state, shared by the sessions that feed it and
/// the HTTP endpoint that lifts it. It outlives broker sessions: a
/// reconnect does not lift a quarantine, only `resume` or a restart does.
pub struct Quarantines {
    enabled: bool,
    state: Mutex<State>,
    /// Wakes the waiters of a change (event-listener: no runtime needed).
    changed: Event,
}

struct State {
    window: Window,
    /// Set while consuming is stopped.
    active: Option<Quarantine>,
    /// Set by a resume until the next settled event: the probe that decides
    /// whether the cause is gone.
    probing: Option<Quarantine>,
}

impl Quarantines {
    /// `enabled = false` (`worker.quarantine = false`) never trips.
    pub fn new(enabled: bool, window: usize, threshold: usize) -> Self {
        Self {
            enabled,
            state: Mutex::new(State {
                window: Window::new(window, threshold),
                active: None,
                probing: None,
            }),
            changed: Event::new(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records a settled event. `Some` when consuming must stop now: the
    /// window tripped, or the first event after a resume failed with the
    /// quarantined code again. Events that finish while consuming is stopped
    /// (they were already calling Zoom) are not counted. `on_trip` runs under
    /// the lock, so what it shows (readiness, a metric) cannot overtake a
    /// concurrent [`Quarantines::resume`].
    pub fn record(
        &self,
        outcome: &Outcome,
        department: Option<&str>,
        group: Option<&str>,
        on_trip: impl FnOnce(&Quarantine),
    ) -> Option<Quarantine> {
        if !self.enabled {
            return None;
        }
        self.with(|s| {
            if s.active.is_some() {
                return None;
            }
            let tripped = match s.probing.take() {
                Some(before) if zoom_code(outcome) == Some(before.code) => Some(before),
                _ => s.window.record(outcome, department, group),
            };
            if let Some(q) = &tripped {
                on_trip(q);
            }
            s.active.clone_from(&tripped);
            tripped
        })
    }

    /// The quarantine in force, if any.
    pub fn active(&self) -> Option<Quarantine> {
        self.with(|s| s.active.clone())
    }

    /// Lifts the quarantine (the operator fixed the cause). The window
    /// starts empty, and the next settled event is the probe. `None` when
    /// none was in force. `on_lift` runs under the lock, as `on_trip` does.
    pub fn resume(&self, on_lift: impl FnOnce(&Quarantine)) -> Option<Quarantine> {
        let lifted = self.with(|s| {
            let lifted = s.active.take()?;
            on_lift(&lifted);
            s.window.clear();
            s.probing = Some(lifted.clone());
            Some(lifted)
        });
        self.changed.notify(usize::MAX);
        lifted
    }

    /// The probe after a resume is over without failing the same way (or no
    /// event came): later events are judged by the window alone.
    pub fn end_probe(&self) {
        self.with(|s| s.probing = None);
    }

    /// Resolves once no quarantine is in force.
    pub async fn resumed(&self) {
        loop {
            let changed = self.changed.listen();
            if self.with(|s| s.active.is_none()) {
                return;
            }
            changed.await;
        }
    }
}

/// The Zoom code of a dead letter, when it is one of [`ACCOUNT_CODES`].
fn zoom_code(outcome: &Outcome) -> Option<i64> {
    match outcome {
        Outcome::DeadLetter(dl) => dl.zoom.as_ref().and_then(|z| z.code),
        _ => None,
    }
    .filter(|code| ACCOUNT_CODES.contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{FailureReason, ZoomAnswer};

    fn rejected(code: i64) -> Outcome {
        Outcome::zoom_failure(
            FailureReason::ZoomRejected,
            ZoomAnswer {
                status: Some(404),
                code: Some(code),
                message: "Group does not exist".into(),
                message_from_zoom: true,
            },
        )
    }

    fn sales(window: &mut Window, outcome: &Outcome) -> Option<Quarantine> {
        window.record(outcome, Some("Sales"), Some("grp_sales"))
    }

    #[test]
    fn trips_when_the_threshold_of_the_window_share_one_code() {
        let mut window = Window::new(100, 50);
        for _ in 0..60 {
            assert!(sales(&mut window, &Outcome::Applied).is_none());
        }
        for _ in 0..49 {
            assert!(sales(&mut window, &rejected(4130)).is_none());
        }
        let q = sales(&mut window, &rejected(4130)).expect("the 50th trips");
        assert_eq!((q.code, q.count, q.window), (4130, 50, 100));
        assert_eq!(
            q.to_string(),
            "50 of the last 100 events were dead-lettered with Zoom code 4130 \
             (mostly department Sales → group grp_sales)"
        );
    }

    /// Per-event codes never trip it, however many: Zoom not knowing 70
    /// people is 70 dead letters, not a stop for everyone.
    #[test]
    fn per_event_codes_never_count() {
        let mut window = Window::new(100, 50);
        for code in [1001, 4131, 1120] {
            for _ in 0..100 {
                assert!(sales(&mut window, &rejected(code)).is_none(), "{code}");
            }
        }
        for code in ACCOUNT_CODES {
            let mut window = Window::new(10, 5);
            let tripped = (0..5)
                .filter_map(|_| sales(&mut window, &rejected(code)))
                .next();
            assert_eq!(tripped.map(|q| q.code), Some(code));
        }
    }

    #[test]
    fn different_codes_and_old_events_do_not_add_up() {
        let mut window = Window::new(10, 5);
        for code in [4130, 200, 4130, 200, 4130, 200, 4130, 200] {
            assert!(sales(&mut window, &rejected(code)).is_none());
        }
        for _ in 0..2 {
            assert!(sales(&mut window, &Outcome::Applied).is_none());
        }
        // The window is full: a new 4130 pushes the oldest (a 4130) out.
        assert!(sales(&mut window, &rejected(4130)).is_none(), "4 of 10");
        // This one pushes a 200 out.
        assert!(sales(&mut window, &rejected(4130)).is_some(), "5 of 10");
    }

    #[test]
    fn only_settled_events_count() {
        let mut window = Window::new(4, 2);
        sales(&mut window, &rejected(4130));
        for _ in 0..10 {
            let requeued = Outcome::Abandoned { why: "stopping" };
            assert!(sales(&mut window, &requeued).is_none());
        }
        let skipped = Outcome::Skipped { why: "same group" };
        assert!(sales(&mut window, &skipped).is_none());
        // The requeues did not push the first dead letter out.
        assert!(sales(&mut window, &rejected(4130)).is_some());
    }

    #[test]
    fn dead_letters_without_a_zoom_code_never_trip() {
        let mut window = Window::new(4, 1);
        let invalid = Outcome::dead_letter(FailureReason::InvalidPayload, "not JSON");
        for _ in 0..10 {
            assert!(window.record(&invalid, None, None).is_none());
        }
    }

    #[test]
    fn names_the_department_most_of_the_failures_were_for() {
        let mut window = Window::new(10, 4);
        window.record(&rejected(4130), Some("Support"), Some("grp_support"));
        window.record(&rejected(4130), Some("Sales"), Some("grp_sales"));
        window.record(&rejected(4130), Some("Sales"), Some("grp_sales"));
        let q = window
            .record(&rejected(4130), Some("Support"), Some("grp_support"))
            .expect("trips");
        assert_eq!(q.department.as_deref(), Some("Support"), "first on a tie");
        window.record(&rejected(4130), Some("Sales"), Some("grp_sales"));
        let q = window.quarantine(4130);
        assert_eq!(
            (q.department.as_deref(), q.group.as_deref(), q.count),
            (Some("Sales"), Some("grp_sales"), 5)
        );
    }

    #[test]
    fn a_resume_clears_the_window_and_the_probe_decides() {
        let q = Quarantines::new(true, 10, 3);
        for _ in 0..2 {
            assert!(
                q.record(&rejected(4130), Some("Sales"), None, |_| {})
                    .is_none()
            );
        }
        let mut shown = None;
        let tripped = q
            .record(&rejected(4130), Some("Sales"), None, |q| {
                shown = Some(q.clone())
            })
            .unwrap();
        assert_eq!(shown.as_ref(), Some(&tripped), "on_trip sees it");
        assert_eq!(q.active(), Some(tripped.clone()));
        // Events still running when it tripped are not counted.
        assert!(
            q.record(&rejected(4130), Some("Sales"), None, |_| {})
                .is_none()
        );

        assert_eq!(q.resume(|_| {}), Some(tripped.clone()));
        assert_eq!(q.active(), None);
        assert_eq!(q.resume(|_| {}), None, "nothing left to lift");
        // The probe fails the same way: quarantined again at once.
        assert_eq!(
            q.record(&rejected(4130), Some("Sales"), None, |_| {}),
            Some(tripped)
        );

        q.resume(|_| {});
        assert!(
            q.record(&Outcome::Applied, Some("Sales"), None, |_| {})
                .is_none()
        );
        // The window started empty: two more failures are not enough.
        for _ in 0..2 {
            assert!(
                q.record(&rejected(4130), Some("Sales"), None, |_| {})
                    .is_none()
            );
        }
    }

    #[test]
    fn turned_off_it_never_trips() {
        let q = Quarantines::new(false, 2, 1);
        for _ in 0..10 {
            assert!(
                q.record(&rejected(4130), Some("Sales"), None, |_| {})
                    .is_none()
            );
        }
        assert_eq!(q.resume(|_| {}), None);
    }
}
