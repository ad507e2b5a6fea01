//! Failures the fake adds on purpose: latency, random 429 / 5xx / hangs, and
//! scripted answers for the first few matching calls (so a demo can show one
//! retry exactly where it wants it). They apply to API calls only; the token
//! endpoint is never faulted, since the daemon's token handling has tests of
//! its own and a faulted token would hide what a demo is about.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits::Category;

/// The seed's `[faults]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsConfig {
    /// Added to every API answer.
    #[serde(default)]
    pub latency_ms: u64,
    /// A uniform extra of 0..=jitter on top of `latency_ms`.
    #[serde(default)]
    pub latency_jitter_ms: u64,
    /// Share of API calls answered 429 (QPS) whatever the counts say.
    #[serde(default)]
    pub rate_limit_rate: f64,
    /// Share of API calls answered 500 or 503.
    #[serde(default)]
    pub server_error_rate: f64,
    /// Share of API calls that hang for `timeout_ms`, then answer 504.
    #[serde(default)]
    pub timeout_rate: f64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Seed of the fault dice, for runs that fail the same way twice.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub script: Vec<ScriptedFault>,
}

fn default_timeout_ms() -> u64 {
    30_000
}

impl Default for FaultsConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            latency_jitter_ms: 0,
            rate_limit_rate: 0.0,
            server_error_rate: 0.0,
            timeout_rate: 0.0,
            timeout_ms: default_timeout_ms(),
            seed: None,
            script: Vec::new(),
        }
    }
}

/// `[[faults.script]]`: the first `times` API calls matching `method` and
/// `path_prefix` (each optional) get this answer instead of the real one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedFault {
    pub method: Option<String>,
    pub path_prefix: Option<String>,
    pub status: u16,
    #[serde(default = "one")]
    pub times: u32,
    /// Zoom's `code` in the body; the status by default.
    pub code: Option<u32>,
    pub message: Option<String>,
    /// The `X-RateLimit-Category` of a 429; the route's by default.
    pub category: Option<Category>,
}

fn one() -> u32 {
    1
}

impl ScriptedFault {
    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// A fault chosen for one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer this status with Zoom's error body.
    Answer {
        status: u16,
        code: u32,
        message: String,
        /// For a 429: the category its headers name.
        category: Option<Category>,
    },
    /// Hang this long, then answer 504.
    Hang(Duration),
}

/// The dice and what is left of the script.
#[derive(Debug)]
pub struct Faults {
    config: FaultsConfig,
    rng: fastrand::Rng,
    left: Vec<u32>,
}

impl Faults {
    pub fn new(config: FaultsConfig) -> Self {
        let rng = config
            .seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        let left = config.script.iter().map(|s| s.times).collect();
        Self { config, rng, left }
    }

    /// Back to the seed's script and dice.
    pub fn reset(&mut self) {
        *self = Self::new(self.config.clone());
    }

    /// The latency to add to one API answer.
    pub fn latency(&mut self) -> Duration {
        let jitter = match self.config.latency_jitter_ms {
            0 => 0,
            j => self.rng.u64(0..=j),
        };
        Duration::from_millis(self.config.latency_ms.saturating_add(jitter))
    }

    /// The fault for one API call, if any: the script first, then the dice.
    pub fn pick(&mut self, method: &str, path: &str) -> Option<Fault> {
        if let Some(fault) = self.scripted(method, path) {
            return Some(fault);
        }
        let c = &self.config;
        let roll = self.rng.f64();
        if roll < c.rate_limit_rate {
            return Some(Fault::Answer {
                status: 429,
                code: 429,
                message: super::routes::QPS_MESSAGE.to_owned(),
                category: None,
            });
        }
        if roll < c.rate_limit_rate + c.server_error_rate {
            let status = if self.rng.bool() { 500 } else { 503 };
            return Some(Fault::Answer {
                status,
                code: 500,
                message: "Internal server error (injected by zoom-fake).".to_owned(),
                category: None,
            });
        }
        if roll < c.rate_limit_rate + c.server_error_rate + c.timeout_rate {
            return Some(Fault::Hang(Duration::from_millis(c.timeout_ms)));
        }
        None
    }

    fn scripted(&mut self, method: &str, path: &str) -> Option<Fault> {
        let i = self
            .config
            .script
            .iter()
            .zip(&self.left)
            .position(|(s, left)| *left > 0 && s.matches(method, path))?;
        self.left[i] -= 1;
        let s = &self.config.script[i];
        let message = match (&s.message, s.status) {
            (Some(m), _) => m.clone(),
            (None, 429) => super::routes::QPS_MESSAGE.to_owned(),
            (None, status) => format!("Scripted failure {status} (zoom-fake)."),
        };
        Some(Fault::Answer {
            status: s.status,
            code: s.code.unwrap_or(u32::from(s.status)),
            message,
            category: s.category,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(method: &str, prefix: &str, times: u32) -> ScriptedFault {
        ScriptedFault {
            method: Some(method.into()),
            path_prefix: Some(prefix.into()),
            status: 429,
            times,
            code: None,
            message: None,
            category: None,
        }
    }

    #[test]
    fn a_script_fires_exactly_times_and_only_on_matches() {
        let mut faults = Faults::new(FaultsConfig {
            script: vec![script("patch", "/v2/groups/g1/", 2)],
            ..FaultsConfig::default()
        });
        assert_eq!(faults.pick("GET", "/v2/groups/g1/members"), None);
        assert_eq!(faults.pick("PATCH", "/v2/groups/g2/members/u"), None);
        let fired = (0..5)
            .filter(|_| faults.pick("PATCH", "/v2/groups/g1/members/u").is_some())
            .count();
        assert_eq!(fired, 2);
        faults.reset();
        assert!(faults.pick("PATCH", "/v2/groups/g1/members/u").is_some());
    }

    #[test]
    fn seeded_dice_fail_the_same_calls_twice() {
        let config = FaultsConfig {
            server_error_rate: 0.3,
            seed: Some(7),
            ..FaultsConfig::default()
        };
        let run = |mut f: Faults| -> Vec<bool> {
            (0..50)
                .map(|_| f.pick("GET", "/v2/users/u").is_some())
                .collect()
        };
        let first = run(Faults::new(config.clone()));
        assert_eq!(first, run(Faults::new(config)));
        assert!(first.iter().any(|f| *f) && !first.iter().all(|f| *f));
    }

    #[test]
    fn latency_stays_within_its_jitter() {
        let mut faults = Faults::new(FaultsConfig {
            latency_ms: 10,
            latency_jitter_ms: 5,
            seed: Some(1),
            ..FaultsConfig::default()
        });
        for _ in 0..100 {
            let l = faults.latency();
            assert!(l >= Duration::from_millis(10) && l <= Duration::from_millis(15));
        }
    }
}
