//! Decides what each event needs and runs it to an [`Outcome`].
//!
//! Knows nothing of AMQP: the consumer hands it message bytes, and gets back a
//! [`Processed`] to settle. Per-user order and the concurrency limit live here.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use std::sync::atomic::{AtomicU32, Ordering};

use crate::brake::{Brake, Write};
use crate::config::{Settings, Unmapped};
use crate::event::{DepartmentChange, Email, EventId, UserRef, ZoomUserId};
use crate::mapping::{GroupId, Mapping, Plan};
use crate::metrics::Metrics;
use crate::ordering::{KeyedOrder, Turn};
use crate::outcome::{CallStep, FailureReason, Outcome, RequeueCause};
use crate::people::{People, PersonKey};
use crate::zoom::rate::RateBudgets;
use crate::zoom::{Attempts, Client, Failure, UserPath, ZoomUser};

pub struct Worker {
    zoom: Client,
    mapping: Mapping,
    unmapped: Unmapped,
    slots: Arc<Semaphore>,
    order: Arc<KeyedOrder<PersonKey>>,
    /// The email → id answers, which keys name one person (`id:U` ↔
    /// `email:e`, so every event of that person joins one line whatever it
    /// carries) and the stale check's history of applied events.
    people: People,
    max_elapsed: Duration,
    /// Asked before every write to Zoom.
    brake: Arc<Brake>,
    /// `worker.max_future_skew_secs`.
    max_future_skew: time::Duration,
    metrics: Arc<Metrics>,
    set_primary: bool,
}

/// One message, parsed and queued behind its user's earlier events.
pub struct Prepared {
    parsed: Result<DepartmentChange, crate::event::InvalidPayload>,
    turn: Option<Turn>,
    received: Instant,
}

impl Prepared {
    /// What is left of a prepared message once it was admitted.
    fn taken() -> Self {
        Self {
            parsed: Err(crate::event::InvalidPayload {
                detail: "admitted".into(),
                event_id: None,
                too_large: false,
            }),
            turn: None,
            received: Instant::now(),
        }
    }

    /// Waits until every earlier event of this person has been settled.
    /// Cancel-safe.
    pub async fn wait_turn(&mut self) {
        if let Some(turn) = self.turn.as_mut() {
            turn.wait().await;
        }
    }

    /// The message's `event_id`, when it could be read.
    pub fn event_id(&self) -> Option<&EventId> {
        match &self.parsed {
            Ok(change) => Some(&change.event_id),
            Err(invalid) => invalid.event_id.as_ref(),
        }
    }
}

/// A message whose turn has come, holding its user's place and a slot
/// until it is dropped (after settling).
pub struct Admitted {
    parsed: Result<DepartmentChange, crate::event::InvalidPayload>,
    _turn: Option<Turn>,
    _slot: Option<OwnedSemaphorePermit>,
    received: Instant,
}

/// What became of one message, with what the log line and the dead letter
/// need to know.
#[derive(Debug)]
pub struct Processed {
    pub outcome: Outcome,
    pub event: Option<DepartmentChange>,
    pub event_id: Option<EventId>,
    /// The group the user was moved from and the target, when known.
    pub from_group: Option<GroupId>,
    pub to_group: Option<GroupId>,
    pub attempts: u32,
    /// Each Zoom call the event made, in order (the audit trail's steps).
    pub steps: Vec<CallStep>,
    /// The user's Zoom id, once known (from the event or a lookup).
    pub zoom_user_id: Option<ZoomUserId>,
    pub elapsed: Duration,
}

/// Why an admitted event should not run after all, and how long it may.
pub struct RunLimits {
    /// Cancelled when the delivery's session is lost or the daemon stops:
    /// no Zoom call starts after that.
    pub stop: CancellationToken,
    /// The event belongs to a plan already approved with `reconcile --apply
    /// --allow-large`: the brake does not hold it a second time.
    pub brake_exempt: bool,
    /// The delivery must be settled before this (the broker's consumer
    /// timeout, less a margin): the event's budget ends there at the latest.
    pub settle_by: Instant,
}

/// The event's outcome when the brake holds it: back to the queue, and
/// consuming waits for `resume`.
fn held_by(engaged: crate::brake::Engaged) -> Outcome {
    Outcome::Requeue {
        why: engaged.to_string(),
        cause: RequeueCause::Brake,
    }
}

fn count(groups: &[GroupId]) -> u32 {
    u32::try_from(groups.len()).unwrap_or(u32::MAX)
}

/// The state of one event's run, filled in as the plan unfolds.
struct Run<'a> {
    change: &'a DepartmentChange,
    attempts: Attempts,
    from_group: Option<GroupId>,
    to_group: Option<GroupId>,
    /// The user's Zoom id, once known.
    user: Option<ZoomUserId>,
    /// The primary group a user record reported (before any write).
    primary: Option<String>,
    /// Not held by the brake (a plan approved with `reconcile --apply
    /// --allow-large`).
    brake_exempt: bool,
    /// Writes the brake admitted ahead for this event ([`Worker::reserve`]).
    prepaid: AtomicU32,
}

impl Worker {
    pub fn new(
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::zoom::HttpClientError> {
        Ok(Self {
            zoom: Client::new(settings, Arc::clone(&metrics))?,
            mapping: settings.mapping.clone(),
            unmapped: settings.worker.unmapped,
            slots: Arc::new(Semaphore::new(settings.worker.concurrency)),
            order: Arc::new(KeyedOrder::default()),
            people: People::default(),
            max_elapsed: settings.retry.max_elapsed(),
            brake: Arc::new(Brake::new(settings.brake.clone())),
            max_future_skew: time::Duration::seconds(
                i64::try_from(settings.worker.max_future_skew_secs).unwrap_or(i64::MAX),
            ),
            metrics,
            set_primary: settings.worker.set_primary,
        })
    }

    /// The account's Zoom budget per category (for `/readyz`).
    pub fn rate_budgets(&self) -> Arc<RateBudgets> {
        self.zoom.budgets()
    }

    /// Parses a message and takes its place in its user's line. Synchronous
    /// and cheap: the consumer calls it in delivery order.
    pub fn prepare(&self, body: &[u8]) -> Prepared {
        let parsed = DepartmentChange::parse(body);
        let turn = parsed
            .as_ref()
            .ok()
            .map(|change| self.order.enqueue(self.ordering_keys(change)));
        Prepared {
            parsed,
            turn,
            received: Instant::now(),
        }
    }

    /// Every key that names this event's person: its id and email, and the
    /// other half of either when an earlier event or lookup paired them.
    fn ordering_keys(&self, change: &DepartmentChange) -> Vec<PersonKey> {
        self.people.keys(change.zoom_user_id(), change.email())
    }

    /// Takes a slot once the message's turn has come
    /// ([`Prepared::wait_turn`]): a user's queued events must not hold slots
    /// that other users' events could use. Cancel-safe.
    pub async fn admit(&self, prepared: &mut Prepared) -> Option<Admitted> {
        prepared.wait_turn().await;
        let slot = if prepared.parsed.is_ok() {
            Some(Arc::clone(&self.slots).acquire_owned().await.ok()?)
        } else {
            None
        };
        let Prepared {
            parsed,
            turn,
            received,
        } = std::mem::replace(prepared, Prepared::taken());
        Some(Admitted {
            parsed,
            _turn: turn,
            _slot: slot,
            received,
        })
    }

    /// The outcome of a message that is not run: it was redelivered too
    /// often (it keeps failing to settle).
    pub fn refuse(&self, admitted: &Admitted, reason: FailureReason, detail: String) -> Processed {
        let event = admitted.parsed.as_ref().ok().cloned();
        let event_id = match &admitted.parsed {
            Ok(change) => Some(change.event_id.clone()),
            Err(invalid) => invalid.event_id.clone(),
        };
        Processed {
            outcome: Outcome::dead_letter(reason, detail),
            event,
            event_id,
            from_group: None,
            to_group: None,
            attempts: 0,
            steps: Vec::new(),
            zoom_user_id: None,
            elapsed: admitted.received.elapsed(),
        }
    }

    /// Runs an admitted message to its outcome. The caller keeps `admitted`
    /// until the delivery is settled, so the user's next event waits for that.
    pub async fn process(&self, admitted: &Admitted, limits: &RunLimits) -> Processed {
        let change = match &admitted.parsed {
            Ok(change) => change,
            Err(invalid) => {
                return Processed {
                    outcome: Outcome::dead_letter(
                        if invalid.too_large {
                            FailureReason::TooLarge
                        } else {
                            FailureReason::InvalidPayload
                        },
                        invalid.detail.clone(),
                    ),
                    event: None,
                    event_id: invalid.event_id.clone(),
                    from_group: None,
                    to_group: None,
                    attempts: 0,
                    steps: Vec::new(),
                    zoom_user_id: None,
                    elapsed: admitted.received.elapsed(),
                };
            }
        };
        if let Some(detail) = self.too_far_ahead(change) {
            return self.refuse(admitted, FailureReason::InvalidPayload, detail);
        }
        let deadline = (Instant::now() + self.max_elapsed).min(limits.settle_by);
        let mut run = Run {
            change,
            attempts: Attempts::new(deadline, limits.stop.clone()),
            from_group: None,
            to_group: None,
            user: None,
            primary: None,
            brake_exempt: limits.brake_exempt,
            prepaid: AtomicU32::new(0),
        };
        let outcome = match self.newer_applied(change) {
            Some(newer) => Outcome::Stale { newer },
            None => {
                let outcome = self.execute(&mut run).await;
                self.make_primary(&run, outcome).await
            }
        };
        self.remember_applied(change, run.user.as_ref(), &outcome);
        let (attempts, from_group, to_group) = (run.attempts.get(), run.from_group, run.to_group);
        self.metrics.calls_per_event(self.kind(change), attempts);
        Processed {
            outcome,
            event_id: Some(change.event_id.clone()),
            event: Some(change.clone()),
            from_group,
            to_group,
            attempts,
            steps: run.attempts.steps(),
            zoom_user_id: run.user.clone(),
            elapsed: admitted.received.elapsed(),
        }
    }

    /// Why an event dated too far ahead of this clock is refused: never
    /// applied, never remembered, so no one event can make its person's
    /// later events stale.
    fn too_far_ahead(&self, change: &DepartmentChange) -> Option<String> {
        let occurred = change.occurred_at?;
        let now = OffsetDateTime::now_utc();
        let limit = now.checked_add(self.max_future_skew).unwrap_or(now);
        (occurred > limit).then(|| {
            format!(
                "occurred_at {occurred} is more than {} s ahead of the daemon's clock ({now}; worker.max_future_skew_secs)",
                self.max_future_skew.whole_seconds()
            )
        })
    }

    /// When an event of this person that occurred after this one was
    /// applied already. Events without `occurred_at` are not judged.
    fn newer_applied(&self, change: &DepartmentChange) -> Option<OffsetDateTime> {
        let occurred = change.occurred_at?;
        self.people
            .newer_applied(&self.ordering_keys(change), occurred)
    }

    /// Remembers when an applied event occurred, under every key of its
    /// person (the resolved id too).
    fn remember_applied(
        &self,
        change: &DepartmentChange,
        resolved: Option<&ZoomUserId>,
        outcome: &Outcome,
    ) {
        let (Some(occurred), true) = (
            change.occurred_at,
            matches!(
                outcome,
                Outcome::Applied | Outcome::Added | Outcome::AlreadyApplied
            ),
        ) else {
            return;
        };
        let mut keys = self.ordering_keys(change);
        keys.extend(resolved.map(PersonKey::id));
        self.people.remember_applied(&keys, occurred);
    }

    /// What the event needs, for the calls-per-event metric.
    fn kind(&self, change: &DepartmentChange) -> &'static str {
        let by_email = matches!(change.user, UserRef::Email(_));
        match (self.mapping.plan(change), by_email) {
            (Plan::Move { .. }, false) => "move",
            (Plan::Move { .. }, true) => "move_by_email",
            (Plan::Lookup { .. }, false) => "lookup",
            (Plan::Lookup { .. }, true) => "lookup_by_email",
            (Plan::Leave, _) => "leave",
            (Plan::Unmapped | Plan::AlreadyThere { .. }, _) => "no_call",
        }
    }

    async fn execute(&self, run: &mut Run<'_>) -> Outcome {
        let plan = self.mapping.plan(run.change);
        match plan {
            Plan::Unmapped => match self.unmapped {
                Unmapped::DeadLetter => Outcome::dead_letter(
                    FailureReason::UnmappedDepartment,
                    format!(
                        "new_department {:?} has no Zoom group in the mapping",
                        run.change.new_department.as_str()
                    ),
                ),
                Unmapped::Skip => Outcome::Skipped {
                    why: "new_department is not mapped",
                },
            },
            Plan::AlreadyThere { group } => {
                run.from_group = Some(group.clone());
                run.to_group = Some(group);
                Outcome::Skipped {
                    why: "previous and new department map to the same group",
                }
            }
            Plan::Move { from, to } => {
                run.from_group = Some(from.clone());
                run.to_group = Some(to.clone());
                match self.user_id(run).await {
                    Ok((id, user)) => {
                        run.user = Some(id.clone());
                        run.primary = user.and_then(|u| u.primary_group_id);
                        self.move_checked(run, &from, &id, &to).await
                    }
                    Err(failure) => self.failed(run, failure),
                }
            }
            Plan::Leave => match self.user_with_groups(run).await {
                Ok((id, user)) => {
                    run.user = Some(id.clone());
                    let managed = self.managed_groups(&user);
                    run.from_group = managed.first().cloned();
                    if managed.is_empty() {
                        return Outcome::AlreadyApplied;
                    }
                    if let Err(held) = self.reserve(run, 0, count(&managed)) {
                        return held;
                    }
                    self.leave_others(run, &id, &managed, None, Outcome::Applied)
                        .await
                }
                // Zoom does not know the person (their account was deleted
                // before the HR system said they left): in no managed group.
                Err(Failure::Rejected(e)) if matches!(e.code, Some(1001 | 1010)) => {
                    Outcome::AlreadyApplied
                }
                Err(failure) => self.failed(run, failure),
            },
            Plan::Lookup { to } => {
                run.to_group = Some(to.clone());
                match self.user_with_groups(run).await {
                    Ok((id, user)) => {
                        run.user = Some(id.clone());
                        run.primary = user.primary_group_id.clone();
                        self.place(run, &id, &user, &to).await
                    }
                    Err(failure) => self.failed(run, failure),
                }
            }
        }
    }

    /// With `worker.set_primary`: once the user is in the target group, make
    /// it their primary group, unless a user record already said it is. A
    /// failure of that call is the event's failure (a replay repeats it
    /// harmlessly: the move is recognised as already applied).
    async fn make_primary(&self, run: &Run<'_>, outcome: Outcome) -> Outcome {
        if !self.set_primary
            || !matches!(
                outcome,
                Outcome::Applied | Outcome::Added | Outcome::AlreadyApplied
            )
        {
            return outcome;
        }
        let (Some(user), Some(to)) = (&run.user, &run.to_group) else {
            return outcome;
        };
        if run.primary.as_deref() == Some(to.as_str()) {
            return outcome;
        }
        match self.zoom.set_primary(to, user, &run.attempts).await {
            Ok(()) => outcome,
            Err(failure) => self.failed(run, failure),
        }
    }

    /// The user's Zoom id; for an email-only event, from the cache or from
    /// `GET /users/{email}` (whose answer is returned too, to spare a lookup).
    async fn user_id(&self, run: &Run<'_>) -> Result<(ZoomUserId, Option<ZoomUser>), Failure> {
        let email = match &run.change.user {
            UserRef::Id(id) | UserRef::Both { id, .. } => return Ok((id.clone(), None)),
            UserRef::Email(email) => email,
        };
        if let Some(id) = self.people.id_by_email(email) {
            return Ok((id, None));
        }
        let user = self
            .zoom
            .get_user(UserPath::Email(email), &run.attempts)
            .await?;
        let id = ZoomUserId::parse(&user.id).map_err(|e| unreadable_user(email, e))?;
        self.people.found_by_email(email, &id);
        Ok((id, Some(user)))
    }

    /// The user's id and current groups (one `GET /users/{..}`).
    async fn user_with_groups(&self, run: &Run<'_>) -> Result<(ZoomUserId, ZoomUser), Failure> {
        match self.user_id(run).await? {
            (id, Some(user)) => Ok((id, user)),
            (id, None) => {
                let user = self.zoom.get_user(UserPath::Id(&id), &run.attempts).await?;
                // The record's email pairs the person's keys, so a later
                // email-only event joins their line and their stale check.
                if let Some(email) = user.email.as_deref().and_then(|e| Email::parse(e).ok()) {
                    self.people.learn(&email, &id);
                }
                Ok((id, user))
            }
        }
    }

    /// Source unknown: decide from the user's managed groups.
    async fn place(
        &self,
        run: &mut Run<'_>,
        id: &ZoomUserId,
        user: &ZoomUser,
        to: &GroupId,
    ) -> Outcome {
        let managed = self.managed_groups(user);
        // Every write of the event is admitted at once, or none: never a
        // move made and its removal from another group held.
        // A move or an add unless already in the target; a removal from
        // each managed group but the one moved from (or the target).
        let changes = u32::from(!managed.contains(to));
        let removals = count(&managed).saturating_sub(1);
        if let Err(held) = self.reserve(run, changes, removals) {
            return held;
        }
        if managed.contains(to) {
            run.from_group = Some(to.clone());
            return self
                .leave_others(run, id, &managed, Some(to), Outcome::AlreadyApplied)
                .await;
        }
        let Some((from, others)) = managed.split_first() else {
            if let Err(held) = self.may_write(run, Write::Change) {
                return held;
            }
            return match self.zoom.add_member(to, id, &run.attempts).await {
                Ok(()) => Outcome::Added,
                Err(failure) => self.failed(run, failure),
            };
        };
        run.from_group = Some(from.clone());
        let moved = self.move_checked(run, from, id, to).await;
        if !matches!(moved, Outcome::Applied) {
            return moved;
        }
        self.leave_others(run, id, others, Some(to), Outcome::Applied)
            .await
    }

    /// The invariant: in the target and in no other managed group. Leaves
    /// every managed group in `groups` but the target (every one for a
    /// `leave` event, which has none), then ends in `done`.
    async fn leave_others(
        &self,
        run: &Run<'_>,
        id: &ZoomUserId,
        groups: &[GroupId],
        to: Option<&GroupId>,
        done: Outcome,
    ) -> Outcome {
        for other in groups.iter().filter(|g| Some(*g) != to) {
            if let Err(held) = self.may_write(run, Write::Removal) {
                return held;
            }
            match self.zoom.remove_member(other, id, &run.attempts).await {
                Ok(()) => {
                    tracing::info!(group = %other, "removed the user from another managed group")
                }
                // Already gone: the invariant holds.
                Err(Failure::Rejected(e)) if e.status == Some(404) => {}
                Err(failure) => return self.failed(run, failure),
            }
        }
        done
    }

    /// Asks the brake before a write: `Err` is the event's outcome when it
    /// holds (the event goes back and consuming waits for `resume`).
    fn may_write(&self, run: &Run<'_>, write: Write) -> Result<(), Outcome> {
        let prepaid = run
            .prepaid
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if run.brake_exempt || prepaid.is_ok() {
            return Ok(());
        }
        self.brake
            .admit(write, std::time::Instant::now())
            .map_err(held_by)
    }

    /// Asks the brake for all of an event's writes before the first.
    fn reserve(&self, run: &Run<'_>, changes: u32, removals: u32) -> Result<(), Outcome> {
        if run.brake_exempt || changes + removals == 0 {
            return Ok(());
        }
        self.brake
            .admit_all(changes, removals, std::time::Instant::now())
            .map_err(held_by)?;
        run.prepaid.store(changes + removals, Ordering::Relaxed);
        Ok(())
    }

    /// The brake every write asks, for the daemon and the HTTP server.
    pub fn brake(&self) -> Arc<Brake> {
        Arc::clone(&self.brake)
    }

    /// The managed groups among a user record's groups, sorted.
    fn managed_groups(&self, user: &ZoomUser) -> Vec<GroupId> {
        let mut managed: Vec<GroupId> = user
            .group_ids
            .iter()
            .filter_map(|g| GroupId::parse(g).ok())
            .filter(|g| self.mapping.is_managed(g))
            .collect();
        managed.sort();
        managed
    }

    /// `PATCH` move; a 400/404 is checked once against the user's groups, so
    /// a duplicate or redelivered event is recognised as already applied.
    async fn move_checked(
        &self,
        run: &Run<'_>,
        from: &GroupId,
        id: &ZoomUserId,
        to: &GroupId,
    ) -> Outcome {
        if let Err(held) = self.may_write(run, Write::Change) {
            return held;
        }
        let rejection = match self.zoom.move_member(from, id, to, &run.attempts).await {
            Ok(()) => return Outcome::Applied,
            Err(Failure::Rejected(e)) if matches!(e.status, Some(400 | 404)) => e,
            Err(failure) => return self.failed(run, failure),
        };
        match self.zoom.get_user(UserPath::Id(id), &run.attempts).await {
            Ok(user) if user.group_ids.iter().any(|g| g == to.as_str()) => {
                tracing::info!(rejection = %rejection, "Zoom rejected the move, but the user is already in the target group");
                let managed = self.managed_groups(&user);
                self.leave_others(run, id, &managed, Some(to), Outcome::AlreadyApplied)
                    .await
            }
            // Not in the target, or the check itself was refused: the
            // original rejection is what the operator needs to see.
            Ok(_) | Err(Failure::Rejected(_)) => self.failed(run, Failure::Rejected(rejection)),
            Err(failure) => self.failed(run, failure),
        }
    }

    /// A call's failure as the event's outcome.
    fn failed(&self, run: &Run<'_>, failure: Failure) -> Outcome {
        match failure {
            Failure::Rejected(e) => {
                if let UserRef::Email(email) = &run.change.user {
                    // The cached id may be what Zoom no longer knows.
                    self.people.forget_email(email);
                }
                Outcome::zoom_failure(FailureReason::ZoomRejected, e.answer())
            }
            Failure::Exhausted(e) => {
                Outcome::zoom_failure(FailureReason::RetriesExhausted, e.answer())
            }
            Failure::Stopped => Outcome::Abandoned {
                why: "the delivery's session was lost or the daemon is stopping",
            },
            Failure::RateLimited { until } => Outcome::Requeue {
                why: "Zoom's rate limit holds calls back past the retry budget".into(),
                cause: RequeueCause::RateLimited { until },
            },
            Failure::Auth(e) => Outcome::Requeue {
                why: format!("Zoom refused the app's credentials or scopes: {e}"),
                cause: RequeueCause::Auth,
            },
        }
    }

    /// Asks the token endpoint for a new token: `Ok` once the credentials
    /// work again, so a pause for auth failures can end.
    pub async fn probe_credentials(&self) -> Result<(), crate::zoom::ZoomError> {
        self.zoom.refresh_token().await
    }

    /// As [`Worker::probe_credentials`], with Zoom's answer classified
    /// (refused credentials or an endpoint that is away), for start-up.
    pub async fn fetch_token(&self) -> Result<(), crate::zoom::ZoomError> {
        self.zoom.refresh_token().await
    }
}

fn unreadable_user(email: &Email, detail: crate::event::FieldError) -> Failure {
    Failure::Rejected(crate::zoom::ZoomError::local(
        crate::zoom::ErrorKind::Rejected,
        Some(200),
        format!("GET /users/{email} returned an unusable id: {detail}"),
    ))
}
