//! State for a single instance, in memory: bounded by capacity and by age.

mod cancels;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::Value;

use crate::types::TraceHeaders;

use super::cancels::{CancelFound, Cancels};
use super::capability::Reports;
use super::error::StateResult;
use super::gates::{Gates, MemoryGates};
use super::limit_windows::LimitWindows;
use super::pauses::{PauseScope, Paused, Pauses};
use super::send_limits::{LimitRequest, Reservation, SendLimits};
use super::values::{Claim, Holder, Renewal, ReportKey, SentJob};

mod pauses;

/// A map that forgets entries older than `ttl`, and the oldest first beyond `capacity`.
struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<(Instant, K)>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Hash + Eq + Copy, V> Bounded<K, V> {
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
        if self.map.insert(key, value).is_some() {
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
        if self.map.remove(key).is_none() {
            return;
        }
        // Its place in `order` goes too: left behind, it would later expire (or evict) the
        // same key inserted again, long before that entry's own time. A key is removed soon
        // after it was inserted (a report that could not be published), so it is searched for
        // from the newest end.
        if let Some(at) = self.order.iter().rposition(|(_, k)| k == key) {
            self.order.remove(at);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A job id within its app, as 128 bits of keyed SipHash: a fixed 16 bytes per remembered id
/// whatever the id's length. Two different ids share a key with odds near 2^-128 per pair,
/// far below any hardware fault rate, and the keys are random per process so nobody can aim
/// for a collision.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct IdKey(u64, u64);

/// A msgid within its app (64-bit app digest; msgids are WeChat's own).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct MsgKey(u64, u64);

/// The two hash keys, fixed for the life of the store.
struct Keyer {
    first: RandomState,
    second: RandomState,
}

impl Keyer {
    fn id(&self, app: &str, id: &str) -> IdKey {
        IdKey(
            self.first.hash_one((app, id)),
            self.second.hash_one((app, id)),
        )
    }

    fn msgid(&self, app: &str, msgid: u64) -> MsgKey {
        MsgKey(self.first.hash_one(app), msgid)
    }
}

/// A sent job's id and meta (compact JSON) in one allocation, and its trace if it had one.
struct CompactJob {
    text: Box<str>,
    id_len: u8,
    trace: Option<Box<TraceHeaders>>,
}

impl CompactJob {
    fn new(id: &str, meta: Option<&Value>, trace: Option<&TraceHeaders>) -> Self {
        let mut text = String::with_capacity(id.len() + 32);
        text.push_str(id);
        if let Some(meta) = meta {
            text.push_str(&meta.to_string());
        }
        Self {
            text: text.into_boxed_str(),
            // Job ids are at most 128 ASCII characters (CONTRACT §1); anything longer would
            // have been rejected before it was sent.
            id_len: id.len().min(u8::MAX as usize) as u8,
            trace: trace.cloned().map(Box::new),
        }
    }

    fn to_sent_job(&self) -> SentJob {
        let (id, meta) = self.text.split_at(self.id_len as usize);
        SentJob {
            id: id.to_owned(),
            meta: (!meta.is_empty())
                .then(|| serde_json::from_str(meta).ok())
                .flatten(),
            trace: self.trace.as_deref().cloned(),
        }
    }
}

struct Inner {
    /// Sent ids and their msgids; 0 is never a msgid, so `None` costs no space.
    sent: Bounded<IdKey, Option<NonZeroU64>>,
    /// Claims being sent now, with their holders. A claim here never lapses: its holder is in
    /// this process, and a crash forgets the whole map.
    in_flight: HashMap<IdKey, Holder>,
    by_msgid: Bounded<MsgKey, CompactJob>,
    reported: Bounded<MsgKey, ()>,
    /// Pushed events without a MsgID, by their key within the app (hashed like job ids).
    events: Bounded<IdKey, ()>,
    /// Cancels kept for ids not claimed or sent, checked by every claim.
    cancels: cancels::KeptCancels<IdKey>,
}

/// Idempotency and msgid → job for one instance.
pub struct MemoryState {
    keyer: Keyer,
    inner: Mutex<Inner>,
    limits: LimitWindows,
    pauses: pauses::PauseBook,
    /// The preference gates of this process: the callback sets them, the pipeline reads them
    /// here or beside a reservation.
    gates: Arc<MemoryGates>,
}

impl MemoryState {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            keyer: Keyer {
                first: RandomState::new(),
                second: RandomState::new(),
            },
            inner: Mutex::new(Inner {
                sent: Bounded::new(ttl, capacity),
                in_flight: HashMap::new(),
                by_msgid: Bounded::new(ttl, capacity),
                reported: Bounded::new(ttl, capacity),
                events: Bounded::new(ttl, capacity),
                cancels: cancels::KeptCancels::new(capacity),
            }),
            limits: LimitWindows::default(),
            pauses: pauses::PauseBook::default(),
            gates: Arc::new(MemoryGates::new(capacity)),
        }
    }

    /// The preference gates of this process, shared with whoever sets them.
    pub(crate) fn gates(&self) -> Arc<dyn Gates> {
        self.gates.clone()
    }

    #[cfg(test)]
    pub(crate) fn claim(&self, app: &str, id: &str) -> Claim {
        self.claim_as(app, id, Holder::new(), None)
    }

    /// See [`crate::state::Idempotency::claim_as`].
    pub(crate) fn claim_as(
        &self,
        app: &str,
        id: &str,
        mine: Holder,
        previous: Option<Holder>,
    ) -> Claim {
        let k = self.keyer.id(app, id);
        let mut inner = self.inner.lock();
        if let Some(&msgid) = inner.sent.get(&k, Instant::now()) {
            return Claim::AlreadySent(msgid.map(NonZeroU64::get));
        }
        match inner.in_flight.get(&k).copied() {
            Some(held) if Some(held) != previous => Claim::InFlight,
            _ if inner.cancels.holds(&k, Instant::now()) => {
                inner.in_flight.remove(&k);
                Claim::Cancelled
            }
            _ => {
                inner.in_flight.insert(k, mine);
                Claim::Fresh(mine)
            }
        }
    }

    pub(crate) fn renew(&self, app: &str, id: &str, holder: Holder) -> Renewal {
        let k = self.keyer.id(app, id);
        let mut inner = self.inner.lock();
        if let Some(&msgid) = inner.sent.get(&k, Instant::now()) {
            return Renewal::AlreadySent(msgid.map(NonZeroU64::get));
        }
        if !inner.in_flight.contains_key(&k) && inner.cancels.holds(&k, Instant::now()) {
            return Renewal::Cancelled;
        }
        match *inner.in_flight.entry(k).or_insert(holder) {
            h if h == holder => Renewal::Held,
            _ => Renewal::Lost,
        }
    }

    pub(crate) fn release(&self, app: &str, id: &str, holder: Holder) {
        let k = self.keyer.id(app, id);
        let mut inner = self.inner.lock();
        if inner.in_flight.get(&k) == Some(&holder) {
            inner.in_flight.remove(&k);
        }
    }

    pub(crate) fn record_sent(
        &self,
        app: &str,
        id: &str,
        msgid: Option<u64>,
        meta: Option<&Value>,
        trace: Option<&TraceHeaders>,
    ) {
        let now = Instant::now();
        let k = self.keyer.id(app, id);
        let msgid = msgid.and_then(NonZeroU64::new);
        let mut inner = self.inner.lock();
        inner.in_flight.remove(&k);
        inner.sent.insert(k, msgid, now);
        if let Some(msgid) = msgid {
            let m = self.keyer.msgid(app, msgid.get());
            inner
                .by_msgid
                .insert(m, CompactJob::new(id, meta, trace), now);
        }
    }

    /// See [`Cancels::record_cancel`]: kept only where the id is neither sent nor claimed.
    pub(crate) fn record_cancel(&self, app: &str, id: &str, keep: Duration) -> CancelFound {
        let now = Instant::now();
        let k = self.keyer.id(app, id);
        let mut inner = self.inner.lock();
        if inner.sent.get(&k, now).is_some() {
            return CancelFound::Sent;
        }
        if inner.in_flight.contains_key(&k) {
            return CancelFound::InFlight;
        }
        inner.cancels.keep(k, keep, now);
        CancelFound::Kept
    }

    pub(crate) fn is_cancelled(&self, app: &str, id: &str) -> bool {
        let k = self.keyer.id(app, id);
        self.inner.lock().cancels.holds(&k, Instant::now())
    }

    fn sent_job(&self, app: &str, msgid: u64) -> Option<SentJob> {
        let m = self.keyer.msgid(app, msgid);
        self.inner
            .lock()
            .by_msgid
            .get(&m, Instant::now())
            .map(CompactJob::to_sent_job)
    }

    fn mark(&self, app: &str, key: &ReportKey) -> bool {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        match key {
            ReportKey::MsgId(msgid) => {
                inner
                    .reported
                    .insert(self.keyer.msgid(app, *msgid), (), now)
            }
            ReportKey::Event(event) => inner.events.insert(self.keyer.id(app, event), (), now),
        }
    }

    fn unmark(&self, app: &str, key: &ReportKey) {
        let mut inner = self.inner.lock();
        match key {
            ReportKey::MsgId(msgid) => inner.reported.remove(&self.keyer.msgid(app, *msgid)),
            ReportKey::Event(event) => inner.events.remove(&self.keyer.id(app, event)),
        }
    }

    /// How many sent ids are remembered.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.inner.lock().sent.len()
    }
}

/// In memory every call answers at once.
impl Cancels for MemoryState {
    async fn record_cancel(&self, app: &str, id: &str, keep: Duration) -> StateResult<CancelFound> {
        Ok(MemoryState::record_cancel(self, app, id, keep))
    }

    async fn is_cancelled(&self, app: &str, id: &str) -> StateResult<bool> {
        Ok(MemoryState::is_cancelled(self, app, id))
    }
}

/// In memory every call answers at once: the futures are ready when made.
impl Reports for MemoryState {
    fn job_for_msgid<'a>(
        &'a self,
        app: &'a str,
        msgid: u64,
    ) -> BoxFuture<'a, StateResult<Option<SentJob>>> {
        Box::pin(std::future::ready(Ok(self.sent_job(app, msgid))))
    }

    fn mark_report<'a>(
        &'a self,
        app: &'a str,
        key: &'a ReportKey,
    ) -> BoxFuture<'a, StateResult<bool>> {
        Box::pin(std::future::ready(Ok(self.mark(app, key))))
    }

    fn unmark_report<'a>(
        &'a self,
        app: &'a str,
        key: &'a ReportKey,
    ) -> BoxFuture<'a, StateResult<()>> {
        self.unmark(app, key);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl SendLimits for MemoryState {
    async fn reserve(&self, app: &str, request: &LimitRequest<'_>) -> StateResult<Reservation> {
        if let Some(ask) = request.gate
            && let Some(gate) = self
                .gates
                .gate_for(app, ask.openid, ask.template, ask.now)
                .await?
        {
            return Ok(Reservation::Gated(gate));
        }
        Ok(self
            .limits
            .reserve(app, request, tokio::time::Instant::now()))
    }

    async fn give_back(&self, app: &str, request: &LimitRequest<'_>) -> StateResult<()> {
        self.limits.give_back(app, request);
        Ok(())
    }
}

impl Pauses for MemoryState {
    async fn paused(&self, app: &str) -> StateResult<Paused> {
        Ok(self.pauses.get(app))
    }

    async fn pause(&self, app: &str, scope: &PauseScope) -> StateResult<Paused> {
        Ok(self.pauses.change(app, |p| p.paused(scope)))
    }

    async fn resume(&self, app: &str, scope: &PauseScope) -> StateResult<Paused> {
        Ok(self.pauses.change(app, |p| p.resumed(scope)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_forgotten_then_inserted_again_lives_its_full_ttl() {
        let ttl = Duration::from_secs(10);
        let mut b: Bounded<u64, ()> = Bounded::new(ttl, 10);
        let t0 = Instant::now();
        assert!(b.insert(7, (), t0));
        b.remove(&7);
        let t1 = t0 + Duration::from_secs(6);
        assert!(b.insert(7, (), t1), "a forgotten key is new again");
        // Past the first insert's ttl, inside the second's.
        assert!(b.get(&7, t0 + ttl + Duration::from_secs(1)).is_some());
        assert!(!b.insert(7, (), t0 + ttl + Duration::from_secs(2)));
        assert!(b.get(&7, t1 + ttl).is_none(), "it still expires on time");
    }

    #[test]
    fn a_forgotten_key_does_not_count_against_the_capacity() {
        let mut b: Bounded<u64, ()> = Bounded::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        b.insert(1, (), now);
        b.remove(&1);
        b.insert(1, (), now);
        b.insert(2, (), now);
        assert!(
            b.get(&1, now).is_some(),
            "two live keys fit a capacity of two"
        );
        assert!(b.get(&2, now).is_some());
        b.remove(&9);
        assert_eq!((b.len(), b.order.len()), (2, 2));
    }

    fn fresh(c: Claim) -> Holder {
        match c {
            Claim::Fresh(h) => h,
            other => panic!("expected a fresh claim, got {other:?}"),
        }
    }

    #[test]
    fn a_sent_id_is_never_fresh_again_and_keeps_its_msgid() {
        let s = MemoryState::new(Duration::from_secs(60), 10);
        fresh(s.claim("a", "j1"));
        assert_eq!(s.claim("a", "j1"), Claim::InFlight);
        s.record_sent("a", "j1", Some(42), None, None);
        assert_eq!(s.claim("a", "j1"), Claim::AlreadySent(Some(42)));
        fresh(s.claim("b", "j1"));
    }

    #[test]
    fn a_released_claim_can_be_taken_again_but_only_its_holder_releases_it() {
        let s = MemoryState::new(Duration::from_secs(60), 10);
        let first = fresh(s.claim("a", "j1"));
        s.release("a", "j1", first);
        let second = fresh(s.claim("a", "j1"));
        s.release("a", "j1", first);
        assert_eq!(
            s.claim("a", "j1"),
            Claim::InFlight,
            "a stale holder removes nothing"
        );
        assert_eq!(s.renew("a", "j1", first), Renewal::Lost);
        assert_eq!(s.renew("a", "j1", second), Renewal::Held);
        s.record_sent("a", "j1", Some(5), None, None);
        assert_eq!(s.renew("a", "j1", second), Renewal::AlreadySent(Some(5)));
    }

    #[test]
    fn memory_stays_bounded_by_capacity() {
        let s = MemoryState::new(Duration::from_secs(60), 100);
        for i in 0..1000 {
            let id = format!("j{i}");
            s.claim("a", &id);
            s.record_sent("a", &id, Some(i), None, None);
        }
        assert_eq!(s.remembered(), 100);
        assert_eq!(s.claim("a", "j999"), Claim::AlreadySent(Some(999)));
        fresh(s.claim("a", "j0"));
    }

    #[test]
    fn the_longest_id_and_a_missing_meta_come_back_as_recorded() {
        let s = MemoryState::new(Duration::from_secs(60), 10);
        let long = "x".repeat(128);
        s.record_sent("a", &long, Some(9), None, None);
        let job = s.sent_job("a", 9).unwrap();
        assert_eq!((job.id.as_str(), job.meta), (long.as_str(), None));
        assert_eq!(s.claim("a", &long), Claim::AlreadySent(Some(9)));
        fresh(s.claim("a", &long[..127]));
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let s = MemoryState::new(Duration::from_millis(20), 100);
        s.record_sent("a", "j1", Some(1), None, None);
        std::thread::sleep(Duration::from_millis(30));
        fresh(s.claim("a", "j1"));
    }

    #[test]
    fn msgids_map_back_to_jobs_and_reports_are_seen_once() {
        let s = MemoryState::new(Duration::from_secs(60), 10);
        s.record_sent("a", "j1", Some(7), Some(&serde_json::json!({"k": 1})), None);
        let job = s.sent_job("a", 7).unwrap();
        assert_eq!(job.id, "j1");
        assert_eq!(job.meta, Some(serde_json::json!({"k": 1})));
        assert!(s.sent_job("b", 7).is_none());
        let report = ReportKey::MsgId(7);
        assert!(s.mark("a", &report));
        assert!(!s.mark("a", &report));
        s.unmark("a", &report);
        assert!(s.mark("a", &report));
    }
}
