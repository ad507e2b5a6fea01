//! The account's rate budget, one gate per Zoom rate-limit category.
//!
//! Zoom limits calls per account and per category, so every call draws from
//! its endpoint's category only: a lookup (Light) does not slow the group
//! writes (Medium), and a 429 closes only the gate of the category it
//! names. Each gate spaces calls evenly at its current rate (governor, no
//! burst), holds them back while a 429's wait lasts ("closed until"), and
//! paces at the [`AdaptiveShare`] of its configured rate.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use super::category::Category;
use super::share::AdaptiveShare;
use super::wait::MAX_SERVER_WAIT;
use crate::settings::RateLimits;

/// One gate per category.
pub struct RateBudgets {
    gates: [CategoryGate; 3],
}

/// What `/readyz` and the metrics show of one category.
#[derive(Debug, Clone, Copy)]
pub struct RateReport {
    pub category: Category,
    pub configured: f64,
    pub effective: f64,
}

impl RateBudgets {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            gates: [
                CategoryGate::new(limits.light),
                CategoryGate::new(limits.medium),
                CategoryGate::new(limits.heavy),
            ],
        }
    }

    pub fn gate(&self, category: Category) -> &CategoryGate {
        &self.gates[category.index()]
    }

    pub fn report(&self) -> Vec<RateReport> {
        Category::ALL
            .iter()
            .map(|&category| {
                let share = self.gate(category).share();
                RateReport {
                    category,
                    configured: share.configured(),
                    effective: share.effective(),
                }
            })
            .collect()
    }
}

pub struct CategoryGate {
    /// Swapped for a new one when the rate changes: governor's quota is fixed.
    pacer: RwLock<Arc<DefaultDirectRateLimiter>>,
    closed_until: Mutex<Option<Instant>>,
    share: Mutex<AdaptiveShare>,
}

impl CategoryGate {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            pacer: RwLock::new(Arc::new(pacer(rate))),
            closed_until: Mutex::new(None),
            share: Mutex::new(AdaptiveShare::new(rate)),
        }
    }

    /// Waits until a call may go out. Fails with the instant the gate opens
    /// when that is after `deadline`, or with `deadline` when the call's
    /// turn at the pacer comes later: the caller must not wait that long.
    pub async fn admit(&self, deadline: Instant) -> Result<(), Instant> {
        loop {
            match self.closed_until() {
                Some(until) if until > deadline => return Err(until),
                Some(until) => tokio::time::sleep_until(until).await,
                None => {
                    let pacer = self.current_pacer();
                    // A turn that would come after the deadline is not
                    // waited for: the caller's budget ends there.
                    if tokio::time::timeout_at(deadline, pacer.until_ready())
                        .await
                        .is_err()
                    {
                        return Err(deadline);
                    }
                    // A 429 may have closed the gate, or a new rate replaced
                    // the pacer, while this call waited for its turn: then
                    // the turn is given up and taken again.
                    if self.closed_until().is_none() && Arc::ptr_eq(&pacer, &self.current_pacer()) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Holds every call of the category back for `wait` (a 429's wait);
    /// never shortens a longer closure already in force. The wait is capped
    /// at [`MAX_SERVER_WAIT`] and the sum checked, so no header can panic here.
    pub fn close_for(&self, wait: Duration) {
        // Only a monotonic clock near its end could fail the capped sum;
        // then there is no instant to close until, and the gate stays as is.
        let Some(until) = Instant::now().checked_add(wait.min(MAX_SERVER_WAIT)) else {
            return;
        };
        let mut closed = lock(&self.closed_until);
        if closed.is_none_or(|current| current < until) {
            *closed = Some(until);
        }
    }

    /// When the gate is closed: the instant it opens again.
    pub fn closed_until(&self) -> Option<Instant> {
        let closed = *lock(&self.closed_until);
        closed.filter(|until| *until > Instant::now())
    }

    /// A per-second 429 for a call sent at `sent`: the rate is cut (once per
    /// round). Returns the new rate when it changed.
    pub fn on_rate_limited(&self, sent: Instant) -> Option<f64> {
        // The pacer is swapped under the share's lock, so two changes at
        // once cannot leave it pacing at the older rate.
        let mut share = lock(&self.share);
        let rate = share.on_rate_limited(sent, Instant::now())?;
        self.repace(rate);
        Some(rate)
    }

    /// A call answered without a 429: the rate is won back a little.
    /// Returns the new rate when the pacer changed.
    pub fn on_answered(&self) -> Option<f64> {
        let mut share = lock(&self.share);
        let rate = share.on_answered()?;
        self.repace(rate);
        Some(rate)
    }

    fn share(&self) -> AdaptiveShare {
        lock(&self.share).clone()
    }

    fn current_pacer(&self) -> Arc<DefaultDirectRateLimiter> {
        Arc::clone(&self.pacer.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A new pacer at `rate`, its first cell already taken: a call just let
    /// through by the old pacer is followed by a full interval, not a burst.
    fn repace(&self, rate: f64) {
        let next = pacer(rate);
        let _ = next.check();
        *self.pacer.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }
}

/// Calls spaced evenly at `per_second` (which may be fractional), no burst:
/// no one-second window sees more than the rate (plus the one at its edge).
fn pacer(per_second: f64) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / per_second.max(0.001));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(NonZeroU32::MIN);
    RateLimiter::direct(quota)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(per_second: u32) -> RateBudgets {
        RateBudgets::new(RateLimits {
            light: per_second,
            medium: per_second,
            heavy: per_second,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_gate_holds_calls_until_it_opens() {
        let budgets = budgets(1000);
        let gate = budgets.gate(Category::Medium);
        gate.close_for(Duration::from_secs(2));
        let start = Instant::now();
        gate.admit(start + Duration::from_secs(10)).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_gate_holds_back_only_its_category() {
        let budgets = budgets(1000);
        budgets
            .gate(Category::Light)
            .close_for(Duration::from_secs(60));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        budgets
            .gate(Category::Medium)
            .admit(deadline)
            .await
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(budgets.gate(Category::Light).admit(deadline).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_closure_does_not_panic_and_lasts_a_day() {
        let budgets = budgets(10);
        let gate = budgets.gate(Category::Light);
        let now = Instant::now();
        gate.close_for(Duration::MAX);
        assert_eq!(gate.closed_until(), Some(now + MAX_SERVER_WAIT));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closure_past_the_deadline_is_refused() {
        let budgets = budgets(10);
        let gate = budgets.gate(Category::Heavy);
        gate.close_for(Duration::from_secs(60));
        gate.close_for(Duration::from_secs(1));
        let now = Instant::now();
        let opens = gate.admit(now + Duration::from_secs(5)).await.unwrap_err();
        assert!(opens >= now + Duration::from_secs(60));
    }

    /// Calls queued behind the pacer give up at their deadline instead of
    /// waiting their turn past it (real time: governor keeps its own clock).
    #[tokio::test]
    async fn no_call_waits_for_its_turn_past_its_deadline() {
        let budgets = Arc::new(budgets(10));
        let start = Instant::now();
        let deadline = start + Duration::from_millis(300);
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let budgets = Arc::clone(&budgets);
                tokio::spawn(async move {
                    let admitted = budgets.gate(Category::Medium).admit(deadline).await;
                    (admitted, Instant::now())
                })
            })
            .collect();
        let mut refused = 0;
        for call in calls {
            let (admitted, at) = call.await.unwrap();
            if admitted.is_err() {
                refused += 1;
                assert!(at >= deadline, "refused only at the deadline");
            }
            assert!(
                at < deadline + Duration::from_millis(150),
                "answered {:?} after the start",
                at - start
            );
        }
        assert!(
            refused >= 10,
            "at 10/s most of 20 calls miss a 300 ms deadline: {refused}"
        );
    }

    #[test]
    fn a_cut_shows_in_the_report_of_its_category_only() {
        let budgets = budgets(20);
        let sent = Instant::now();
        assert_eq!(
            budgets.gate(Category::Medium).on_rate_limited(sent),
            Some(16.0)
        );
        let report = budgets.report();
        let effective: Vec<f64> = report.iter().map(|r| r.effective).collect();
        assert_eq!(effective, [20.0, 16.0, 20.0]);
    }
}
