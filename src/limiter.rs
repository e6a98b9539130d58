//! How fast each app may send (a GCRA bucket per app), and the global cap on WeChat calls in
//! flight so a slow WeChat cannot exhaust sockets or memory.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::AppSettings;
use crate::state::rate_lease::RateLease;
use crate::state::{State, StateResult};

/// One app's send rate: a bucket in this process, or one in Redis shared by every instance.
pub struct AppLimiter {
    bucket: DefaultDirectRateLimiter,
    /// This process's lease on the shared bucket, when the state is shared.
    lease: RateLease,
    interval: Duration,
    burst: u32,
}

impl AppLimiter {
    pub fn new(app: &AppSettings) -> Self {
        let period = Duration::from_secs_f64(1.0 / app.rate_per_second);
        let burst = NonZeroU32::new(app.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            bucket: RateLimiter::direct(quota),
            lease: RateLease::new(period, burst.get()),
            interval: period,
            burst: burst.get(),
        }
    }

    /// Waits for this app's turn, in Redis when the state is shared. Called right before a
    /// send, holding no connection.
    pub async fn until_ready(&self, app: &str, state: &State) -> StateResult<()> {
        match state.redis() {
            Some(redis) => {
                self.lease
                    .take(|want| redis.rate_grant(app, self.interval, self.burst, want))
                    .await
            }
            None => {
                self.bucket.until_ready().await;
                Ok(())
            }
        }
    }
}

/// The cap on WeChat calls in flight across all apps.
#[derive(Clone)]
pub struct InFlight {
    slots: Arc<Semaphore>,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
        }
    }

    pub async fn acquire(&self) -> OwnedSemaphorePermit {
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
    use crate::config::Secret;

    fn app(rate: f64, burst: u32) -> AppSettings {
        AppSettings {
            rate_per_second: rate,
            burst,
            ..AppSettings::new("wx", Secret::new("s"))
        }
    }

    #[tokio::test]
    async fn a_burst_passes_at_once_then_the_rate_holds() {
        let l = AppLimiter::new(&app(50.0, 10));
        let state = State::from_url(
            "memory",
            Duration::from_secs(60),
            10,
            Duration::from_secs(60),
        )
        .unwrap();
        let start = std::time::Instant::now();
        for _ in 0..10 {
            l.until_ready("a", &state).await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_millis(50));
        for _ in 0..10 {
            l.until_ready("a", &state).await.unwrap();
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(180) && took < Duration::from_millis(400),
            "{took:?}"
        );
    }
}
