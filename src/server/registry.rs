//! The open connections of one listener, and the cap on them.
//!
//! At the cap, a new connection is still accepted when some open one is only
//! waiting for a request (idle, or its headers unfinished): the oldest such
//! one is closed to make room. So a crowd of half-open connections cannot
//! starve a real client, and neither file descriptors nor memory grow past
//! the cap. When every open connection is handling a request, accepting
//! stops until one finishes: new clients wait in the kernel's listen backlog.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::conn::ConnState;

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
            self.freed.notified().await;
        }
    }

    fn has_room(&self) -> bool {
        let open = self.lock();
        open.len() < self.cap || open.values().any(|c| c.is_waiting())
    }

    /// Takes a place for a new connection, closing the oldest waiting one
    /// when at the cap. `None` when every place is handling a request (the
    /// caller closes the new connection).
    pub fn admit(self: &Arc<Self>) -> Option<Entry> {
        let mut open = self.lock();
        if open.len() >= self.cap {
            let oldest = open.values().find(|c| c.is_waiting())?.seq;
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
            self.freed.notified().await;
        }
    }

    /// A connection finished handling a request: it may be evicted now.
    pub fn freed(&self) {
        self.freed.notify_one();
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

    #[test]
    fn at_the_cap_the_oldest_waiting_connection_makes_room() {
        let registry = Registry::new(2);
        let first = registry.admit().unwrap();
        let second = registry.admit().unwrap();
        first.state.set(Phase::Handling);
        let third = registry.admit().expect("the second is only waiting");
        assert!(second.state.evict.is_cancelled());
        assert!(!first.state.evict.is_cancelled());
        assert_eq!(registry.len(), 2);
        third.state.set(Phase::Handling);
        assert!(registry.admit().is_none(), "both are handling a request");
        assert!(!registry.has_room());
        drop(first);
        assert!(registry.has_room());
    }
}
