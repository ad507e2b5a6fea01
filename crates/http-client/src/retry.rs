//! The retry policy of `[retry]`.
//!
//! Retries sit around one Zoom call. backon produces the exponential steps;
//! [`Budget`] turns each step into full jitter, waits at least as long as the
//! server asked, and ends the retries when the budget would be overrun.
//! Reading the server's headers is HTTP's business: see [`crate::wait`].

use std::time::Duration;

use backon::ExponentialBuilder;
use tokio::time::Instant;

use crate::RetrySettings;
use crate::wait::MAX_SERVER_WAIT;

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
    /// A budget of `retry.max_elapsed_secs` from now (bounded by the config
    /// check; a day at most, should it ever not be).
    pub fn start(settings: &RetrySettings) -> Self {
        let budget = settings.max_elapsed().min(Duration::from_secs(24 * 3600));
        Self::until(Instant::now() + budget)
    }

    /// The wait before the next try, or `None` to stop (the reason is kept in
    /// [`Budget::stopped`]). `step` is backon's next exponential step;
    /// `server_wait` what the server asked for; `rate_limited` whether the
    /// failure was a 429.
    ///
    /// The wait is the longer of the server's wait and the jittered step: a
    /// `Retry-After: 0` (or a date in the past) must not turn the backoff
    /// into a busy loop. No wait exceeds [`MAX_SERVER_WAIT`], and no sum can
    /// overflow, whatever the server sent.
    pub fn next_wait(
        &mut self,
        step: Option<Duration>,
        server_wait: Option<Duration>,
        rate_limited: bool,
    ) -> Option<Duration> {
        let jittered = step.map(|step| full_jitter(step.min(MAX_SERVER_WAIT)));
        let wait = match (server_wait, jittered) {
            (Some(server), Some(jittered)) => server.max(jittered),
            (Some(server), None) => server,
            (None, Some(jittered)) => jittered,
            (None, None) => return None,
        }
        .min(MAX_SERVER_WAIT);
        let now = Instant::now();
        let ends = now.checked_add(wait);
        if ends.is_some_and(|ends| ends <= self.deadline) {
            return Some(wait);
        }
        self.stopped = Some(match (server_wait, rate_limited) {
            // The server named when the limit lifts: hand the event back
            // until then (the deadline only if `Instant` cannot hold it).
            (Some(_), true) => Stop::RateLimitedPastBudget {
                until: ends.unwrap_or(self.deadline),
            },
            _ => Stop::BudgetSpent,
        });
        None
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[tokio::test]
    async fn a_huge_server_wait_does_not_panic_the_budget() {
        let mut budget = Budget::start(&settings(5));
        let step = Some(Duration::from_millis(100));
        assert_eq!(budget.next_wait(step, Some(Duration::MAX), true), None);
        assert_eq!(budget.next_wait(step, Some(Duration::MAX), false), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_rate_limit_hands_back_for_at_most_a_day() {
        let mut budget = Budget::start(&settings(5));
        let now = Instant::now();
        assert_eq!(budget.next_wait(None, Some(Duration::MAX), true), None);
        assert_eq!(
            budget.stopped(),
            Some(Stop::RateLimitedPastBudget {
                until: now + MAX_SERVER_WAIT
            })
        );
    }

    /// Any step and any server wait, `Duration::MAX` included.
    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::MAX),
            Just(Duration::ZERO),
            (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
            (0..10_000u64).prop_map(Duration::from_millis),
        ]
    }

    proptest! {
        #[test]
        fn next_wait_never_panics_and_stays_under_the_cap(
            step in proptest::option::of(any_duration()),
            server in proptest::option::of(any_duration()),
            rate_limited in any::<bool>(),
            budget_secs in prop_oneof![Just(1u64), Just(2 * 24 * 3600)],
        ) {
            let mut budget = Budget::start(&settings(budget_secs));
            let wait = budget.next_wait(step, server, rate_limited);
            prop_assert!(wait.is_none_or(|w| w <= MAX_SERVER_WAIT));
            if let (Some(wait), Some(server)) = (wait, server) {
                prop_assert!(
                    wait >= server.min(MAX_SERVER_WAIT),
                    "never shorter than the server asked (up to the cap)"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_zero_server_wait_still_waits_the_jittered_step() {
        let mut budget = Budget::start(&settings(60));
        let step = Duration::from_millis(400);
        let waits: Vec<_> = (0..100)
            .map(|_| budget.next_wait(Some(step), Some(Duration::ZERO), false))
            .collect();
        assert!(
            waits.iter().all(|w| w.is_some_and(|w| w <= step)),
            "{waits:?}"
        );
        assert!(
            waits.iter().any(|w| w.is_some_and(|w| w > Duration::ZERO)),
            "never waited"
        );
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
