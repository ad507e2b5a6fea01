//! What the fake answered, per rate-limit category, so a test or a benchmark
//! can tell how many calls Zoom would have refused and why.

use serde::{Deserialize, Serialize};

use super::limits::Category;

/// How one API call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// 2xx.
    Ok,
    /// 4xx other than 429: unknown group or user, not a member, bad body,
    /// bad token.
    Rejected,
    /// 429 for the per-second limit.
    LimitedQps,
    /// 429 for the daily limit.
    LimitedDaily,
    /// An injected fault (random or scripted), whatever its status.
    Fault,
}

/// One category's counts; `calls` is the sum of the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub calls: u64,
    pub ok: u64,
    pub rejected: u64,
    pub limited_qps: u64,
    pub limited_daily: u64,
    pub faults: u64,
}

impl Counts {
    fn add(&mut self, tally: Tally) {
        self.calls += 1;
        match tally {
            Tally::Ok => self.ok += 1,
            Tally::Rejected => self.rejected += 1,
            Tally::LimitedQps => self.limited_qps += 1,
            Tally::LimitedDaily => self.limited_daily += 1,
            Tally::Fault => self.faults += 1,
        }
    }
}

/// Counts per category and over all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub light: Counts,
    pub medium: Counts,
    pub heavy: Counts,
    pub total: Counts,
}

impl Counters {
    pub fn record(&mut self, category: Category, tally: Tally) {
        self.get_mut(category).add(tally);
        self.total.add(tally);
    }

    pub fn get(&self, category: Category) -> Counts {
        match category {
            Category::Light => self.light,
            Category::Medium => self.medium,
            Category::Heavy => self.heavy,
        }
    }

    fn get_mut(&mut self, category: Category) -> &mut Counts {
        match category {
            Category::Light => &mut self.light,
            Category::Medium => &mut self.medium,
            Category::Heavy => &mut self.heavy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_over_categories() {
        let mut c = Counters::default();
        c.record(Category::Light, Tally::Ok);
        c.record(Category::Medium, Tally::LimitedQps);
        c.record(Category::Medium, Tally::Fault);
        assert_eq!(c.get(Category::Medium).calls, 2);
        assert_eq!((c.total.calls, c.total.ok, c.total.limited_qps), (3, 1, 1));
    }
}
