//! The backends that share what every instance must agree on (the access token, the send
//! rate), as the pipeline holds them. A backend that shares one is added to its enum here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::capability::{SharedRate, SharedTokens};
use super::error::StateResult;
use super::rate_lease::SlotGrant;
use super::redis::RedisState;
use crate::types::Secret;

/// The backends that share access tokens. A backend that shares them is added here.
#[derive(Clone)]
pub enum TokenShare {
    Redis(Arc<RedisState>),
}

impl SharedTokens for TokenShare {
    async fn token(&self, app: &str) -> StateResult<Option<(Secret, Duration)>> {
        match self {
            TokenShare::Redis(r) => r.token(app).await,
        }
    }

    async fn store_token(&self, app: &str, token: &Secret, lifetime: Duration) -> StateResult<()> {
        match self {
            TokenShare::Redis(r) => r.store_token(app, token, lifetime).await,
        }
    }

    async fn lock_refresh(&self, app: &str, holder: &str, hold: Duration) -> StateResult<bool> {
        match self {
            TokenShare::Redis(r) => r.lock_refresh(app, holder, hold).await,
        }
    }

    async fn unlock_refresh(&self, app: &str, holder: &str) -> StateResult<()> {
        match self {
            TokenShare::Redis(r) => r.unlock_refresh(app, holder).await,
        }
    }
}

/// The backends that share the send rate. A backend that shares it is added here.
#[derive(Clone)]
pub enum RateShare {
    Redis(Arc<RedisState>),
}

impl SharedRate for RateShare {
    // The backend's own future, not one wrapped around it: jobs wait on it for a lease. A
    // second backend makes this an `async fn` with a match.
    fn grant(
        &self,
        app: &str,
        interval: Duration,
        burst: u32,
        want: u32,
    ) -> impl Future<Output = StateResult<SlotGrant>> + Send {
        match self {
            RateShare::Redis(r) => r.grant(app, interval, burst, want),
        }
    }
}
