//! The open connections of one listener, and the cap on them.
//!
//! At the cap, a new connection is still accepted when some open one has
//! only been waiting for a request for [`EVICTABLE_AFTER`] or longer (silent,
//! its headers unfinished, or kept alive after an answer): the oldest such
//! one is closed to make room, silent and half-sent ones before kept-alive
//! ones. So a crowd of half-open connections cannot starve a real client,
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

/// A connection waiting for a request this long may be closed for a new
/// one: longer than a client on a slow link takes to send its request once
/// connected, short enough that a real request queued behind a crowd of
/// half-open connections gets in within a second or two.
pub const EVICTABLE_AFTER: Duration = Duration::from_millis(250);

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
        let _ = tokio::time::timeout(EVICTABLE_AFTER / 5, self.freed.notified()).await;
    }

    fn has_room(&self) -> bool {
        let open = self.lock();
        open.len() < self.cap || Self::oldest_evictable(&open).is_some()
    }

    fn oldest_evictable(open: &BTreeMap<u64, Arc<ConnState>>) -> Option<u64> {
        let now = Instant::now();
        open.values()
            .filter_map(|c| c.eviction_rank(now, EVICTABLE_AFTER))
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
    use super::super::conn::Phase;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_oldest_waiting_connection_makes_room() {
        let registry = Registry::new(2);
        let first = registry.admit().unwrap();
        let second = registry.admit().unwrap();
        first.state.set(Phase::Handling);
        tokio::time::advance(EVICTABLE_AFTER).await;
        assert!(registry.admit().is_none(), "the second was never read from");
        second.state.set(Phase::Idle);
        assert!(registry.admit().is_none(), "the second has just connected");
        tokio::time::advance(EVICTABLE_AFTER).await;
        let third = registry.admit().expect("the second is only waiting");
        assert!(second.state.evict.is_cancelled());
        assert!(!first.state.evict.is_cancelled());
        assert_eq!(registry.len(), 2);
        third.state.set(Phase::Handling);
        tokio::time::advance(EVICTABLE_AFTER).await;
        assert!(registry.admit().is_none(), "both are handling a request");
        assert!(!registry.has_room());
        drop(first);
        assert!(registry.has_room());
    }

    #[tokio::test(start_paused = true)]
    async fn silent_and_half_sent_connections_go_before_kept_alive_ones() {
        let registry = Registry::new(3);
        let kept = registry.admit().unwrap();
        kept.state.set(Phase::KeepAlive);
        let silent = registry.admit().unwrap();
        silent.state.set(Phase::Idle);
        let half = registry.admit().unwrap();
        half.state.set(Phase::Headers);
        tokio::time::advance(EVICTABLE_AFTER).await;
        let _new = registry.admit().unwrap();
        assert!(silent.state.evict.is_cancelled(), "the oldest silent one");
        let _newer = registry.admit().unwrap();
        assert!(half.state.evict.is_cancelled());
        assert!(!kept.state.evict.is_cancelled());
    }
}
