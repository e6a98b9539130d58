//! A short local lease on an app's shared rate bucket: one call to shared state grants several
//! send slots at once, so a busy app does not pay a round trip to Redis for every send.
//!
//! The bucket in shared state still accounts for every slot when it grants it, so the rate
//! summed over every instance can only come out lower than configured, never higher. Two rules
//! keep it from coming out noticeably lower:
//! - the lease size follows use: it doubles while leases are used up within their hold, and
//!   falls to what was used when one runs out with slots left, so an idle or slow instance does
//!   not hold slots that busier instances could send with;
//! - slots are used within `hold` of their grant or dropped, so a slot granted long ago cannot
//!   be spent later, on top of slots granted since (a burst over the rate).

use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::error::StateResult;

/// Most slots one lease takes: a bound on what an instance may hold unused.
pub(crate) const MAX_LEASE: u32 = 256;

/// The shortest hold; a lease also holds for two slot intervals at low rates.
const MIN_HOLD: Duration = Duration::from_millis(20);

/// What the shared bucket answers to a request for slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotGrant {
    /// This many slots (at least one), to use now.
    Slots(u32),
    /// No slot yet: ask again after this long.
    Wait(Duration),
}

struct Held {
    /// Slots left in the current lease.
    left: u32,
    /// How many the current lease granted.
    granted: u32,
    /// When its slots stop being usable.
    until: Instant,
    /// How many slots the next request asks for.
    want: u32,
}

/// One app's lease, shared by every job of the app in this process.
pub struct RateLease {
    held: Mutex<Held>,
    hold: Duration,
    cap: u32,
}

impl RateLease {
    /// A lease for a bucket of one slot per `interval` with `burst` slots at once.
    pub fn new(interval: Duration, burst: u32) -> Self {
        Self {
            held: Mutex::new(Held {
                left: 0,
                granted: 0,
                until: Instant::now(),
                want: 1,
            }),
            hold: MIN_HOLD.max(interval.saturating_mul(2)),
            cap: burst.clamp(1, MAX_LEASE),
        }
    }

    /// A slot from the lease in hand, if it has one: no wait and no call to shared state.
    pub fn try_take_held(&self) -> bool {
        let Ok(mut held) = self.held.try_lock() else {
            return false;
        };
        if held.left > 0 && Instant::now() < held.until {
            held.left -= 1;
            return true;
        }
        false
    }

    /// Waits for one send slot: from the lease when it has one, else from `ask`, which asks the
    /// shared bucket for up to the given number of slots. Jobs wait on the lock while one of
    /// them asks, so an app makes one request at a time.
    pub async fn take<F, Fut>(&self, ask: F) -> StateResult<()>
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = StateResult<SlotGrant>>,
    {
        loop {
            let mut held = self.held.lock().await;
            let now = Instant::now();
            if held.left > 0 && now < held.until {
                held.left -= 1;
                return Ok(());
            }
            if held.granted > 0 {
                held.want = if held.left == 0 {
                    // Used up in time: ask for more next time.
                    (held.want * 2).min(self.cap)
                } else {
                    // Slots went unused: ask for what was used.
                    (held.granted - held.left).max(1)
                };
            }
            held.left = 0;
            match ask(held.want).await? {
                SlotGrant::Slots(n) => {
                    held.granted = n.max(1);
                    held.left = held.granted - 1;
                    held.until = Instant::now() + self.hold;
                    return Ok(());
                }
                SlotGrant::Wait(wait) => {
                    held.granted = 0;
                    drop(held);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// The shared bucket's rule (GCRA, as the Redis script applies it) on tokio's clock.
    struct Bucket {
        interval: Duration,
        burst: u32,
        tat: std::sync::Mutex<Instant>,
        asks: AtomicU32,
        granted: AtomicU32,
    }

    impl Bucket {
        fn new(rate: f64, burst: u32) -> Arc<Self> {
            Arc::new(Self {
                interval: Duration::from_secs_f64(1.0 / rate),
                burst,
                tat: std::sync::Mutex::new(Instant::now()),
                asks: AtomicU32::new(0),
                granted: AtomicU32::new(0),
            })
        }

        async fn ask(self: Arc<Self>, want: u32) -> StateResult<SlotGrant> {
            self.asks.fetch_add(1, Ordering::SeqCst);
            let now = Instant::now();
            let mut tat = self.tat.lock().unwrap();
            let start = (*tat).max(now);
            let room = now + self.interval * self.burst;
            let free =
                room.saturating_duration_since(start).as_nanos() / self.interval.as_nanos().max(1);
            if free == 0 {
                return Ok(SlotGrant::Wait(start + self.interval - room));
            }
            let n = (free as u32).min(want);
            *tat = start + self.interval * n;
            self.granted.fetch_add(n, Ordering::SeqCst);
            Ok(SlotGrant::Slots(n))
        }
    }

    async fn take_from(lease: &RateLease, bucket: &Arc<Bucket>) {
        let b = bucket.clone();
        lease.take(move |want| b.clone().ask(want)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_app_asks_the_shared_bucket_far_less_than_once_per_send() {
        let bucket = Bucket::new(100_000.0, 10_000);
        let lease = RateLease::new(bucket.interval, bucket.burst);
        for _ in 0..10_000 {
            take_from(&lease, &bucket).await;
        }
        let asks = bucket.asks.load(Ordering::SeqCst);
        assert!(
            asks <= 10_000 / MAX_LEASE + 10,
            "{asks} asks for 10,000 sends"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn three_instances_together_keep_the_rate_within_five_percent() {
        let bucket = Bucket::new(50.0, 10);
        let leases: Vec<Arc<RateLease>> = (0..3)
            .map(|_| Arc::new(RateLease::new(bucket.interval, bucket.burst)))
            .collect();
        let sent = Arc::new(AtomicU32::new(0));
        let until = Instant::now() + Duration::from_secs(10);
        let mut tasks = Vec::new();
        for lease in &leases {
            for _ in 0..4 {
                let (lease, bucket, sent) = (lease.clone(), bucket.clone(), sent.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        take_from(&lease, &bucket).await;
                        if Instant::now() >= until {
                            return;
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        // The burst at once, then 50/s for 10 s.
        let expected = 10.0 + 50.0 * 10.0;
        let got = f64::from(sent.load(Ordering::SeqCst));
        assert!(
            (got / expected - 1.0).abs() <= 0.05,
            "{got} sends for {expected}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_left_unused_past_the_hold_are_not_spent_later() {
        let bucket = Bucket::new(1000.0, 100);
        let lease = RateLease::new(bucket.interval, bucket.burst);
        // Grow the lease: 1, 2, 4, 8 slots.
        for _ in 0..15 {
            take_from(&lease, &bucket).await;
        }
        let asks = bucket.asks.load(Ordering::SeqCst);
        take_from(&lease, &bucket).await;
        assert_eq!(bucket.asks.load(Ordering::SeqCst), asks + 1, "a new lease");
        tokio::time::sleep(MIN_HOLD * 2).await;
        take_from(&lease, &bucket).await;
        assert_eq!(
            bucket.asks.load(Ordering::SeqCst),
            asks + 2,
            "the old lease's slots were dropped, so the bucket was asked again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_instance_that_leaves_slots_unused_asks_for_fewer() {
        let bucket = Bucket::new(1000.0, 256);
        let lease = RateLease::new(bucket.interval, bucket.burst);
        for _ in 0..63 {
            take_from(&lease, &bucket).await;
        }
        // Leases of 1, 2, 4, 8, 16, 32 used up; the next asks for 64 and uses one.
        let granted = bucket.granted.load(Ordering::SeqCst);
        take_from(&lease, &bucket).await;
        assert_eq!(bucket.granted.load(Ordering::SeqCst), granted + 64);
        tokio::time::sleep(MIN_HOLD * 2).await;
        take_from(&lease, &bucket).await;
        assert_eq!(
            bucket.granted.load(Ordering::SeqCst),
            granted + 64 + 1,
            "after using 1 of 64, the next lease asks for 1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_state_error_reaches_the_caller() {
        let lease = RateLease::new(Duration::from_millis(10), 5);
        let err = lease
            .take(|_| async { Err(crate::state::StateError::Unavailable("down".into())) })
            .await;
        assert!(err.is_err());
    }
}
