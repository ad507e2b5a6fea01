//! `POST /v1/bamboohr`: a BambooHR webhook becomes email-keyed events.
//!
//! Size, signature, payload, then per employee whose department changed:
//! read the current department and work email from BambooHR's API, build
//! `{"event_id": "bamboohr-<id>-<timestamp>", "email", "new_department",
//! "occurred_at"}`, validate it as the consumer will, publish it once (the
//! event id is the idempotency key). `previous_department` stays empty, so
//! the consumer looks up the person's current groups.
//!
//! Answers: 202 accepted / duplicate / ignored (no department change);
//! 400 an unreadable body; 401 signature; 413 size; 422 when BambooHR's API
//! refuses the lookup with a 4xx (no such employee, a bad API key) or
//! answers data that is no valid event (no work email): the sender's retry
//! would not help, so it is not asked for, and the log says why; 503 with
//! `Retry-After` when BambooHR or the broker is down or slow.

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
use super::idempotency::Once;
use super::metrics::Answer;
use super::{ANSWER_WITHIN, Ingest};
use crate::config::{BambooHrSettings, RetrySettings};
use crate::event::{DepartmentChange, MAX_PAYLOAD_BYTES};
use client::{Client, Employee, LookupError};
use signature::{Headers, WebhookKey};

/// The metrics' `source` label.
const SOURCE: &str = "bamboohr";
/// Kept free of the lookup for publishing to the broker.
const PUBLISH_RESERVE: std::time::Duration = std::time::Duration::from_millis(500);

/// The adapter's state: the webhook key and the API client.
pub struct BambooHr {
    key: WebhookKey,
    client: Client,
}

impl BambooHr {
    pub fn new(
        settings: &BambooHrSettings,
        retry: &RetrySettings,
        key: WebhookKey,
        api_key: SecretString,
        https_only: bool,
    ) -> Result<Self, String> {
        Ok(Self {
            key,
            client: Client::new(settings, retry, api_key, https_only)?,
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
    let ids = match payload::department_changes(&body) {
        Ok(ids) => ids,
        Err(e) => {
            let response = error_response(StatusCode::BAD_REQUEST, &e.to_string(), Some("body"));
            return (Answer::Invalid, response);
        }
    };
    if ids.is_empty() {
        return (Answer::Ignored, accepted("ignored"));
    }
    let mut answer = Answer::Duplicate;
    for id in &ids {
        match change(ingest, hr, id, timestamp, deadline).await {
            Ok(Once::Published) => answer = Answer::Accepted,
            Ok(Once::Duplicate) => {}
            Err(refused) => return refused,
        }
    }
    match answer {
        Answer::Accepted => (answer, accepted("accepted")),
        _ => (answer, accepted("duplicate")),
    }
}

/// One employee: look up, build, validate, publish once.
async fn change(
    ingest: &Ingest,
    hr: &BambooHr,
    id: &str,
    timestamp: i64,
    deadline: Instant,
) -> Result<Once, Answered> {
    let lookup_by = deadline.checked_sub(PUBLISH_RESERVE).unwrap_or(deadline);
    let employee = hr
        .client
        .employee(id, lookup_by)
        .await
        .map_err(|e| lookup_failed(id, &e))?;
    let event_id = format!("bamboohr-{id}-{timestamp}");
    let event = event(&event_id, &employee, timestamp);
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

fn lookup_failed(id: &str, error: &LookupError) -> Answered {
    match error {
        LookupError::Refused(status) => {
            tracing::warn!(
                employee = id,
                status = status.as_u16(),
                "BambooHR refused the employee lookup; answering 422, the sender will not retry"
            );
            let error = format!("employee {id}: {error}");
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
fn event(event_id: &str, employee: &Employee, timestamp: i64) -> Vec<u8> {
    let occurred_at = OffsetDateTime::from_unix_timestamp(timestamp)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok());
    json!({
        "event_id": event_id,
        "email": employee.work_email.as_deref().unwrap_or_default().trim(),
        "new_department": employee.department.as_deref().unwrap_or_default().trim(),
        "occurred_at": occurred_at,
    })
    .to_string()
    .into_bytes()
}
