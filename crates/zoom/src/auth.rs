//! The server-to-server OAuth token: one, cached, shared by every call.
//!
//! A `tokio::sync::Mutex` is held across the fetch, so when many calls need a
//! new token at once only the first fetches it and the rest reuse it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::body::{self, MAX_BODY_BYTES};
use super::error::{ErrorKind, ZoomError};
use crate::settings::ZoomCredentials;

/// The longest a token is trusted, whatever `expires_in` says. Zoom's tokens
/// last an hour; a larger value is a broken answer, and `Instant + lifetime`
/// must not overflow on it.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// A bearer token plus which fetch produced it, so a 401 only discards the
/// token that was actually refused, not a newer one.
#[derive(Clone)]
pub struct AccessToken {
    secret: SecretString,
    generation: u64,
    /// The scopes the token endpoint granted (its `scope` field).
    pub scopes: Vec<String>,
}

impl AccessToken {
    /// The `Authorization` value, marked sensitive so no debug output or
    /// HTTP/2 header table keeps it. A token that is not a valid header value
    /// is treated like one Zoom refused: fetched anew, once.
    pub fn bearer(&self) -> Result<HeaderValue, ZoomError> {
        sensitive(&format!("Bearer {}", self.secret.expose_secret())).ok_or_else(|| {
            ZoomError::local(
                ErrorKind::Unauthorized,
                None,
                "the access token is not a valid header value",
            )
        })
    }
}

/// A header value that is never logged or indexed (`None` if not valid).
fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

struct Cached {
    token: AccessToken,
    refresh_at: Instant,
}

pub struct TokenSource {
    http: reqwest::Client,
    url: String,
    credentials: ZoomCredentials,
    cached: Mutex<Option<Cached>>,
    generation: AtomicU64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: SecretString,
    expires_in: u64,
    /// Space-separated; absent from some answers.
    #[serde(default)]
    scope: String,
}

impl TokenSource {
    pub fn new(http: reqwest::Client, url: String, credentials: ZoomCredentials) -> Self {
        Self {
            http,
            url,
            credentials,
            cached: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// The cached token, or a fresh one when there is none or it is about to
    /// expire.
    pub async fn token(&self) -> Result<AccessToken, ZoomError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Fetches a new token now, replacing the cached one.
    pub async fn refresh(&self) -> Result<(), ZoomError> {
        let mut cached = self.cached.lock().await;
        *cached = Some(self.fetch().await?);
        Ok(())
    }

    /// Forgets `refused` (Zoom answered 401 to it) unless a newer token has
    /// replaced it already.
    pub async fn invalidate(&self, refused: &AccessToken) {
        let mut cached = self.cached.lock().await;
        if cached
            .as_ref()
            .is_some_and(|c| c.token.generation == refused.generation)
        {
            *cached = None;
        }
    }

    /// `Basic base64(client_id:client_secret)`, marked sensitive.
    fn basic(&self) -> Result<HeaderValue, ZoomError> {
        let basic = STANDARD.encode(format!(
            "{}:{}",
            self.credentials.client_id.expose_secret(),
            self.credentials.client_secret.expose_secret()
        ));
        sensitive(&format!("Basic {basic}")).ok_or_else(|| {
            ZoomError::local(
                ErrorKind::Credentials,
                None,
                "the client credentials are not a valid header value",
            )
        })
    }

    async fn fetch(&self) -> Result<Cached, ZoomError> {
        let url = url::Url::parse_with_params(
            &self.url,
            [
                ("grant_type", "account_credentials"),
                ("account_id", self.credentials.account_id.expose_secret()),
            ],
        )
        .map_err(|e| {
            ZoomError::local(
                ErrorKind::Credentials,
                None,
                format!("zoom.oauth_token_url is not a URL: {e}"),
            )
        })?;
        let mut response = self
            .http
            .post(url)
            .header(reqwest::header::AUTHORIZATION, self.basic()?)
            .send()
            .await
            .map_err(|e| ZoomError::from_transport_to(&e.without_url(), &self.url))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = body::read_capped(&mut response, MAX_BODY_BYTES)
            .await
            .map_err(|e| ZoomError::from_transport_to(&e.without_url(), &self.url))?;
        if !status.is_success() {
            let mut error = ZoomError::from_answer(status, &headers, &body.bytes);
            // A refusal of the credentials is not fixed by retrying the event.
            if status.is_client_error() && status.as_u16() != 429 {
                error.kind = ErrorKind::Credentials;
            }
            error.message = format!(
                "token endpoint {}: {}",
                super::error::safe_url(&self.url),
                error.message
            );
            return Err(error);
        }
        self.cache(status.as_u16(), &body)
    }

    /// Reads the token endpoint's success answer into a cache entry.
    fn cache(&self, status: u16, body: &body::Body) -> Result<Cached, ZoomError> {
        let unusable = |why: String| {
            ZoomError::local(
                ErrorKind::Transient,
                Some(status),
                format!("token endpoint answered without a usable token: {why}"),
            )
        };
        if body.truncated {
            return Err(unusable(format!("answer over {MAX_BODY_BYTES} bytes")));
        }
        let answer: TokenAnswer =
            serde_json::from_slice(&body.bytes).map_err(|e| unusable(e.to_string()))?;
        let lifetime = Duration::from_secs(answer.expires_in).min(MAX_TOKEN_LIFETIME);
        // Refresh a little early so no call goes out with a token about to lapse.
        let margin = (lifetime / 10).min(Duration::from_secs(300));
        tracing::info!(
            expires_in_secs = answer.expires_in,
            "fetched a Zoom access token"
        );
        let now = Instant::now();
        Ok(Cached {
            token: AccessToken {
                secret: answer.access_token,
                generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
                scopes: answer.scope.split_whitespace().map(str::to_owned).collect(),
            },
            // Should the clock not hold it, the token is fetched anew next time.
            refresh_at: now.checked_add(lifetime - margin).unwrap_or(now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_basic_header_is_sensitive() {
        let source = TokenSource::new(
            reqwest::Client::new(),
            "http://127.0.0.1/oauth/token".into(),
            ZoomCredentials {
                account_id: "acct".into(),
                client_id: "id".into(),
                client_secret: "secret".into(),
            },
        );
        let basic = source.basic().unwrap();
        assert_eq!(basic, "Basic aWQ6c2VjcmV0");
        assert!(basic.is_sensitive());
    }

    /// Zoom's documented token answer (fixtures/vendor/zoom) is read: the
    /// token and its lifetime; `token_type`, `scope` and `api_url` are not
    /// needed.
    #[test]
    fn the_documented_token_answer_is_read() {
        let fixture = zds_vendor_fixtures::Fixture::load("zoom/oauth.token.200.json");
        assert_eq!(fixture.request().method.as_deref(), Some("POST"));
        let answer: TokenAnswer = serde_json::from_value(fixture.response_body().clone()).unwrap();
        assert_eq!(answer.expires_in, 3600);
        assert!(answer.access_token.expose_secret().starts_with("eyJ"));
    }
}
