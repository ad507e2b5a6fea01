//! The server-to-server OAuth token: one, cached, shared by every call.
//!
//! A `tokio::sync::Mutex` is held across the fetch, so when many calls need a
//! new token at once only the first fetches it and the rest reuse it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::error::{ErrorKind, ZoomError};
use crate::config::ZoomCredentials;

/// A bearer token plus which fetch produced it, so a 401 only discards the
/// token that was actually refused, not a newer one.
#[derive(Clone)]
pub struct AccessToken {
    secret: SecretString,
    generation: u64,
}

impl AccessToken {
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.secret.expose_secret())
    }
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

    async fn fetch(&self) -> Result<Cached, ZoomError> {
        let basic = STANDARD.encode(format!(
            "{}:{}",
            self.credentials.client_id.expose_secret(),
            self.credentials.client_secret.expose_secret()
        ));
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
        let response = self
            .http
            .post(url)
            .header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"))
            .send()
            .await
            .map_err(|e| ZoomError::from_transport(&e.without_url()))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| ZoomError::from_transport(&e.without_url()))?;
        if !status.is_success() {
            let mut error = ZoomError::from_answer(status, &headers, &body);
            // A refusal of the credentials is not fixed by retrying the event.
            if status.is_client_error() && status.as_u16() != 429 {
                error.kind = ErrorKind::Credentials;
            }
            error.message = format!("token endpoint: {}", error.message);
            return Err(error);
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            ZoomError::local(
                ErrorKind::Transient,
                Some(status.as_u16()),
                format!("token endpoint answered without a usable token: {e}"),
            )
        })?;
        let lifetime = Duration::from_secs(answer.expires_in);
        // Refresh a little early so no call goes out with a token about to lapse.
        let margin = (lifetime / 10).min(Duration::from_secs(300));
        tracing::info!(
            expires_in_secs = answer.expires_in,
            "fetched a Zoom access token"
        );
        Ok(Cached {
            token: AccessToken {
                secret: answer.access_token,
                generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            },
            refresh_at: Instant::now() + lifetime - margin,
        })
    }
}
