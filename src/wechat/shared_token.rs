//! One access token for every instance, kept in shared state. A refresh happens under a lock
//! with an expiry, and the holder checks (fencing) whether another instance already replaced
//! the refused token before calling WeChat, so a bad token causes one refresh in all.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::client::{TokenError, TokenGrant};
use super::token::TokenSource;
use crate::state::{SharedTokens, StateError};
use crate::types::Secret;

/// A shared token with less left than this is refreshed rather than handed out.
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// How long one instance may hold the refresh lock (a WeChat call plus slack).
const LOCK_HOLD: Duration = Duration::from_secs(15);
/// How often a waiting instance looks for the token another one is fetching.
const POLL: Duration = Duration::from_millis(100);

/// Hands out the token in `shared`, fetching from `wechat` (under the lock) when it is missing,
/// refused or about to expire. A failure of the shared store is a [`TokenError::State`], never
/// a WeChat error.
pub struct SharedTokenSource<T, W> {
    pub app: String,
    pub shared: T,
    pub wechat: W,
}

impl<T: SharedTokens, W: TokenSource> SharedTokenSource<T, W> {
    /// The shared token if it is neither `stale` nor about to expire.
    async fn usable(&self, stale: Option<&Secret>) -> Result<Option<TokenGrant>, TokenError> {
        let shared = self.shared.token(&self.app).await?;
        Ok(shared
            .filter(|(token, left)| {
                *left > REFRESH_AHEAD && stale.is_none_or(|s| s.expose() != token.expose())
            })
            .map(|(token, left)| TokenGrant {
                token,
                expires_in: left,
            }))
    }

    async fn fetch_shared(&self, stale: Option<&Secret>) -> Result<TokenGrant, TokenError> {
        let holder = format!("{:016x}", rand::random::<u64>());
        let give_up = tokio::time::Instant::now() + LOCK_HOLD * 2;
        loop {
            if let Some(grant) = self.usable(stale).await? {
                return Ok(grant);
            }
            if self
                .shared
                .lock_refresh(&self.app, &holder, LOCK_HOLD)
                .await?
            {
                // Fencing: another instance may have refreshed between our look and the lock.
                let result = match self.usable(stale).await {
                    Ok(Some(grant)) => Ok(grant),
                    Ok(None) => match self.wechat.fetch(None).await {
                        Ok(grant) => self
                            .shared
                            .store_token(&self.app, &grant.token, grant.expires_in)
                            .await
                            .map(|_| grant)
                            .map_err(TokenError::from),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                let _ = self.shared.unlock_refresh(&self.app, &holder).await;
                return result;
            }
            if tokio::time::Instant::now() > give_up {
                return Err(StateError::LockHeld(LOCK_HOLD * 2).into());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl<T: SharedTokens, W: TokenSource> TokenSource for SharedTokenSource<T, W> {
    fn fetch<'a>(
        &'a self,
        stale: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<TokenGrant, TokenError>> {
        Box::pin(self.fetch_shared(stale))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::state::fakes::FakeSharedTokens;

    /// WeChat, as far as the shared source sees it: a new token per fetch.
    #[derive(Default)]
    struct Wechat(AtomicUsize);

    impl TokenSource for Arc<Wechat> {
        fn fetch<'a>(
            &'a self,
            _stale: Option<&'a Secret>,
        ) -> BoxFuture<'a, Result<TokenGrant, TokenError>> {
            Box::pin(async move {
                let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(TokenGrant {
                    token: Secret::new(format!("w{n}")),
                    expires_in: Duration::from_secs(7200),
                })
            })
        }
    }

    fn instance(
        shared: &Arc<FakeSharedTokens>,
        wechat: &Arc<Wechat>,
    ) -> SharedTokenSource<Arc<FakeSharedTokens>, Arc<Wechat>> {
        SharedTokenSource {
            app: "a".into(),
            shared: shared.clone(),
            wechat: wechat.clone(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_replaced_once_for_every_instance() {
        let (shared, wechat) = (Arc::default(), Arc::default());
        let (one, two) = (instance(&shared, &wechat), instance(&shared, &wechat));
        let first = one.fetch(None).await.unwrap().token;
        assert_eq!(
            two.fetch(None).await.unwrap().token.expose(),
            first.expose()
        );
        let second = one.fetch(Some(&first)).await.unwrap().token;
        assert_ne!(second.expose(), first.expose());
        // The other instance reports the same refused token: it gets the replacement.
        assert_eq!(
            two.fetch(Some(&first)).await.unwrap().token.expose(),
            second.expose()
        );
        assert_eq!(wechat.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_outage_is_a_state_error_and_never_reaches_wechat() {
        let (shared, wechat) = (Arc::<FakeSharedTokens>::default(), Arc::default());
        shared.down.store(true, Ordering::SeqCst);
        let err = instance(&shared, &wechat).fetch(None).await.unwrap_err();
        assert!(matches!(err, TokenError::State(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("shared state"), "{text}");
        assert!(!text.contains("WeChat"), "{text}");
        assert_eq!(wechat.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_lock_nobody_lets_go_ends_in_a_state_error() {
        let (shared, wechat) = (Arc::<FakeSharedTokens>::default(), Arc::default());
        assert!(
            shared
                .lock_refresh("a", "another instance", Duration::from_secs(3600))
                .await
                .unwrap()
        );
        let started = tokio::time::Instant::now();
        let err = instance(&shared, &wechat).fetch(None).await.unwrap_err();
        assert!(
            matches!(err, TokenError::State(StateError::LockHeld(_))),
            "{err:?}"
        );
        assert!(started.elapsed() >= LOCK_HOLD * 2);
        assert_eq!(wechat.0.load(Ordering::SeqCst), 0);
    }
}
