//! Zoom's rate limits, per account: calls per second in each API category,
//! and optionally calls per UTC day.
//!
//! Zoom counts "per second" in fixed windows, not a sliding one, so a burst
//! that straddles a second boundary can pass twice the limit; the fake does
//! the same, with windows aligned to whole seconds of a monotonic clock that
//! starts when the fake does. A call answered 429 is not counted (Zoom does
//! not charge refused calls), so a client hammering a closed window does not
//! push the next one shut too.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

/// Zoom's body for a per-second 429 (fixture `zoom/error.429.qps.json`).
pub const QPS_MESSAGE: &str =
    "You have reached the maximum per-second rate limit for this API. Try again later.";
/// Zoom's rate-limit categories, as its API reference labels each endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Light,
    Medium,
    Heavy,
}

impl Category {
    pub const ALL: [Category; 3] = [Category::Light, Category::Medium, Category::Heavy];

    /// The value of `X-RateLimit-Category`.
    pub fn header_value(self) -> &'static str {
        match self {
            Category::Light => "Light",
            Category::Medium => "Medium",
            Category::Heavy => "Heavy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One optional limit per category; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerCategory {
    pub light: Option<u32>,
    pub medium: Option<u32>,
    pub heavy: Option<u32>,
}

impl PerCategory {
    pub fn get(&self, category: Category) -> Option<u32> {
        match category {
            Category::Light => self.light,
            Category::Medium => self.medium,
            Category::Heavy => self.heavy,
        }
    }
}

/// The account's limits: the seed's `[limits]` table. Without the table the
/// fake has Zoom's Pro plan ([`Limits::default`]); within it, a category left
/// out is unlimited, so a seed says exactly which limits it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Calls per second.
    #[serde(default)]
    pub light: Option<u32>,
    #[serde(default)]
    pub medium: Option<u32>,
    #[serde(default)]
    pub heavy: Option<u32>,
    /// Calls per UTC day; none by default.
    #[serde(default)]
    pub daily: PerCategory,
}

impl Default for Limits {
    /// Zoom's Pro plan: 30 / 20 / 10 calls per second, no daily limit.
    fn default() -> Self {
        Self {
            light: Some(30),
            medium: Some(20),
            heavy: Some(10),
            daily: PerCategory::default(),
        }
    }
}

impl Limits {
    /// No limit at all (a benchmark's baseline).
    pub fn unlimited() -> Self {
        Self {
            light: None,
            medium: None,
            heavy: None,
            daily: PerCategory::default(),
        }
    }

    pub fn per_second(&self, category: Category) -> Option<u32> {
        match category {
            Category::Light => self.light,
            Category::Medium => self.medium,
            Category::Heavy => self.heavy,
        }
    }
}

/// Whether a call may go through, and if not, which limit refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Over the per-second limit.
    Qps {
        limit: u32,
    },
    /// Over the daily limit; it resets at `resets_at` (midnight UTC).
    Daily {
        limit: u32,
        resets_at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    /// The window (second since start, or UTC day) the count belongs to.
    window: i64,
    count: u32,
}

impl Counter {
    /// The count in `window`, starting over when the window moved on.
    fn in_window(&mut self, window: i64) -> u32 {
        if self.window != window {
            *self = Counter { window, count: 0 };
        }
        self.count
    }
}

/// The account's counters. Not thread-safe by itself: it lives inside the
/// fake's one mutex, so deciding and counting are one step.
#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    start: Instant,
    seconds: [Counter; 3],
    days: [Counter; 3],
}

impl RateLimiter {
    pub fn new(limits: Limits, start: Instant) -> Self {
        Self {
            limits,
            start,
            seconds: [Counter::default(); 3],
            days: [Counter::default(); 3],
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// New limits apply from the next call; counts so far are kept.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Forgets every count (a fresh second and a fresh day).
    pub fn reset(&mut self) {
        self.seconds = [Counter::default(); 3];
        self.days = [Counter::default(); 3];
    }

    /// Time until the next one-second window opens.
    pub fn next_window_in(&self, now: Instant) -> Duration {
        let nanos = now.saturating_duration_since(self.start).subsec_nanos();
        Duration::from_secs(1) - Duration::from_nanos(u64::from(nanos))
    }

    /// Decides one call at `now` (monotonic) / `utc` (wall clock) and counts
    /// it if it is allowed. The daily limit is checked first: once it is
    /// spent, Zoom answers with it whatever the second looks like.
    pub fn admit(&mut self, category: Category, now: Instant, utc: OffsetDateTime) -> Admission {
        let i = category.index();
        let day = i64::from(utc.date().to_julian_day());
        let second =
            i64::try_from(now.saturating_duration_since(self.start).as_secs()).unwrap_or(i64::MAX);
        let daily = self.limits.daily.get(category);
        if let Some(limit) = daily
            && self.days[i].in_window(day) >= limit
        {
            return Admission::Daily {
                limit,
                resets_at: next_midnight(utc.date()),
            };
        }
        if let Some(limit) = self.limits.per_second(category)
            && self.seconds[i].in_window(second) >= limit
        {
            return Admission::Qps { limit };
        }
        self.seconds[i].in_window(second);
        self.seconds[i].count = self.seconds[i].count.saturating_add(1);
        self.days[i].in_window(day);
        self.days[i].count = self.days[i].count.saturating_add(1);
        Admission::Allowed
    }
}

/// Midnight UTC after `today`; the last representable day saturates.
fn next_midnight(today: Date) -> OffsetDateTime {
    today.next_day().unwrap_or(today).midnight().assume_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn limiter(limits: Limits) -> (RateLimiter, Instant) {
        let start = Instant::now();
        (RateLimiter::new(limits, start), start)
    }

    const NOON: OffsetDateTime = datetime!(2026-11-27 12:00 UTC);

    #[test]
    fn the_limit_holds_within_a_second_and_reopens_in_the_next() {
        let (mut rl, start) = limiter(Limits::default());
        let t = start + Duration::from_millis(300);
        let answers: Vec<_> = (0..25)
            .map(|_| rl.admit(Category::Medium, t, NOON))
            .collect();
        assert_eq!(
            answers.iter().filter(|a| **a == Admission::Allowed).count(),
            20
        );
        assert_eq!(answers[20], Admission::Qps { limit: 20 });
        let next = start + Duration::from_millis(1000);
        assert_eq!(rl.admit(Category::Medium, next, NOON), Admission::Allowed);
    }

    #[test]
    fn categories_are_counted_apart() {
        let mut limits = Limits::unlimited();
        limits.light = Some(1);
        let (mut rl, start) = limiter(limits);
        assert_eq!(rl.admit(Category::Light, start, NOON), Admission::Allowed);
        assert_eq!(
            rl.admit(Category::Light, start, NOON),
            Admission::Qps { limit: 1 }
        );
        for _ in 0..100 {
            assert_eq!(rl.admit(Category::Medium, start, NOON), Admission::Allowed);
        }
    }

    #[test]
    fn refused_calls_do_not_count() {
        let mut limits = Limits::unlimited();
        limits.medium = Some(2);
        let (mut rl, start) = limiter(limits);
        for _ in 0..10 {
            rl.admit(Category::Medium, start, NOON);
        }
        // The next window allows the full limit again, not less.
        let next = start + Duration::from_secs(1);
        assert_eq!(rl.admit(Category::Medium, next, NOON), Admission::Allowed);
        assert_eq!(rl.admit(Category::Medium, next, NOON), Admission::Allowed);
    }

    #[test]
    fn the_daily_limit_resets_at_utc_midnight() {
        let mut limits = Limits::unlimited();
        limits.daily.medium = Some(2);
        let (mut rl, start) = limiter(limits);
        let late = datetime!(2026-11-27 23:59:59 UTC);
        assert_eq!(rl.admit(Category::Medium, start, late), Admission::Allowed);
        assert_eq!(rl.admit(Category::Medium, start, late), Admission::Allowed);
        assert_eq!(
            rl.admit(Category::Medium, start, late),
            Admission::Daily {
                limit: 2,
                resets_at: datetime!(2026-11-28 00:00 UTC)
            }
        );
        let tomorrow = datetime!(2026-11-28 00:00:01 UTC);
        assert_eq!(
            rl.admit(Category::Medium, start, tomorrow),
            Admission::Allowed
        );
    }

    #[test]
    fn the_next_window_is_at_most_a_second_away() {
        let (rl, start) = limiter(Limits::default());
        let wait = rl.next_window_in(start + Duration::from_millis(2250));
        assert_eq!(wait, Duration::from_millis(750));
    }
}
