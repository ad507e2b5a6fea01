//! The open connections of one listener, and the cap on them.
//!
//! At the cap, a new connection is still accepted when some open one has
//! only been waiting for a request long enough (its headers unfinished for
//! 250 ms, silent for 1 s, or kept alive unused for 2 s; see
//! [`ConnState::eviction_rank`]): one is closed to make room, half-sent ones
//! first, then silent, then kept-alive ones, oldest first. So a crowd of half-open connections cannot starve a real client,
//! and neither file descriptors nor memory grow past the cap. Otherwise
//! (every connection is handling a request, or has just connected),
//! accepting pauses until one finishes or ages: new clients wait in the
//! kernel's listen backlog, they are not refused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::conn::ConnState;

/// How often a full listener looks again for a connection it may close.
const RECHECK: Duration = Duration::from_millis(50);

pub struct Registry {
    cap: usize,
    open: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
    /// A connection closed or finished handling: there may be room.
    freed: Notify,
}

/// A connection's place under the cap; dropping it gives the place back.
pub struct Entry {
    registry: Arc<Registry>,
    pub state: Arc<ConnState>,
}

impl Registry {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            open: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    /// Returns once a new connection can be taken: under the cap, or some
    /// open connection can be evicted.
    pub async fn room(&self) {
        while !self.has_room() {
            self.wait().await;
        }
    }

    /// Until a connection closes or finishes a request, or a waiting one
    /// may have aged enough to be evicted.
    async fn wait(&self) {
        let _ = tokio::time::timeout(RECHECK, self.freed.notified()).await;
    }

    fn has_room(&self) -> bool {
        let open = self.lock();
        open.len() < self.cap || Self::oldest_evictable(&open).is_some()
    }

    fn oldest_evictable(open: &BTreeMap<u64, Arc<ConnState>>) -> Option<u64> {
        let now = Instant::now();
        open.values()
            .filter_map(|c| c.eviction_rank(now))
            .min()
            .map(|(_, seq)| seq)
    }

    /// Takes a place for a new connection, closing the oldest waiting one
    /// when at the cap. `None` when every place is handling a request (the
    /// caller closes the new connection).
    pub fn admit(self: &Arc<Self>) -> Option<Entry> {
        let mut open = self.lock();
        if open.len() >= self.cap {
            let oldest = Self::oldest_evictable(&open)?;
            if let Some(evicted) = open.remove(&oldest) {
                tracing::debug!(
                    cap = self.cap,
                    "connection cap reached: closing the oldest connection that has no request"
                );
                evicted.evict.cancel();
            }
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(seq));
        open.insert(seq, Arc::clone(&state));
        Some(Entry {
            registry: Arc::clone(self),
            state,
        })
    }

    /// [`Registry::admit`], waiting for room if every place is handling a
    /// request (a connection accepted since [`Registry::room`] returned).
    pub async fn admit_when_room(self: &Arc<Self>) -> Entry {
        loop {
            if let Some(entry) = self.admit() {
                return entry;
            }
            self.wait().await;
        }
    }

    /// A connection finished handling a request: it may be evicted now.
    pub fn freed(&self) {
        self.freed.notify_one();
    }

    /// At the cap: answers close their connection rather than keep it
    /// alive.
    pub fn is_full(&self) -> bool {
        self.lock().len() >= self.cap
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.state.seq);
        self.registry.freed();
    }
}

#[cfg(test)]
mod tests {
    use super::super::conn::{
        HALF_SENT_EVICTABLE_AFTER, KEPT_ALIVE_EVICTABLE_AFTER, Phase, SILENT_EVICTABLE_AFTER,
    };
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_oldest_waiting_connection_makes_room() {
        let registry = Registry::new(2);
        let first = registry.admit().unwrap();
        let second = registry.admit().unwrap();
        first.state.set(Phase::Handling);
        tokio::time::advance(KEPT_ALIVE_EVICTABLE_AFTER).await;
        assert!(registry.admit().is_none(), "the second was never read from");
        second.state.set(Phase::Headers);
        assert!(registry.admit().is_none(), "the second has just begun");
        tokio::time::advance(HALF_SENT_EVICTABLE_AFTER).await;
        let third = registry.admit().expect("the second is stuck mid-headers");
        assert!(second.state.evict.is_cancelled());
        assert!(!first.state.evict.is_cancelled());
        assert_eq!(registry.len(), 2);
        third.state.set(Phase::Handling);
        tokio::time::advance(KEPT_ALIVE_EVICTABLE_AFTER).await;
        assert!(registry.admit().is_none(), "both are handling a request");
        assert!(!registry.has_room());
        drop(first);
        assert!(registry.has_room());
    }

    #[tokio::test(start_paused = true)]
    async fn half_sent_then_silent_then_kept_alive_each_after_its_own_wait() {
        let registry = Registry::new(3);
        let kept = registry.admit().unwrap();
        kept.state.set(Phase::KeepAlive);
        let silent = registry.admit().unwrap();
        silent.state.set(Phase::Idle);
        let half = registry.admit().unwrap();
        half.state.set(Phase::Headers);
        tokio::time::advance(HALF_SENT_EVICTABLE_AFTER).await;
        let _new = registry.admit().unwrap();
        assert!(half.state.evict.is_cancelled(), "the half-sent one first");
        assert!(registry.admit().is_none(), "the silent one may still write");
        tokio::time::advance(SILENT_EVICTABLE_AFTER).await;
        let _newer = registry.admit().unwrap();
        assert!(silent.state.evict.is_cancelled());
        assert!(!kept.state.evict.is_cancelled());
        tokio::time::advance(KEPT_ALIVE_EVICTABLE_AFTER).await;
        let _newest = registry.admit().unwrap();
        assert!(kept.state.evict.is_cancelled());
    }
}
