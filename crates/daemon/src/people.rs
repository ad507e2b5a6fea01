//! What the worker remembers about people, in a compact form: the stale
//! check's history (when each person's newest applied event occurred), the
//! identity pairs (`id:U` ↔ `email:e`) and the email → Zoom id answers.
//!
//! Why not moka with `String` keys: the history holds up to 100,000 keys,
//! and an owned key plus moka's per-entry bookkeeping cost a few hundred
//! bytes each, so peak RSS grew with the number of distinct people. Here a
//! person key is two hashes of the key text ([`PersonKey`]: 64 + 32 bits,
//! from two randomly keyed SipHash states built once per process), a time is
//! 12 bytes, and each map is 8 `Mutex<HashMap>` shards, allocated whole at
//! start: 40 bytes a bucket for the history (the time and a 64-bit hash of
//! what the event asked (its id and departments), to know the same event
//! coming again; about 5 MiB for
//! 100,000) and 32 for the identity pairs.
//!
//! Capacities and TTLs are those the moka caches had (history 100,000 keys
//! for 30 days; identity pairs 20,000 and email answers 10,000, for an
//! hour), split evenly over the shards. When a shard goes over its share it
//! drops its expired entries and then its oldest writes, 1/64 of its share
//! at once (oldest-first by last write, not moka's TinyLFU; a rewrite counts
//! as a new write, so a person whose events keep arriving stays). A full map
//! so holds between 98 % and 100 % of its capacity. Expired entries are also
//! dropped when read.
//!
//! Collisions: a lookup hits only when both the 64-bit map key and the
//! 32-bit check agree. Two keys that share the 64 bits but not the check
//! (about 10^-10 for any pair at 100,000 entries) just replace each other's
//! entry, which is what an eviction does: the stale check then lets an event
//! through rather than skipping it, so no event is lost. Only a full 96-bit
//! match (about 10^-19 at 100,000 entries) could make one person's event look
//! stale because of another's.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use zds_core::event::{Email, ZoomUserId};

/// The stale check's history: bounded, in memory (a restart forgets it),
/// long enough for any sender's retries.
const HISTORY_CAPACITY: usize = 100_000;
const HISTORY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long an email → Zoom id answer (and an identity pair) is trusted.
const EMAIL_TTL: Duration = Duration::from_secs(3600);
const EMAIL_CAPACITY: usize = 10_000;
const IDENTITY_CAPACITY: usize = 2 * EMAIL_CAPACITY;
/// Shards per map, so concurrent events rarely wait on one lock.
const SHARDS: usize = 8;
/// A full shard drops its oldest 1/64 in one pass (the map then holds at
/// least 98 % of its capacity; the pass costs one scan per 1/64 of inserts).
const EVICT_FRACTION: usize = 64;

/// One ordering key (`id:U` or `email:e`, the email lowercased), hashed.
/// Packed to 12 bytes: the identity pairs hold one per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C, packed(4))]
pub struct PersonKey {
    hash: u64,
    check: u32,
}

/// The two hash states, random per process so no sender can aim at a
/// collision.
fn states() -> &'static (RandomState, RandomState) {
    static STATES: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    STATES.get_or_init(|| (RandomState::new(), RandomState::new()))
}

impl PersonKey {
    fn of(tag: u8, text: &str) -> Self {
        let (main, check) = states();
        let hash = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            hasher.write_u8(tag);
            hasher.write(text.as_bytes());
            hasher.finish()
        };
        Self {
            hash: hash(main),
            // The low half of a second, independently keyed hash.
            check: hash(check) as u32,
        }
    }

    /// The key of a Zoom user id (`id:U`).
    pub fn id(id: &ZoomUserId) -> Self {
        Self::of(b'i', id.as_str())
    }

    /// The key of an email (`email:e`), case-insensitive.
    pub fn email(email: &Email) -> Self {
        let text = email.as_str();
        if text.chars().any(char::is_uppercase) {
            Self::of(b'e', &text.to_lowercase())
        } else {
            Self::of(b'e', text)
        }
    }
}

/// An instant as whole seconds and nanoseconds since the Unix epoch: every
/// `OffsetDateTime`, ordered the same way, in 12 bytes (packed: the
/// history holds one per entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C, packed(4))]
struct Moment {
    secs: i64,
    nanos: u32,
}

impl From<OffsetDateTime> for Moment {
    fn from(at: OffsetDateTime) -> Self {
        Self {
            secs: at.unix_timestamp(),
            nanos: at.nanosecond(),
        }
    }
}

impl From<Moment> for OffsetDateTime {
    fn from(m: Moment) -> Self {
        let nanos = i128::from(m.secs) * 1_000_000_000 + i128::from(m.nanos);
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// A person's newest applied event: when it occurred, and a hash of what
/// makes it that change (the caller's `change` text: its id and what it
/// asks), so that the same event coming again (a delivery whose ack died
/// with a broker node) is known as applied already. 20 bytes, packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed(4))]
struct Applied {
    at: Moment,
    event: u64,
}

/// A change's hash, keyed like [`PersonKey`]'s.
fn change_hash(change: &str) -> u64 {
    PersonKey::of(b'v', change).hash
}

struct Slot<V> {
    value: V,
    check: u32,
    /// Which write of its shard this is: the oldest go first.
    seq: u32,
    /// When it was written, in seconds since the map was made.
    born: u32,
}

struct Shard<V> {
    map: HashMap<u64, Slot<V>>,
    next_seq: u32,
}

/// A bounded map from [`PersonKey`] with a time to live, in shards.
pub(crate) struct Bounded<V> {
    shards: Vec<Mutex<Shard<V>>>,
    per_shard: usize,
    /// How many of the oldest writes a full shard drops at once.
    batch: usize,
    ttl_secs: u32,
}

impl<V: Clone> Bounded<V> {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        let per_shard = (capacity / SHARDS).max(1);
        // Allocated whole at once: growing would hold the old table and
        // the new one together, and leave the old one's hole behind.
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::with_capacity(per_shard + 1),
                    next_seq: 0,
                })
            })
            .collect();
        Self {
            shards,
            per_shard,
            batch: (per_shard / EVICT_FRACTION).max(1),
            ttl_secs: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
        }
    }

    fn shard(&self, key: PersonKey) -> std::sync::MutexGuard<'_, Shard<V>> {
        // The low bits pick the shard; HashMap rehashes the key anyway.
        let index = (key.hash % SHARDS as u64) as usize;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self, born: u32, now: u32) -> bool {
        now.saturating_sub(born) >= self.ttl_secs
    }

    /// The live value under `key` at `now` (seconds since the map was made).
    pub(crate) fn get_at(&self, key: PersonKey, now: u32) -> Option<V> {
        let mut shard = self.shard(key);
        let slot = shard.map.get(&{ key.hash })?;
        if slot.check != key.check {
            return None;
        }
        if self.expired(slot.born, now) {
            shard.map.remove(&{ key.hash });
            return None;
        }
        Some(slot.value.clone())
    }

    /// Writes `value` under `key` (a full shard drops its oldest writes).
    pub(crate) fn insert_at(&self, key: PersonKey, value: V, now: u32) {
        let mut shard = self.shard(key);
        let seq = shard.next_seq;
        shard.next_seq = seq.wrapping_add(1);
        let slot = Slot {
            value,
            check: key.check,
            seq,
            born: now,
        };
        shard.map.insert(key.hash, slot);
        if shard.map.len() > self.per_shard {
            self.evict(&mut shard, now);
        }
    }

    /// Removes `key`'s entry, if it is `key`'s.
    pub(crate) fn remove(&self, key: PersonKey) {
        let mut shard = self.shard(key);
        if shard
            .map
            .get(&{ key.hash })
            .is_some_and(|s| s.check == key.check)
        {
            shard.map.remove(&{ key.hash });
        }
    }

    /// Drops the expired entries, then, if the shard is still over its
    /// capacity, its `batch` oldest writes: one pass for many inserts.
    fn evict(&self, shard: &mut Shard<V>, now: u32) {
        shard.map.retain(|_, slot| !self.expired(slot.born, now));
        let over = (shard.map.len() + self.batch).saturating_sub(self.per_shard);
        if shard.map.len() <= self.per_shard || over == 0 {
            return;
        }
        // Age in writes, so that the counter's wrapping does not matter.
        let next = shard.next_seq;
        let mut ages: Vec<u32> = shard
            .map
            .values()
            .map(|slot| next.wrapping_sub(slot.seq))
            .collect();
        let (_, youngest_dropped, _) = ages.select_nth_unstable_by(over - 1, |a, b| b.cmp(a));
        let cutoff = *youngest_dropped;
        shard
            .map
            .retain(|_, slot| next.wrapping_sub(slot.seq) < cutoff);
    }

    /// Entries held (live or expired but not yet dropped).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }
}

/// The worker's memory of people: see the module's doc.
pub struct People {
    started: Instant,
    /// When the newest applied event of each person occurred, and which it
    /// was (by every key that names them).
    history: Bounded<Applied>,
    /// Which keys name one person, both ways.
    identities: Bounded<PersonKey>,
    ids_by_email: Bounded<ZoomUserId>,
}

impl Default for People {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            history: Bounded::new(HISTORY_CAPACITY, HISTORY_TTL),
            identities: Bounded::new(IDENTITY_CAPACITY, EMAIL_TTL),
            ids_by_email: Bounded::new(EMAIL_CAPACITY, EMAIL_TTL),
        }
    }
}

impl People {
    fn now(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// Every key that names this person: the ones given, and the other half
    /// of any pair learned. Given an id and an email, pairs them first.
    pub fn keys(&self, id: Option<&ZoomUserId>, email: Option<&Email>) -> Vec<PersonKey> {
        let id_key = id.map(PersonKey::id);
        let email_key = email.map(PersonKey::email);
        if let (Some(id), Some(email)) = (id_key, email_key) {
            self.pair(id, email);
        }
        let mut keys: Vec<PersonKey> = id_key.into_iter().chain(email_key).collect();
        let now = self.now();
        let learned: Vec<PersonKey> = keys
            .iter()
            .filter_map(|k| self.identities.get_at(*k, now))
            .collect();
        keys.extend(learned);
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    fn pair(&self, id: PersonKey, email: PersonKey) {
        let now = self.now();
        self.identities.insert_at(id, email, now);
        self.identities.insert_at(email, id, now);
    }

    /// Remembers that `email` and `id` name one person (a user record
    /// said so).
    pub fn learn(&self, email: &Email, id: &ZoomUserId) {
        self.pair(PersonKey::id(id), PersonKey::email(email));
    }

    /// Remembers that a lookup by `email` found `id`: trusted for an hour,
    /// and the pair is learned too.
    pub fn found_by_email(&self, email: &Email, id: &ZoomUserId) {
        self.ids_by_email
            .insert_at(PersonKey::email(email), id.clone(), self.now());
        self.learn(email, id);
    }

    /// The Zoom id a lookup found for `email`, while it is trusted.
    pub fn id_by_email(&self, email: &Email) -> Option<ZoomUserId> {
        self.ids_by_email
            .get_at(PersonKey::email(email), self.now())
    }

    /// Forgets `email`'s id (Zoom no longer knows it).
    pub fn forget_email(&self, email: &Email) {
        self.ids_by_email.remove(PersonKey::email(email));
    }

    /// When an applied event of this person occurred after `occurred`, if
    /// one did: such an event makes this one stale. An equal time is not.
    pub fn newer_applied(
        &self,
        keys: &[PersonKey],
        occurred: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let occurred = Moment::from(occurred);
        let now = self.now();
        keys.iter()
            .filter_map(|key| self.history.get_at(*key, now))
            .map(|applied| applied.at)
            .filter(|at| *at > occurred)
            .max()
            .map(OffsetDateTime::from)
    }

    /// Whether this very event (`change` and its time) is the person's
    /// newest applied one: it came again, and applying it again would only
    /// cost Zoom calls. After a broker node dies, the deliveries whose acks
    /// died with it come again.
    pub fn applied_already(
        &self,
        keys: &[PersonKey],
        occurred: OffsetDateTime,
        change: &str,
    ) -> bool {
        let this = Applied {
            at: Moment::from(occurred),
            event: change_hash(change),
        };
        let now = self.now();
        keys.iter()
            .filter_map(|key| self.history.get_at(*key, now))
            .any(|applied| applied == this)
    }

    /// Remembers that event `change`, which occurred at `occurred`, was
    /// applied, under every key (each keeps the newest it saw; of two at
    /// the same time, the one applied last).
    pub fn remember_applied(&self, keys: &[PersonKey], occurred: OffsetDateTime, change: &str) {
        let this = Applied {
            at: Moment::from(occurred),
            event: change_hash(change),
        };
        let now = self.now();
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        for key in &keys {
            let newest = match self.history.get_at(*key, now) {
                Some(known) if known.at > this.at => known,
                _ => this,
            };
            self.history.insert_at(*key, newest, now);
        }
    }

    /// People in the stale check's history (for tests).
    pub fn history_len(&self) -> usize {
        self.history.len()
    }
}

/// The sync algorithm tells the daemon's memory what its lookups reveal.
impl zds_core::sync::People for People {
    fn learn(&self, email: &Email, id: &ZoomUserId) {
        People::learn(self, email, id);
    }
    fn found_by_email(&self, email: &Email, id: &ZoomUserId) {
        People::found_by_email(self, email, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn key(n: u32) -> PersonKey {
        PersonKey::of(b'i', &format!("user-{n}"))
    }

    #[test]
    fn the_bound_holds_and_the_oldest_write_goes_first() {
        let map = Bounded::new(80, Duration::from_secs(60));
        for n in 0..1_000 {
            map.insert_at(key(n), n, 0);
        }
        assert!(map.len() <= 80, "{}", map.len());
        assert_eq!(map.get_at(key(999), 0), Some(999));
        assert_eq!(map.get_at(key(0), 0), None);
    }

    #[test]
    fn a_rewrite_keeps_a_person() {
        let map = Bounded::new(8 * SHARDS, Duration::from_secs(60));
        for n in 0..10_000 {
            map.insert_at(key(0), n, 0);
            map.insert_at(key(n + 1), n, 0);
        }
        assert_eq!(map.get_at(key(0), 0), Some(9_999));
        assert!(map.len() <= 8 * SHARDS);
    }

    #[test]
    fn a_full_map_keeps_at_least_all_but_a_batch_of_its_newest() {
        let capacity = 64 * SHARDS * 4;
        let map = Bounded::new(capacity, Duration::from_secs(60));
        for n in 0..(3 * capacity as u32) {
            map.insert_at(key(n), n, 0);
            assert!(map.len() <= capacity);
        }
        assert!(map.len() >= capacity - 4 * SHARDS, "{}", map.len());
        // Whatever was dropped is older than whatever was kept, per shard:
        // the newest write of all is there.
        assert!(map.get_at(key(3 * capacity as u32 - 1), 0).is_some());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let map = Bounded::new(1_000, Duration::from_secs(3600));
        map.insert_at(key(1), 1, 10);
        assert_eq!(map.get_at(key(1), 3609), Some(1));
        assert_eq!(map.get_at(key(1), 3610), None);
        // Unread, expired entries go first when a shard is full.
        for n in 2..2_000 {
            map.insert_at(key(n), n, 10);
        }
        for n in 10_000..10_500 {
            map.insert_at(key(n), n, 3_610);
        }
        assert!((10_000..10_500).all(|n| map.get_at(key(n), 3_610).is_some()));
    }

    #[test]
    fn a_different_check_is_a_miss_and_replaces_rather_than_merges() {
        let map = Bounded::new(100, Duration::from_secs(60));
        let a = key(1);
        let b = PersonKey {
            hash: a.hash,
            check: a.check ^ 1,
        };
        map.insert_at(a, 5, 0);
        assert_eq!(map.get_at(b, 0), None);
        map.remove(b);
        assert_eq!(map.get_at(a, 0), Some(5));
        map.insert_at(b, 7, 0);
        assert_eq!(map.get_at(a, 0), None);
        assert_eq!(map.get_at(b, 0), Some(7));
    }

    #[test]
    fn an_older_event_is_stale_an_equal_or_newer_one_is_not() {
        let people = People::default();
        let id = ZoomUserId::parse("u1").unwrap();
        let keys = people.keys(Some(&id), None);
        let at = datetime!(2026-01-02 03:04:05.123456789 UTC);
        people.remember_applied(&keys, at, "e2");
        let older = datetime!(2026-01-02 03:04:05.123456788 UTC);
        assert_eq!(people.newer_applied(&keys, older), Some(at));
        assert_eq!(people.newer_applied(&keys, at), None);
        assert_eq!(
            people.newer_applied(&keys, datetime!(2027-01-01 0:00 UTC)),
            None
        );
        // An older event applied later does not move the history back.
        people.remember_applied(&keys, older, "e1");
        assert_eq!(people.newer_applied(&keys, older), Some(at));
        let other = people.keys(Some(&ZoomUserId::parse("u2").unwrap()), None);
        assert_eq!(people.newer_applied(&other, older), None);
    }

    #[test]
    fn the_same_event_again_is_applied_already_another_at_the_same_time_is_not() {
        let people = People::default();
        let keys = people.keys(Some(&ZoomUserId::parse("u1").unwrap()), None);
        let at = datetime!(2026-01-02 03:04:05 UTC);
        assert!(!people.applied_already(&keys, at, "e1"));
        people.remember_applied(&keys, at, "e1");
        assert!(people.applied_already(&keys, at, "e1"));
        assert!(!people.applied_already(&keys, at, "e2"), "another event");
        let later = datetime!(2026-01-02 03:04:06 UTC);
        assert!(!people.applied_already(&keys, later, "e1"), "another time");
        // Of two at one time, the one applied last is the newest.
        people.remember_applied(&keys, at, "e2");
        assert!(people.applied_already(&keys, at, "e2"));
        assert!(!people.applied_already(&keys, at, "e1"));
        // Once a newer one is applied, an older one is stale, not a repeat.
        people.remember_applied(&keys, later, "e3");
        assert!(!people.applied_already(&keys, at, "e2"));
        assert_eq!(people.newer_applied(&keys, at), Some(later));
        let other = people.keys(Some(&ZoomUserId::parse("u2").unwrap()), None);
        assert!(!people.applied_already(&other, later, "e3"));
    }

    #[test]
    fn a_bucket_is_40_bytes_in_the_history_and_32_in_the_pairs() {
        assert_eq!(std::mem::size_of::<(u64, Slot<Applied>)>(), 40);
        assert_eq!(std::mem::size_of::<(u64, Slot<PersonKey>)>(), 32);
    }

    #[test]
    fn times_outside_nanosecond_i64_keep_their_order() {
        let far = [
            datetime!(1000-01-01 0:00 UTC),
            datetime!(1969-12-31 23:59:59.999999999 UTC),
            datetime!(1970-01-01 0:00 UTC),
            datetime!(9999-12-31 23:59:59.999999999 UTC),
        ];
        for pair in far.windows(2) {
            assert!(Moment::from(pair[0]) < Moment::from(pair[1]));
            assert_eq!(OffsetDateTime::from(Moment::from(pair[0])), pair[0]);
        }
    }

    #[test]
    fn an_id_and_an_email_once_paired_name_one_person() {
        let people = People::default();
        let id = ZoomUserId::parse("u1").unwrap();
        let email = Email::parse("Ann@Example.com").unwrap();
        let lower = Email::parse("ann@example.com").unwrap();
        assert_eq!(people.keys(None, Some(&email)).len(), 1);
        people.found_by_email(&email, &id);
        let by_email = people.keys(None, Some(&lower));
        assert!(by_email.contains(&PersonKey::id(&id)), "{by_email:?}");
        assert_eq!(people.id_by_email(&email), Some(id.clone()));
        people.forget_email(&lower);
        assert_eq!(people.id_by_email(&email), None);
        let by_id = people.keys(Some(&id), None);
        assert!(by_id.contains(&PersonKey::email(&lower)));
    }
}
