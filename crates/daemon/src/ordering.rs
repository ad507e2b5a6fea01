//! Per-person order: events that share a key run one after another, in the
//! order they were consumed; events with no key in common run side by side.
//!
//! An event may carry several keys (a Zoom id and an email both name one
//! person), and it waits for the last event queued under *each* of them. Each
//! key keeps only a link to that last event. Enqueueing happens for all keys
//! of an event under one lock, in consumption order, so an event only ever
//! waits for earlier ones: no cycle, no deadlock. When an event ends its
//! [`Turn`] is dropped, which wakes whoever waits on it and removes the keys
//! nobody queued behind. Memory is bounded by what is in flight.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The lines, by key: the worker's keys are hashed person keys
/// ([`crate::people::PersonKey`]), so an event in flight holds no key text.
pub struct KeyedOrder<K = String> {
    state: Mutex<State<K>>,
}

impl<K> Default for KeyedOrder<K> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                tails: HashMap::new(),
                next_id: 0,
            }),
        }
    }
}

struct State<K> {
    tails: HashMap<K, Tail>,
    next_id: u64,
}

struct Tail {
    id: u64,
    /// Closed (sender dropped) when that event's turn ends.
    done: watch::Receiver<()>,
}

/// One event's place in its keys' lines. Dropping it lets the next one go.
pub struct Turn<K: Hash + Eq = crate::people::PersonKey> {
    order: Arc<KeyedOrder<K>>,
    keys: Vec<K>,
    id: u64,
    previous: Vec<watch::Receiver<()>>,
    _done: watch::Sender<()>,
}

impl<K: Hash + Eq + Ord + Clone> KeyedOrder<K> {
    /// Queues an event behind the last one of each of its keys. Must be
    /// called in consumption order (it is synchronous, so the consumer loop
    /// does).
    pub fn enqueue(self: &Arc<Self>, mut keys: Vec<K>) -> Turn<K> {
        keys.sort();
        keys.dedup();
        let (done_tx, done_rx) = watch::channel(());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.next_id += 1;
        let id = state.next_id;
        let mut previous = Vec::new();
        for key in &keys {
            let tail = Tail {
                id,
                done: done_rx.clone(),
            };
            if let Some(earlier) = state.tails.insert(key.clone(), tail) {
                previous.push(earlier.done);
            }
        }
        drop(state);
        Turn {
            order: Arc::clone(self),
            keys,
            id,
            previous,
            _done: done_tx,
        }
    }

    /// Keys with an event in flight (for tests and metrics).
    pub fn keys_in_flight(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tails
            .len()
    }
}

impl<K: Hash + Eq> Turn<K> {
    /// Waits until every earlier event sharing a key with this one has
    /// finished. Cancel-safe: what was waited for stays waited for.
    pub async fn wait(&mut self) {
        while let Some(previous) = self.previous.last_mut() {
            // `changed` fails once the sender is dropped: that turn is over.
            while previous.changed().await.is_ok() {}
            self.previous.pop();
        }
    }
}

impl<K: Hash + Eq> Drop for Turn<K> {
    fn drop(&mut self) {
        let mut state = self.order.state.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if state.tails.get(key).is_some_and(|tail| tail.id == self.id) {
                state.tails.remove(key);
            }
        }
        // `_done` drops after this, waking the next turns if there are any.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| (*s).to_owned()).collect()
    }

    async fn run_all(
        order: &Arc<KeyedOrder>,
        events: &[(&[&str], &'static str, u64)],
    ) -> Vec<&'static str> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (k, name, delay) in events {
            let mut turn = order.enqueue(keys(k));
            let (log, name, delay) = (Arc::clone(&log), *name, *delay);
            tasks.push(tokio::spawn(async move {
                turn.wait().await;
                tokio::time::sleep(Duration::from_millis(delay)).await;
                log.lock().unwrap().push(name);
                drop(turn);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        log.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn same_key_runs_in_order_other_keys_do_not_wait() {
        let order = Arc::new(KeyedOrder::default());
        let log = run_all(
            &order,
            &[
                (&["u1"], "a", 50),
                (&["u1"], "b", 0),
                (&["u2"], "x", 0),
                (&["u1"], "c", 0),
            ],
        )
        .await;
        assert_eq!(log, ["x", "a", "b", "c"]);
        assert_eq!(order.keys_in_flight(), 0);
    }

    #[tokio::test]
    async fn an_event_with_two_keys_joins_both_lines() {
        let order = Arc::new(KeyedOrder::default());
        let log = run_all(
            &order,
            &[
                (&["id:U", "email:e"], "both", 50),
                (&["email:e"], "by-email", 0),
                (&["id:U"], "by-id", 0),
                (&["id:V"], "other", 0),
            ],
        )
        .await;
        assert_eq!(log[0], "other");
        assert_eq!(log[1], "both");
        assert_eq!(order.keys_in_flight(), 0);
    }
}
