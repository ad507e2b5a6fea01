//! `POST /v1/bamboohr`: a BambooHR webhook becomes email-keyed events.
//!
//! Size, signature, payload ([`payload`]: BambooHR's documented shapes, JSON
//! or Form Post), the employee cap ([`MAX_EMPLOYEES`]), the copy check (the
//! same signed request again costs no lookup: [`webhook_key`]), then per
//! employee it names: read the current department
//! and work email from BambooHR's API, build the event, validate it as the
//! consumer will, publish it once (the event id is the idempotency key):
//! - a department change (`employee.updated` naming `department`) and a new
//!   hire (`employee.created`) publish `{"event_id", "email",
//!   "new_department", "occurred_at"}`; `previous_department` stays empty,
//!   so the consumer looks up the person's current groups (a new hire is in
//!   none, so they are added);
//! - a deletion (`employee.deleted`) publishes `{"event_id", "email",
//!   "action": "leave", "occurred_at"}` when `on_delete = "leave"`, and is
//!   ignored otherwise.
//!
//! Answers: 202 accepted / duplicate / ignored (nothing to act on);
//! 400 an unreadable body; 401 signature; 413 size, or more than
//! [`MAX_EMPLOYEES`] employees (final: BambooHR does not retry a 4xx;
//! `reconcile` brings the rest); 422 when BambooHR's API
//! refuses the lookup with a 4xx (no such employee, a bad API key) or
//! answers data that is no valid event (no work email): the sender's retry
//! would not help (BambooHR retries only 5xx answers), so it is not asked
//! for, and the log says why; 503 with `Retry-After` when BambooHR or the
//! broker is down or slow.

pub mod client;
pub mod payload;
pub mod signature;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use secrecy::SecretString;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::{Instant, timeout_at};

use super::events::{accepted, error_response, now, read_body, text, unavailable};
use super::idempotency::{self, Once, Seen};
use super::metrics::Answer;
use super::{ANSWER_WITHIN, Ingest};
use crate::settings::{BambooHrSettings, OnDelete};
use client::{Client, Employee, LookupError};
use payload::{Kind, Notice};
use signature::{Headers, WebhookKey};
use zds_core::event::{DepartmentChange, MAX_PAYLOAD_BYTES};
use zds_http_client::RetrySettings;

/// The metrics' `source` label.
const SOURCE: &str = "bamboohr";
/// The most employees one webhook may name. Each costs a BambooHR API call
/// within the answer's 1.8 s, so a webhook naming many more could not be
/// answered in time anyway, and would be retried whole (each retry costing
/// every lookup again). Over it, the webhook is refused with 413 before
/// any lookup, and counted as `too_large`.
pub const MAX_EMPLOYEES: usize = 100;
/// A signed request is accepted while its timestamp is within
/// [`signature::TOLERANCE_SECS`] of the clock either way, so a copy can come
/// at most twice that after the first: remembered that long.
const REMEMBER_WEBHOOKS: std::time::Duration =
    std::time::Duration::from_secs(2 * signature::TOLERANCE_SECS.unsigned_abs() + 60);
/// Kept free of the lookup for publishing to the broker.
const PUBLISH_RESERVE: std::time::Duration = std::time::Duration::from_millis(500);

/// The adapter's state: the webhook key and the API client.
pub struct BambooHr {
    key: WebhookKey,
    client: Client,
    on_delete: OnDelete,
    /// Signed requests handled (see [`webhook_key`]): a copy costs no lookup.
    webhooks: Seen,
}

impl BambooHr {
    pub fn new(
        settings: &BambooHrSettings,
        retry: &RetrySettings,
        key: WebhookKey,
        api_key: SecretString,
        https_only: bool,
    ) -> Result<Self, zds_http_client::HttpClientError> {
        Ok(Self {
            key,
            client: Client::new(settings, retry, api_key, https_only)?,
            on_delete: settings.on_delete,
            webhooks: Seen::new(idempotency::CAPACITY, REMEMBER_WEBHOOKS),
        })
    }
}

type Answered = (Answer, Response);

pub(super) async fn receive(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let deadline = Instant::now() + ANSWER_WITHIN;
    let Some(hr) = ingest.bamboohr.as_ref() else {
        return error_response(StatusCode::NOT_FOUND, "BambooHR is not configured", None);
    };
    let (answer, response) =
        match timeout_at(deadline, handle(&ingest, hr, &headers, body, deadline)).await {
            Ok(done) => done,
            Err(_) => unavailable("no answer from BambooHR or the broker in time"),
        };
    ingest.metrics.count(SOURCE, answer);
    response
}

async fn handle(
    ingest: &Ingest,
    hr: &BambooHr,
    headers: &HeaderMap,
    body: Body,
    deadline: Instant,
) -> Answered {
    let Some(body) = read_body(headers, body).await else {
        let error = format!("the body is over the {MAX_PAYLOAD_BYTES}-byte limit");
        let response = error_response(StatusCode::PAYLOAD_TOO_LARGE, &error, None);
        return (Answer::TooLarge, response);
    };
    let signed = Headers {
        timestamp: text(headers, "x-bamboohr-timestamp"),
        signature: text(headers, "x-bamboohr-signature"),
    };
    let timestamp = match signature::verify(&hr.key, signed, &body, now()) {
        Ok(timestamp) => timestamp,
        Err(e) => {
            tracing::warn!(reason = %e, "BambooHR webhook refused: bad signature");
            let response = error_response(StatusCode::UNAUTHORIZED, &e.to_string(), None);
            return (Answer::BadSignature, response);
        }
    };
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let notices = match payload::notices(&body, content_type) {
        Ok(notices) => notices,
        Err(e) => {
            let response = error_response(StatusCode::BAD_REQUEST, &e.to_string(), Some("body"));
            return (Answer::Invalid, response);
        }
    };
    let notices: Vec<Notice> = notices
        .into_iter()
        .filter(|n| n.kind != Kind::Deleted || hr.on_delete == OnDelete::Leave)
        .collect();
    if notices.is_empty() {
        return (Answer::Ignored, accepted("ignored"));
    }
    if notices.len() > MAX_EMPLOYEES {
        return too_many(notices.len());
    }
    once_per_webhook(
        ingest,
        hr,
        &notices,
        &webhook_key(timestamp, &body),
        timestamp,
        deadline,
    )
    .await
}

/// The employees of a webhook, unless the same signed request was handled
/// already (then 202 `duplicate`, no lookup). A 503 leaves it unhandled, so
/// BambooHR's retry looks the employees up again; any other answer is final.
async fn once_per_webhook(
    ingest: &Ingest,
    hr: &BambooHr,
    notices: &[Notice],
    key: &str,
    timestamp: i64,
    deadline: Instant,
) -> Answered {
    let mut answered = None;
    let once = hr
        .webhooks
        .once(key, async {
            let done = employees(ingest, hr, notices, timestamp, deadline).await;
            if done.0 == Answer::Unavailable {
                return Err(done);
            }
            answered = Some(done);
            Ok(())
        })
        .await;
    match (once, answered) {
        (Ok(Once::Published), Some(done)) => done,
        (Ok(_), _) => (Answer::Duplicate, accepted("duplicate")),
        (Err(unavailable), _) => unavailable,
    }
}

/// SHA-256 of the signed timestamp and the body: what the signature covers.
/// BambooHR's payload carries no delivery id, so the same bytes under the
/// same timestamp are one request as far as anyone can tell.
fn webhook_key(timestamp: i64, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(timestamp.to_string().as_bytes());
    hash.update([0]);
    hash.update(body);
    format!("{:x}", hash.finalize())
}

fn too_many(count: usize) -> Answered {
    tracing::warn!(
        employees = count,
        max = MAX_EMPLOYEES,
        "BambooHR webhook names too many employees; refused with 413, none looked up"
    );
    let error = format!(
        "the webhook names {count} employees, more than the {MAX_EMPLOYEES} one webhook may: \
         none was looked up; run `reconcile` with an HR export instead"
    );
    let response = error_response(StatusCode::PAYLOAD_TOO_LARGE, &error, None);
    (Answer::TooLarge, response)
}

/// Each employee: looked up, built, published once.
async fn employees(
    ingest: &Ingest,
    hr: &BambooHr,
    notices: &[Notice],
    timestamp: i64,
    deadline: Instant,
) -> Answered {
    let mut answer = Answer::Duplicate;
    let mut refused: Option<Answered> = None;
    for notice in notices {
        match change(ingest, hr, notice, timestamp, deadline).await {
            Ok(Once::Published) => answer = Answer::Accepted,
            Ok(Once::Duplicate) => {}
            Err(failed) => refused = Some(worse(refused, failed)),
        }
    }
    match (refused, answer) {
        (Some(failed), _) => failed,
        (None, Answer::Accepted) => (answer, accepted("accepted")),
        (None, _) => (answer, accepted("duplicate")),
    }
}

/// One employee refused (422) or unavailable (503) does not stop the
/// others of the webhook: BambooHR never retries a 4xx, so an early return
/// would lose every employee after it. The answer is the worst of them: a
/// 503 (BambooHR retries the whole webhook; what was published comes again
/// as the current state), else the first 422.
fn worse(so_far: Option<Answered>, new: Answered) -> Answered {
    match so_far {
        Some(old) if old.0 == Answer::Unavailable || new.0 != Answer::Unavailable => old,
        _ => new,
    }
}

/// One employee: look up, build, validate, publish once.
async fn change(
    ingest: &Ingest,
    hr: &BambooHr,
    notice: &Notice,
    timestamp: i64,
    deadline: Instant,
) -> Result<Once, Answered> {
    let id = notice.employee_id.as_str();
    let lookup_by = deadline.checked_sub(PUBLISH_RESERVE).unwrap_or(deadline);
    let employee = hr
        .client
        .employee(id, lookup_by)
        .await
        .map_err(|e| lookup_failed(notice, &e))?;
    let event_id = event_id(notice, timestamp, &employee);
    let event = event(&event_id, notice.kind, &employee, timestamp);
    if let Err(invalid) = DepartmentChange::parse(&event) {
        tracing::warn!(employee = id, detail = %invalid.detail,
            "BambooHR's employee data is no valid event; not published");
        let error = format!("BambooHR's data for employee {id}: {}", invalid.detail);
        let response = error_response(StatusCode::UNPROCESSABLE_ENTITY, &error, None);
        return Err((Answer::Rejected, response));
    }
    let publish = ingest.publisher.publish(&event, &event_id, deadline);
    ingest.seen.once(&event_id, publish).await.map_err(|e| {
        tracing::warn!(event_id, error = %e, "BambooHR event not published; the sender will retry");
        unavailable(super::events::NOT_QUEUED)
    })
}

/// `bamboohr-<id>-<timestamp>-<digest>`, with the kind after the id for a
/// new hire (`-created-`) or a deletion (`-deleted-`). The digest (8 hex of
/// SHA-256 over the kind, email and department the API answered) keeps two
/// webhooks about one employee in the same second apart when the state they
/// publish differs (the second must not be dropped as a duplicate), while a
/// repeat of the same request publishing the same state is one event.
fn event_id(notice: &Notice, timestamp: i64, employee: &Employee) -> String {
    use sha2::{Digest, Sha256};
    let id = &notice.employee_id;
    let kind = match notice.kind {
        Kind::DepartmentChanged => "",
        Kind::Created => "created-",
        Kind::Deleted => "deleted-",
    };
    let mut hash = Sha256::new();
    for part in [
        kind,
        employee.work_email.as_deref().unwrap_or_default().trim(),
        employee.department.as_deref().unwrap_or_default().trim(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = format!("{:x}", hash.finalize());
    format!("bamboohr-{id}-{kind}{timestamp}-{}", &digest[..8])
}

fn lookup_failed(notice: &Notice, error: &LookupError) -> Answered {
    let id = notice.employee_id.as_str();
    match error {
        LookupError::Refused(status) => {
            tracing::warn!(
                employee = id,
                status = status.as_u16(),
                "BambooHR refused the employee lookup; answering 422, the sender will not retry"
            );
            let mut error = format!("employee {id}: {error}");
            if notice.kind == Kind::Deleted {
                // BambooHR may no longer answer for someone it deleted: whom
                // to remove cannot be told from the webhook alone.
                error.push_str(
                    "; a deleted employee's work email is unknown: remove them with \
                     `reconcile --remove-unlisted` or a `leave` event",
                );
            }
            let response = error_response(StatusCode::UNPROCESSABLE_ENTITY, &error, None);
            (Answer::Rejected, response)
        }
        LookupError::Unavailable { .. } | LookupError::Unreadable(_) => {
            tracing::warn!(employee = id, error = %error,
                "BambooHR lookup failed; answering 503, the sender will retry");
            unavailable("the employee could not be looked up now; retry later")
        }
    }
}

/// The event as bytes; `DepartmentChange::parse` judges it.
fn event(event_id: &str, kind: Kind, employee: &Employee, timestamp: i64) -> Vec<u8> {
    let occurred_at = OffsetDateTime::from_unix_timestamp(timestamp)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok());
    let email = employee.work_email.as_deref().unwrap_or_default().trim();
    let event = match kind {
        Kind::Deleted => json!({
            "event_id": event_id,
            "email": email,
            "action": "leave",
            "occurred_at": occurred_at,
        }),
        Kind::DepartmentChanged | Kind::Created => json!({
            "event_id": event_id,
            "email": email,
            "new_department": employee.department.as_deref().unwrap_or_default().trim(),
            "occurred_at": occurred_at,
        }),
    };
    event.to_string().into_bytes()
}
