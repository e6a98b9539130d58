//! The cancels memory state keeps: each with the time it lapses, bounded by capacity, the
//! oldest first. Kept in `MemoryState` beside the claims and sent ids, under the same lock, so
//! each cancel is decided against them in one step (see [`crate::state::cancels`]).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The kept cancels, each with the time it lapses.
pub(super) struct KeptCancels<K> {
    until: HashMap<K, Instant>,
    /// In the order they were kept (a cancel kept again is there twice; the older entry no
    /// longer matches `until` and is skipped). Every cancel is kept for the same time, so this
    /// is also the order in which they lapse.
    order: VecDeque<(Instant, K)>,
    capacity: usize,
}

impl<K: Hash + Eq + Copy> KeptCancels<K> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            until: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub(super) fn holds(&mut self, key: &K, now: Instant) -> bool {
        self.expire(now);
        self.until.get(key).is_some_and(|&until| until > now)
    }

    pub(super) fn keep(&mut self, key: K, keep: Duration, now: Instant) {
        self.expire(now);
        let until = now + keep;
        self.until.insert(key, until);
        self.order.push_back((until, key));
        while self.until.len() > self.capacity || self.order.len() > 2 * self.capacity {
            let Some((at, k)) = self.order.pop_front() else {
                break;
            };
            self.forget_if(k, at);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, k)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            self.forget_if(k, at);
        }
    }

    /// Forgets `key` if `at` is still its time (not a cancel kept again since).
    fn forget_if(&mut self, key: K, at: Instant) {
        if self.until.get(&key) == Some(&at) {
            self.until.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::memory::MemoryState;
    use crate::state::{CancelFound, Claim, Holder, Renewal};

    const KEEP: Duration = Duration::from_secs(60);

    fn state() -> MemoryState {
        MemoryState::new(Duration::from_secs(60), 10)
    }

    #[test]
    fn a_cancel_before_the_job_stops_its_claim_and_stays_kept() {
        let s = state();
        assert_eq!(s.record_cancel("a", "j1", KEEP), CancelFound::Kept);
        assert_eq!(s.claim("a", "j1"), Claim::Cancelled);
        assert_eq!(s.claim("a", "j1"), Claim::Cancelled, "a redelivery too");
        assert!(s.is_cancelled("a", "j1"));
        assert!(!s.is_cancelled("b", "j1"), "per app");
        assert!(matches!(s.claim("b", "j1"), Claim::Fresh(_)));
    }

    #[test]
    fn a_cancel_waits_for_a_claim_and_is_too_late_for_a_sent_id() {
        let s = state();
        let Claim::Fresh(h) = s.claim("a", "j1") else {
            panic!("fresh")
        };
        assert_eq!(s.record_cancel("a", "j1", KEEP), CancelFound::InFlight);
        assert!(!s.is_cancelled("a", "j1"), "nothing was recorded");
        s.record_sent("a", "j1", Some(7), None, None);
        assert_eq!(s.record_cancel("a", "j1", KEEP), CancelFound::Sent);
        let Claim::Fresh(h2) = s.claim("a", "j2") else {
            panic!("fresh")
        };
        s.release("a", "j2", h2);
        assert_eq!(s.record_cancel("a", "j2", KEEP), CancelFound::Kept);
        let _ = h;
    }

    #[test]
    fn a_taken_over_claim_and_a_retaken_one_see_the_cancel() {
        let s = state();
        let Claim::Fresh(before) = s.claim("a", "j1") else {
            panic!("fresh")
        };
        s.release("a", "j1", before);
        assert_eq!(s.record_cancel("a", "j1", KEEP), CancelFound::Kept);
        assert_eq!(
            s.claim_as("a", "j1", Holder::new(), Some(before)),
            Claim::Cancelled
        );
        assert_eq!(s.renew("a", "j1", before), Renewal::Cancelled);
    }

    #[test]
    fn kept_cancels_lapse_and_stay_within_capacity() {
        let s = state();
        s.record_cancel("a", "short", Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!s.is_cancelled("a", "short"));
        assert!(matches!(s.claim("a", "short"), Claim::Fresh(_)));
        for i in 0..100 {
            s.record_cancel("a", &format!("c{i}"), KEEP);
            s.record_cancel("a", "again", KEEP);
        }
        let inner = s.inner.lock();
        assert!(
            inner.cancels.until.len() <= 10,
            "{}",
            inner.cancels.until.len()
        );
        assert!(inner.cancels.order.len() <= 20);
        drop(inner);
        assert!(
            s.is_cancelled("a", "again"),
            "kept again, so among the newest"
        );
        assert!(!s.is_cancelled("a", "c0"), "the oldest went first");
    }
}
