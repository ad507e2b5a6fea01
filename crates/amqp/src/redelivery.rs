//! Counting redeliveries on queues that do not (classic queues have no
//! delivery count; quorum queues have one, and the broker's own
//! `delivery-limit` dead-letters past it).
//!
//! A delivery that comes back `redelivered` without the daemon having handed
//! it back itself was lost while it ran: the session died, or the process
//! was stopped or killed. An event that keeps doing that would cycle
//! forever, so past `worker.max_redeliveries` it is dead-lettered as
//! `redelivery_limit`. Hand-backs the daemon chose (a pause, a drain,
//! shutdown) are not the event's fault and are not counted. The counts live
//! in memory: a restart forgets them.

use std::time::Duration;

use moka::sync::Cache;

const REMEMBERED: u64 = 100_000;
const REMEMBER_FOR: Duration = Duration::from_secs(24 * 3600);

pub struct Redeliveries {
    counts: Cache<String, u32>,
    handed_back: Cache<String, ()>,
    max: u32,
}

impl Redeliveries {
    pub fn new(max: u32) -> Self {
        Self {
            counts: cache(),
            handed_back: cache(),
            max,
        }
    }

    /// The daemon gave this event back on purpose: its next delivery is
    /// not counted.
    pub fn handed_back(&self, event_id: &str) {
        self.handed_back.insert(event_id.to_owned(), ());
    }

    /// Counts a delivery; `Some(count)` when it is past the limit.
    pub fn over_limit(&self, event_id: &str, redelivered: bool) -> Option<u32> {
        if !redelivered || self.handed_back.remove(event_id).is_some() {
            return None;
        }
        let count = self.counts.get(event_id).unwrap_or(0).saturating_add(1);
        self.counts.insert(event_id.to_owned(), count);
        (count > self.max).then_some(count)
    }

    /// The event was settled: forget it.
    pub fn settled(&self, event_id: &str) {
        self.counts.invalidate(event_id);
    }
}

fn cache<V: Clone + Send + Sync + 'static>() -> Cache<String, V> {
    Cache::builder()
        .max_capacity(REMEMBERED)
        .time_to_live(REMEMBER_FOR)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unexplained_redeliveries_count() {
        let r = Redeliveries::new(2);
        assert_eq!(r.over_limit("e", false), None);
        assert_eq!(r.over_limit("e", true), None);
        r.handed_back("e");
        assert_eq!(r.over_limit("e", true), None, "handed back on purpose");
        assert_eq!(r.over_limit("e", true), None);
        assert_eq!(r.over_limit("e", true), Some(3));
        r.settled("e");
        assert_eq!(r.over_limit("e", true), None);
    }
}
