//! One gate in front of every Zoom call of the account.
//!
//! Zoom's rate limits are per account, shared by every app on it, so the
//! limit is enforced here once: a steady `requests_per_second` (governor,
//! no burst) and a "closed until" instant that a 429 sets for every call.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use super::wait::MAX_SERVER_WAIT;

pub struct RateGate {
    limiter: DefaultDirectRateLimiter,
    closed_until: Mutex<Option<Instant>>,
}

impl RateGate {
    pub fn new(requests_per_second: NonZeroU32) -> Self {
        // No burst: calls are spaced evenly, so no one-second window sees more
        // than the configured rate (plus the one at its edge).
        let quota = Quota::per_second(requests_per_second).allow_burst(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(quota),
            closed_until: Mutex::new(None),
        }
    }

    /// Waits until a call may go out. Fails with the instant the gate opens
    /// when that is after `deadline`: the caller must not wait that long.
    pub async fn admit(&self, deadline: Instant) -> Result<(), Instant> {
        loop {
            match self.closed_until() {
                Some(until) if until > deadline => return Err(until),
                Some(until) => tokio::time::sleep_until(until).await,
                None => {
                    self.limiter.until_ready().await;
                    // A 429 may have closed the gate while this call waited
                    // for its turn: then the turn is given up.
                    if self.closed_until().is_none() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Holds every call back for `wait` (a 429's wait); never shortens a
    /// longer closure already in force. The wait is capped at
    /// [`MAX_SERVER_WAIT`] and the sum checked, so no header can panic here.
    pub fn close_for(&self, wait: Duration) {
        // Only a monotonic clock near its end could fail the capped sum;
        // then there is no instant to close until, and the gate stays as is.
        let Some(until) = Instant::now().checked_add(wait.min(MAX_SERVER_WAIT)) else {
            return;
        };
        let mut closed = self.closed_until.lock().unwrap_or_else(|e| e.into_inner());
        if closed.is_none_or(|current| current < until) {
            *closed = Some(until);
        }
    }

    /// When the gate is closed: the instant it opens again.
    pub fn closed_until(&self) -> Option<Instant> {
        let closed = *self.closed_until.lock().unwrap_or_else(|e| e.into_inner());
        closed.filter(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_closed_gate_holds_calls_until_it_opens() {
        let gate = RateGate::new(NonZeroU32::new(1000).unwrap());
        gate.close_for(Duration::from_secs(2));
        let start = Instant::now();
        gate.admit(start + Duration::from_secs(10)).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_closure_does_not_panic_and_lasts_a_day() {
        let gate = RateGate::new(NonZeroU32::new(10).unwrap());
        let now = Instant::now();
        gate.close_for(Duration::MAX);
        assert_eq!(gate.closed_until(), Some(now + MAX_SERVER_WAIT));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closure_past_the_deadline_is_refused() {
        let gate = RateGate::new(NonZeroU32::new(10).unwrap());
        gate.close_for(Duration::from_secs(60));
        gate.close_for(Duration::from_secs(1));
        let now = Instant::now();
        let opens = gate.admit(now + Duration::from_secs(5)).await.unwrap_err();
        assert!(opens >= now + Duration::from_secs(60));
    }
}
