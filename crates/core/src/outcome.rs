//! The one type every event's processing ends in. Settling, logging and
//! metrics all read it, so a new outcome is added here once.

use std::fmt;

use std::time::{Duration, Instant};
use time::OffsetDateTime;

use crate::event::{DepartmentChange, EventId, ZoomUserId};
use crate::mapping::GroupId;

#[derive(Debug, Clone)]
pub enum Outcome {
    /// The user was moved to the target group.
    Applied,
    /// The user was in no managed group and was added to the target.
    Added,
    /// The user was already in the target group (a duplicate or redelivery).
    AlreadyApplied,
    /// Nothing to do: same source and target, or unmapped with `skip`.
    Skipped { why: &'static str },
    /// Older (`occurred_at`) than an event already applied for the person:
    /// not applied, so a late or retried event cannot undo a newer one.
    Stale { newer: OffsetDateTime },
    /// Cannot be applied: goes to the dead-letter queue, then is acked.
    DeadLetter(DeadLetter),
    /// Not the event's fault and not now: back to the broker, and the daemon
    /// pauses consuming until the cause is over.
    Requeue { why: String, cause: RequeueCause },
    /// Not run, or stopped between calls: the delivery's session was lost or
    /// the daemon is stopping. Handed back if the channel still lives.
    Abandoned { why: &'static str },
}

/// Why an event went back to the broker; decides how the pause ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequeueCause {
    /// Zoom's rate limit holds calls back until this instant.
    RateLimited { until: Instant },
    /// Zoom refused the app's credentials or scopes: retry with backoff.
    Auth,
    /// The dead letter or the outcome could not be published (queue or
    /// exchange missing, broker nack, no confirm in time): the original goes
    /// back and consuming waits.
    PublishingUnavailable,
    /// The brake holds a burst of writes ([`crate::brake`]): consuming waits
    /// for an operator's `resume`.
    Brake,
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub reason: FailureReason,
    /// Why, in words (the `detail` header), when no Zoom answer says it.
    pub detail: Option<String>,
    /// The Zoom answer that caused it, if one did.
    pub zoom: Option<ZoomAnswer>,
}

/// What Zoom answered when a call failed, in the terms a dead letter needs.
/// The HTTP client builds it; the domain does not know HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoomAnswer {
    /// `None` when no answer came (timeout, connection error).
    pub status: Option<u16>,
    /// Zoom's `code` from the JSON body.
    pub code: Option<i64>,
    /// Zoom's `message`, or else a description of what went wrong.
    pub message: String,
    /// Whether `message` is Zoom's own `message` field.
    pub message_from_zoom: bool,
}

impl fmt::Display for ZoomAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "HTTP {status}")?,
            None => f.write_str("no answer")?,
        }
        if let Some(code) = self.code {
            write!(f, ", code {code}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What one Zoom call of an event was for, in the audit trail's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Lookup,
    Move,
    Add,
    Delete,
    SetPrimary,
    List,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lookup => "lookup",
            Self::Move => "move",
            Self::Add => "add",
            Self::Delete => "delete",
            Self::SetPrimary => "set_primary",
            Self::List => "list",
        }
    }
}

/// One Zoom call an event made, as the audit trail records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStep {
    pub step: StepKind,
    /// The group the call's path names, when it names one.
    pub group: Option<String>,
    /// `None` when no answer came (timeout, connection error).
    pub status: Option<u16>,
    /// Zoom's error code, for a failed call whose body had one.
    pub code: Option<i64>,
    pub duration_ms: u64,
}

/// The `failure-reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    ZoomRejected,
    InvalidPayload,
    UnmappedDepartment,
    RetriesExhausted,
    /// Redelivered more than `worker.max_redeliveries` times without being
    /// settled (the daemon lost its session or stopped while running it).
    RedeliveryLimit,
    /// Held by the brake, then refused by an operator (`brake refuse`): the
    /// daemon never tried it. Only the toolbox writes this reason.
    BrakeRefused,
    /// Over [`crate::event::MAX_PAYLOAD_BYTES`]: rejected unread, and
    /// dead-lettered by the broker (never published again by the daemon).
    TooLarge,
}

impl FailureReason {
    /// Every reason the daemon and the toolbox write.
    pub const ALL: [Self; 7] = [
        Self::ZoomRejected,
        Self::InvalidPayload,
        Self::UnmappedDepartment,
        Self::RetriesExhausted,
        Self::RedeliveryLimit,
        Self::BrakeRefused,
        Self::TooLarge,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ZoomRejected => "zoom_rejected",
            Self::InvalidPayload => "invalid_payload",
            Self::UnmappedDepartment => "unmapped_department",
            Self::RetriesExhausted => "retries_exhausted",
            Self::RedeliveryLimit => "redelivery_limit",
            Self::BrakeRefused => "brake_refused",
            Self::TooLarge => "too_large",
        }
    }
}

impl Outcome {
    pub fn dead_letter(reason: FailureReason, detail: impl Into<String>) -> Self {
        Self::DeadLetter(DeadLetter {
            reason,
            detail: Some(detail.into()),
            zoom: None,
        })
    }

    pub fn zoom_failure(reason: FailureReason, error: ZoomAnswer) -> Self {
        Self::DeadLetter(DeadLetter {
            reason,
            detail: None,
            zoom: Some(error),
        })
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Added => "added",
            Self::AlreadyApplied => "already_applied",
            Self::Skipped { .. } => "skipped",
            Self::Stale { .. } => "stale",
            Self::DeadLetter(_) => "dead_lettered",
            Self::Requeue { .. } => "requeued",
            Self::Abandoned { .. } => "abandoned",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skipped { why } => write!(f, "skipped ({why})"),
            Self::Stale { newer } => write!(
                f,
                "stale (an event that occurred at {newer} was applied already)"
            ),
            Self::DeadLetter(dl) => {
                write!(f, "dead-lettered ({})", dl.reason.as_str())?;
                if let Some(zoom) = &dl.zoom {
                    write!(f, ": {zoom}")?;
                } else if let Some(detail) = &dl.detail {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            Self::Requeue { why, .. } => write!(f, "requeued ({why})"),
            Self::Abandoned { why } => write!(f, "abandoned ({why})"),
            other => f.write_str(other.label()),
        }
    }
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
