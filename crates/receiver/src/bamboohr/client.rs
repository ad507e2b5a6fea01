//! BambooHR's API: one call, an employee's current department and work
//! email. The webhook names who changed; the API says what it is now, so a
//! late or repeated webhook still publishes the current state.
//!
//! Retries follow the Zoom client's rules (backon exponential from
//! `[retry]`, full jitter, `Retry-After` honoured, 429/5xx/timeouts
//! retried) but are bounded by the webhook's own deadline: within the 2 s a
//! sender waits, that is a short retry at most.

use std::time::{Duration, SystemTime};

use backon::Retryable;
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use crate::settings::BambooHrSettings;
use zds_http_client::RetrySettings;
use zds_http_client::retry::{self, Budget};
use zds_http_client::{HttpClientError, wait};

/// An employee answer is a few fields; more is not BambooHR.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The fields read; either may be missing or null in BambooHR's answer.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Employee {
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default, rename = "workEmail")]
    pub work_email: Option<String>,
}

/// Why the lookup failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// A 4xx other than 429 (no such employee, a bad API key): retrying the
    /// webhook would not help.
    #[error("BambooHR answered {0}")]
    Refused(StatusCode),
    /// A 429, a 5xx, a timeout or a broken connection: worth a retry later.
    #[error("BambooHR is unavailable: {detail}")]
    Unavailable {
        detail: String,
        server_wait: Option<Duration>,
    },
    /// A success whose body is not an employee.
    #[error("BambooHR's answer is unreadable: {0}")]
    Unreadable(String),
}

impl LookupError {
    fn unavailable(detail: impl Into<String>) -> Self {
        Self::Unavailable {
            detail: detail.into(),
            server_wait: None,
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    api_base: Url,
    company: String,
    api_key: SecretString,
    retry: RetrySettings,
}

impl Client {
    pub fn new(
        settings: &BambooHrSettings,
        retry: &RetrySettings,
        api_key: SecretString,
        https_only: bool,
    ) -> Result<Self, HttpClientError> {
        // `zoom.allow_insecure_http` governs every API URL (and the proxy).
        let http = zds_http_client::http_client_builder(!https_only)
            .build()
            .map_err(HttpClientError::Build)?;
        let api_base = Url::parse(&settings.api_base_url)
            .map_err(HttpClientError::base_url("ingest.bamboohr.api_base_url"))?;
        Ok(Self {
            http,
            api_base,
            company: settings.company_domain.trim().to_owned(),
            api_key,
            retry: retry.clone(),
        })
    }

    /// `GET {api}/{company}/v1/employees/{id}?fields=department,workEmail`,
    /// retried until `deadline`.
    pub async fn employee(&self, id: &str, deadline: Instant) -> Result<Employee, LookupError> {
        let url = self.url(id);
        let mut budget = Budget::until(deadline);
        (|| self.attempt(&url, deadline))
            .retry(retry::exponential(&self.retry))
            .when(|e: &LookupError| matches!(e, LookupError::Unavailable { .. }))
            .adjust(|e: &LookupError, step| {
                let server_wait = match e {
                    LookupError::Unavailable { server_wait, .. } => *server_wait,
                    _ => None,
                };
                budget.next_wait(step, server_wait, false)
            })
            .notify(|e: &LookupError, wait: Duration| {
                tracing::warn!(employee = id, error = %e, retry_in_ms = wait.as_millis() as u64,
                    "BambooHR lookup failed; retrying");
            })
            .await
    }

    /// Percent-encoded segments: no id can add a path segment or a query.
    fn url(&self, id: &str) -> Url {
        let mut url = self.api_base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend([self.company.as_str(), "v1", "employees", id]);
        }
        url.query_pairs_mut()
            .append_pair("fields", "department,workEmail");
        url
    }

    async fn attempt(&self, url: &Url, deadline: Instant) -> Result<Employee, LookupError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LookupError::unavailable("no time left to ask"));
        }
        let response = self
            .http
            .get(url.clone())
            .basic_auth(self.api_key.expose_secret(), Some("x"))
            .header(ACCEPT, "application/json")
            .timeout(left)
            .send()
            .await
            .map_err(|e| LookupError::unavailable(zds_http_client::with_causes(&e)))?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(LookupError::Unavailable {
                detail: format!("status {status}"),
                server_wait: wait::server_wait(response.headers(), SystemTime::now()),
            });
        }
        if !status.is_success() {
            return Err(LookupError::Refused(status));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| LookupError::unavailable(zds_http_client::with_causes(&e)))?;
        if body.len() > MAX_BODY_BYTES {
            return Err(LookupError::Unreadable(format!(
                "{} bytes, over {MAX_BODY_BYTES}",
                body.len()
            )));
        }
        serde_json::from_slice(&body).map_err(|e| LookupError::Unreadable(e.to_string()))
    }
}
