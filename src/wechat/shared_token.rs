//! One access token for every instance, kept in Redis. A refresh happens under a Redis lock
//! with an expiry, and the holder checks (fencing) whether another instance already replaced
//! the refused token before calling WeChat, so a bad token causes one refresh in all.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::client::{CallError, Grant, TokenError};
use super::token::{TokenSource, WechatTokenSource};
use crate::state::{RedisState, State};
use crate::types::Secret;

/// A shared token with less left than this is refreshed rather than handed out.
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// How long one instance may hold the refresh lock (a WeChat call plus slack).
const LOCK_HOLD: Duration = Duration::from_secs(15);
/// How often a waiting instance looks for the token another one is fetching.
const POLL: Duration = Duration::from_millis(100);

pub struct SharedTokenSource {
    pub app: String,
    pub wechat: WechatTokenSource,
    pub state: Arc<State>,
}

fn unavailable(e: crate::state::StateError) -> TokenError {
    TokenError::Call(CallError::Connect(e.to_string()))
}

impl SharedTokenSource {
    fn redis(&self) -> &RedisState {
        self.state
            .redis()
            .expect("a shared token source is only built with Redis state")
    }

    /// The shared token if it is neither `stale` nor about to expire.
    async fn usable(&self, stale: Option<&Secret>) -> Result<Option<Grant>, TokenError> {
        let shared = self
            .redis()
            .shared_token(&self.app)
            .await
            .map_err(unavailable)?;
        Ok(shared
            .filter(|(token, left)| {
                *left > REFRESH_AHEAD && stale.is_none_or(|s| s.expose() != token)
            })
            .map(|(token, left)| Grant {
                token: Secret::new(token),
                expires_in: left,
            }))
    }

    async fn fetch_shared(&self, stale: Option<&Secret>) -> Result<Grant, TokenError> {
        let holder = format!("{:016x}", rand::random::<u64>());
        let give_up = tokio::time::Instant::now() + LOCK_HOLD * 2;
        loop {
            if let Some(grant) = self.usable(stale).await? {
                return Ok(grant);
            }
            if self
                .redis()
                .lock_token(&self.app, &holder, LOCK_HOLD)
                .await
                .map_err(unavailable)?
            {
                // Fencing: another instance may have refreshed between our look and the lock.
                let result = match self.usable(stale).await {
                    Ok(Some(grant)) => Ok(grant),
                    Ok(None) => match self.wechat.fetch(None).await {
                        Ok(grant) => {
                            let stored = self
                                .redis()
                                .store_token(&self.app, grant.token.expose(), grant.expires_in)
                                .await;
                            stored.map(|_| grant).map_err(unavailable)
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                let _ = self.redis().unlock_token(&self.app, &holder).await;
                return result;
            }
            if tokio::time::Instant::now() > give_up {
                return Err(TokenError::Call(CallError::Timeout));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl TokenSource for SharedTokenSource {
    fn fetch<'a>(&'a self, stale: Option<&'a Secret>) -> BoxFuture<'a, Result<Grant, TokenError>> {
        Box::pin(self.fetch_shared(stale))
    }
}
