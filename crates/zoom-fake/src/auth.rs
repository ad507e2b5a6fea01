//! Server-to-Server OAuth as Zoom does it: `POST /oauth/token` with HTTP
//! Basic client credentials and `grant_type=account_credentials`, then
//! `Authorization: Bearer` on every API call. Tokens are the account's, not a
//! client's: any token the fake issued works until it expires, and every
//! client shares the account's rate limits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

use super::seed::AuthConfig;

/// Tokens kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// Why the token endpoint refuses; `status`, `error()` and the message make
/// Zoom's `{"reason": …, "error": …}` body.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TokenRefusal {
    #[error("Invalid client_id or client_secret")]
    BadClient,
    #[error("unsupported grant type")]
    GrantType,
    #[error("Invalid request : Missing account_id")]
    MissingAccount,
    #[error("Account does not exist.")]
    BadAccount,
}

impl TokenRefusal {
    pub fn status(&self) -> u16 {
        match self {
            TokenRefusal::BadClient => 401,
            _ => 400,
        }
    }

    pub fn error(&self) -> &'static str {
        match self {
            TokenRefusal::BadClient => "invalid_client",
            TokenRefusal::GrantType => "unsupported_grant_type",
            TokenRefusal::MissingAccount | TokenRefusal::BadAccount => "invalid_request",
        }
    }
}

/// Why an API call's token is refused (401, code 124).
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum TokenInvalid {
    #[error("Invalid access token.")]
    Invalid,
    #[error("Access token is expired.")]
    Expired,
}

/// A token request, as read off the query string (or form body).
#[derive(Debug, Default)]
pub struct TokenRequest<'a> {
    pub grant_type: Option<String>,
    pub account_id: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
}

/// An issued token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// The issued tokens and what they expire.
#[derive(Debug)]
pub struct Tokens {
    config: AuthConfig,
    issued: HashMap<String, Instant>,
    rng: fastrand::Rng,
    /// The app's credentials were revoked: no grant until restored.
    revoked: bool,
}

impl Tokens {
    pub fn new(config: AuthConfig) -> Self {
        Self {
            config,
            issued: HashMap::new(),
            rng: fastrand::Rng::new(),
            revoked: false,
        }
    }

    /// As when an admin deactivates the app: every issued token stops
    /// working and the token endpoint refuses the client.
    pub fn revoke(&mut self) {
        self.revoked = true;
        self.issued.clear();
    }

    /// The app is active again: new grants succeed.
    pub fn restore(&mut self) {
        self.revoked = false;
    }

    pub fn grant(
        &mut self,
        request: &TokenRequest<'_>,
        now: Instant,
    ) -> Result<Grant, TokenRefusal> {
        let (client_id, secret) = request
            .authorization
            .and_then(basic_credentials)
            .ok_or(TokenRefusal::BadClient)?;
        if self.revoked {
            return Err(TokenRefusal::BadClient);
        }
        let c = &self.config;
        let wrong = |want: &Option<String>, got: &str| want.as_deref().is_some_and(|w| w != got);
        if wrong(&c.client_id, &client_id) || wrong(&c.client_secret, &secret) {
            return Err(TokenRefusal::BadClient);
        }
        if request.grant_type.as_deref() != Some("account_credentials") {
            return Err(TokenRefusal::GrantType);
        }
        let account = request.account_id.as_deref().filter(|a| !a.is_empty());
        let account = account.ok_or(TokenRefusal::MissingAccount)?;
        if wrong(&c.account_id, account) {
            return Err(TokenRefusal::BadAccount);
        }
        if self.issued.len() >= SWEEP_AT {
            self.issued.retain(|_, expires| *expires > now);
        }
        let access_token: String = (0..40).map(|_| self.rng.alphanumeric()).collect();
        let lifetime = Duration::from_secs(self.config.token_lifetime_secs);
        self.issued.insert(access_token.clone(), now + lifetime);
        Ok(Grant {
            access_token,
            expires_in: self.config.token_lifetime_secs,
            scope: self.config.scopes.clone(),
        })
    }

    /// Whether `token` was issued here (expired or not).
    pub fn was_issued(&self, token: &str) -> bool {
        self.issued.contains_key(token)
    }

    /// Checks an API call's `Authorization` header.
    pub fn check(&self, authorization: Option<&str>, now: Instant) -> Result<(), TokenInvalid> {
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .ok_or(TokenInvalid::Invalid)?;
        match self.issued.get(token.trim()) {
            None => Err(TokenInvalid::Invalid),
            Some(expires) if *expires <= now => Err(TokenInvalid::Expired),
            Some(_) => Ok(()),
        }
    }
}

/// `Basic base64(id:secret)` → (id, secret).
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    (!id.is_empty()).then(|| (id.to_owned(), secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>) -> TokenRequest<'_> {
        TokenRequest {
            grant_type: Some("account_credentials".into()),
            account_id: Some("acct".into()),
            authorization: auth,
        }
    }

    const BASIC: &str = "Basic aWQ6c2VjcmV0"; // id:secret

    #[test]
    fn an_issued_token_works_until_it_expires() {
        let mut tokens = Tokens::new(AuthConfig::default());
        let now = Instant::now();
        let grant = tokens.grant(&request(Some(BASIC)), now).expect("token");
        let bearer = format!("Bearer {}", grant.access_token);
        assert_eq!(tokens.check(Some(&bearer), now), Ok(()));
        let later = now + Duration::from_secs(3600);
        assert_eq!(
            tokens.check(Some(&bearer), later),
            Err(TokenInvalid::Expired)
        );
        assert_eq!(
            tokens.check(Some("Bearer nope"), now),
            Err(TokenInvalid::Invalid)
        );
        assert_eq!(tokens.check(None, now), Err(TokenInvalid::Invalid));
        assert!(tokens.was_issued(&grant.access_token));
        assert!(!tokens.was_issued("nope"));
    }

    #[test]
    fn revoked_credentials_refuse_every_token_until_restored() {
        let mut tokens = Tokens::new(AuthConfig::default());
        let now = Instant::now();
        let grant = tokens.grant(&request(Some(BASIC)), now).expect("token");
        let bearer = format!("Bearer {}", grant.access_token);
        tokens.revoke();
        assert_eq!(tokens.check(Some(&bearer), now), Err(TokenInvalid::Invalid));
        assert!(matches!(
            tokens.grant(&request(Some(BASIC)), now),
            Err(TokenRefusal::BadClient)
        ));
        tokens.restore();
        let again = tokens
            .grant(&request(Some(BASIC)), now)
            .expect("token again");
        let bearer = format!("Bearer {}", again.access_token);
        assert_eq!(tokens.check(Some(&bearer), now), Ok(()));
    }

    #[test]
    fn credentials_are_checked_when_the_seed_names_them() {
        let mut tokens = Tokens::new(AuthConfig {
            client_secret: Some("other".into()),
            ..AuthConfig::default()
        });
        let now = Instant::now();
        assert_eq!(
            tokens.grant(&request(None), now),
            Err(TokenRefusal::BadClient)
        );
        assert_eq!(
            tokens.grant(&request(Some(BASIC)), now),
            Err(TokenRefusal::BadClient)
        );
        let mut open = Tokens::new(AuthConfig::default());
        let mut no_grant = request(Some(BASIC));
        no_grant.grant_type = None;
        assert_eq!(open.grant(&no_grant, now), Err(TokenRefusal::GrantType));
    }
}
