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

use crate::config::{Settings, Unmapped};
use crate::metrics::Metrics;
use crate::ordering::{KeyedOrder, Turn};
use crate::people::{People, PersonKey};
use zds_core::brake::Brake;
use zds_core::event::{DepartmentChange, EventId, UserRef, ZoomUserId};
use zds_core::mapping::Mapping;
pub use zds_core::outcome::Processed;
use zds_core::outcome::{FailureReason, Outcome};
use zds_core::sync;
use zds_zoom::rate::RateBudgets;
use zds_zoom::{Attempts, Client, Session};

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
    parsed: Result<DepartmentChange, zds_core::event::InvalidPayload>,
    turn: Option<Turn>,
    received: Instant,
}

impl Prepared {
    /// What is left of a prepared message once it was admitted.
    fn taken() -> Self {
        Self {
            parsed: Err(zds_core::event::InvalidPayload {
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
    parsed: Result<DepartmentChange, zds_core::event::InvalidPayload>,
    _turn: Option<Turn>,
    _slot: Option<OwnedSemaphorePermit>,
    received: Instant,
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
    /// The broker delivered this message before (its `redelivered` flag):
    /// only such a message can be a repeat of an event already applied
    /// whose ack was lost. A message sent again (a sender's re-send,
    /// `publish`, `dead-letters replay`) is new, and applied.
    pub redelivered: bool,
}

/// What makes two events the same change: the id and what it asks (a
/// sender that reuses an id for a correction sends another change).
fn repeat_key(change: &DepartmentChange) -> String {
    format!(
        "{}\u{0}{:?}\u{0}{:?}\u{0}{}",
        change.event_id.as_str(),
        change.previous_department,
        change.new_department,
        change.leave
    )
}

impl Worker {
    pub fn new(
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, zds_zoom::HttpClientError> {
        Ok(Self {
            zoom: crate::clients::zoom(settings, metrics.clone())?,
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
        let attempts = Attempts::new(deadline, limits.stop.clone());
        let (outcome, from_group, to_group, user) = match self.newer_applied(change) {
            Some(newer) => (Outcome::Stale { newer }, None, None, None),
            None if limits.redelivered && self.applied_already(change) => {
                (Outcome::AlreadyApplied, None, None, None)
            }
            None => {
                let s = self.sync(change, &attempts, limits.brake_exempt).await;
                (s.outcome, s.from_group, s.to_group, s.user)
            }
        };
        self.remember_applied(change, user.as_ref(), &outcome);
        let calls = attempts.get();
        self.metrics
            .calls_per_event(sync::kind(&self.mapping, change), calls);
        Processed {
            outcome,
            event_id: Some(change.event_id.clone()),
            event: Some(change.clone()),
            from_group,
            to_group,
            attempts: calls,
            steps: attempts.steps(),
            zoom_user_id: user,
            elapsed: admitted.received.elapsed(),
        }
    }

    /// Runs the sync algorithm against Zoom, and remembers what it learned
    /// about the person (their email's id, which id and email pair).
    async fn sync(
        &self,
        change: &DepartmentChange,
        attempts: &Attempts,
        brake_exempt: bool,
    ) -> sync::Synced {
        let policy = sync::Policy {
            mapping: &self.mapping,
            people: &self.people,
            unmapped: self.unmapped,
            brake: &self.brake,
            set_primary: self.set_primary,
        };
        let email = match &change.user {
            UserRef::Email(email) => Some(email),
            _ => None,
        };
        let known = sync::Known {
            cached_id: email.and_then(|e| self.people.id_by_email(e)),
            brake_exempt,
        };
        let session = Session::new(&self.zoom, attempts);
        let synced = sync::apply(&policy, &session, change, known).await;
        if let (true, Some(email)) = (synced.forget_email, email) {
            // The cached id may be what Zoom no longer knows.
            self.people.forget_email(email);
        }
        synced
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

    /// This very event (its id, time and departments) was applied last for
    /// its person: asked only of a redelivered message, whose ack was lost
    /// (with a broker node, say). Events without `occurred_at` are not
    /// judged.
    fn applied_already(&self, change: &DepartmentChange) -> bool {
        change.occurred_at.is_some_and(|occurred| {
            let keys = self.ordering_keys(change);
            self.people
                .applied_already(&keys, occurred, &repeat_key(change))
        })
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
        (self.people).remember_applied(&keys, occurred, &repeat_key(change));
    }

    /// The brake every write asks, for the daemon and the HTTP server.
    pub fn brake(&self) -> Arc<Brake> {
        Arc::clone(&self.brake)
    }

    /// Asks the token endpoint for a new token: `Ok` once the credentials
    /// work again, so a pause for auth failures can end.
    pub async fn probe_credentials(&self) -> Result<(), zds_zoom::ZoomError> {
        self.zoom.refresh_token().await
    }

    /// As [`Worker::probe_credentials`], with Zoom's answer classified
    /// (refused credentials or an endpoint that is away), for start-up.
    pub async fn fetch_token(&self) -> Result<(), zds_zoom::ZoomError> {
        self.zoom.refresh_token().await
    }
}
