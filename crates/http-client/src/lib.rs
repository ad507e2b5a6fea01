//! What every outside HTTP API call shares, whoever the vendor: the client's
//! safety settings, the retry policy and its budget, and reading a server's
//! `Retry-After` / `X-RateLimit-Reset`. The Zoom client and the BambooHR
//! client both build on it; neither imports the other.

use std::time::Duration;

use serde::Deserialize;

pub mod retry;
pub mod wait;

/// The HTTP client every outside API (Zoom, BambooHR) is called with.
/// `https://` only, redirects included, unless `zoom.allow_insecure_http`;
/// and then no proxy at all: through a proxy a plain-http request, its
/// Basic credentials or API key included, would be readable there (an
/// `https://` request crosses a proxy only as an encrypted CONNECT tunnel).
pub fn http_client_builder(allow_insecure_http: bool) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("zoom-dept-sync/", env!("CARGO_PKG_VERSION")))
        .https_only(!allow_insecure_http);
    if allow_insecure_http {
        builder.no_proxy()
    } else {
        builder
    }
}

/// An API client that cannot be made from its settings.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
    #[error("{key}: {source}")]
    BaseUrl {
        key: &'static str,
        source: url::ParseError,
    },
}

impl HttpClientError {
    /// For `map_err` on `Url::parse` of the setting `key`.
    pub fn base_url(key: &'static str) -> impl FnOnce(url::ParseError) -> Self {
        move |source| Self::BaseUrl { key, source }
    }
}

/// An error and its sources, `: `-joined (reqwest's own Display stops at
/// "error sending request").
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `url` fit for a message: no user info, query or fragment (they may
/// hold secrets). A URL without a host is not shown at all: written without
/// its scheme, `user:password@host` parses as scheme `user` with the
/// password in its path.
pub fn safe_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut url) if url.has_host() && !url.cannot_be_a_base() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        _ => "(not a URL)".into(),
    }
}

/// `[retry]`: the backoff for transient failures of one call, and the
/// budget of one event's calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    pub initial_interval_ms: u64,
    pub max_interval_ms: u64,
    pub max_elapsed_secs: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            initial_interval_ms: 500,
            max_interval_ms: 30_000,
            max_elapsed_secs: 600,
        }
    }
}

impl RetrySettings {
    pub fn initial_interval(&self) -> Duration {
        Duration::from_millis(self.initial_interval_ms)
    }
    pub fn max_interval(&self) -> Duration {
        Duration::from_millis(self.max_interval_ms)
    }
    pub fn max_elapsed(&self) -> Duration {
        Duration::from_secs(self.max_elapsed_secs)
    }
}
