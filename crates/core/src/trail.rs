//! The audit trail's record: one JSON message per settled event, shaped
//! after Entra ID's provisioning log entries, so "what happened to this
//! person, and why" has an answer. Built here from what processing found;
//! `broker::settle` publishes it before the event is acked.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::outcome::Processed;
use crate::outcome::{CallStep, DeadLetter, FailureReason, Outcome, StepKind};

/// One outcome message. `result` is also its routing key.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeRecord {
    /// Unique per message (an event processed twice has two).
    pub id: String,
    pub event_id: Option<String>,
    /// The `reconcile` run that published the event, if one did.
    pub run_id: Option<String>,
    /// The Zoom user id when the event names one, else its email.
    pub user: Option<String>,
    pub email: Option<String>,
    /// `move`, `add`, `remove` or `none`: what the event did (or tried).
    pub action: &'static str,
    /// `applied`, `already_applied`, `skipped`, `stale`, `dead_lettered`,
    /// `requeued`.
    pub result: &'static str,
    /// The managed groups the user left (or was found in).
    pub from_groups: Vec<String>,
    pub to_group: Option<String>,
    pub steps: Vec<StepRecord>,
    pub attempts: u32,
    pub duration_ms: u64,
    pub occurred_at: Option<String>,
    pub processed_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
}

/// One Zoom call of the event.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub step: &'static str,
    pub group: Option<String>,
    pub status: Option<u16>,
    pub code: Option<i64>,
    pub duration_ms: u64,
}

/// Why the event failed, and what an operator should do about it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    /// The dead letter's `failure-reason`.
    pub reason: &'static str,
    pub status: Option<u16>,
    /// Zoom's error code, when Zoom's answer had one.
    pub code: Option<i64>,
    pub message: String,
    pub recommended_action: &'static str,
}

/// When a record is made, and a random number that makes its id unique:
/// given by the caller, so the domain reads no clock and draws no random
/// numbers (and tests are repeatable).
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub at: OffsetDateTime,
    pub nonce: u64,
}

impl OutcomeRecord {
    /// The record of a settled event; `None` for an event that was not
    /// settled (its session was lost, the daemon is stopping): it comes back
    /// and gets its record then.
    pub fn of(processed: &Processed, run_id: Option<String>, stamp: Stamp) -> Option<Self> {
        let result = result(&processed.outcome)?;
        let event = processed.event.as_ref();
        let now = stamp.at;
        Some(Self {
            id: format!("{}-{:016x}", now.unix_timestamp_nanos(), stamp.nonce),
            event_id: processed.event_id.as_ref().map(|id| id.as_str().to_owned()),
            run_id,
            // The resolved id when known, so `history --user` finds
            // email-only events too.
            user: processed
                .zoom_user_id
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .or_else(|| event.map(|e| e.user.to_string())),
            email: event.and_then(|e| e.email()).map(|e| e.as_str().to_owned()),
            action: action(processed),
            result,
            from_groups: from_groups(processed),
            to_group: processed.to_group.as_ref().map(|g| g.as_str().to_owned()),
            steps: processed.steps.iter().map(StepRecord::from).collect(),
            attempts: processed.attempts,
            duration_ms: processed.elapsed.as_millis() as u64,
            occurred_at: event
                .and_then(|e| e.occurred_at)
                .and_then(|at| at.format(&Rfc3339).ok()),
            processed_at: now.format(&Rfc3339).unwrap_or_default(),
            error: match &processed.outcome {
                Outcome::DeadLetter(dead_letter) => Some(ErrorRecord::from(dead_letter)),
                _ => None,
            },
        })
    }

    pub fn routing_key(&self) -> &'static str {
        self.result
    }
}

fn result(outcome: &Outcome) -> Option<&'static str> {
    Some(match outcome {
        Outcome::Applied | Outcome::Added => "applied",
        Outcome::AlreadyApplied => "already_applied",
        Outcome::Skipped { .. } => "skipped",
        Outcome::Stale { .. } => "stale",
        Outcome::DeadLetter(_) => "dead_lettered",
        Outcome::Requeue { .. } => "requeued",
        Outcome::Abandoned { .. } => return None,
    })
}

/// What the event did, or for a failure what it tried: the last write.
fn action(processed: &Processed) -> &'static str {
    let leaving = processed.event.as_ref().is_some_and(|e| e.leave);
    match processed.outcome {
        Outcome::Applied if leaving => return "remove",
        Outcome::Applied => return "move",
        Outcome::Added => return "add",
        _ => {}
    }
    let succeeded = |kind: StepKind| {
        processed
            .steps
            .iter()
            .any(|s| s.step == kind && s.status.is_some_and(|st| st < 300))
    };
    if matches!(processed.outcome, Outcome::AlreadyApplied) {
        return if succeeded(StepKind::Delete) {
            "remove"
        } else {
            "none"
        };
    }
    let write = processed.steps.iter().rev().find_map(|s| match s.step {
        StepKind::Move => Some("move"),
        StepKind::Add => Some("add"),
        StepKind::Delete => Some("remove"),
        _ => None,
    });
    write.unwrap_or("none")
}

/// The source group, and every managed group the user was removed from.
fn from_groups(processed: &Processed) -> Vec<String> {
    let mut groups: Vec<String> = processed
        .from_group
        .iter()
        .map(|g| g.as_str().to_owned())
        .collect();
    let removed = processed
        .steps
        .iter()
        .filter(|s| s.step == StepKind::Delete && s.status.is_some_and(|st| st < 300));
    for group in removed.filter_map(|s| s.group.clone()) {
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    groups
}

impl From<&CallStep> for StepRecord {
    fn from(step: &CallStep) -> Self {
        Self {
            step: step.step.as_str(),
            group: step.group.clone(),
            status: step.status,
            code: step.code,
            duration_ms: step.duration_ms,
        }
    }
}

impl From<&DeadLetter> for ErrorRecord {
    fn from(dead_letter: &DeadLetter) -> Self {
        let zoom = dead_letter.zoom.as_ref();
        let code = zoom.and_then(|z| z.code);
        let message = zoom
            .map(|z| z.message.clone())
            .or_else(|| dead_letter.detail.clone())
            .unwrap_or_default();
        Self {
            reason: dead_letter.reason.as_str(),
            status: zoom.and_then(|z| z.status),
            code,
            message,
            recommended_action: recommended_action(dead_letter.reason, code),
        }
    }
}

/// What to do about a dead letter, by its reason and Zoom's code.
fn recommended_action(reason: FailureReason, code: Option<i64>) -> &'static str {
    match (reason, code) {
        (FailureReason::ZoomRejected, Some(1001)) => {
            "the user does not exist in Zoom: check the id or email in the HR system, then replay"
        }
        // Zoom documents 1010 on the group-member calls as "Group does not
        // belong to this account" (fixtures/vendor/zoom/error.1010.json).
        (FailureReason::ZoomRejected, Some(1010)) => {
            "Zoom says the group (or user) does not belong to this account: check the mapping's group ids and the app's account, then replay"
        }
        (FailureReason::ZoomRejected, Some(4130)) => {
            "the group does not exist in Zoom: recreate it or correct the mapping, then replay"
        }
        (FailureReason::ZoomRejected, _) => {
            "Zoom refused the change: read Zoom's message, fix the cause, then replay"
        }
        (FailureReason::InvalidPayload, _) => {
            "the message is not a valid event: fix the producer; replaying it as it is fails again"
        }
        (FailureReason::UnmappedDepartment, _) => {
            "add the department to the mapping (or set worker.unmapped = \"skip\"), then replay"
        }
        (FailureReason::RetriesExhausted, _) => {
            "Zoom kept failing for the whole retry budget: check Zoom's status, then replay"
        }
        (FailureReason::RedeliveryLimit, _) => {
            "the event kept being redelivered without settling: inspect it and the daemon's log before replaying"
        }
        (FailureReason::TooLarge, _) => {
            "the message is over the 64 KiB limit: fix the producer; a replay would be rejected again, so `dead-letters replay` leaves it"
        }
        (FailureReason::BrakeRefused, _) => {
            "an operator refused the burst the brake held: replay it with `dead-letters replay --reason brake_refused` if it was wanted after all"
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            at: OffsetDateTime::now_utc(),
            nonce: 7,
        }
    }
    use crate::event::DepartmentChange;
    use crate::mapping::GroupId;
    use crate::outcome::ZoomAnswer;

    fn processed(outcome: Outcome, steps: Vec<CallStep>) -> Processed {
        let event = DepartmentChange::parse(
            br#"{"event_id":"e1","zoom_user_id":"u1","email":"a@example.com","previous_department":"Eng","new_department":"Sales","occurred_at":"2026-11-27T09:00:00Z"}"#,
        )
        .unwrap();
        Processed {
            outcome,
            event_id: Some(event.event_id.clone()),
            event: Some(event),
            from_group: Some(GroupId::parse("grp_eng").unwrap()),
            to_group: Some(GroupId::parse("grp_sales").unwrap()),
            attempts: steps.len() as u32,
            steps,
            zoom_user_id: None,
            elapsed: Duration::from_millis(42),
        }
    }

    fn step(step: StepKind, group: &str, status: u16, code: Option<i64>) -> CallStep {
        CallStep {
            step,
            group: Some(group.into()),
            status: Some(status),
            code,
            duration_ms: 5,
        }
    }

    #[test]
    fn an_applied_move_is_a_move_with_its_step() {
        let p = processed(
            Outcome::Applied,
            vec![step(StepKind::Move, "grp_eng", 204, None)],
        );
        let record = OutcomeRecord::of(&p, Some("run-1".into()), stamp()).unwrap();
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["result"], "applied");
        assert_eq!(json["action"], "move");
        assert_eq!(json["run_id"], "run-1");
        assert_eq!(json["user"], "u1");
        assert_eq!(json["email"], "a@example.com");
        assert_eq!(json["from_groups"], serde_json::json!(["grp_eng"]));
        assert_eq!(json["to_group"], "grp_sales");
        assert_eq!(json["steps"][0]["step"], "move");
        assert_eq!(json["steps"][0]["status"], 204);
        assert_eq!(json["occurred_at"], "2026-11-27T09:00:00Z");
        assert!(json.get("error").is_none());
        assert_eq!(record.routing_key(), "applied");
    }

    #[test]
    fn a_dead_letter_says_why_and_what_to_do() {
        let answer = ZoomAnswer {
            status: Some(404),
            code: Some(4130),
            message: "Group does not exist: grp_sales.".into(),
            message_from_zoom: true,
        };
        let p = processed(
            Outcome::zoom_failure(FailureReason::ZoomRejected, answer),
            vec![step(StepKind::Move, "grp_eng", 404, Some(4130))],
        );
        let json = serde_json::to_value(OutcomeRecord::of(&p, None, stamp()).unwrap()).unwrap();
        assert_eq!(json["result"], "dead_lettered");
        assert_eq!(json["action"], "move");
        assert_eq!(json["error"]["code"], 4130);
        assert_eq!(json["error"]["reason"], "zoom_rejected");
        let action = json["error"]["recommended_action"].as_str().unwrap();
        assert!(
            action.contains("recreate it or correct the mapping"),
            "{action}"
        );
    }

    #[test]
    fn already_applied_with_a_removal_is_a_remove() {
        let p = processed(
            Outcome::AlreadyApplied,
            vec![
                step(StepKind::Lookup, "", 200, None),
                step(StepKind::Delete, "grp_support", 204, None),
            ],
        );
        let record = OutcomeRecord::of(&p, None, stamp()).unwrap();
        assert_eq!(
            (record.result, record.action),
            ("already_applied", "remove")
        );
        assert_eq!(record.from_groups, ["grp_eng", "grp_support"]);
    }

    #[test]
    fn an_abandoned_event_has_no_record_yet() {
        let p = processed(Outcome::Abandoned { why: "stopping" }, vec![]);
        assert!(OutcomeRecord::of(&p, None, stamp()).is_none());
    }
}
