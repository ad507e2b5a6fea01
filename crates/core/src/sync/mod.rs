//! The sync algorithm: what one department change needs from Zoom, and the
//! outcome it ends in.
//!
//! It talks to Zoom only through [`ZoomDirectory`], so every row of the
//! "what each kind of event costs in Zoom calls" table
//! (docs/how-it-works.md) is a unit test against
//! [`in_memory::InMemoryDirectory`], without a broker or HTTP. What the
//! daemon remembers about people (the email cache, which id and email name
//! one person) is the caller's: the run is told what is cached and returns
//! what it learned.

mod directory;
#[cfg(test)]
pub(crate) mod in_memory;
#[cfg(test)]
mod tests;

pub use directory::{CallFailure, DirectoryUser, UserPath, ZoomDirectory};

use crate::brake::{Brake, Engaged, Write};
use crate::event::{DepartmentChange, Email, UserRef, ZoomUserId};
use crate::mapping::{GroupId, Mapping, Plan, Unmapped};
use crate::outcome::{FailureReason, Outcome, RequeueCause};

/// Zoom's codes for a user it does not know (404 / 1001; 400 / 1010 on
/// older accounts).
const UNKNOWN_USER_CODES: [i64; 2] = [1001, 1010];

/// What the caller remembers of people, told the moment a lookup reveals
/// it: an event of the same person that carries the other key (only the id,
/// only the email) joins this person's line at once, not only after this
/// event has settled.
pub trait People: Sync {
    /// A user record paired this email and id.
    fn learn(&self, email: &Email, id: &ZoomUserId);
    /// `GET /users/{email}` found this id (an answer worth caching; the
    /// pair is learned too).
    fn found_by_email(&self, email: &Email, id: &ZoomUserId);
}

/// The daemon's settings the algorithm obeys.
pub struct Policy<'a> {
    pub mapping: &'a Mapping,
    /// Told what lookups reveal, as they reveal it.
    pub people: &'a dyn People,
    pub unmapped: Unmapped,
    /// Asked before every write to Zoom.
    pub brake: &'a Brake,
    /// `worker.set_primary`.
    pub set_primary: bool,
}

/// What the caller knows about the event before it runs.
#[derive(Debug, Default)]
pub struct Known {
    /// The Zoom id cached for an email-only event's address.
    pub cached_id: Option<ZoomUserId>,
    /// A plan approved with `reconcile --apply --allow-large`: the brake
    /// does not hold it a second time.
    pub brake_exempt: bool,
}

/// What one run did, and what the caller should remember.
#[derive(Debug)]
pub struct Synced {
    pub outcome: Outcome,
    /// The group the user was moved from and the target, when known.
    pub from_group: Option<GroupId>,
    pub to_group: Option<GroupId>,
    /// The user's Zoom id, once known.
    pub user: Option<ZoomUserId>,
    /// Email ↔ id pairs the run's lookups revealed, in order (each already
    /// told to [`Policy::people`]).
    pub learned: Vec<(Email, ZoomUserId)>,
    /// A `GET /users/{email}` answer worth caching.
    pub resolved: Option<(Email, ZoomUserId)>,
    /// Zoom rejected a call of an email-only event: a cached id for its
    /// address may be what Zoom no longer knows.
    pub forget_email: bool,
}

/// Runs one event against the directory.
pub async fn apply<D: ZoomDirectory>(
    policy: &Policy<'_>,
    directory: &D,
    change: &DepartmentChange,
    known: Known,
) -> Synced {
    let mut run = Run {
        policy,
        zoom: directory,
        change,
        cached_id: known.cached_id,
        brake_exempt: known.brake_exempt,
        prepaid: 0,
        primary: None,
        synced: Synced {
            outcome: Outcome::AlreadyApplied,
            from_group: None,
            to_group: None,
            user: None,
            learned: Vec::new(),
            resolved: None,
            forget_email: false,
        },
    };
    let outcome = run.execute().await;
    run.synced.outcome = run.make_primary(outcome).await;
    run.synced
}

/// What the event needs, for the calls-per-event metric.
pub fn kind(mapping: &Mapping, change: &DepartmentChange) -> &'static str {
    let by_email = matches!(change.user, UserRef::Email(_));
    match (mapping.plan(change), by_email) {
        (Plan::Move { .. }, false) => "move",
        (Plan::Move { .. }, true) => "move_by_email",
        (Plan::Lookup { .. }, false) => "lookup",
        (Plan::Lookup { .. }, true) => "lookup_by_email",
        (Plan::Leave, _) => "leave",
        (Plan::Unmapped | Plan::AlreadyThere { .. }, _) => "no_call",
    }
}

/// The event's outcome when the brake holds it: back to the queue, and
/// consuming waits for `resume`.
fn held_by(engaged: Engaged) -> Outcome {
    Outcome::Requeue {
        why: engaged.to_string(),
        cause: RequeueCause::Brake,
    }
}

fn count(groups: &[GroupId]) -> u32 {
    u32::try_from(groups.len()).unwrap_or(u32::MAX)
}

/// The state of one event's run, filled in as the plan unfolds.
struct Run<'a, D> {
    policy: &'a Policy<'a>,
    zoom: &'a D,
    change: &'a DepartmentChange,
    cached_id: Option<ZoomUserId>,
    brake_exempt: bool,
    /// Writes the brake admitted ahead for this event ([`Run::reserve`]).
    prepaid: u32,
    /// The primary group a user record reported (before any write).
    primary: Option<String>,
    synced: Synced,
}

impl<D: ZoomDirectory> Run<'_, D> {
    async fn execute(&mut self) -> Outcome {
        match self.policy.mapping.plan(self.change) {
            Plan::Unmapped => self.unmapped(),
            Plan::AlreadyThere { group } => {
                self.synced.from_group = Some(group.clone());
                self.synced.to_group = Some(group);
                Outcome::Skipped {
                    why: "previous and new department map to the same group",
                }
            }
            Plan::Move { from, to } => {
                self.synced.from_group = Some(from.clone());
                self.synced.to_group = Some(to.clone());
                match self.user_id().await {
                    Ok((id, user)) => {
                        self.synced.user = Some(id.clone());
                        self.primary = user.and_then(|u| u.primary_group_id);
                        self.move_checked(&from, &id, &to).await
                    }
                    Err(failure) => self.failed(failure),
                }
            }
            Plan::Leave => self.leave().await,
            Plan::Lookup { to } => {
                self.synced.to_group = Some(to.clone());
                match self.user_with_groups().await {
                    Ok((id, user)) => {
                        self.synced.user = Some(id.clone());
                        self.primary = user.primary_group_id.clone();
                        self.place(&id, &user, &to).await
                    }
                    Err(failure) => self.failed(failure),
                }
            }
        }
    }

    fn unmapped(&self) -> Outcome {
        match self.policy.unmapped {
            Unmapped::DeadLetter => Outcome::dead_letter(
                FailureReason::UnmappedDepartment,
                format!(
                    "new_department {:?} has no Zoom group in the mapping",
                    self.change.new_department.as_str()
                ),
            ),
            Unmapped::Skip => Outcome::Skipped {
                why: "new_department is not mapped",
            },
        }
    }

    /// A `leave` event: out of every managed group.
    async fn leave(&mut self) -> Outcome {
        match self.user_with_groups().await {
            Ok((id, user)) => {
                self.synced.user = Some(id.clone());
                let managed = self.managed_groups(&user);
                self.synced.from_group = managed.first().cloned();
                if managed.is_empty() {
                    return Outcome::AlreadyApplied;
                }
                if let Err(held) = self.reserve(0, count(&managed)) {
                    return held;
                }
                self.leave_others(&id, &managed, None, Outcome::Applied)
                    .await
            }
            // Zoom does not know the person (their account was deleted
            // before the HR system said they left): in no managed group.
            Err(CallFailure::Rejected(e))
                if e.code.is_some_and(|c| UNKNOWN_USER_CODES.contains(&c)) =>
            {
                Outcome::AlreadyApplied
            }
            Err(failure) => self.failed(failure),
        }
    }

    /// With `worker.set_primary`: once the user is in the target group, make
    /// it their primary group, unless a user record already said it is. A
    /// failure of that call is the event's failure (a replay repeats it
    /// harmlessly: the move is recognised as already applied).
    async fn make_primary(&mut self, outcome: Outcome) -> Outcome {
        if !self.policy.set_primary
            || !matches!(
                outcome,
                Outcome::Applied | Outcome::Added | Outcome::AlreadyApplied
            )
        {
            return outcome;
        }
        let (Some(user), Some(to)) = (self.synced.user.clone(), self.synced.to_group.clone())
        else {
            return outcome;
        };
        if self.primary.as_deref() == Some(to.as_str()) {
            return outcome;
        }
        match self.zoom.set_primary(&to, &user).await {
            Ok(()) => outcome,
            Err(failure) => self.failed(failure),
        }
    }

    /// The user's Zoom id; for an email-only event, from the cache or from
    /// `GET /users/{email}` (whose answer is returned too, to spare a lookup).
    async fn user_id(&mut self) -> Result<(ZoomUserId, Option<DirectoryUser>), CallFailure> {
        let email = match &self.change.user {
            UserRef::Id(id) | UserRef::Both { id, .. } => return Ok((id.clone(), None)),
            UserRef::Email(email) => email,
        };
        if let Some(id) = &self.cached_id {
            return Ok((id.clone(), None));
        }
        let user = self.zoom.get_user(UserPath::Email(email)).await?;
        let id = ZoomUserId::parse(&user.id).map_err(|e| unreadable_user(email, e))?;
        self.policy.people.found_by_email(email, &id);
        self.synced.resolved = Some((email.clone(), id.clone()));
        self.synced.learned.push((email.clone(), id.clone()));
        Ok((id, Some(user)))
    }

    /// The user's id and current groups (one `GET /users/{..}`).
    async fn user_with_groups(&mut self) -> Result<(ZoomUserId, DirectoryUser), CallFailure> {
        match self.user_id().await? {
            (id, Some(user)) => Ok((id, user)),
            (id, None) => {
                let user = self.zoom.get_user(UserPath::Id(&id)).await?;
                // The record's email pairs the person's keys, so a later
                // email-only event joins their line and their stale check.
                if let Some(email) = user.email.as_deref().and_then(|e| Email::parse(e).ok()) {
                    self.policy.people.learn(&email, &id);
                    self.synced.learned.push((email, id.clone()));
                }
                Ok((id, user))
            }
        }
    }

    /// Source unknown: decide from the user's managed groups.
    async fn place(&mut self, id: &ZoomUserId, user: &DirectoryUser, to: &GroupId) -> Outcome {
        let managed = self.managed_groups(user);
        // Every write of the event is admitted at once, or none: never a
        // move made and its removal from another group held.
        // A move or an add unless already in the target; a removal from
        // each managed group but the one moved from (or the target).
        let changes = u32::from(!managed.contains(to));
        let removals = count(&managed).saturating_sub(1);
        if let Err(held) = self.reserve(changes, removals) {
            return held;
        }
        if managed.contains(to) {
            self.synced.from_group = Some(to.clone());
            return self
                .leave_others(id, &managed, Some(to), Outcome::AlreadyApplied)
                .await;
        }
        let Some((from, others)) = managed.split_first() else {
            if let Err(held) = self.may_write(Write::Change) {
                return held;
            }
            return match self.zoom.add_member(to, id).await {
                Ok(()) => Outcome::Added,
                Err(failure) => self.failed(failure),
            };
        };
        self.synced.from_group = Some(from.clone());
        let moved = self.move_checked(from, id, to).await;
        if !matches!(moved, Outcome::Applied) {
            return moved;
        }
        self.leave_others(id, others, Some(to), Outcome::Applied)
            .await
    }

    /// The invariant: in the target and in no other managed group. Leaves
    /// every managed group in `groups` but the target (every one for a
    /// `leave` event, which has none), then ends in `done`.
    async fn leave_others(
        &mut self,
        id: &ZoomUserId,
        groups: &[GroupId],
        to: Option<&GroupId>,
        done: Outcome,
    ) -> Outcome {
        for other in groups.iter().filter(|g| Some(*g) != to) {
            if let Err(held) = self.may_write(Write::Removal) {
                return held;
            }
            match self.zoom.remove_member(other, id).await {
                Ok(()) => {
                    tracing::info!(group = %other, "removed the user from another managed group")
                }
                // Already gone: the invariant holds.
                Err(failure) if failure.rejected_with(&[404]).is_some() => {}
                Err(failure) => return self.failed(failure),
            }
        }
        done
    }

    /// Asks the brake before a write: `Err` is the event's outcome when it
    /// holds (the event goes back and consuming waits for `resume`).
    fn may_write(&mut self, write: Write) -> Result<(), Outcome> {
        if self.brake_exempt {
            return Ok(());
        }
        if let Some(left) = self.prepaid.checked_sub(1) {
            self.prepaid = left;
            return Ok(());
        }
        self.policy
            .brake
            .admit(write, std::time::Instant::now())
            .map_err(held_by)
    }

    /// Asks the brake for all of an event's writes before the first.
    fn reserve(&mut self, changes: u32, removals: u32) -> Result<(), Outcome> {
        if self.brake_exempt || changes + removals == 0 {
            return Ok(());
        }
        self.policy
            .brake
            .admit_all(changes, removals, std::time::Instant::now())
            .map_err(held_by)?;
        self.prepaid = changes + removals;
        Ok(())
    }

    /// The managed groups among a user record's groups, sorted.
    fn managed_groups(&self, user: &DirectoryUser) -> Vec<GroupId> {
        let mut managed: Vec<GroupId> = user
            .group_ids
            .iter()
            .filter_map(|g| GroupId::parse(g).ok())
            .filter(|g| self.policy.mapping.is_managed(g))
            .collect();
        managed.sort();
        managed
    }

    /// `PATCH` move; a 400/404 is checked once against the user's groups, so
    /// a duplicate or redelivered event is recognised as already applied.
    async fn move_checked(&mut self, from: &GroupId, id: &ZoomUserId, to: &GroupId) -> Outcome {
        if let Err(held) = self.may_write(Write::Change) {
            return held;
        }
        let rejection = match self.zoom.move_member(from, id, to).await {
            Ok(()) => return Outcome::Applied,
            Err(failure) => match failure.rejected_with(&[400, 404]) {
                Some(answer) => answer.clone(),
                None => return self.failed(failure),
            },
        };
        match self.zoom.get_user(UserPath::Id(id)).await {
            Ok(user) if user.group_ids.iter().any(|g| g == to.as_str()) => {
                tracing::info!(rejection = %rejection, "Zoom rejected the move, but the user is already in the target group");
                let managed = self.managed_groups(&user);
                self.leave_others(id, &managed, Some(to), Outcome::AlreadyApplied)
                    .await
            }
            // Not in the target, or the check itself was refused: the
            // original rejection is what the operator needs to see.
            Ok(_) | Err(CallFailure::Rejected(_)) => self.failed(CallFailure::Rejected(rejection)),
            Err(failure) => self.failed(failure),
        }
    }

    /// A call's failure as the event's outcome.
    fn failed(&mut self, failure: CallFailure) -> Outcome {
        match failure {
            CallFailure::Rejected(answer) => {
                // The cached id may be what Zoom no longer knows.
                self.synced.forget_email = matches!(self.change.user, UserRef::Email(_));
                Outcome::zoom_failure(FailureReason::ZoomRejected, answer)
            }
            CallFailure::Exhausted(answer) => {
                Outcome::zoom_failure(FailureReason::RetriesExhausted, answer)
            }
            CallFailure::Stopped => Outcome::Abandoned {
                why: "the delivery's session was lost or the daemon is stopping",
            },
            CallFailure::RateLimited { until } => Outcome::Requeue {
                why: "Zoom's rate limit holds calls back past the retry budget".into(),
                cause: RequeueCause::RateLimited { until },
            },
            CallFailure::Auth(answer) => Outcome::Requeue {
                why: format!("Zoom refused the app's credentials or scopes: {answer}"),
                cause: RequeueCause::Auth,
            },
        }
    }
}

/// A lookup whose answer carries an id that is not one: the event's failure.
fn unreadable_user(email: &Email, detail: crate::event::FieldError) -> CallFailure {
    CallFailure::Rejected(crate::outcome::ZoomAnswer {
        status: Some(200),
        code: None,
        message: format!("GET /users/{email} returned an unusable id: {detail}"),
        message_from_zoom: false,
    })
}
