//! The only code that speaks HTTP. Every call goes through its category's
//! gate of the account's [`RateBudgets`], carries the shared token, is retried as SPEC's failure table
//! says, and ends in a typed result: `Ok`, or a [`Failure`] that tells the
//! worker what to do with the event.

pub mod auth;
pub mod body;
pub mod category;
mod directory;
pub mod error;
mod metrics;
#[cfg(test)]
mod path_properties;
pub mod rate;
pub mod settings;
pub mod share;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use backon::Retryable;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use auth::TokenSource;
pub use category::Category;
use category::LimitType;
pub use directory::Session;
pub use error::{ErrorKind, ZoomError};
pub use metrics::{CallMetrics, NoMetrics};
use rate::RateBudgets;
use settings::{ZoomCredentials, ZoomSettings};
use zds_core::event::ZoomUserId;
use zds_core::mapping::GroupId;
use zds_core::outcome::{CallStep, StepKind};
use zds_http_client::RetrySettings;
use zds_http_client::retry::{self, Budget, Stop};
pub use zds_http_client::{HttpClientError, http_client_builder, wait};

/// One event's calls: counted (`failure-attempts`), bounded together by one
/// deadline (`retry.max_elapsed_secs` is the whole event's budget, so no
/// delivery outlives the broker's consumer timeout), and stopped when the
/// event is no longer wanted (its session was lost, the daemon is stopping).
#[derive(Debug)]
pub struct Attempts {
    count: AtomicU32,
    deadline: Instant,
    stop: CancellationToken,
    /// Every call sent, for the audit trail.
    steps: std::sync::Mutex<Vec<CallStep>>,
}

impl Attempts {
    pub fn new(deadline: Instant, stop: CancellationToken) -> Self {
        Self {
            count: AtomicU32::new(0),
            deadline,
            stop,
            steps: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The calls sent so far, in order.
    pub fn steps(&self) -> Vec<CallStep> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, step: CallStep) {
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(step);
    }

    pub fn get(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// No new call may start: a call already sent may finish.
    pub fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    fn add_one(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for Attempts {
    /// An hour's budget that nothing stops (tests, probes).
    fn default() -> Self {
        Self::new(
            Instant::now() + Duration::from_secs(3600),
            CancellationToken::new(),
        )
    }
}

/// How a call failed, in the terms the worker decides on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// 400, 404, other 4xx: the event cannot be applied as it is.
    #[error("Zoom rejected the call: {0}")]
    Rejected(ZoomError),
    /// A transient failure outlasted `retry.max_elapsed_secs`.
    #[error("Zoom kept failing past the retry budget: {0}")]
    Exhausted(ZoomError),
    /// Zoom's rate limit holds calls back past the retry budget.
    #[error("Zoom's rate limit holds calls back past the retry budget")]
    RateLimited { until: Instant },
    /// Credentials or scopes are wrong (401 after a refresh, 403, the token
    /// endpoint refusing): not the event's fault.
    #[error("Zoom refused the credentials or scopes: {0}")]
    Auth(ZoomError),
    /// The event is no longer wanted ([`Attempts::stopped`]): no call was
    /// started after that.
    #[error("stopped before the call")]
    Stopped,
}

/// What `GET /users/{id}` tells us.
#[derive(Debug, Clone, Deserialize)]
pub struct ZoomUser {
    pub id: String,
    #[serde(default)]
    pub group_ids: Vec<String>,
    /// The user's primary group, when an answer reports it. Zoom's
    /// documented Get a user answer has no such field (fixture
    /// `zoom/users.get.200.json`), so `worker.set_primary` calls
    /// `set_primary` after every move or add there.
    #[serde(default)]
    pub primary_group_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

/// A group as `GET /groups` lists it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct ZoomGroup {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub total_members: u64,
}

#[derive(Deserialize)]
struct GroupPage {
    #[serde(default)]
    groups: Vec<ZoomGroup>,
    #[serde(default)]
    next_page_token: String,
}

/// A member of a group as `GET /groups/{id}/members` lists it (the domain's
/// type: reconcile plans from it).
pub use zds_core::reconcile::GroupMember;

#[derive(Deserialize)]
struct MemberPage {
    #[serde(default)]
    members: Vec<GroupMember>,
    #[serde(default)]
    total_records: u64,
    #[serde(default)]
    next_page_token: String,
}

/// Which user a path names: an id, or (for lookups) an email.
pub use zds_core::sync::UserPath;

pub struct Client {
    http: reqwest::Client,
    api_base: Url,
    tokens: TokenSource,
    budgets: Arc<RateBudgets>,
    retry: RetrySettings,
    metrics: Arc<dyn CallMetrics>,
}

impl Client {
    pub fn new(
        zoom: &ZoomSettings,
        credentials: ZoomCredentials,
        retry: RetrySettings,
        metrics: Arc<dyn CallMetrics>,
    ) -> Result<Self, HttpClientError> {
        let http = http_client_builder(zoom.allow_insecure_http)
            .timeout(zoom.request_timeout())
            .build()
            .map_err(HttpClientError::Build)?;
        let api_base = Url::parse(&zoom.api_base_url)
            .map_err(HttpClientError::base_url("zoom.api_base_url"))?;
        let budgets = Arc::new(RateBudgets::new(zoom.rate_limits()));
        for rate in budgets.report() {
            metrics.rate_configured(rate.category.as_str(), rate.configured);
        }
        Ok(Self {
            tokens: TokenSource::new(http.clone(), zoom.oauth_token_url.clone(), credentials),
            http,
            api_base,
            budgets,
            retry,
            metrics,
        })
    }

    /// The account's budget per category (for `/readyz`).
    pub fn budgets(&self) -> Arc<RateBudgets> {
        Arc::clone(&self.budgets)
    }

    /// Drops the cached token and fetches a new one.
    pub async fn refresh_token(&self) -> Result<(), ZoomError> {
        self.tokens.refresh().await
    }

    /// `PATCH /groups/{from}/members/{user}` `{"action":"move","target_group_id":to}`.
    pub async fn move_member(
        &self,
        from: &GroupId,
        user: &ZoomUserId,
        to: &GroupId,
        attempts: &Attempts,
    ) -> Result<(), Failure> {
        let url = self.url(&["groups", from.as_str(), "members", user.as_str()]);
        let body = json!({"action": "move", "target_group_id": to.as_str()});
        let request = Request::new(Method::PATCH, url, Category::Medium)
            .json(body)
            .step(StepKind::Move, from);
        self.call(request, attempts).await.map(drop)
    }

    /// `POST /groups/{group}/members` `{"members":[{"id":user}]}`.
    pub async fn add_member(
        &self,
        group: &GroupId,
        user: &ZoomUserId,
        attempts: &Attempts,
    ) -> Result<(), Failure> {
        let url = self.url(&["groups", group.as_str(), "members"]);
        let body = json!({"members": [{"id": user.as_str()}]});
        let request = Request::new(Method::POST, url, Category::Medium)
            .json(body)
            .step(StepKind::Add, group);
        self.call(request, attempts).await.map(drop)
    }

    /// `PATCH /groups/{group}/members/{user}` `{"action":"set_primary"}`:
    /// the user inherits the group's settings.
    pub async fn set_primary(
        &self,
        group: &GroupId,
        user: &ZoomUserId,
        attempts: &Attempts,
    ) -> Result<(), Failure> {
        let url = self.url(&["groups", group.as_str(), "members", user.as_str()]);
        let request = Request::new(Method::PATCH, url, Category::Medium)
            .json(json!({"action": "set_primary"}))
            .step(StepKind::SetPrimary, group);
        self.call(request, attempts).await.map(drop)
    }

    /// `DELETE /groups/{group}/members/{user}`.
    pub async fn remove_member(
        &self,
        group: &GroupId,
        user: &ZoomUserId,
        attempts: &Attempts,
    ) -> Result<(), Failure> {
        let url = self.url(&["groups", group.as_str(), "members", user.as_str()]);
        let request =
            Request::new(Method::DELETE, url, Category::Light).step(StepKind::Delete, group);
        self.call(request, attempts).await.map(drop)
    }

    /// `GET /users/{id or email}`.
    pub async fn get_user(
        &self,
        user: UserPath<'_>,
        attempts: &Attempts,
    ) -> Result<ZoomUser, Failure> {
        let segment = match user {
            UserPath::Id(id) => id.as_str(),
            UserPath::Email(email) => email.as_str(),
        };
        let url = self.url(&["users", segment]);
        let request = Request::new(Method::GET, url, Category::Light);
        let body = self.call(request, attempts).await?;
        serde_json::from_slice(&body).map_err(|e| {
            // Zoom answered 200 with something we cannot read: retrying will
            // not change it, so the event is rejected with the reason.
            Failure::Rejected(ZoomError::local(
                ErrorKind::Rejected,
                Some(200),
                format!("unreadable user record: {e}"),
            ))
        })
    }

    /// The scopes of a freshly granted token (fetches one now).
    pub async fn granted_scopes(&self) -> Result<Vec<String>, ZoomError> {
        self.tokens.refresh().await?;
        Ok(self.tokens.token().await?.scopes)
    }

    /// `GET /groups`, every page.
    pub async fn list_groups(&self, attempts: &Attempts) -> Result<Vec<ZoomGroup>, Failure> {
        let mut groups = Vec::new();
        let mut next = String::new();
        // Zoom's pages hold up to 300 groups; 100 pages is beyond any account.
        for _ in 0..100 {
            let page: GroupPage = self
                .page(&["groups"], &next, "group list", attempts)
                .await?;
            groups.extend(page.groups);
            next = page.next_page_token;
            if next.is_empty() {
                break;
            }
        }
        Ok(groups)
    }

    /// One page of 300 of a listing (Medium), from `next` (the first page
    /// when empty).
    async fn page<T: serde::de::DeserializeOwned>(
        &self,
        segments: &[&str],
        next: &str,
        what: &str,
        attempts: &Attempts,
    ) -> Result<T, Failure> {
        let mut url = self.url(segments);
        url.query_pairs_mut().append_pair("page_size", "300");
        if !next.is_empty() {
            url.query_pairs_mut().append_pair("next_page_token", next);
        }
        let request = Request::new(Method::GET, url, Category::Medium);
        let body = self.call(request, attempts).await?;
        serde_json::from_slice(&body).map_err(|e| {
            Failure::Rejected(ZoomError::local(
                ErrorKind::Rejected,
                Some(200),
                format!("unreadable {what}: {e}"),
            ))
        })
    }

    /// `GET /groups/{id}/members`, every page of 300 (Medium, like every
    /// group-member call). `on_page` gets the members seen so far and the
    /// group's `total_records`, for a progress bar.
    pub async fn list_group_members(
        &self,
        group: &GroupId,
        attempts: &Attempts,
        on_page: &mut dyn FnMut(usize, u64),
    ) -> Result<Vec<GroupMember>, Failure> {
        let mut members = Vec::new();
        let mut next = String::new();
        // 300 a page: 10,000 pages is three million members, beyond any
        // account, and a bound on a token that never ends.
        let what = format!("member list of {group}");
        for _ in 0..10_000 {
            let segments = ["groups", group.as_str(), "members"];
            let page: MemberPage = self.page(&segments, &next, &what, attempts).await?;
            members.extend(page.members);
            on_page(members.len(), page.total_records);
            next = page.next_page_token;
            if next.is_empty() {
                break;
            }
        }
        Ok(members)
    }

    /// A request URL under `zoom.api_base_url` (see [`api_url`]).
    fn url(&self, segments: &[&str]) -> Url {
        api_url(&self.api_base, segments)
    }

    /// One logical call with its retries; returns the success body.
    async fn call(&self, request: Request, attempts: &Attempts) -> Result<Vec<u8>, Failure> {
        let mut budget = Budget::until(attempts.deadline());
        let stop = attempts.stop.clone();
        let deadline = attempts.deadline();
        let result = (|| self.attempt(&request, deadline, attempts))
            .retry(retry::exponential(&self.retry))
            .sleep(move |wait| sleep_unless_stopped(wait, stop.clone()))
            .when(|e: &ZoomError| e.is_retryable() && !attempts.stopped())
            .adjust(|e: &ZoomError, step| {
                budget.next_wait(step, e.server_wait, e.kind == ErrorKind::RateLimited)
            })
            .notify(|e: &ZoomError, wait: Duration| {
                self.metrics.retry();
                tracing::warn!(
                    method = %request.method,
                    path = request.url.path(),
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "Zoom call failed; retrying"
                );
            })
            .await;
        match result {
            Ok(body) => Ok(body),
            Err(error) => Err(match budget.stopped() {
                Some(Stop::RateLimitedPastBudget { until }) => Failure::RateLimited { until },
                Some(Stop::BudgetSpent) => Failure::Exhausted(error),
                None if error.kind == ErrorKind::Stopped => Failure::Stopped,
                None if error.is_auth() => Failure::Auth(error),
                None if error.is_retryable() => Failure::Exhausted(error),
                None => Failure::Rejected(error),
            }),
        }
    }

    /// One try: through the gate first, then the token (so a long wait at
    /// the gate never sends a token that lapsed meanwhile), then the request.
    /// A 401 refreshes the token and tries once more, through the gate again.
    async fn attempt(
        &self,
        request: &Request,
        deadline: Instant,
        attempts: &Attempts,
    ) -> Result<Vec<u8>, ZoomError> {
        let mut refused_once = false;
        let gate = self.budgets.gate(request.category);
        loop {
            if gate.closed_until().is_some() {
                self.metrics.rate_limit_wait();
            }
            tokio::select! {
                admitted = gate.admit(deadline) => admitted.map_err(|opens| ZoomError::gate_closed(request.category, opens))?,
                _ = attempts.stop.cancelled() => {}
            }
            let token = self.tokens.token().await?;
            // Checked after every wait: a call not sent yet is not sent once
            // the event is no longer wanted.
            if attempts.stopped() {
                return Err(ZoomError::stopped());
            }
            match self.send(request, &token, attempts).await {
                Err(e) if e.kind == ErrorKind::Unauthorized && !refused_once => {
                    tracing::warn!(error = %e, "Zoom refused the access token; fetching a new one");
                    self.tokens.invalidate(&token).await;
                    refused_once = true;
                }
                other => return other,
            }
        }
    }

    /// Sends the request now (the gate was passed) and reads the answer, its
    /// body capped at [`body::MAX_BODY_BYTES`].
    async fn send(
        &self,
        request: &Request,
        token: &auth::AccessToken,
        attempts: &Attempts,
    ) -> Result<Vec<u8>, ZoomError> {
        let mut builder = self
            .http
            .request(request.method.clone(), request.url.clone())
            .header(reqwest::header::AUTHORIZATION, token.bearer()?);
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        attempts.add_one();
        let started = Instant::now();
        let method = request.method.as_str();
        let mut response = match builder.send().await {
            Ok(response) => response,
            Err(e) => {
                self.metrics
                    .call(method, None, e.is_timeout(), started.elapsed());
                attempts.record(request.answered(None, None, started));
                return Err(ZoomError::from_transport(&e));
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = body::read_capped(&mut response, body::MAX_BODY_BYTES).await;
        self.metrics
            .call(method, Some(status.as_u16()), false, started.elapsed());
        let body = body.map_err(|e| ZoomError::from_transport(&e))?;
        if status.is_success() {
            attempts.record(request.answered(Some(status.as_u16()), None, started));
            self.answered(request.category);
            return body.into_success(status);
        }
        // An error body past the cap is read as far as the cap: enough for
        // Zoom's code and message, which are short.
        let mut error = ZoomError::from_answer(status, &headers, &body.bytes);
        attempts.record(request.answered(Some(status.as_u16()), error.code, started));
        if error.kind == ErrorKind::RateLimited {
            self.rate_limited(request.category, &headers, &mut error, started);
        } else {
            self.answered(request.category);
        }
        Err(error)
    }

    /// A 429. The limit is the account's: it holds back every call of the
    /// category it names (`X-RateLimit-Category`, else the endpoint's), not
    /// just this one, for the wait Zoom asked. A per-second 429 without a
    /// wait closes nothing: the category's rate is cut instead (calls of
    /// others on the account took the room), and this call backs off. A
    /// daily-limit 429 without a wait waits for 00:00 UTC, when Zoom resets
    /// daily limits. A 429 that names no type closes the gate for at least
    /// the first backoff step, whatever (small) wait it names, as Zoom's
    /// per-second windows are short.
    fn rate_limited(
        &self,
        called: Category,
        headers: &HeaderMap,
        error: &mut ZoomError,
        sent: Instant,
    ) {
        let category = Category::from_headers(headers).unwrap_or(called);
        let limit = LimitType::from_answer(headers, &error.message, error.message_from_zoom);
        self.metrics.rate_limited(category.as_str(), limit.as_str());
        if limit == LimitType::PerResource {
            // One user's lock, not the account's limit: this call alone
            // backs off and tries again (as a transient failure: no gate
            // closes, no rate is cut, no pause); the other events go on.
            error.kind = ErrorKind::Transient;
            return;
        }
        if limit == LimitType::Daily && error.server_wait.is_none_or(|w| w.is_zero()) {
            error.server_wait = Some(self.daily_wait(SystemTime::now()));
        }
        let gate = self.budgets.gate(category);
        match (limit, error.server_wait) {
            (LimitType::Unknown, wait) => {
                // Neither type nor a usable wait: at least the first step.
                let first = self.retry.initial_interval();
                gate.close_for(wait.map_or(first, |w| w.max(first)));
            }
            (_, Some(wait)) => gate.close_for(wait),
            (LimitType::PerSecond | LimitType::Daily | LimitType::PerResource, None) => {}
        }
        if limit != LimitType::Daily
            && let Some(rate) = gate.on_rate_limited(sent)
        {
            tracing::warn!(
                %category,
                rate_per_second = rate,
                "Zoom answered 429 within our own limit: others use the account's budget; lowered this category's rate"
            );
            self.metrics.rate_effective(category.as_str(), rate);
        }
    }

    /// The wait for a daily-limit 429 that names none, or a reset already
    /// past (Zoom's own example names one in 2020). Zoom's daily limits
    /// reset at 00:00 UTC, so that is the wait, and the event is handed back,
    /// not retried until its budget is spent. Within the first hour after
    /// midnight a past reset is most likely the one that just happened (an
    /// answer sent at 23:59:59, or a clock a little ahead of Zoom's): then
    /// only the first backoff step, not a whole day.
    fn daily_wait(&self, now: SystemTime) -> Duration {
        let until_midnight = wait::until_next_utc_midnight(now);
        match until_midnight > Duration::from_secs(23 * 3600) {
            true => self.retry.initial_interval(),
            false => until_midnight,
        }
    }

    /// A call answered without a 429: its category wins back some rate.
    fn answered(&self, category: Category) {
        if let Some(rate) = self.budgets.gate(category).on_answered() {
            self.metrics.rate_effective(category.as_str(), rate);
        }
    }
}

/// `base` (`zoom.api_base_url`) plus percent-encoded segments: no value can
/// add a path segment, a query or a fragment. Pure, and public so the
/// property tests and the fuzz crate check the very paths the client sends.
///
/// The url crate drops tab, CR and LF inside a segment and skips a segment
/// that is (or then becomes) `.` or `..`, which would remove segments: so
/// only literal words and validated ids (`ZoomUserId`, `GroupId`, `Email`)
/// come here, and the property tests in `event.rs` check that none of those
/// ever holds such a value.
pub fn api_url(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// A retry's wait, cut short when the event is stopped (the next try then
/// sees it and gives up).
async fn sleep_unless_stopped(wait: Duration, stop: CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = stop.cancelled() => {}
    }
}

struct Request {
    method: Method,
    url: Url,
    body: Option<serde_json::Value>,
    /// The endpoint's rate-limit category, as Zoom's API reference labels it.
    category: Category,
    /// What the call is for, and the group it names, for the audit trail.
    step: StepKind,
    group: Option<String>,
}

impl Request {
    /// A lookup or listing by default; writes say what they are ([`Request::step`]).
    fn new(method: Method, url: Url, category: Category) -> Self {
        let step = if url.path().contains("/groups") {
            StepKind::List
        } else {
            StepKind::Lookup
        };
        Self {
            method,
            url,
            body: None,
            category,
            step,
            group: None,
        }
    }

    fn step(self, step: StepKind, group: &GroupId) -> Self {
        Self {
            step,
            group: Some(group.as_str().to_owned()),
            ..self
        }
    }

    /// This call as a step of its event.
    fn answered(&self, status: Option<u16>, code: Option<i64>, started: Instant) -> CallStep {
        CallStep {
            step: self.step,
            group: self.group.clone(),
            status,
            code,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }

    fn json(self, body: serde_json::Value) -> Self {
        Self {
            body: Some(body),
            ..self
        }
    }
}

impl ZoomError {
    /// The event was stopped before this call went out.
    fn stopped() -> Self {
        Self::local(ErrorKind::Stopped, None, "stopped before the call")
    }

    /// The category's gate is closed (another call's 429) until `opens`,
    /// past this call's budget; treated like a 429 that asked for that wait.
    fn gate_closed(category: Category, opens: Instant) -> Self {
        Self {
            server_wait: Some(opens.saturating_duration_since(Instant::now())),
            ..Self::local(
                ErrorKind::RateLimited,
                None,
                format!("rate limited: Zoom's {category} calls are paused"),
            )
        }
    }
}

#[cfg(test)]
mod tests {

    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

    use super::*;
    use crate::settings::{RateLimitsFile, ZoomCredentials, ZoomSettings};
    use zds_core::event::Email;

    fn client(zoom: &MockServer) -> Client {
        let settings = ZoomSettings {
            api_base_url: format!("{}/v2", zoom.uri()),
            oauth_token_url: format!("{}/oauth/token", zoom.uri()),
            rate_limits: RateLimitsFile {
                light: Some(1000),
                medium: Some(1000),
                heavy: Some(1000),
            },
            request_timeout_ms: 2000,
            allow_insecure_http: true,
            ..ZoomSettings::default()
        };
        let retry = RetrySettings {
            initial_interval_ms: 10,
            max_interval_ms: 50,
            max_elapsed_secs: 5,
        };
        let credentials = ZoomCredentials {
            account_id: "acct".into(),
            client_id: "id".into(),
            client_secret: "secret".into(),
        };
        Client::new(&settings, credentials, retry, Arc::new(NoMetrics)).unwrap()
    }

    /// Hands out `token-1`, `token-2`, … one per request, each valid for an
    /// hour unless [`Tokens::lifetime`] says otherwise.
    struct Tokens {
        issued: AtomicU32,
        lifetime: u64,
    }

    impl Tokens {
        fn new() -> Self {
            Self {
                issued: AtomicU32::new(0),
                lifetime: 3600,
            }
        }

        fn lifetime(self, lifetime: u64) -> Self {
            Self { lifetime, ..self }
        }
    }

    impl Respond for Tokens {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            ResponseTemplate::new(200).set_body_json(
                json!({"access_token": format!("token-{n}"), "expires_in": self.lifetime}),
            )
        }
    }

    async fn mount_tokens(zoom: &MockServer) {
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .and(header("authorization", "Basic aWQ6c2VjcmV0"))
            .respond_with(Tokens::new())
            .mount(zoom)
            .await;
    }

    fn id(s: &str) -> ZoomUserId {
        ZoomUserId::parse(s).unwrap()
    }

    fn group(s: &str) -> GroupId {
        GroupId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_move_is_one_patch_with_the_bearer_token() {
        let zoom = MockServer::start().await;
        mount_tokens(&zoom).await;
        Mock::given(method("PATCH"))
            .and(path("/v2/groups/g1/members/u1"))
            .and(header("authorization", "Bearer token-1"))
            .and(body_json(
                json!({"action": "move", "target_group_id": "g2"}),
            ))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&zoom)
            .await;
        let attempts = Attempts::default();
        client(&zoom)
            .move_member(&group("g1"), &id("u1"), &group("g2"), &attempts)
            .await
            .unwrap();
        assert_eq!(attempts.get(), 1);
    }

    #[tokio::test]
    async fn an_email_is_one_encoded_path_segment() {
        let zoom = MockServer::start().await;
        mount_tokens(&zoom).await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"id": "u1", "group_ids": ["g1"]})),
            )
            .mount(&zoom)
            .await;
        let email = Email::parse("jane+ops@example.com").unwrap();
        let user = client(&zoom)
            .get_user(UserPath::Email(&email), &Attempts::default())
            .await
            .unwrap();
        assert_eq!(user.group_ids, ["g1"]);
        let requests = zoom.received_requests().await.unwrap();
        let get = requests
            .iter()
            .find(|r| r.method.as_str() == "GET")
            .unwrap();
        assert_eq!(get.url.path(), "/v2/users/jane+ops@example.com");
        assert_eq!(get.url.query(), None);
    }

    #[tokio::test]
    async fn a_token_is_refreshed_before_it_expires() {
        let zoom = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"access_token": "short", "expires_in": 1})),
            )
            .mount(&zoom)
            .await;
        let client = client(&zoom);
        client.tokens.token().await.unwrap();
        client.tokens.token().await.unwrap();
        assert_eq!(zoom.received_requests().await.unwrap().len(), 1, "cached");
        // Refreshed at 90 % of its lifetime.
        tokio::time::sleep(Duration::from_millis(950)).await;
        client.tokens.token().await.unwrap();
        assert_eq!(
            zoom.received_requests().await.unwrap().len(),
            2,
            "refreshed"
        );
    }

    #[tokio::test]
    async fn an_endless_token_lifetime_does_not_panic() {
        let zoom = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"access_token": "forever", "expires_in": u64::MAX})),
            )
            .mount(&zoom)
            .await;
        let client = client(&zoom);
        client.tokens.token().await.unwrap();
        client.tokens.token().await.unwrap();
        assert_eq!(zoom.received_requests().await.unwrap().len(), 1, "cached");
    }

    /// A token about to lapse is not fetched before a long wait at the gate
    /// and then sent after it: the gate comes first, then the token.
    #[tokio::test]
    async fn the_token_is_taken_after_the_gate_wait() {
        let zoom = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(Tokens::new().lifetime(1))
            .mount(&zoom)
            .await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(204))
            .mount(&zoom)
            .await;
        let client = client(&zoom);
        client.tokens.token().await.unwrap();
        client
            .budgets
            .gate(Category::Medium)
            .close_for(Duration::from_millis(1000));
        client
            .move_member(&group("g1"), &id("u1"), &group("g2"), &Attempts::default())
            .await
            .unwrap();
        let requests = zoom.received_requests().await.unwrap();
        let patch = requests.iter().find(|r| r.method.as_str() == "PATCH");
        let bearer = patch.and_then(|r| r.headers.get("authorization"));
        assert_eq!(
            bearer.unwrap(),
            "Bearer token-2",
            "refreshed after the wait"
        );
    }

    #[tokio::test]
    async fn the_bearer_header_is_sensitive() {
        let zoom = MockServer::start().await;
        mount_tokens(&zoom).await;
        let token = client(&zoom).tokens.token().await.unwrap();
        assert!(token.bearer().unwrap().is_sensitive());
    }

    #[tokio::test]
    async fn an_error_body_past_the_cap_is_cut_and_still_classified() {
        let zoom = MockServer::start().await;
        mount_tokens(&zoom).await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(404).set_body_bytes(vec![b'x'; 3 << 20]))
            .mount(&zoom)
            .await;
        let failure = client(&zoom)
            .move_member(&group("g1"), &id("u1"), &group("g2"), &Attempts::default())
            .await
            .unwrap_err();
        let Failure::Rejected(e) = failure else {
            panic!("{failure:?}")
        };
        assert_eq!(e.status, Some(404));
    }

    #[tokio::test]
    async fn a_success_body_past_the_cap_is_an_unusable_answer() {
        let zoom = MockServer::start().await;
        mount_tokens(&zoom).await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b' '; 3 << 20]))
            .mount(&zoom)
            .await;
        let client = client(&zoom);
        let token = client.tokens.token().await.unwrap();
        let request =
            super::Request::new(Method::GET, client.url(&["users", "u1"]), Category::Light);
        let error = client
            .send(&request, &token, &Attempts::default())
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Transient);
        assert!(error.message.contains("over 1048576 bytes"), "{error}");
    }

    /// Answers 401 to `token-1`, 204 to any later token.
    struct RefuseFirstToken;

    impl Respond for RefuseFirstToken {
        fn respond(&self, request: &Request) -> ResponseTemplate {
            match request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
            {
                Some("Bearer token-1") => ResponseTemplate::new(401)
                    .set_body_json(json!({"code": 124, "message": "Invalid access token."})),
                _ => ResponseTemplate::new(204),
            }
        }
    }

    #[tokio::test]
    async fn many_calls_refused_at_once_fetch_one_new_token() {
        let zoom = MockServer::start().await;
        mount_tokens(&zoom).await;
        Mock::given(method("PATCH"))
            .respond_with(RefuseFirstToken)
            .mount(&zoom)
            .await;
        let client = Arc::new(client(&zoom));
        // Everyone gets token-1 first.
        client.tokens.token().await.unwrap();
        let calls: Vec<_> = (0..16)
            .map(|i| {
                let client = Arc::clone(&client);
                tokio::spawn(async move {
                    let attempts = Attempts::default();
                    let user = id(&format!("u{i}"));
                    client
                        .move_member(&group("g1"), &user, &group("g2"), &attempts)
                        .await
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let token_requests = zoom
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path() == "/oauth/token")
            .count();
        assert_eq!(token_requests, 2, "token-1, then one refresh shared by all");
    }

    #[tokio::test]
    async fn a_refused_token_twice_is_an_auth_failure_not_a_rejection() {
        let zoom = MockServer::start().await;
        mount_tokens(&zoom).await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(401))
            .mount(&zoom)
            .await;
        let attempts = Attempts::default();
        let failure = client(&zoom)
            .move_member(&group("g1"), &id("u1"), &group("g2"), &attempts)
            .await
            .unwrap_err();
        assert!(matches!(failure, Failure::Auth(_)), "{failure:?}");
        assert_eq!(
            attempts.get(),
            2,
            "the call, and once more with a new token"
        );
    }

    /// A daily-limit 429 without a wait still means "until midnight UTC":
    /// the event is handed back, never retried until its budget is spent and
    /// dead-lettered as `retries_exhausted`.
    #[tokio::test]
    async fn a_daily_limit_without_a_wait_lasts_until_midnight_utc() {
        let zoom = MockServer::start().await;
        mount_tokens(&zoom).await;
        Mock::given(method("PATCH"))
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("x-ratelimit-category", "Medium")
                    .insert_header("x-ratelimit-type", "Daily-limit")
                    .set_body_json(json!({"code": 429, "message": "daily limit"})),
            )
            .mount(&zoom)
            .await;
        let client = client(&zoom);
        let attempts = Attempts::new(
            Instant::now() + Duration::from_secs(2),
            CancellationToken::new(),
        );
        let failure = client
            .move_member(&group("g1"), &id("u1"), &group("g2"), &attempts)
            .await
            .unwrap_err();
        assert!(
            matches!(failure, Failure::RateLimited { .. }),
            "{failure:?}"
        );
        assert_eq!(attempts.get(), 1, "one call, not a retry loop");
        let gate = client.budgets.gate(Category::Medium);
        assert!(gate.closed_until().is_some(), "Medium waits for the reset");
    }

    /// A documented Zoom answer (fixtures/vendor/zoom) as wiremock sends it.
    fn documented(name: &str) -> ResponseTemplate {
        let fixture = zds_vendor_fixtures::Fixture::load(&format!("zoom/{name}"));
        let response = fixture.response();
        let mut template = ResponseTemplate::new(response.status.expect("status"));
        for (name, value) in &response.headers {
            template = template.insert_header(name.as_str(), value.as_str());
        }
        match &response.body {
            Some(body) => template.set_body_json(body.clone()),
            None => template,
        }
    }

    /// A Zoom whose first `PATCH` gets `first`, every later one 204.
    async fn patch_answers_once(first: ResponseTemplate) -> MockServer {
        let zoom = MockServer::start().await;
        mount_tokens(&zoom).await;
        Mock::given(method("PATCH"))
            .respond_with(first)
            .up_to_n_times(1)
            .mount(&zoom)
            .await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(204))
            .mount(&zoom)
            .await;
        zoom
    }

    /// Zoom's documented lock on one user ("Too many concurrent requests"):
    /// that call alone tries again; the category's gate stays open and its
    /// rate is not cut, so nobody else's events slow down.
    #[tokio::test]
    async fn a_per_user_lock_is_retried_for_that_call_alone() {
        let zoom = patch_answers_once(documented("error.429.concurrent.json")).await;
        let client = client(&zoom);
        let before = client.budgets.report();
        let attempts = Attempts::default();
        client
            .move_member(&group("g1"), &id("u1"), &group("g2"), &attempts)
            .await
            .expect("moved on the second try");
        assert_eq!(attempts.get(), 2);
        let gate = client.budgets.gate(Category::Medium);
        assert_eq!(gate.closed_until(), None, "the account's gate stays open");
        assert_eq!(
            format!("{:?}", client.budgets.report()),
            format!("{before:?}"),
            "no category's rate is cut"
        );
    }

    /// Zoom's documented per-second 429 does cut the category's rate (it is
    /// the account's limit), unlike the lock above.
    #[tokio::test]
    async fn a_documented_per_second_429_cuts_the_categorys_rate() {
        let zoom = patch_answers_once(documented("error.429.qps.json")).await;
        let client = client(&zoom);
        let before = client.budgets.report();
        client
            .move_member(&group("g1"), &id("u1"), &group("g2"), &Attempts::default())
            .await
            .expect("moved on the second try");
        assert_ne!(
            format!("{:?}", client.budgets.report()),
            format!("{before:?}"),
            "Medium's rate is lowered"
        );
    }

    /// Zoom's documented daily-limit answer names its reset as a date-time
    /// (`Retry-After: 2020-05-31T00:00:00Z`), here already past (as a skewed
    /// clock would see it): still one call, then the event waits for 00:00
    /// UTC, never a loop of retries that ends as a dead letter.
    #[tokio::test]
    async fn a_documented_daily_limit_with_a_past_reset_waits_for_midnight() {
        let zoom = MockServer::start().await;
        mount_tokens(&zoom).await;
        Mock::given(method("PATCH"))
            .respond_with(documented("error.429.daily.json"))
            .mount(&zoom)
            .await;
        let client = client(&zoom);
        if wait::until_next_utc_midnight(SystemTime::now()) > Duration::from_secs(23 * 3600) {
            return; // just after midnight a past reset is "now": the test below
        }
        let attempts = Attempts::new(
            Instant::now() + Duration::from_secs(2),
            CancellationToken::new(),
        );
        let failure = client
            .move_member(&group("g1"), &id("u1"), &group("g2"), &attempts)
            .await
            .unwrap_err();
        assert!(
            matches!(failure, Failure::RateLimited { .. }),
            "{failure:?}"
        );
        assert_eq!(attempts.get(), 1, "one call, not a retry loop");
        let heavy = client.budgets.gate(Category::Heavy);
        assert!(heavy.closed_until().is_some(), "Heavy waits for the reset");
    }

    /// A past reset within the first hour after 00:00 UTC is the reset that
    /// just happened: a short wait, not a day without writes.
    #[tokio::test]
    async fn a_past_daily_reset_just_after_midnight_waits_a_step_not_a_day() {
        let zoom = MockServer::start().await;
        let client = client(&zoom);
        let midnight = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        let just_after = midnight + Duration::from_secs(30);
        assert_eq!(client.daily_wait(just_after), Duration::from_millis(10));
        let afternoon = midnight + Duration::from_secs(15 * 3600);
        assert_eq!(client.daily_wait(afternoon), Duration::from_secs(9 * 3600));
    }

    /// Each documented error body the daemon acts on is classified by its
    /// status and read for Zoom's code and message.
    #[test]
    fn documented_error_answers_are_classified() {
        for (name, kind, code) in [
            ("error.1001.json", ErrorKind::Rejected, 1001),
            ("error.1010.json", ErrorKind::Rejected, 1010),
            ("error.200.json", ErrorKind::Rejected, 200),
            ("error.300.json", ErrorKind::Rejected, 300),
            ("error.4130.json", ErrorKind::Rejected, 4130),
            ("error.4131.json", ErrorKind::Rejected, 4131),
            ("error.124.json", ErrorKind::Unauthorized, 124),
            ("error.429.qps.json", ErrorKind::RateLimited, 429),
            ("error.429.daily.json", ErrorKind::RateLimited, 429),
        ] {
            let fixture = zds_vendor_fixtures::Fixture::load(&format!("zoom/{name}"));
            let response = fixture.response();
            let status = reqwest::StatusCode::from_u16(response.status.unwrap()).unwrap();
            let body = response.body_bytes();
            let error = ZoomError::from_answer(status, &reqwest::header::HeaderMap::new(), &body);
            assert_eq!((error.kind, error.code), (kind, Some(code)), "{name}");
            let message = fixture.response_body()["message"].as_str().unwrap();
            assert_eq!(error.message, message, "{name}");
            assert!(error.message_from_zoom, "{name}");
        }
    }

    /// The documented answers of Get a user and List group members are read
    /// for what the daemon needs: the id, the email, the groups, the paging.
    #[test]
    fn documented_user_and_member_answers_are_read() {
        let user = zds_vendor_fixtures::Fixture::load("zoom/users.get.200.json");
        let user: ZoomUser = serde_json::from_value(user.response_body().clone()).unwrap();
        assert_eq!(user.id, "zJKyaiAyTNC-MWjiWC18KQ");
        assert_eq!(user.email.as_deref(), Some("jchill@example.com"));
        assert!(!user.group_ids.is_empty(), "group_ids is read");
        let page = zds_vendor_fixtures::Fixture::load("zoom/groups.members.list.200.json");
        let page: MemberPage = serde_json::from_value(page.response_body().clone()).unwrap();
        assert_eq!(page.total_records, 200);
        assert_eq!(page.next_page_token, "R4aF9Oj0fVM2hhezJTEmSKaBSkfesDwGy42");
        assert_eq!(page.members[0].id, "v4iyWT1LTfy8QvPG4GTvdg");
        assert_eq!(page.members[0].email, "jchill@example.com");
        let groups = zds_vendor_fixtures::Fixture::load("zoom/groups.list.200.json");
        let groups: GroupPage = serde_json::from_value(groups.response_body().clone()).unwrap();
        assert_eq!(groups.groups[0].name, "Developers");
        assert_eq!(groups.next_page_token, "qUEQqB1V0HVhJmwKFQrGOD");
    }

    #[tokio::test]
    async fn a_403_is_an_auth_failure() {
        let zoom = MockServer::start().await;
        mount_tokens(&zoom).await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(403).set_body_json(
                json!({"code": 104, "message": "Invalid access token, does not contain scopes."}),
            ))
            .mount(&zoom)
            .await;
        let failure = client(&zoom)
            .move_member(&group("g1"), &id("u1"), &group("g2"), &Attempts::default())
            .await
            .unwrap_err();
        assert!(matches!(failure, Failure::Auth(_)), "{failure:?}");
    }
}
