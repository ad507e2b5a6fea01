//! Per-user order: events with the same key run one after another, in the
//! order they were consumed; different keys run side by side.
//!
//! Each key keeps only a link to the last event queued for it. A new event
//! takes that link (it waits on it) and leaves its own; when an event ends,
//! its [`Turn`] is dropped, which wakes the next one and removes the key if
//! nobody queued behind it. Memory is bounded by what is in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Default)]
pub struct KeyedOrder {
    tails: Mutex<HashMap<String, Tail>>,
    next_id: Mutex<u64>,
}

struct Tail {
    id: u64,
    done: oneshot::Receiver<()>,
}

/// One event's place in its key's line. Dropping it lets the next one go.
pub struct Turn {
    order: Arc<KeyedOrder>,
    key: String,
    id: u64,
    previous: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl KeyedOrder {
    /// Queues an event behind the last one of its key. Must be called in
    /// consumption order (it is synchronous, so the consumer loop does).
    pub fn enqueue(self: &Arc<Self>, key: String) -> Turn {
        let (done_tx, done_rx) = oneshot::channel();
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            *next
        };
        let previous = self
            .tails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), Tail { id, done: done_rx })
            .map(|tail| tail.done);
        Turn {
            order: Arc::clone(self),
            key,
            id,
            previous,
            _done: done_tx,
        }
    }

    /// Keys with an event in flight (for tests and metrics).
    pub fn keys_in_flight(&self) -> usize {
        self.tails.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Turn {
    /// Waits until every earlier event of this key has finished.
    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error only means the previous turn was dropped: also done.
            let _ = previous.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut tails = self.order.tails.lock().unwrap_or_else(|e| e.into_inner());
        if tails.get(&self.key).is_some_and(|tail| tail.id == self.id) {
            tails.remove(&self.key);
        }
        // `_done` drops after this, waking the next turn if there is one.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_runs_in_order_other_keys_do_not_wait() {
        let order = Arc::new(KeyedOrder::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (key, name, delay) in [
            ("u1", "a", 50),
            ("u1", "b", 0),
            ("u2", "x", 0),
            ("u1", "c", 0),
        ] {
            let mut turn = order.enqueue(key.to_owned());
            let log = Arc::clone(&log);
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
        let log = log.lock().unwrap().clone();
        assert_eq!(log, ["x", "a", "b", "c"]);
        assert_eq!(order.keys_in_flight(), 0);
    }
}
