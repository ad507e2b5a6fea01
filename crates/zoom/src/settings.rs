//! `[zoom]`: this crate's section of the configuration, and the app's
//! credentials. The configuration loader reads them; the rules that concern
//! Zoom alone (the rate limits) live here.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// A `[zoom]` rate limit that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    #[error(
        "zoom.requests_per_second ({old}) and zoom.rate_limits.medium ({medium}) are both set \
         (in the file or as ZDS_ZOOM__REQUESTS_PER_SECOND / ZDS_ZOOM__RATE_LIMITS__MEDIUM): \
         requests_per_second is the old name of rate_limits.medium; remove it"
    )]
    BothNames { old: u32, medium: u32 },
    #[error("{key} must be at least 1")]
    Zero { key: &'static str },
    #[error("{key} is {value}, more than the largest allowed, {MAX_RATE}")]
    TooLarge { key: &'static str, value: u32 },
}

/// Server-to-server OAuth app credentials. `Debug` is redacted by `secrecy`.
#[derive(Debug, Clone)]
pub struct ZoomCredentials {
    pub account_id: SecretString,
    pub client_id: SecretString,
    pub client_secret: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZoomSettings {
    pub api_base_url: String,
    pub oauth_token_url: String,
    /// The account's plan: sets the default of each category's limit.
    pub plan: ZoomPlan,
    /// Client-side limits per Zoom rate-limit category, per second; each
    /// defaults to half of what the plan allows ([`ZoomPlan::default_limits`]).
    pub rate_limits: RateLimitsFile,
    /// The old single limit (before categories): read as `rate_limits.medium`.
    pub requests_per_second: Option<u32>,
    pub request_timeout_ms: u64,
    /// Accept `http://` for the Zoom and HR API URLs (tests, the demo with
    /// zoom-fake). Off, only `https://` is accepted, and the HTTP clients
    /// refuse plain HTTP even on a redirect: the token and the OAuth
    /// credentials never cross the network in clear.
    pub allow_insecure_http: bool,
}

/// Zoom's plans, as far as rate limits go: Pro, and Business or higher
/// (Business, Business Plus, Enterprise, Education share one table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoomPlan {
    #[default]
    Pro,
    Business,
}

/// `[zoom.rate_limits]` as written: a category left out takes its default.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsFile {
    pub light: Option<u32>,
    pub medium: Option<u32>,
    pub heavy: Option<u32>,
}

/// Calls per second the daemon allows itself in each Zoom category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub light: u32,
    pub medium: u32,
    pub heavy: u32,
}

impl ZoomPlan {
    /// Zoom's per-second limits per account for the plan (Zoom API
    /// reference, "Rate limits": Pro 30 / 20 / 10, Business and higher
    /// 80 / 60 / 40 for Light / Medium / Heavy).
    pub fn account_limits(self) -> RateLimits {
        match self {
            Self::Pro => RateLimits {
                light: 30,
                medium: 20,
                heavy: 10,
            },
            Self::Business => RateLimits {
                light: 80,
                medium: 60,
                heavy: 40,
            },
        }
    }

    /// Half of each limit: the budget is the account's, shared with every
    /// other app on it, and the adaptive share lowers it further when
    /// others use more.
    pub fn default_limits(self) -> RateLimits {
        let all = self.account_limits();
        RateLimits {
            light: all.light / 2,
            medium: all.medium / 2,
            heavy: all.heavy / 2,
        }
    }
}

impl Default for ZoomSettings {
    fn default() -> Self {
        Self {
            api_base_url: "https://api.zoom.us/v2".into(),
            oauth_token_url: "https://zoom.us/oauth/token".into(),
            plan: ZoomPlan::Pro,
            rate_limits: RateLimitsFile::default(),
            requests_per_second: None,
            request_timeout_ms: 10_000,
            allow_insecure_http: false,
        }
    }
}

impl ZoomSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Each category's limit: the key as written, else (Medium only) the old
    /// `requests_per_second`, else the plan's default.
    pub fn rate_limits(&self) -> RateLimits {
        let defaults = self.plan.default_limits();
        let file = self.rate_limits;
        RateLimits {
            light: file.light.unwrap_or(defaults.light),
            medium: file
                .medium
                .or(self.requests_per_second)
                .unwrap_or(defaults.medium),
            heavy: file.heavy.unwrap_or(defaults.heavy),
        }
    }

    /// `requests_per_second` beside `rate_limits.medium` would leave the
    /// reader guessing which one holds: refused, with what to write.
    pub fn check_rate_limits(&self) -> Result<(), RateLimitError> {
        if let (Some(old), Some(medium)) = (self.requests_per_second, self.rate_limits.medium) {
            return Err(RateLimitError::BothNames { old, medium });
        }
        let limits = self.rate_limits();
        // The Medium limit may have come from the old key: name that one.
        let medium_key = if self.rate_limits.medium.is_none() && self.requests_per_second.is_some()
        {
            "zoom.requests_per_second"
        } else {
            "zoom.rate_limits.medium"
        };
        for (key, value) in [
            ("zoom.rate_limits.light", limits.light),
            (medium_key, limits.medium),
            ("zoom.rate_limits.heavy", limits.heavy),
        ] {
            if value == 0 {
                return Err(RateLimitError::Zero { key });
            }
            if value > MAX_RATE {
                return Err(RateLimitError::TooLarge { key, value });
            }
        }
        Ok(())
    }
}

/// No Zoom plan allows more per second; a larger value is a typo.
const MAX_RATE: u32 = 100_000;
