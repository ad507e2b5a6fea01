//! The adaptive share of one category's budget.
//!
//! Zoom's per-second limits are the account's, shared with every other app
//! on it, and nothing tells the daemon what the others use. A per-second 429
//! although the daemon kept to its own limit is the only sign: then the
//! rate is cut (multiplicatively) and won back (additively) while calls
//! succeed, as TCP does with its window. Won back quickly while well below
//! the rate of the last cut, slowly near it (where the last 429 came), and
//! quickly again past it (the others may have left).

use tokio::time::Instant;

/// A cut keeps this share of the rate.
const CUT: f64 = 0.8;
/// Far from the last cut's rate: each call answered wins back this share of
/// the configured rate (a full recovery in about 100 calls).
const FAST_STEP: f64 = 0.01;
/// Near the last cut's rate (within [`NEAR`]): each call wins back this
/// share of that rate, so climbing back to it takes about 200 calls and
/// probing past it costs one or two 429s per climb: under 1 % of the calls.
const SLOW_STEP: f64 = 0.00025;
const NEAR: f64 = 0.05;
/// The limiter is re-paced when the rate moved this much (a share of it).
const REPACE: f64 = 0.01;

#[derive(Debug, Clone)]
pub struct AdaptiveShare {
    configured: f64,
    effective: f64,
    /// The rate the limiter paces at now.
    paced: f64,
    floor: f64,
    /// The rate when the last cut came: where the other apps' use began.
    ceiling: Option<f64>,
    last_cut: Option<Instant>,
}

impl AdaptiveShare {
    pub fn new(configured: f64) -> Self {
        Self {
            configured,
            effective: configured,
            paced: configured,
            floor: configured.min(1.0),
            ceiling: None,
            last_cut: None,
        }
    }

    pub fn configured(&self) -> f64 {
        self.configured
    }

    pub fn effective(&self) -> f64 {
        self.effective
    }

    /// A per-second 429 for a call sent at `sent`. Cuts the rate once per
    /// round: calls sent before the last cut did not see it yet, so their
    /// 429s say nothing new. Returns the rate to pace at when it changed.
    pub fn on_rate_limited(&mut self, sent: Instant, now: Instant) -> Option<f64> {
        if self.last_cut.is_some_and(|cut| sent < cut) {
            return None;
        }
        let before = self.effective;
        self.ceiling = Some(before);
        self.effective = (before * CUT).max(self.floor);
        self.last_cut = Some(now);
        // At the floor already: nothing to re-pace, nothing to report.
        if self.effective == before {
            return None;
        }
        self.repace(true)
    }

    /// A call answered without a 429. Returns the rate to pace at when it
    /// moved enough to re-pace.
    pub fn on_answered(&mut self) -> Option<f64> {
        if self.effective >= self.configured {
            return None;
        }
        let step = match self.ceiling {
            Some(ceiling) if (self.effective - ceiling).abs() <= ceiling * NEAR => {
                ceiling * SLOW_STEP
            }
            _ => self.configured * FAST_STEP,
        };
        self.effective = (self.effective + step).min(self.configured);
        self.repace(false)
    }

    fn repace(&mut self, now: bool) -> Option<f64> {
        let moved = (self.effective - self.paced).abs() >= self.paced * REPACE;
        let restored = self.effective == self.configured && self.paced != self.configured;
        if now || moved || restored {
            self.paced = self.effective;
            return Some(self.effective);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_429_cuts_the_rate_once_per_round() {
        let mut share = AdaptiveShare::new(20.0);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(share.on_rate_limited(t0, t1), Some(16.0));
        // Sent before the cut: the same news, no second cut.
        assert_eq!(share.on_rate_limited(t0, t1), None);
        // Sent after it: the lower rate is still too high.
        let t2 = t1 + Duration::from_millis(100);
        assert_eq!(share.on_rate_limited(t2, t2), Some(12.8));
    }

    #[test]
    fn a_cut_at_the_floor_changes_nothing_and_says_so() {
        let mut share = AdaptiveShare::new(1.0);
        let t = Instant::now();
        assert_eq!(share.on_rate_limited(t, t), None);
        assert_eq!(share.effective(), 1.0);
    }

    #[test]
    fn the_rate_never_falls_below_one_per_second() {
        let mut share = AdaptiveShare::new(20.0);
        let mut t = Instant::now();
        for _ in 0..100 {
            t += Duration::from_secs(1);
            share.on_rate_limited(t, t);
        }
        assert_eq!(share.effective(), 1.0);
    }

    #[test]
    fn the_rate_is_won_back_quickly_far_from_the_cut_and_slowly_near_it() {
        let mut share = AdaptiveShare::new(20.0);
        let t = Instant::now();
        // Others use half: the cut came at 10/s.
        share.effective = 10.0;
        share.on_rate_limited(t, t);
        assert_eq!(share.effective(), 8.0);
        let calls_to = |share: &mut AdaptiveShare, rate: f64| {
            (1..10_000)
                .find(|_| {
                    share.on_answered();
                    share.effective() >= rate
                })
                .unwrap()
        };
        let fast = calls_to(&mut share, 9.5);
        let slow = calls_to(&mut share, 10.0);
        assert!(fast <= 10, "8 → 9.5 in {fast} calls");
        assert!((140..=220).contains(&slow), "9.5 → 10 in {slow} calls");
        // Slowly through the rest of the near zone, then (the others may
        // have left) fast again.
        let near = calls_to(&mut share, 10.5);
        assert!((180..=220).contains(&near), "10 → 10.5 in {near} calls");
        let beyond = calls_to(&mut share, 20.0);
        assert!(beyond <= 50, "10.5 → 20 in {beyond} calls");
        assert_eq!(share.on_answered(), None, "at the configured rate");
    }

    #[test]
    fn small_steps_re_pace_only_when_the_rate_moved_enough() {
        let mut share = AdaptiveShare::new(20.0);
        let t = Instant::now();
        share.on_rate_limited(t, t);
        // 16 → 19 quickly, 19 → 20 slowly (near the cut's rate, 20).
        let repaced = (0..300).filter(|_| share.on_answered().is_some()).count();
        assert!(
            (1..=30).contains(&repaced),
            "{repaced} re-pacings in 300 calls"
        );
        assert_eq!(share.effective(), 20.0);
        assert_eq!(share.paced, 20.0, "the last step restores the exact rate");
    }
}
