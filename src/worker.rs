//! Decides what each event needs and runs it to an [`Outcome`].
//!
//! Knows nothing of AMQP: the consumer hands it message bytes, and gets back a
//! [`Processed`] to settle. Per-user order and the concurrency limit live here.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::brake::Brake;
use crate::config::{Settings, Unmapped};
use crate::event::{DepartmentChange, Email, EventId, UserRef, ZoomUserId};
use crate::mapping::{GroupId, Mapping};
use crate::metrics::Metrics;
use crate::ordering::{KeyedOrder, Turn};
use crate::outcome::{CallStep, FailureReason, Outcome};
use crate::sync;
use crate::zoom::rate::RateBudgets;
use crate::zoom::{Attempts, Client, Session};

/// The recent history the stale check consults: bounded, in memory (a
/// restart forgets it), long enough for any sender's retries.
const APPLIED_HISTORY_CAPACITY: u64 = 100_000;
const APPLIED_HISTORY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long an email → Zoom id answer is trusted.
const EMAIL_CACHE_TTL: Duration = Duration::from_secs(3600);
const EMAIL_CACHE_CAPACITY: u64 = 10_000;

pub struct Worker {
    zoom: Client,
    mapping: Mapping,
    unmapped: Unmapped,
    slots: Arc<Semaphore>,
    order: Arc<KeyedOrder>,
    ids_by_email: Cache<String, ZoomUserId>,
    /// Which ordering keys name one person (`id:U` ↔ `email:e`), learned
    /// from events that carry both and from lookups, so every event of that
    /// person joins one line whatever it carries.
    identities: Cache<String, String>,
    max_elapsed: Duration,
    /// Asked before every write to Zoom.
    brake: Arc<Brake>,
    /// `worker.max_future_skew_secs`.
    max_future_skew: time::Duration,
    metrics: Arc<Metrics>,
    set_primary: bool,
    /// When the newest applied event of each person occurred (by every key
    /// that names them), so an older one arriving later is skipped as stale.
    applied_at: Cache<String, OffsetDateTime>,
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

impl Worker {
    pub fn new(
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::zoom::HttpClientError> {
        Ok(Self {
            zoom: crate::clients::zoom(settings, metrics.clone())?,
            mapping: settings.mapping.clone(),
            unmapped: settings.worker.unmapped,
            slots: Arc::new(Semaphore::new(settings.worker.concurrency)),
            order: Arc::new(KeyedOrder::default()),
            ids_by_email: Cache::builder()
                .max_capacity(EMAIL_CACHE_CAPACITY)
                .time_to_live(EMAIL_CACHE_TTL)
                .build(),
            identities: Cache::builder()
                .max_capacity(2 * EMAIL_CACHE_CAPACITY)
                .time_to_live(EMAIL_CACHE_TTL)
                .build(),
            max_elapsed: settings.retry.max_elapsed(),
            brake: Arc::new(Brake::new(settings.brake.clone())),
            max_future_skew: time::Duration::seconds(
                i64::try_from(settings.worker.max_future_skew_secs).unwrap_or(i64::MAX),
            ),
            metrics,
            set_primary: settings.worker.set_primary,
            applied_at: Cache::builder()
                .max_capacity(APPLIED_HISTORY_CAPACITY)
                .time_to_live(APPLIED_HISTORY_TTL)
                .build(),
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
    fn ordering_keys(&self, change: &DepartmentChange) -> Vec<String> {
        let id_key = change
            .zoom_user_id()
            .map(|id| format!("id:{}", id.as_str()));
        let email_key = change
            .email()
            .map(|e| format!("email:{}", e.as_str().to_lowercase()));
        if let (Some(id), Some(email)) = (&id_key, &email_key) {
            self.identities.insert(id.clone(), email.clone());
            self.identities.insert(email.clone(), id.clone());
        }
        let mut keys: Vec<String> = id_key.into_iter().chain(email_key).collect();
        let learned: Vec<String> = keys.iter().filter_map(|k| self.identities.get(k)).collect();
        keys.extend(learned);
        keys
    }

    /// Remembers that a lookup found `email` to be `id`.
    fn learn_identity(&self, email: &Email, id: &ZoomUserId) {
        let id_key = format!("id:{}", id.as_str());
        let email_key = format!("email:{}", email.as_str().to_lowercase());
        self.identities.insert(id_key.clone(), email_key.clone());
        self.identities.insert(email_key, id_key);
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
            unmapped: self.unmapped,
            brake: &self.brake,
            set_primary: self.set_primary,
        };
        let email_key = match &change.user {
            UserRef::Email(email) => Some(email.as_str().to_lowercase()),
            _ => None,
        };
        let known = sync::Known {
            cached_id: email_key.as_ref().and_then(|k| self.ids_by_email.get(k)),
            brake_exempt,
        };
        let session = Session::new(&self.zoom, attempts);
        let synced = sync::apply(&policy, &session, change, known).await;
        for (email, id) in &synced.learned {
            self.learn_identity(email, id);
        }
        if let Some((email, id)) = &synced.resolved {
            self.ids_by_email
                .insert(email.as_str().to_lowercase(), id.clone());
        }
        if let (true, Some(key)) = (synced.forget_email, email_key) {
            // The cached id may be what Zoom no longer knows.
            self.ids_by_email.invalidate(&key);
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
        self.ordering_keys(change)
            .iter()
            .filter_map(|key| self.applied_at.get(key))
            .filter(|applied| *applied > occurred)
            .max()
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
        keys.extend(resolved.map(|id| format!("id:{}", id.as_str())));
        for key in keys {
            let newest = self
                .applied_at
                .get(&key)
                .map_or(occurred, |known| known.max(occurred));
            self.applied_at.insert(key, newest);
        }
    }

    /// The brake every write asks, for the daemon and the HTTP server.
    pub fn brake(&self) -> Arc<Brake> {
        Arc::clone(&self.brake)
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
