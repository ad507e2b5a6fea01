//! `webhook-id` → published once. A sender retries with the same id when it
//! did not see our 202 (a timeout, a 503); the repeat is answered 202 without
//! a second message.
//!
//! Each id gets a slot (an async mutex around "confirmed") in a bounded moka
//! cache. Requests with the same id take the slot's lock in turn: the first
//! publishes, the ones waiting behind it see "confirmed" and publish nothing,
//! so concurrent repeats also publish once. A failed publish leaves the slot
//! unconfirmed, so the sender's retry publishes.
//!
//! Limits, by design: the memory is this process's (a restart, or another
//! replica, forgets), entries live 24 h from their confirm, and under
//! capacity pressure moka may evict an id early. The id travels as the AMQP
//! `message_id`, so a consumer can still recognise a repeat.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::Mutex;

/// Ids remembered at most (one entry is the id and a small slot).
pub const CAPACITY: u64 = 100_000;
/// How long a confirmed id is remembered.
pub const REMEMBER_FOR: Duration = Duration::from_secs(24 * 3600);

/// Whether a request published or found its id already confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Once {
    Published,
    Duplicate,
}

type Slot = Arc<Mutex<bool>>;

pub struct Seen {
    slots: Cache<String, Slot>,
}

impl Seen {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            slots: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Runs `publish` unless `id` was confirmed already. Waiting for the
    /// slot is bounded by the caller's timeout around this future.
    pub async fn once<E, F>(&self, id: &str, publish: F) -> Result<Once, E>
    where
        F: Future<Output = Result<(), E>>,
    {
        let slot = self
            .slots
            .get_with(id.to_owned(), || Arc::new(Mutex::new(false)));
        let mut confirmed = slot.lock().await;
        if *confirmed {
            return Ok(Once::Duplicate);
        }
        publish.await?;
        *confirmed = true;
        // Inserting again starts the 24 h from the confirm.
        self.slots.insert(id.to_owned(), Arc::clone(&slot));
        Ok(Once::Published)
    }
}

impl Default for Seen {
    fn default() -> Self {
        Self::new(CAPACITY, REMEMBER_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_repeats_publish_once() {
        let seen = Arc::new(Seen::default());
        let published = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (seen, published) = (Arc::clone(&seen), Arc::clone(&published));
            tasks.push(tokio::spawn(async move {
                seen.once("msg_1", async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    published.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), ()>(())
                })
                .await
            }));
        }
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap().unwrap());
        }
        assert_eq!(published.load(Ordering::SeqCst), 1);
        assert_eq!(answers.iter().filter(|a| **a == Once::Published).count(), 1);
    }

    #[tokio::test]
    async fn a_failed_publish_is_retried() {
        let seen = Seen::default();
        assert_eq!(seen.once("msg_1", async { Err("down") }).await, Err("down"));
        assert_eq!(
            seen.once("msg_1", async { Ok::<(), &str>(()) }).await,
            Ok(Once::Published)
        );
        assert_eq!(
            seen.once("msg_1", async { Ok::<(), &str>(()) }).await,
            Ok(Once::Duplicate)
        );
        assert_eq!(
            seen.once("msg_2", async { Ok::<(), &str>(()) }).await,
            Ok(Once::Published)
        );
    }
}
