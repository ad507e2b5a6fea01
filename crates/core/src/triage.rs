//! Dead letters as an operator sees them: one row per message, filters,
//! groups, and what a replay changes in the headers.
//!
//! The broker code hands over each message as a [`StoredMessage`] (headers
//! as JSON values, body as bytes), so everything here is plain data and
//! imports nothing from `broker/` or `zoom/`. Dead letters the daemon made
//! carry `failure-reason` and friends; those the broker made itself (a quorum
//! queue's delivery limit, a TTL) carry only `x-death`, and show with reason
//! `broker:<x-death reason>`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::{MAX_PAYLOAD_BYTES, too_large_detail};
use crate::outcome::FailureReason;

/// Headers a dead letter gained on its way to the dead-letter queue; a
/// replay removes them so the event looks as its producer sent it.
pub const FAILURE_HEADERS: &[&str] = &[
    "failure-reason",
    "zoom-http-status",
    "zoom-error-code",
    "zoom-error-message",
    "detail",
    "failure-attempts",
    "failed-at",
    "source-queue",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
];

/// One message of a queue, as read: its position (0 = head), headers, the
/// AMQP `message-id` property, and the body, or only its head (see
/// [`StoredMessage::of`]) with its real length.
#[derive(Debug, Clone, Serialize)]
pub struct StoredMessage {
    pub position: usize,
    pub headers: Map<String, Value>,
    pub message_id: Option<String>,
    /// The body, or its first [`LISTED_BODY_BYTES`] when read for a listing.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// The whole body's length.
    pub body_len: usize,
}

/// How much of each body a listing keeps (`dead-letters list`, `show`,
/// `status`): one byte over the event limit, enough to show any event and
/// to know that a longer one is over it. A listing of many large dead
/// letters then costs at most this much per message; the broker keeps the
/// whole message, and a replay or purge moves that, not this copy.
pub const LISTED_BODY_BYTES: usize = MAX_PAYLOAD_BYTES + 1;

impl StoredMessage {
    /// A message read from a queue, keeping at most `keep` bytes of `body`.
    pub fn of(
        position: usize,
        headers: Map<String, Value>,
        message_id: Option<String>,
        body: &[u8],
        keep: usize,
    ) -> Self {
        Self {
            position,
            headers,
            message_id,
            body: body[..body.len().min(keep)].to_vec(),
            body_len: body.len(),
        }
    }

    /// Whether [`StoredMessage::body`] is the whole body.
    pub fn is_whole(&self) -> bool {
        self.body.len() == self.body_len
    }
}

/// The columns of `dead-letters list`.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterRow {
    pub position: usize,
    pub event_id: String,
    pub user: String,
    pub previous_department: Option<String>,
    pub new_department: Option<String>,
    pub reason: String,
    pub http_status: Option<i64>,
    pub zoom_code: Option<i64>,
    pub message: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub failed_at: Option<OffsetDateTime>,
    pub attempts: Option<i64>,
    pub replay_count: i64,
}

impl DeadLetterRow {
    pub fn of(message: &StoredMessage) -> Self {
        let body: Value = serde_json::from_slice(&message.body).unwrap_or(Value::Null);
        let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        let headers = &message.headers;
        let death = first_death(headers);
        let event_id = field("event_id")
            .or_else(|| message.message_id.clone())
            .unwrap_or_else(|| "-".into());
        let user = field("zoom_user_id")
            .or_else(|| field("email"))
            .unwrap_or_else(|| "-".into());
        Self {
            position: message.position,
            event_id,
            user,
            previous_department: field("previous_department"),
            // A `leave` event has no new department: say what it was.
            new_department: field("new_department").or_else(|| {
                (field("action").as_deref() == Some("leave")).then(|| "(leave)".to_owned())
            }),
            reason: reason(headers, death, message.body_len),
            http_status: int(headers.get("zoom-http-status")),
            zoom_code: int(headers.get("zoom-error-code")),
            message: text(headers.get("zoom-error-message"))
                .or_else(|| text(headers.get("detail")))
                .or_else(|| {
                    (message.body_len > MAX_PAYLOAD_BYTES)
                        .then(|| too_large_detail(message.body_len))
                }),
            failed_at: text(headers.get("failed-at"))
                .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
                .or_else(|| death.and_then(|d| int(d.get("time"))).and_then(unix_time)),
            attempts: int(headers.get("failure-attempts"))
                .or_else(|| death.and_then(|d| int(d.get("count")))),
            replay_count: replay_count(headers),
        }
    }
}

/// Every reason a row can show, for `--reason` to offer and check: the
/// daemon's `failure-reason`s, the four the broker writes in `x-death`
/// (RabbitMQ's "Dead Letter Exchanges" guide, <https://www.rabbitmq.com/docs/dlx>:
/// rejected, expired, a length limit, a quorum queue's delivery limit), and
/// `unknown` for a message that carries neither.
pub const REASONS: [&str; 12] = {
    let [a, b, c, d, e, f, g] = FailureReason::ALL;
    [
        a.as_str(),
        b.as_str(),
        c.as_str(),
        d.as_str(),
        e.as_str(),
        f.as_str(),
        g.as_str(),
        "broker:delivery_limit",
        "broker:expired",
        "broker:maxlen",
        "broker:rejected",
        "unknown",
    ]
};

impl DeadLetterRow {
    /// Over the size limit: a replay would be rejected again.
    pub fn is_too_large(&self) -> bool {
        self.reason == FailureReason::TooLarge.as_str()
    }
}

/// `failure-reason`; else, for the broker's dead letters, `too_large` when
/// the daemon rejected it for its size (`x-death` reason `rejected`, the
/// only reason the daemon rejects), otherwise `broker:<x-death reason>`.
fn reason(headers: &Map<String, Value>, death: Option<&Map<String, Value>>, len: usize) -> String {
    if let Some(reason) = text(headers.get("failure-reason")) {
        return reason;
    }
    match death.and_then(|d| text(d.get("reason"))) {
        Some(reason) if reason == "rejected" && len > MAX_PAYLOAD_BYTES => {
            FailureReason::TooLarge.as_str().into()
        }
        Some(reason) => format!("broker:{reason}"),
        None => "unknown".into(),
    }
}

/// The newest `x-death` entry (RabbitMQ puts it first).
fn first_death(headers: &Map<String, Value>) -> Option<&Map<String, Value>> {
    headers.get("x-death")?.as_array()?.first()?.as_object()
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

fn int(value: Option<&Value>) -> Option<i64> {
    let value = value?;
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

fn unix_time(seconds: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(seconds).ok()
}

/// How many times a message was replayed already (the loop guard).
pub fn replay_count(headers: &Map<String, Value>) -> i64 {
    int(headers.get("replay-count")).unwrap_or(0)
}

/// What `list`, `replay` and `purge` select. Empty selects everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub reason: Option<String>,
    pub code: Option<i64>,
    pub status: Option<i64>,
    pub event_id: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.reason.is_none()
            && self.code.is_none()
            && self.status.is_none()
            && self.event_id.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    pub fn matches(&self, row: &DeadLetterRow) -> bool {
        let after = |since: &OffsetDateTime| row.failed_at.is_some_and(|at| at >= *since);
        let before = |until: &OffsetDateTime| row.failed_at.is_some_and(|at| at <= *until);
        self.reason.as_ref().is_none_or(|r| *r == row.reason)
            && self.code.is_none_or(|c| row.zoom_code == Some(c))
            && self.status.is_none_or(|s| row.http_status == Some(s))
            && self.event_id.as_ref().is_none_or(|e| *e == row.event_id)
            && self.since.as_ref().is_none_or(after)
            && self.until.as_ref().is_none_or(before)
    }
}

/// The triage view's grouping key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum GroupBy {
    Reason,
    Code,
    Status,
    Department,
}

/// One line of `--group-by`.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub key: String,
    pub count: usize,
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_failed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_failed_at: Option<OffsetDateTime>,
    pub sample_event_id: String,
}

/// Counts per key, largest group first.
pub fn group(rows: &[DeadLetterRow], by: GroupBy) -> Vec<Group> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for row in rows {
        let key = match by {
            GroupBy::Reason => row.reason.clone(),
            GroupBy::Code => row.zoom_code.map_or("-".into(), |c| c.to_string()),
            GroupBy::Status => row.http_status.map_or("-".into(), |s| s.to_string()),
            GroupBy::Department => row.new_department.clone().unwrap_or_else(|| "-".into()),
        };
        let group = groups.entry(key.clone()).or_insert_with(|| Group {
            key,
            count: 0,
            first_failed_at: None,
            last_failed_at: None,
            sample_event_id: row.event_id.clone(),
        });
        group.count += 1;
        if let Some(at) = row.failed_at {
            group.first_failed_at = Some(group.first_failed_at.map_or(at, |f| f.min(at)));
            group.last_failed_at = Some(group.last_failed_at.map_or(at, |l| l.max(at)));
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    groups
}

/// A header value a replay sets.
/// What a replay removes: the failure headers, and the brake's exemption
/// of a reconcile plan approved as large (`reconcile-allow-large`): a
/// replay is the operator's new decision, held by the brake like any burst.
const REPLAY_REMOVES: [&str; FAILURE_HEADERS.len() + 1] = {
    let mut out = [""; FAILURE_HEADERS.len() + 1];
    let mut i = 0;
    while i < FAILURE_HEADERS.len() {
        out[i] = FAILURE_HEADERS[i];
        i += 1;
    }
    out[i] = "reconcile-allow-large";
    out
};

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Int(i64),
    Text(String),
}

/// How a replay changes a dead letter's headers: the failure headers go,
/// the replay bookkeeping comes.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderEdit {
    pub remove: &'static [&'static str],
    pub set: Vec<(String, HeaderValue)>,
}

/// The edit for one replayed message: `replay-count` one higher,
/// `replayed-at` now, `replay-id` the run's id.
pub fn replay_edit(
    headers: &Map<String, Value>,
    replay_id: &str,
    now: OffsetDateTime,
) -> HeaderEdit {
    let at = now.format(&Rfc3339).unwrap_or_default();
    HeaderEdit {
        remove: &REPLAY_REMOVES,
        set: vec![
            (
                "replay-count".into(),
                HeaderValue::Int(replay_count(headers).saturating_add(1)),
            ),
            ("replayed-at".into(), HeaderValue::Text(at)),
            ("replay-id".into(), HeaderValue::Text(replay_id.into())),
        ],
    }
}

/// The edit for one event `brake refuse` moves to the dead-letter queue:
/// the daemon's dead-letter headers, reason `brake_refused`. A replay
/// removes them again ([`FAILURE_HEADERS`]); `replay-count` stays.
pub fn refusal_edit(source_queue: &str, now: OffsetDateTime) -> HeaderEdit {
    let text = |s: &str| HeaderValue::Text(s.to_owned());
    let at = now.format(&Rfc3339).unwrap_or_default();
    HeaderEdit {
        remove: &[],
        set: vec![
            (
                "failure-reason".into(),
                text(FailureReason::BrakeRefused.as_str()),
            ),
            ("failed-at".into(), HeaderValue::Text(at)),
            (
                "detail".into(),
                text("held by the brake, refused with `zoom-dept-sync brake refuse`"),
            ),
            ("source-queue".into(), text(source_queue)),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(headers: Value, body: Value) -> StoredMessage {
        let headers = headers.as_object().cloned().unwrap_or_default();
        let body = serde_json::to_vec(&body).unwrap();
        StoredMessage::of(0, headers, None, &body, usize::MAX)
    }

    /// A 1 MiB body read for a listing: 64 KiB and one byte kept, with its
    /// length; its row says what the whole message is.
    #[test]
    fn a_listing_keeps_a_bounded_head_of_a_large_body_and_its_length() {
        let death = json!({"x-death": [{"reason": "rejected", "count": 1}]});
        let headers = death.as_object().cloned().unwrap();
        let body = vec![b' '; 1 << 20];
        let kept = StoredMessage::of(3, headers, None, &body, LISTED_BODY_BYTES);
        assert_eq!(kept.body.len(), 64 * 1024 + 1);
        assert_eq!(kept.body_len, 1 << 20);
        assert!(!kept.is_whole());
        let row = DeadLetterRow::of(&kept);
        assert_eq!((row.position, row.reason.as_str()), (3, "too_large"));
        assert_eq!(
            row.message.as_deref(),
            Some("message is 1048576 bytes, over the 65536-byte limit")
        );
        let small = StoredMessage::of(0, Map::new(), None, b"{}", LISTED_BODY_BYTES);
        assert!(small.is_whole());
    }

    #[test]
    fn reads_the_daemons_dead_letters() {
        let row = DeadLetterRow::of(&message(
            json!({"failure-reason": "zoom_rejected", "zoom-http-status": 404,
                   "zoom-error-code": 4130, "zoom-error-message": "Group does not exist",
                   "failed-at": "2026-11-26T10:00:00Z", "failure-attempts": 1, "replay-count": 2}),
            json!({"event_id": "e1", "zoom_user_id": "U1", "previous_department": "Eng",
                   "new_department": "Sales"}),
        ));
        assert_eq!(row.event_id, "e1");
        assert_eq!(row.user, "U1");
        assert_eq!(row.reason, "zoom_rejected");
        assert_eq!((row.http_status, row.zoom_code), (Some(404), Some(4130)));
        assert_eq!(row.replay_count, 2);
        assert!(row.failed_at.is_some());
    }

    #[test]
    fn reads_the_brokers_dead_letters() {
        let row = DeadLetterRow::of(&message(
            json!({"x-death": [{"reason": "delivery_limit", "count": 1, "time": 1_790_000_000}]}),
            json!({"event_id": "e2", "email": "a@example.com", "new_department": "Sales"}),
        ));
        assert_eq!(row.reason, "broker:delivery_limit");
        assert_eq!(row.user, "a@example.com");
        assert!(row.failed_at.is_some());
    }

    #[test]
    fn a_message_the_daemon_rejected_for_its_size_lists_as_too_large() {
        let death = json!({"x-death": [{"reason": "rejected", "count": 1, "time": 1_790_000_000}]});
        let body = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        let headers = death.as_object().cloned().unwrap();
        let big = StoredMessage::of(0, headers, None, &body, usize::MAX);
        let row = DeadLetterRow::of(&big);
        assert_eq!(row.reason, "too_large");
        assert!(row.is_too_large());
        assert_eq!(
            row.message.as_deref(),
            Some("message is 65537 bytes, over the 65536-byte limit")
        );
        // Rejected for another reason (by another consumer): the broker's.
        let small = DeadLetterRow::of(&message(death, json!({"event_id": "e1"})));
        assert_eq!(small.reason, "broker:rejected");
        assert!(!small.is_too_large());
    }

    #[test]
    fn a_body_that_is_not_json_still_lists() {
        let headers = json!({"failure-reason": "invalid_payload"});
        let headers = headers.as_object().cloned().unwrap();
        let m = StoredMessage::of(0, headers, None, b"not json", usize::MAX);
        let row = DeadLetterRow::of(&m);
        assert_eq!(
            (row.event_id.as_str(), row.reason.as_str()),
            ("-", "invalid_payload")
        );
    }

    #[test]
    fn filters_and_groups() {
        let rows: Vec<DeadLetterRow> = [4130, 4130, 1001]
            .iter()
            .enumerate()
            .map(|(i, code)| {
                DeadLetterRow::of(&message(
                    json!({"failure-reason": "zoom_rejected", "zoom-error-code": code}),
                    json!({"event_id": format!("e{i}"), "new_department": "Sales"}),
                ))
            })
            .collect();
        let filter = Filter {
            code: Some(4130),
            ..Filter::default()
        };
        assert_eq!(rows.iter().filter(|r| filter.matches(r)).count(), 2);
        let groups = group(&rows, GroupBy::Code);
        assert_eq!((groups[0].key.as_str(), groups[0].count), ("4130", 2));
        assert_eq!(groups[0].sample_event_id, "e0");
        assert_eq!((groups[1].key.as_str(), groups[1].count), ("1001", 1));
    }

    #[test]
    fn a_replay_counts_up_and_strips_the_failure() {
        let edit = replay_edit(
            &json!({"replay-count": 1}).as_object().cloned().unwrap(),
            "r1",
            OffsetDateTime::UNIX_EPOCH,
        );
        assert!(edit.remove.contains(&"failure-reason"));
        // A replay is an operator's new decision: an old exemption from
        // the brake does not come back with it.
        assert!(edit.remove.contains(&"reconcile-allow-large"));
        assert_eq!(edit.set[0], ("replay-count".into(), HeaderValue::Int(2)));
    }

    #[test]
    fn a_refused_event_lists_as_brake_refused_and_a_replay_strips_it() {
        let edit = refusal_edit("q", OffsetDateTime::UNIX_EPOCH);
        let mut headers = Map::new();
        for (key, value) in &edit.set {
            let value = match value {
                HeaderValue::Int(n) => json!(n),
                HeaderValue::Text(t) => json!(t),
            };
            headers.insert(key.clone(), value);
            assert!(FAILURE_HEADERS.contains(&key.as_str()), "{key}");
        }
        let row = DeadLetterRow::of(&message(Value::Object(headers), json!({"event_id": "e1"})));
        assert_eq!(row.reason, "brake_refused");
        assert!(row.failed_at.is_some());
        let filter = Filter {
            reason: Some("brake_refused".into()),
            ..Filter::default()
        };
        assert!(filter.matches(&row));
    }
}
