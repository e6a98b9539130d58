//! The per-app access-token keeper: cached with an expiry margin, refreshed single-flight,
//! invalidated only for the exact token that failed, and backing off after a failed fetch so
//! a wrong secret or a missing whitelist entry is asked about a few times, not once per job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::client::{TokenError, TokenGrant, WechatApi};
use crate::config::TokenMode;
use crate::types::Secret;

/// Where fresh tokens come from (WeChat, shared state for all instances, or a fake in tests).
/// Asked once per token lifetime, so a boxed future costs nothing that shows.
pub trait TokenSource: Send + Sync {
    /// A token other than `stale`, the one being replaced (refused, or about to expire).
    fn fetch<'a>(
        &'a self,
        stale: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<TokenGrant, TokenError>>;
}

/// A boxed source is a source: a keeper's source can be wrapped (shared through the state)
/// whatever it is.
impl TokenSource for Box<dyn TokenSource> {
    fn fetch<'a>(
        &'a self,
        stale: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<TokenGrant, TokenError>> {
        (**self).fetch(stale)
    }
}

/// Fetches from WeChat in the app's token mode.
pub struct WechatTokenSource<W> {
    pub client: W,
    pub appid: String,
    pub secret: Secret,
    pub mode: TokenMode,
    /// Counts every fetch (the `wxcourier_token_refreshes_total` metric).
    pub fetched: prometheus_client::metrics::counter::Counter,
}

impl<W: WechatApi> TokenSource for WechatTokenSource<W> {
    fn fetch<'a>(
        &'a self,
        _stale: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<TokenGrant, TokenError>> {
        Box::pin(async move {
            self.fetched.inc();
            self.client
                .token(&self.appid, &self.secret, self.mode)
                .await
        })
    }
}

/// A token as handed out: the value plus a generation, so a failure report names exactly the
/// token that failed.
#[derive(Debug)]
pub struct AccessToken {
    pub value: Secret,
    pub generation: u64,
}

struct Slot {
    token: Option<Arc<AccessToken>>,
    /// The last token dropped as refused: what a shared source must not hand out again.
    refused: Option<Arc<AccessToken>>,
    /// After this, one caller refreshes while the others keep using the token.
    refresh_after: Instant,
    /// After this, nobody uses the token.
    usable_until: Instant,
    /// The last fetch failed: until `until`, every caller gets this error without a fetch.
    failure: Option<Failure>,
}

struct Failure {
    error: TokenError,
    until: Instant,
    /// Failed fetches in a row, for the doubling.
    streak: u32,
}

/// The wait after the first failed fetch, doubling per failure in a row up to
/// [`FETCH_BACKOFF_MAX`].
const FETCH_BACKOFF_MIN: Duration = Duration::from_secs(1);
const FETCH_BACKOFF_MAX: Duration = Duration::from_secs(300);

fn fetch_backoff(streak: u32) -> Duration {
    FETCH_BACKOFF_MIN
        .saturating_mul(1u32 << streak.saturating_sub(1).min(16))
        .min(FETCH_BACKOFF_MAX)
}

/// Keeps one app's token.
pub struct TokenKeeper {
    source: Box<dyn TokenSource>,
    slot: parking_lot::Mutex<Slot>,
    /// Held while fetching: this is what makes refresh single-flight.
    refreshing: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

/// The margins before WeChat's stated expiry: refresh early, stop using a little before.
fn deadlines(now: Instant, expires_in: Duration) -> (Instant, Instant) {
    let stop_margin = (expires_in / 10).min(Duration::from_secs(60));
    let refresh_margin = (expires_in / 4).min(Duration::from_secs(600));
    (
        now + expires_in - refresh_margin,
        now + expires_in - stop_margin,
    )
}

impl TokenKeeper {
    pub fn new(source: Box<dyn TokenSource>) -> Self {
        let now = Instant::now();
        Self {
            source,
            slot: parking_lot::Mutex::new(Slot {
                token: None,
                refused: None,
                refresh_after: now,
                usable_until: now,
                failure: None,
            }),
            refreshing: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// While fetching is backing off after a failure: how long until the next fetch.
    pub(crate) fn backing_off(&self) -> Option<Duration> {
        let slot = self.slot.lock();
        let until = slot.failure.as_ref()?.until;
        until.checked_duration_since(Instant::now())
    }

    /// The recent failure that still answers callers, if any.
    fn recent_failure(&self) -> Option<TokenError> {
        let slot = self.slot.lock();
        let failure = slot.failure.as_ref()?;
        (Instant::now() < failure.until).then(|| failure.error.clone())
    }

    /// A usable token, fetching one only when needed; concurrent callers share one fetch.
    pub async fn get(&self) -> Result<Arc<AccessToken>, TokenError> {
        match self.cached() {
            Cached::Fresh(t) => return Ok(t),
            Cached::Ageing(t) => {
                // Only the caller that wins the lock refreshes; the rest go on with the
                // still-valid token instead of waiting.
                let Ok(_guard) = self.refreshing.try_lock() else {
                    return Ok(t);
                };
                if let Cached::Fresh(newer) = self.cached() {
                    return Ok(newer);
                }
                return Ok(self.fetch_and_store().await.unwrap_or(t));
            }
            Cached::Unusable => {}
        }
        if let Some(error) = self.recent_failure() {
            return Err(error);
        }
        let _guard = self.refreshing.lock().await;
        match self.cached() {
            Cached::Fresh(t) | Cached::Ageing(t) => Ok(t),
            // Those who waited for a fetch that failed get its answer, not a fetch of their own.
            Cached::Unusable => match self.recent_failure() {
                Some(error) => Err(error),
                None => self.fetch_and_store().await,
            },
        }
    }

    /// Reports that `bad` was refused. Only that token is dropped: a late report about an
    /// older token never throws away a newer one.
    pub fn invalidate(&self, bad: &AccessToken) {
        let mut slot = self.slot.lock();
        if slot
            .token
            .as_ref()
            .is_some_and(|t| t.generation == bad.generation)
        {
            slot.refused = slot.token.take();
        }
    }

    fn cached(&self) -> Cached {
        let slot = self.slot.lock();
        let now = Instant::now();
        match &slot.token {
            Some(t) if now < slot.refresh_after => Cached::Fresh(t.clone()),
            Some(t) if now < slot.usable_until => Cached::Ageing(t.clone()),
            _ => Cached::Unusable,
        }
    }

    async fn fetch_and_store(&self) -> Result<Arc<AccessToken>, TokenError> {
        let stale = {
            let slot = self.slot.lock();
            slot.token.clone().or_else(|| slot.refused.clone())
        };
        let grant = match self.source.fetch(stale.as_ref().map(|t| &t.value)).await {
            Ok(grant) => grant,
            Err(error) => {
                let mut slot = self.slot.lock();
                let streak = slot.failure.as_ref().map_or(0, |f| f.streak) + 1;
                slot.failure = Some(Failure {
                    error: error.clone(),
                    until: Instant::now() + fetch_backoff(streak),
                    streak,
                });
                return Err(error);
            }
        };
        let token = Arc::new(AccessToken {
            value: grant.token,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        });
        let (refresh_after, usable_until) = deadlines(Instant::now(), grant.expires_in);
        let mut slot = self.slot.lock();
        slot.token = Some(token.clone());
        slot.refresh_after = refresh_after;
        slot.usable_until = usable_until;
        slot.failure = None;
        Ok(token)
    }
}

enum Cached {
    Fresh(Arc<AccessToken>),
    Ageing(Arc<AccessToken>),
    Unusable,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::client::CallError;
    use std::sync::atomic::AtomicUsize;

    struct Fake {
        calls: Arc<AtomicUsize>,
        expires_in: Duration,
        fail: bool,
    }

    impl TokenSource for Fake {
        fn fetch<'a>(
            &'a self,
            _stale: Option<&'a Secret>,
        ) -> BoxFuture<'a, Result<TokenGrant, TokenError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                if self.fail {
                    return Err(CallError::Timeout.into());
                }
                Ok(TokenGrant {
                    token: Secret::new(format!("token-{n}")),
                    expires_in: self.expires_in,
                })
            })
        }
    }

    fn keeper(expires_in: Duration) -> (Arc<TokenKeeper>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let source = Fake {
            calls: calls.clone(),
            expires_in,
            fail: false,
        };
        (Arc::new(TokenKeeper::new(Box::new(source))), calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_callers_after_one_bad_token_cause_exactly_one_refresh() {
        let (k, calls) = keeper(Duration::from_secs(7200));
        let first = k.get().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            let k = k.clone();
            let bad = first.clone();
            tasks.push(tokio::spawn(async move {
                k.invalidate(&bad);
                k.get().await.unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().value.expose(), "token-2");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_report_about_an_old_token_keeps_the_new_one() {
        let (k, calls) = keeper(Duration::from_secs(7200));
        let old = k.get().await.unwrap();
        k.invalidate(&old);
        let new = k.get().await.unwrap();
        k.invalidate(&old);
        assert_eq!(k.get().await.unwrap().generation, new.generation);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_is_refreshed_ahead_of_expiry_and_never_used_after_it() {
        let (k, calls) = keeper(Duration::from_secs(100));
        let t1 = k.get().await.unwrap();
        tokio::time::advance(Duration::from_secs(70)).await;
        assert_eq!(
            k.get().await.unwrap().generation,
            t1.generation,
            "fresh: cached"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Inside the refresh margin (last 25 s): one caller refreshes.
        tokio::time::advance(Duration::from_secs(10)).await;
        let t2 = k.get().await.unwrap();
        assert_ne!(t2.generation, t1.generation);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Past the stop margin of the new token: a fetch is forced.
        tokio::time::advance(Duration::from_secs(95)).await;
        let t3 = k.get().await.unwrap();
        assert_ne!(t3.generation, t2.generation);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn while_one_caller_refreshes_an_ageing_token_the_others_do_not_wait() {
        let (k, calls) = keeper(Duration::from_secs(100));
        let t1 = k.get().await.unwrap();
        tokio::time::advance(Duration::from_secs(80)).await;
        let refresher = {
            let k = k.clone();
            tokio::spawn(async move { k.get().await.unwrap() })
        };
        tokio::task::yield_now().await;
        let other = k.get().await.unwrap();
        assert_eq!(other.generation, t1.generation);
        assert_ne!(refresher.await.unwrap().generation, t1.generation);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    fn failing() -> (Arc<TokenKeeper>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let k = TokenKeeper::new(Box::new(Fake {
            calls: calls.clone(),
            expires_in: Duration::from_secs(7200),
            fail: true,
        }));
        (Arc::new(k), calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_answers_every_caller_until_its_backoff_has_passed() {
        let (k, calls) = failing();
        assert!(k.get().await.is_err());
        for _ in 0..100 {
            assert!(k.get().await.is_err());
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no fetch while backing off"
        );
        assert!(k.backing_off().is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(k.get().await.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one fetch once the wait is over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_waiting_on_a_failing_fetch_share_its_answer() {
        let (k, calls) = failing();
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let k = k.clone();
                tokio::spawn(async move { k.get().await.is_err() })
            })
            .collect();
        for w in waiters {
            assert!(w.await.unwrap());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn fetch_backoff_doubles_to_its_ceiling_and_resets_on_success() {
        assert_eq!(fetch_backoff(1), Duration::from_secs(1));
        assert_eq!(fetch_backoff(4), Duration::from_secs(8));
        assert_eq!(fetch_backoff(30), FETCH_BACKOFF_MAX);
        let (k, calls) = failing();
        // Over ten minutes of callers every 100 ms, fetches follow the doubling: 1+2+4+…
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(600) {
            let _ = k.get().await;
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        let n = calls.load(Ordering::SeqCst);
        assert!((9..=12).contains(&n), "{n} fetches in 10 minutes");
    }
}
