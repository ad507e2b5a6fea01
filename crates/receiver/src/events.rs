//! `POST /v1/events`: size, signature, event, then publish once.
//!
//! The checks run in that order, so an unsigned request costs no parsing
//! and nothing unverified reaches the broker. The raw bytes are what is
//! verified and what is published: never re-serialised JSON.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::{Instant, timeout_at};

use super::idempotency::Once;
use super::metrics::Answer;
use super::signature::{self, Headers};
use super::{ANSWER_WITHIN, Ingest};
use zds_core::event::{DepartmentChange, FIELDS, MAX_PAYLOAD_BYTES};

/// What a sender is told to wait before retrying a 503, in seconds.
const RETRY_AFTER_SECS: u32 = 5;

pub(super) async fn receive(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let deadline = Instant::now() + ANSWER_WITHIN;
    let (answer, response) =
        match timeout_at(deadline, handle(&ingest, &headers, body, deadline)).await {
            Ok(done) => done,
            Err(_) => unavailable("no answer from the broker in time"),
        };
    ingest.metrics.count("events", answer);
    response
}

async fn handle(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Body,
    deadline: Instant,
) -> (Answer, Response) {
    let Some(body) = read_body(headers, body).await else {
        let error = format!("the body is over the {MAX_PAYLOAD_BYTES}-byte limit");
        return (
            Answer::TooLarge,
            error_response(StatusCode::PAYLOAD_TOO_LARGE, &error, None),
        );
    };
    let signed = Headers {
        id: text(headers, "webhook-id"),
        timestamp: text(headers, "webhook-timestamp"),
        signature: text(headers, "webhook-signature"),
    };
    if let Err(e) = signature::verify(&ingest.secrets, signed, &body, now()) {
        tracing::warn!(reason = %e, "webhook refused: bad signature");
        return (
            Answer::BadSignature,
            error_response(StatusCode::UNAUTHORIZED, &e.to_string(), None),
        );
    }
    // verify() passed, so the id is there.
    let id = signed.id.unwrap_or_default();
    if id.is_empty() || id.len() > 255 {
        let error = "webhook-id must be 1 to 255 bytes (it becomes the AMQP message_id)";
        return (
            Answer::Invalid,
            error_response(StatusCode::BAD_REQUEST, error, Some("webhook-id")),
        );
    }
    if let Err(invalid) = DepartmentChange::parse(&body) {
        // The event field a 400 names: the first one in the detail.
        let field = FIELDS
            .iter()
            .filter_map(|f| invalid.detail.find(f).map(|at| (at, *f)))
            .min()
            .map_or("body", |(_, f)| f);
        return (
            Answer::Invalid,
            error_response(StatusCode::BAD_REQUEST, &invalid.detail, Some(field)),
        );
    }
    publish(ingest, id, &body, deadline).await
}

async fn publish(ingest: &Ingest, id: &str, body: &[u8], deadline: Instant) -> (Answer, Response) {
    let published = ingest
        .seen
        .once(id, ingest.publisher.publish(body, id, deadline))
        .await;
    match published {
        Ok(Once::Published) => (Answer::Accepted, accepted("accepted")),
        Ok(Once::Duplicate) => (Answer::Duplicate, accepted("duplicate")),
        Err(e) => {
            tracing::warn!(webhook_id = id, error = %e, "webhook not published; the sender will retry");
            unavailable(NOT_QUEUED)
        }
    }
}

/// The body, or `None` when it is over the limit (by `Content-Length`, or
/// by what arrives). A body that breaks off is treated the same: the sender
/// gets a 4xx and must look at it.
pub(super) async fn read_body(headers: &HeaderMap, body: Body) -> Option<Bytes> {
    let declared =
        text(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PAYLOAD_BYTES as u64) {
        return None;
    }
    axum::body::to_bytes(body, MAX_PAYLOAD_BYTES).await.ok()
}

pub(super) fn text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(super) fn accepted(status: &str) -> Response {
    json_response(StatusCode::ACCEPTED, &json!({ "status": status }))
}

/// The 503 body when publishing failed. The cause (a host name, a file
/// path, a TLS verdict) is for the operator: it goes to the log and
/// `/readyz`, not to whoever sends webhooks.
pub(super) const NOT_QUEUED: &str = "the event could not be queued now; retry later";

pub(super) fn unavailable(error: &str) -> (Answer, Response) {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, error, None);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
    (Answer::Unavailable, response)
}

pub(super) fn error_response(status: StatusCode, error: &str, field: Option<&str>) -> Response {
    let body = match field {
        Some(field) => json!({ "error": error, "field": field }),
        None => json!({ "error": error }),
    };
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
