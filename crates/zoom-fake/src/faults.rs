//! Failures the fake adds on purpose: latency, random 429 / 5xx / hangs, and
//! scripted answers for the first few matching calls (so a demo can show one
//! retry exactly where it wants it). They apply to API calls only; the token
//! endpoint is never faulted, since the daemon's token handling has tests of
//! its own and a faulted token would hide what a demo is about.
//!
//! Besides the seed's script, faults can be scripted while the fake runs
//! (see [`super::FakeHandle::script`]): for the next few matching calls, for
//! a while, or until they are cleared, as a test needs.

use std::time::{Duration, Instant};

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
    /// A `Retry-After` header, sent as given (Zoom sends none with a
    /// per-second 429; a test of how a client waits needs one).
    #[serde(default)]
    pub retry_after: Option<String>,
    /// The `X-RateLimit-Type` of an answer (`QPS`, `Daily-limit`); `QPS`
    /// by default; empty: none at all.
    #[serde(default)]
    pub limit_type: Option<String>,
}

fn one() -> u32 {
    1
}

impl ScriptedFault {
    /// `status` with Zoom's body `{"code": code, "message": message}` for the
    /// next call of `method` (any path): the builder for faults scripted at
    /// run time.
    pub fn new(method: &str, status: u16, code: u32, message: &str) -> Self {
        Self {
            method: Some(method.to_owned()),
            path_prefix: None,
            status,
            times: 1,
            code: Some(code),
            message: Some(message.to_owned()),
            category: None,
            retry_after: None,
            limit_type: None,
        }
    }

    /// A daily-limit 429 (`X-RateLimit-Type: Daily-limit`).
    pub fn daily(self) -> Self {
        Self {
            limit_type: Some("Daily-limit".to_owned()),
            ..self
        }
    }

    /// Without `X-RateLimit-Type`, as a gateway's 429 would come.
    pub fn untyped(self) -> Self {
        Self {
            limit_type: Some(String::new()),
            ..self
        }
    }

    /// With `Retry-After: value`.
    pub fn retry_after(self, value: &str) -> Self {
        Self {
            retry_after: Some(value.to_owned()),
            ..self
        }
    }

    /// For the next `times` matching calls instead of one.
    pub fn times(self, times: u32) -> Self {
        Self { times, ..self }
    }

    /// Only for paths that start with `prefix` (e.g. `/v2/users/`).
    pub fn path_prefix(self, prefix: &str) -> Self {
        Self {
            path_prefix: Some(prefix.to_owned()),
            ..self
        }
    }

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
        retry_after: Option<String>,
        limit_type: Option<String>,
    },
    /// Hang this long, then answer 504.
    Hang(Duration),
}

/// How long a scripted fault still applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasting {
    /// For this many more matching calls.
    Times(u32),
    /// For every matching call before this instant.
    Until(Instant),
    /// For every matching call until [`Faults::clear`].
    UntilCleared,
}

impl Lasting {
    fn live(self, now: Instant) -> bool {
        match self {
            Lasting::Times(left) => left > 0,
            Lasting::Until(end) => now < end,
            Lasting::UntilCleared => true,
        }
    }
}

/// The dice and the script: the seed's entries first, then those added at
/// run time, each with what is left of it.
#[derive(Debug)]
pub struct Faults {
    config: FaultsConfig,
    rng: fastrand::Rng,
    script: Vec<(ScriptedFault, Lasting)>,
}

impl Faults {
    pub fn new(config: FaultsConfig) -> Self {
        let rng = config
            .seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        let script = config
            .script
            .iter()
            .map(|s| (s.clone(), Lasting::Times(s.times)))
            .collect();
        Self {
            config,
            rng,
            script,
        }
    }

    /// Back to the seed's script and dice; faults added since are gone.
    pub fn reset(&mut self) {
        *self = Self::new(self.config.clone());
    }

    /// Scripts `fault` at run time, after every entry already scripted.
    pub fn add(&mut self, fault: ScriptedFault, lasting: Lasting) {
        self.script.push((fault, lasting));
    }

    /// Ends every scripted fault, the seed's included; the dice and the
    /// latency stay.
    pub fn clear(&mut self) {
        self.script.clear();
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
    pub fn pick(&mut self, method: &str, path: &str, now: Instant) -> Option<Fault> {
        if let Some(fault) = self.scripted(method, path, now) {
            return Some(fault);
        }
        let c = &self.config;
        let roll = self.rng.f64();
        if roll < c.rate_limit_rate {
            return Some(Fault::Answer {
                status: 429,
                code: 429,
                message: super::limits::QPS_MESSAGE.to_owned(),
                category: None,
                retry_after: None,
                limit_type: None,
            });
        }
        if roll < c.rate_limit_rate + c.server_error_rate {
            let status = if self.rng.bool() { 500 } else { 503 };
            return Some(Fault::Answer {
                status,
                code: 500,
                message: "Internal server error (injected by zoom-fake).".to_owned(),
                category: None,
                retry_after: None,
                limit_type: None,
            });
        }
        if roll < c.rate_limit_rate + c.server_error_rate + c.timeout_rate {
            return Some(Fault::Hang(Duration::from_millis(c.timeout_ms)));
        }
        None
    }

    /// The first live entry that matches; a counted one is used up by one.
    fn scripted(&mut self, method: &str, path: &str, now: Instant) -> Option<Fault> {
        let (s, lasting) = self
            .script
            .iter_mut()
            .find(|(s, lasting)| lasting.live(now) && s.matches(method, path))?;
        if let Lasting::Times(left) = lasting {
            *left -= 1;
        }
        let message = match (&s.message, s.status) {
            (Some(m), _) => m.clone(),
            (None, 429) => super::limits::QPS_MESSAGE.to_owned(),
            (None, status) => format!("Scripted failure {status} (zoom-fake)."),
        };
        Some(Fault::Answer {
            status: s.status,
            code: s.code.unwrap_or(u32::from(s.status)),
            message,
            category: s.category,
            retry_after: s.retry_after.clone(),
            limit_type: s.limit_type.clone(),
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
            retry_after: None,
            limit_type: None,
        }
    }

    #[test]
    fn a_script_fires_exactly_times_and_only_on_matches() {
        let now = Instant::now();
        let mut faults = Faults::new(FaultsConfig {
            script: vec![script("patch", "/v2/groups/g1/", 2)],
            ..FaultsConfig::default()
        });
        assert_eq!(faults.pick("GET", "/v2/groups/g1/members", now), None);
        assert_eq!(faults.pick("PATCH", "/v2/groups/g2/members/u", now), None);
        let fired = (0..5)
            .filter(|_| {
                faults
                    .pick("PATCH", "/v2/groups/g1/members/u", now)
                    .is_some()
            })
            .count();
        assert_eq!(fired, 2);
        faults.reset();
        assert!(
            faults
                .pick("PATCH", "/v2/groups/g1/members/u", now)
                .is_some()
        );
    }

    #[test]
    fn seeded_dice_fail_the_same_calls_twice() {
        let config = FaultsConfig {
            server_error_rate: 0.3,
            seed: Some(7),
            ..FaultsConfig::default()
        };
        let now = Instant::now();
        let run = |mut f: Faults| -> Vec<bool> {
            (0..50)
                .map(|_| f.pick("GET", "/v2/users/u", now).is_some())
                .collect()
        };
        let first = run(Faults::new(config.clone()));
        assert_eq!(first, run(Faults::new(config)));
        assert!(first.iter().any(|f| *f) && !first.iter().all(|f| *f));
    }

    #[test]
    fn faults_scripted_at_run_time_last_as_asked_and_clear() {
        let mut faults = Faults::new(FaultsConfig {
            script: vec![script("get", "/v2/users/", 1)],
            ..FaultsConfig::default()
        });
        let now = Instant::now();
        let later = now + Duration::from_secs(2);
        faults.add(
            ScriptedFault::new("PATCH", 403, 104, "No scopes.").times(2),
            Lasting::Times(2),
        );
        faults.add(
            ScriptedFault::new("GET", 503, 503, "Busy.").path_prefix("/v2/users/"),
            Lasting::Until(now + Duration::from_secs(1)),
        );
        faults.add(
            ScriptedFault::new("DELETE", 404, 4130, "Gone."),
            Lasting::UntilCleared,
        );
        let status = |f: Option<Fault>| match f {
            Some(Fault::Answer { status, code, .. }) => Some((status, code)),
            _ => None,
        };
        let patch = "/v2/groups/g/members/u";
        let patches: Vec<_> = (0..3)
            .map(|_| status(faults.pick("PATCH", patch, now)))
            .collect();
        assert_eq!(patches, [Some((403, 104)), Some((403, 104)), None]);
        let user = "/v2/users/u";
        assert_eq!(
            status(faults.pick("GET", user, now)),
            Some((429, 429)),
            "the seed's first"
        );
        assert_eq!(status(faults.pick("GET", user, now)), Some((503, 503)));
        assert_eq!(
            status(faults.pick("GET", user, later)),
            None,
            "its time is up"
        );
        for _ in 0..3 {
            assert_eq!(
                status(faults.pick("DELETE", patch, later)),
                Some((404, 4130))
            );
        }
        faults.clear();
        assert_eq!(faults.pick("DELETE", patch, later), None);
        faults.add(
            ScriptedFault::new("GET", 500, 500, "x"),
            Lasting::UntilCleared,
        );
        faults.reset();
        assert!(
            faults.pick("GET", user, now).is_some(),
            "the seed's script is back"
        );
        assert_eq!(faults.pick("GET", user, now), None, "and only it");
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
