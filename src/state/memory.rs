//! State for a single instance, in memory: bounded by capacity and by age.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

use super::{Claim, SentJob};

/// A map that forgets entries older than `ttl`, and the oldest first beyond `capacity`.
struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<(Instant, K)>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            ttl,
            capacity,
        }
    }

    fn insert(&mut self, key: K, value: V, now: Instant) -> bool {
        self.expire(now);
        if self.map.insert(key.clone(), value).is_some() {
            return false;
        }
        self.order.push_back((now, key));
        while self.order.len() > self.capacity {
            if let Some((_, k)) = self.order.pop_front() {
                self.map.remove(&k);
            }
        }
        true
    }

    fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        self.expire(now);
        self.map.get(key)
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) < self.ttl {
                break;
            }
            let (_, k) = self.order.pop_front().expect("front exists");
            self.map.remove(&k);
        }
    }

    fn remove(&mut self, key: &K) {
        // Its place in `order` stays until it ages out; removing a missing key there is harmless.
        self.map.remove(key);
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// `app` and `id` in one allocation (app names cannot contain a NUL).
type AppKey = Box<str>;

/// A sent job kept small: its id and its meta as compact JSON text, so the store holds
/// `memory_capacity` entries in a few tens of MiB.
struct CompactJob {
    id: Box<str>,
    meta: Option<Box<str>>,
}

struct Inner {
    sent: Bounded<AppKey, u64>,
    in_flight: HashSet<AppKey>,
    by_msgid: Bounded<(AppKey, u64), CompactJob>,
    reported: Bounded<(AppKey, u64), ()>,
}

/// Idempotency and msgid → job for one instance.
pub struct MemoryState {
    inner: Mutex<Inner>,
}

fn key(app: &str, id: &str) -> AppKey {
    format!("{app}\0{id}").into_boxed_str()
}

impl MemoryState {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                sent: Bounded::new(ttl, capacity),
                in_flight: HashSet::new(),
                by_msgid: Bounded::new(ttl, capacity),
                reported: Bounded::new(ttl, capacity),
            }),
        }
    }

    pub fn claim(&self, app: &str, id: &str) -> Claim {
        let mut inner = self.inner.lock();
        let k = key(app, id);
        if let Some(&msgid) = inner.sent.get(&k, Instant::now()) {
            return Claim::AlreadySent(msgid);
        }
        if inner.in_flight.insert(k) {
            Claim::Fresh
        } else {
            Claim::InFlight
        }
    }

    pub fn release(&self, app: &str, id: &str) {
        self.inner.lock().in_flight.remove(&key(app, id));
    }

    pub fn record_sent(&self, app: &str, id: &str, msgid: u64, meta: Option<&Value>) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let k = key(app, id);
        inner.in_flight.remove(&k);
        inner.sent.insert(k, msgid, now);
        let job = CompactJob {
            id: id.into(),
            meta: meta.map(|m| m.to_string().into_boxed_str()),
        };
        inner.by_msgid.insert((app.into(), msgid), job, now);
    }

    pub fn job_for_msgid(&self, app: &str, msgid: u64) -> Option<SentJob> {
        self.inner
            .lock()
            .by_msgid
            .get(&(app.into(), msgid), Instant::now())
            .map(|job| SentJob {
                id: job.id.to_string(),
                meta: job
                    .meta
                    .as_deref()
                    .and_then(|m| serde_json::from_str(m).ok()),
            })
    }

    pub fn first_report(&self, app: &str, msgid: u64) -> bool {
        self.inner
            .lock()
            .reported
            .insert((app.into(), msgid), (), Instant::now())
    }

    pub fn forget_report(&self, app: &str, msgid: u64) {
        self.inner.lock().reported.remove(&(app.into(), msgid));
    }

    /// How many sent ids are remembered (for tests and metrics).
    pub fn remembered(&self) -> usize {
        self.inner.lock().sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_id_is_never_fresh_again_and_keeps_its_msgid() {
        let s = MemoryState::new(Duration::from_secs(60), 10);
        assert_eq!(s.claim("a", "j1"), Claim::Fresh);
        assert_eq!(s.claim("a", "j1"), Claim::InFlight);
        s.record_sent("a", "j1", 42, None);
        assert_eq!(s.claim("a", "j1"), Claim::AlreadySent(42));
        assert_eq!(s.claim("b", "j1"), Claim::Fresh, "ids are per app");
    }

    #[test]
    fn a_released_claim_can_be_taken_again() {
        let s = MemoryState::new(Duration::from_secs(60), 10);
        assert_eq!(s.claim("a", "j1"), Claim::Fresh);
        s.release("a", "j1");
        assert_eq!(s.claim("a", "j1"), Claim::Fresh);
    }

    #[test]
    fn memory_stays_bounded_by_capacity() {
        let s = MemoryState::new(Duration::from_secs(60), 100);
        for i in 0..1000 {
            let id = format!("j{i}");
            s.claim("a", &id);
            s.record_sent("a", &id, i, None);
        }
        assert_eq!(s.remembered(), 100);
        assert_eq!(s.claim("a", "j999"), Claim::AlreadySent(999));
        assert_eq!(s.claim("a", "j0"), Claim::Fresh);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let s = MemoryState::new(Duration::from_millis(20), 100);
        s.record_sent("a", "j1", 1, None);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(s.claim("a", "j1"), Claim::Fresh);
    }

    #[test]
    fn msgids_map_back_to_jobs_and_reports_are_seen_once() {
        let s = MemoryState::new(Duration::from_secs(60), 10);
        s.record_sent("a", "j1", 7, Some(&serde_json::json!({"k": 1})));
        assert_eq!(s.job_for_msgid("a", 7).unwrap().id, "j1");
        assert!(s.job_for_msgid("b", 7).is_none());
        assert!(s.first_report("a", 7));
        assert!(!s.first_report("a", 7));
        s.forget_report("a", 7);
        assert!(s.first_report("a", 7));
    }
}
