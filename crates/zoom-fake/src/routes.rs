//! The HTTP face: axum handlers that read a request, let the [`Account`]
//! decide it under the lock, wait out any added latency without the lock,
//! and render Zoom's JSON bodies and rate-limit headers.
//!
//! [`Account`]: super::account::Account

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Shared;
use super::account::{Answer, Reply};
use super::auth::TokenRequest;
use super::endpoint::ApiCall;
use super::limits::{Category, QPS_MESSAGE};
use super::requests::ReceivedRequest;
use super::state::{MemberView, UserView};

/// Zoom's body for a daily-limit 429 (fixture `zoom/error.429.daily.json`).
pub const DAILY_MESSAGE: &str = "You have reached the maximum daily rate limit for this API. \
    Refer to the response header for details on when you can make another request.";

const CATEGORY: &str = "x-ratelimit-category";
const LIMIT_TYPE: &str = "x-ratelimit-type";
const LIMIT: &str = "x-ratelimit-limit";
const REMAINING: &str = "x-ratelimit-remaining";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/_state", get(state))
        .route("/_reset_counters", post(reset_counters))
        .fallback(api)
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            record_request,
        ))
        .with_state(shared)
}

/// The largest body the fake reads (axum's own default for a body).
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Every request into the log on arrival, its status once answered: the
/// body is read here and handed on unchanged.
async fn record_request(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return empty(StatusCode::PAYLOAD_TOO_LARGE);
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let received = ReceivedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body: body.to_vec(),
        status: None,
        at: Instant::now(),
    };
    let slot = shared.requests().record(received);
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if let Some(slot) = slot {
        shared.requests().answered(slot, response.status().as_u16());
    }
    response
}

/// One info line per request; the category comes from the answer's header,
/// so handlers need not report it.
async fn log_request(request: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::INFO) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let category = response
        .headers()
        .get(CATEGORY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info!(target: "zoom_fake", %method, path, status = response.status().as_u16(), category, "request");
    response
}

#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    scope: &'a str,
}

#[derive(Serialize)]
struct OAuthError<'a> {
    reason: &'a str,
    error: &'a str,
}

/// `POST /oauth/token`: parameters from the query string, or a form body.
async fn token(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = TokenRequest {
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        ..TokenRequest::default()
    };
    let params = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .chain(url::form_urlencoded::parse(&body));
    for (key, value) in params {
        match key.as_ref() {
            "grant_type" => request.grant_type = Some(value.into_owned()),
            "account_id" => request.account_id = Some(value.into_owned()),
            _ => {}
        }
    }
    let granted = shared.lock().tokens.grant(&request, Instant::now());
    match granted {
        Ok(grant) => json(
            StatusCode::OK,
            &TokenBody {
                access_token: &grant.access_token,
                token_type: "bearer",
                expires_in: grant.expires_in,
                scope: &grant.scope,
            },
        ),
        Err(refusal) => json(
            status(refusal.status()),
            &OAuthError {
                reason: &refusal.to_string(),
                error: refusal.error(),
            },
        ),
    }
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    let snapshot = shared.lock().snapshot();
    let mut body = serde_json::to_vec_pretty(&snapshot).unwrap_or_default();
    body.push(b'\n');
    with_json_type(Response::new(Body::from(body)))
}

async fn reset_counters(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.lock().reset_counters();
    StatusCode::NO_CONTENT
}

#[derive(Serialize)]
struct ZoomError<'a> {
    code: u32,
    message: &'a str,
}

/// Every `/v2` call, and the 404 for anything else.
async fn api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let Some(call) = ApiCall::parse(&method, path, uri.query(), &body) else {
        let message = format!("Not found: {method} {path}.");
        return json(
            StatusCode::NOT_FOUND,
            &ZoomError {
                code: 404,
                message: &message,
            },
        );
    };
    let category = call.category;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let decision = shared
        .lock()
        .call(call, method.as_str(), path, authorization, Instant::now());
    if !decision.delay.is_zero() {
        // A shutdown cuts waits short, so a hung call cannot hold it up.
        tokio::select! {
            () = tokio::time::sleep(decision.delay) => {}
            () = shared.shutdown.cancelled() => {}
        }
    }
    render(decision.answer, category)
}

/// An answer as Zoom would send it, with the category headers every API
/// answer carries.
fn render(answer: Answer, route: Category) -> Response {
    let (mut retry_after, mut limit_type) = (None, None);
    let (mut response, category) = match answer {
        Answer::Reply(reply) => (render_reply(reply), route),
        Answer::Rejected(r) => (error(r.status(), r.code(), &r.to_string()), route),
        Answer::Unauthorized(invalid) => (error(401, 124, &invalid.to_string()), route),
        Answer::Qps {
            category,
            limit,
            retry_after: after,
            limit_type: named,
        } => {
            (retry_after, limit_type) = (after, named);
            (too_many(QPS_MESSAGE, limit), category)
        }
        Answer::Daily { limit, resets_at } => return daily_limited(limit, resets_at, route),
        Answer::Fault {
            status,
            code,
            message,
            category,
            retry_after: after,
            limit_type: named,
        } => {
            (retry_after, limit_type) = (after, named);
            (error(status, code, &message), category)
        }
        Answer::Hung => (
            error(504, 504, "Gateway timeout (zoom-fake held this call)."),
            route,
        ),
    };
    let headers = response.headers_mut();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::RETRY_AFTER, value);
    }
    headers.insert(CATEGORY, HeaderValue::from_static(category.header_value()));
    match limit_type.as_deref() {
        // No type at all: a 429 from a gateway in front of Zoom.
        Some("") => {
            headers.remove(LIMIT_TYPE);
        }
        Some(named) => {
            if let Ok(value) = HeaderValue::from_str(named) {
                headers.insert(LIMIT_TYPE, value);
            }
        }
        None => {
            headers
                .entry(LIMIT_TYPE)
                .or_insert(HeaderValue::from_static("QPS"));
        }
    }
    response
}

fn too_many(message: &str, limit: Option<u32>) -> Response {
    let mut response = error(429, 429, message);
    let headers = response.headers_mut();
    if let Some(limit) = limit {
        headers.insert(LIMIT, HeaderValue::from(limit));
    }
    headers.insert(REMAINING, HeaderValue::from_static("0"));
    response
}

/// 429 for the daily limit; `Retry-After` is the next midnight UTC as an
/// ISO-8601 date-time, as Zoom sends it.
fn daily_limited(limit: u32, resets_at: OffsetDateTime, category: Category) -> Response {
    let mut response = too_many(DAILY_MESSAGE, Some(limit));
    let headers = response.headers_mut();
    headers.insert(CATEGORY, HeaderValue::from_static(category.header_value()));
    headers.insert(LIMIT_TYPE, HeaderValue::from_static("Daily-limit"));
    if let Some(at) = resets_at
        .format(&Rfc3339)
        .ok()
        .and_then(|s| HeaderValue::from_str(&s).ok())
    {
        headers.insert(header::RETRY_AFTER, at);
    }
    response
}

#[derive(Serialize)]
struct Added<'a> {
    ids: &'a str,
    added_at: &'a str,
}

#[derive(Serialize)]
struct UserBody<'a> {
    #[serde(flatten)]
    user: &'a UserView,
    r#type: u8,
    status: &'static str,
}

#[derive(Serialize)]
struct MemberBody<'a> {
    #[serde(flatten)]
    member: &'a MemberView,
    r#type: u8,
}

/// Zoom's documented List groups answer (fixture `zoom/groups.list.200.json`).
#[derive(Serialize)]
struct GroupsBody<'a, T> {
    groups: &'a [T],
    total_records: usize,
    next_page_token: &'a str,
}

/// Zoom's documented List group members answer (fixture
/// `zoom/groups.members.list.200.json`); `page_number` is deprecated there
/// and always 1 here (paging is by `next_page_token`).
#[derive(Serialize)]
struct MembersBody<'a> {
    members: Vec<MemberBody<'a>>,
    page_count: usize,
    page_number: usize,
    page_size: usize,
    total_records: usize,
    next_page_token: &'a str,
}

fn render_reply(reply: Reply) -> Response {
    match reply {
        Reply::NoContent => empty(StatusCode::NO_CONTENT),
        Reply::Added { ids } => {
            let now = OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let added_at = now.format(&Rfc3339).unwrap_or_default();
            json(
                StatusCode::CREATED,
                &Added {
                    ids: &ids.join(","),
                    added_at: &added_at,
                },
            )
        }
        Reply::User(user) => json(
            StatusCode::OK,
            &UserBody {
                user: &user,
                r#type: 1,
                status: "active",
            },
        ),
        Reply::Groups { page, next } => json(
            StatusCode::OK,
            &GroupsBody {
                groups: &page.items,
                total_records: page.total,
                next_page_token: &next,
            },
        ),
        Reply::Members { page, size, next } => {
            let members = page
                .items
                .iter()
                .map(|member| MemberBody { member, r#type: 1 })
                .collect();
            let body = MembersBody {
                members,
                page_count: page.total.div_ceil(size.max(1)),
                page_number: 1,
                page_size: size,
                total_records: page.total,
                next_page_token: &next,
            };
            json(StatusCode::OK, &body)
        }
    }
}

fn error(code_status: u16, code: u32, message: &str) -> Response {
    json(status(code_status), &ZoomError { code, message })
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = with_json_type(Response::new(Body::from(bytes)));
    *response.status_mut() = status;
    response
}

fn with_json_type(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}
