//! How fast each app may send (a GCRA bucket per app), and the global cap on WeChat calls in
//! flight so a slow WeChat cannot exhaust sockets or memory.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::AppSettings;
use crate::state::rate_lease::RateLease;
use crate::state::{RateShare, SharedRate, StateResult};

/// One app's send rate as the pipeline waits for it.
pub(crate) trait RateGate: Send + Sync {
    /// Waits for the app's turn. Called right before a send, holding no connection; fails
    /// only when the rate is shared and its store failed.
    fn until_ready(&self) -> impl Future<Output = StateResult<()>> + Send;

    /// Waits for the app's turn as [`RateGate::until_ready`] does when the jobs waiting ahead
    /// of this one here would take no longer than `limit`; otherwise takes no turn and says
    /// about how long they would take (`Some`), so the job can wait somewhere that holds up
    /// nobody else.
    fn ready_within(
        &self,
        limit: Duration,
    ) -> impl Future<Output = StateResult<Option<Duration>>> + Send {
        let _ = limit;
        async move { self.until_ready().await.map(|()| None) }
    }
}

/// One app's send rate: a bucket in this process, or the one every instance shares when the
/// state backend provides it.
pub(crate) struct AppLimiter {
    app: String,
    bucket: DefaultDirectRateLimiter,
    shared: Option<RateShare>,
    /// This process's lease on the shared bucket, when the state shares one.
    lease: RateLease,
    interval: Duration,
    burst: u32,
    /// Jobs waiting for a turn in [`RateGate::ready_within`] now.
    waiting: AtomicU32,
}

impl AppLimiter {
    /// The limiter of app `name`; `shared` is the backend's shared rate, if it has one.
    pub(crate) fn new(name: &str, app: &AppSettings, shared: Option<RateShare>) -> Self {
        // `Rate` keeps the interval between 1 µs and a day, and `burst` is above 0: the
        // settings' types hold what a bucket needs.
        let interval = app.rate_per_second.interval();
        let burst = app.burst.get();
        let quota = Quota::with_period(interval)
            .expect("a Rate's interval is above 0")
            .allow_burst(app.burst);
        Self {
            app: name.to_owned(),
            bucket: RateLimiter::direct(quota),
            shared,
            lease: RateLease::new(interval, burst),
            interval,
            burst,
            waiting: AtomicU32::new(0),
        }
    }
}

/// Counts a job out of [`AppLimiter::waiting`] however its wait ends (a turn, an error, or
/// the job dropped).
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RateGate for AppLimiter {
    async fn until_ready(&self) -> StateResult<()> {
        match &self.shared {
            Some(shared) => {
                self.lease
                    .take(|want| shared.grant(&self.app, self.interval, self.burst, want))
                    .await
            }
            None => {
                self.bucket.until_ready().await;
                Ok(())
            }
        }
    }

    async fn ready_within(&self, limit: Duration) -> StateResult<Option<Duration>> {
        // A turn free now (a burst left, a slot of the lease in hand) is taken at once.
        let free = match &self.shared {
            Some(_) => self.lease.try_take_held(),
            None => self.bucket.check().is_ok(),
        };
        if free {
            return Ok(None);
        }
        // One turn per interval from here: the jobs already waiting take about this long.
        let ahead = self.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&self.waiting);
        let wait = self.interval.saturating_mul(ahead);
        if wait > limit {
            return Ok(Some(wait));
        }
        let ready = self.until_ready().await;
        drop(waiting);
        ready.map(|()| None)
    }
}

/// The cap on WeChat calls in flight across all apps.
#[derive(Clone)]
pub(crate) struct InFlight {
    slots: Arc<Semaphore>,
}

impl InFlight {
    pub(crate) fn new(max: NonZeroUsize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.get())),
        }
    }

    pub(crate) async fn acquire(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;
    use crate::types::Secret;
    use std::num::NonZeroU32;

    fn app(rate: f64, burst: u32) -> AppSettings {
        AppSettings {
            rate_per_second: Rate::new(rate).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            ..AppSettings::new("wx", Secret::new("s"))
        }
    }

    #[tokio::test]
    async fn a_job_with_more_ahead_of_it_than_it_may_wait_for_takes_no_turn() {
        let l = AppLimiter::new("a", &app(10.0, 1), None);
        let limit = Duration::from_millis(250);
        // The burst: a turn at once.
        assert_eq!(l.ready_within(limit).await.unwrap(), None);
        let start = std::time::Instant::now();
        let turns = futures_util::future::join_all((0..5).map(|_| l.ready_within(limit))).await;
        let turns: Vec<Option<Duration>> = turns.into_iter().map(Result::unwrap).collect();
        // 0, 1 and 2 jobs ahead (at most 200 ms at 10/s) wait; with 3 ahead a job would not
        // (each that would not leaves the count at once).
        let parked = Some(Duration::from_millis(300));
        assert_eq!(turns, [None, None, None, parked, parked]);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // None waits now, and those that left took no turn.
        assert_eq!(l.waiting.load(Ordering::Relaxed), 0);
        assert_eq!(l.ready_within(limit).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_burst_passes_at_once_then_the_rate_holds() {
        let l = AppLimiter::new("a", &app(50.0, 10), None);
        let start = std::time::Instant::now();
        for _ in 0..10 {
            l.until_ready().await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_millis(50));
        for _ in 0..10 {
            l.until_ready().await.unwrap();
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(180) && took < Duration::from_millis(400),
            "{took:?}"
        );
    }
}
