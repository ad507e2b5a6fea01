//! The retry policy of `[retry]` and the server's "come back later" headers.
//!
//! Retries sit around one Zoom call. backon produces the exponential steps;
//! [`Budget`] turns each step into full jitter, prefers a wait the server
//! named, and ends the retries when the budget would be overrun.

use std::time::{Duration, SystemTime};

use backon::ExponentialBuilder;
use reqwest::header::HeaderMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

use crate::config::RetrySettings;

/// The exponential steps (no jitter here: [`Budget::next_wait`] applies full
/// jitter itself, since backon's jitter only ever adds to the step).
pub fn exponential(settings: &RetrySettings) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(settings.initial_interval())
        .with_max_delay(settings.max_interval())
        .with_factor(2.0)
        .without_max_times()
}

/// Why retrying one call stopped before it succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The next wait would end after the budget: give up (`retries_exhausted`).
    BudgetSpent,
    /// Zoom's rate limit holds calls back past the budget (a daily limit):
    /// hand the event back to the broker until `until`. Rate limits are the
    /// account's state, never the event's fault, so they never dead-letter.
    RateLimitedPastBudget { until: Instant },
}

/// Tracks one call's retry budget (`retry.max_elapsed_secs`).
#[derive(Debug, Clone)]
pub struct Budget {
    deadline: Instant,
    stopped: Option<Stop>,
}

impl Budget {
    pub fn start(settings: &RetrySettings) -> Self {
        Self {
            deadline: Instant::now() + settings.max_elapsed(),
            stopped: None,
        }
    }

    /// The wait before the next try, or `None` to stop (the reason is kept in
    /// [`Budget::stopped`]). `step` is backon's next exponential step;
    /// `server_wait` what the server asked for; `rate_limited` whether the
    /// failure was a 429.
    pub fn next_wait(
        &mut self,
        step: Option<Duration>,
        server_wait: Option<Duration>,
        rate_limited: bool,
    ) -> Option<Duration> {
        let now = Instant::now();
        let wait = match (server_wait, rate_limited) {
            (Some(wait), true) if now + wait > self.deadline => {
                self.stopped = Some(Stop::RateLimitedPastBudget { until: now + wait });
                return None;
            }
            (Some(wait), _) => wait,
            (None, _) => full_jitter(step?),
        };
        if now + wait > self.deadline {
            self.stopped = Some(Stop::BudgetSpent);
            return None;
        }
        Some(wait)
    }

    /// A budget that ends at `deadline` (the event's, shared by its calls).
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            stopped: None,
        }
    }

    pub fn stopped(&self) -> Option<Stop> {
        self.stopped
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// "Full jitter": a uniformly random wait between zero and the step, so many
/// clients failing together do not retry together.
fn full_jitter(step: Duration) -> Duration {
    step.mul_f64(fastrand::f64())
}

/// How long the server asked us to wait: `Retry-After` (delta-seconds,
/// HTTP-date or ISO-8601 date-time), else `X-RateLimit-Reset` (epoch seconds
/// or a date-time). `None` when neither is present or readable.
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    header("retry-after")
        .and_then(|v| parse_retry_after(v, now))
        .or_else(|| header("x-ratelimit-reset").and_then(|v| parse_rate_limit_reset(v, now)))
}

/// `Retry-After` in any of the three forms Zoom and proxies send.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    parse_date_time(value).map(|at| until(at, now))
}

/// `X-RateLimit-Reset`: Unix epoch seconds, or a date-time.
fn parse_rate_limit_reset(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(epoch) = value.parse::<u64>() {
        return Some(until(
            SystemTime::UNIX_EPOCH + Duration::from_secs(epoch),
            now,
        ));
    }
    parse_date_time(value).map(|at| until(at, now))
}

fn parse_date_time(value: &str) -> Option<SystemTime> {
    if let Ok(at) = httpdate::parse_http_date(value) {
        return Some(at);
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// A moment in the past means "now".
fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn now() -> SystemTime {
        // 2026-11-26T09:00:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_683_600)
    }

    #[test]
    fn retry_after_in_all_three_forms() {
        assert_eq!(parse_retry_after("2", now()), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 09:00:05 GMT", now()),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("2026-11-26T09:00:07Z", now()),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("2026-11-26T10:00:07+01:00", now()),
            Some(Duration::from_secs(7))
        );
        // Zoom's daily limit resets at midnight UTC.
        assert_eq!(
            parse_retry_after("2026-11-27T00:00:00Z", now()),
            Some(Duration::from_secs(15 * 3600))
        );
        assert_eq!(
            parse_retry_after("2026-11-26T08:00:00Z", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
    }

    #[test]
    fn rate_limit_reset_is_used_when_retry_after_is_absent() {
        let mut headers = HeaderMap::new();
        assert_eq!(server_wait(&headers, now()), None);
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1795683603"));
        assert_eq!(server_wait(&headers, now()), Some(Duration::from_secs(3)));
        headers.insert("retry-after", HeaderValue::from_static("1"));
        assert_eq!(server_wait(&headers, now()), Some(Duration::from_secs(1)));
    }

    fn settings(max_elapsed_secs: u64) -> RetrySettings {
        RetrySettings {
            initial_interval_ms: 100,
            max_interval_ms: 1000,
            max_elapsed_secs,
        }
    }

    #[test]
    fn steps_grow_and_are_capped() {
        use backon::BackoffBuilder;
        let steps: Vec<_> = exponential(&settings(60)).build().take(6).collect();
        let ms: Vec<_> = steps.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
    }

    #[tokio::test]
    async fn full_jitter_stays_within_the_step() {
        let mut budget = Budget::start(&settings(60));
        for _ in 0..100 {
            let wait = budget
                .next_wait(Some(Duration::from_millis(800)), None, false)
                .unwrap();
            assert!(wait <= Duration::from_millis(800));
        }
    }

    #[tokio::test]
    async fn server_wait_wins_and_a_long_rate_limit_hands_back() {
        let mut budget = Budget::start(&settings(5));
        let step = Some(Duration::from_millis(100));
        let two = Some(Duration::from_secs(2));
        assert_eq!(budget.next_wait(step, two, true), two);
        assert_eq!(
            budget.next_wait(None, Some(Duration::from_secs(60)), true),
            None
        );
        assert!(matches!(
            budget.stopped(),
            Some(Stop::RateLimitedPastBudget { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_spends_the_budget() {
        let mut budget = Budget::start(&settings(2));
        tokio::time::advance(Duration::from_millis(1500)).await;
        // A 503's Retry-After past the deadline: the budget is spent.
        assert_eq!(
            budget.next_wait(None, Some(Duration::from_secs(1)), false),
            None
        );
        assert_eq!(budget.stopped(), Some(Stop::BudgetSpent));
    }
}
