//! In-memory stand-ins for the state capabilities, for unit tests: each can be switched into an
//! outage, and records what was done through it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use super::{
    Claim, Holder, Idempotency, MemoryState, Renewal, SharedTokens, StateError, StateResult,
};
use crate::types::Secret;

fn outage() -> StateError {
    StateError::Unavailable("connection refused (a test outage)".into())
}

/// What was done through a [`FakeStore`], in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoreCall {
    Claimed(String),
    Renewed(String),
    Released(String),
    Recorded(String, Option<u64>),
}

/// Idempotency in memory (the memory backend's own rules), with outages on demand.
pub(crate) struct FakeStore {
    inner: MemoryState,
    /// Every call fails.
    pub(crate) down: AtomicBool,
    /// Only `record_sent` fails.
    pub(crate) record_fails: AtomicBool,
    /// Answers every renewal with this instead of asking the store.
    pub(crate) renewal: Mutex<Option<Renewal>>,
    pub(crate) calls: Mutex<Vec<StoreCall>>,
}

impl Default for FakeStore {
    fn default() -> Self {
        Self {
            inner: MemoryState::new(Duration::from_secs(3600), 1000),
            down: AtomicBool::new(false),
            record_fails: AtomicBool::new(false),
            renewal: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
        }
    }
}

impl FakeStore {
    fn up(&self) -> StateResult<()> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(outage()),
            false => Ok(()),
        }
    }

    /// The store as a test sets it up, without recording a call.
    pub(crate) fn memory(&self) -> &MemoryState {
        &self.inner
    }

    pub(crate) fn calls(&self) -> Vec<StoreCall> {
        self.calls.lock().clone()
    }
}

impl Idempotency for FakeStore {
    async fn claim(&self, app: &str, id: &str) -> StateResult<Claim> {
        self.up()?;
        self.calls.lock().push(StoreCall::Claimed(id.into()));
        Ok(self.inner.claim(app, id))
    }

    async fn renew(&self, app: &str, id: &str, holder: Holder) -> StateResult<Renewal> {
        self.up()?;
        self.calls.lock().push(StoreCall::Renewed(id.into()));
        let answer = self.renewal.lock().clone();
        Ok(answer.unwrap_or_else(|| self.inner.renew(app, id, holder)))
    }

    async fn release(&self, app: &str, id: &str, holder: Holder) -> StateResult<()> {
        self.up()?;
        self.calls.lock().push(StoreCall::Released(id.into()));
        self.inner.release(app, id, holder);
        Ok(())
    }

    async fn record_sent(
        &self,
        app: &str,
        id: &str,
        msgid: Option<u64>,
        meta: Option<&Value>,
    ) -> StateResult<()> {
        self.up()?;
        if self.record_fails.load(Ordering::SeqCst) {
            return Err(outage());
        }
        self.calls
            .lock()
            .push(StoreCall::Recorded(id.into(), msgid));
        self.inner.record_sent(app, id, msgid, meta);
        Ok(())
    }
}

/// Shared tokens in memory, on tokio's clock, with outages on demand.
#[derive(Default)]
pub(crate) struct FakeSharedTokens {
    pub(crate) down: AtomicBool,
    tokens: Mutex<HashMap<String, (Secret, Instant)>>,
    locks: Mutex<HashMap<String, (String, Instant)>>,
}

impl FakeSharedTokens {
    fn up(&self) -> StateResult<()> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(outage()),
            false => Ok(()),
        }
    }
}

impl SharedTokens for FakeSharedTokens {
    async fn token(&self, app: &str) -> StateResult<Option<(Secret, Duration)>> {
        self.up()?;
        let now = Instant::now();
        Ok(self
            .tokens
            .lock()
            .get(app)
            .filter(|(_, until)| *until > now)
            .map(|(t, until)| (t.clone(), *until - now)))
    }

    async fn store_token(&self, app: &str, token: &Secret, lifetime: Duration) -> StateResult<()> {
        self.up()?;
        let until = Instant::now() + lifetime;
        self.tokens
            .lock()
            .insert(app.into(), (token.clone(), until));
        Ok(())
    }

    async fn lock_refresh(&self, app: &str, holder: &str, hold: Duration) -> StateResult<bool> {
        self.up()?;
        let now = Instant::now();
        let mut locks = self.locks.lock();
        if locks.get(app).is_some_and(|(_, until)| *until > now) {
            return Ok(false);
        }
        locks.insert(app.into(), (holder.into(), now + hold));
        Ok(true)
    }

    async fn unlock_refresh(&self, app: &str, holder: &str) -> StateResult<()> {
        self.up()?;
        let mut locks = self.locks.lock();
        if locks.get(app).is_some_and(|(h, _)| h == holder) {
            locks.remove(app);
        }
        Ok(())
    }
}

/// Two sources sharing one fake store, as two instances share one Redis.
impl<T: SharedTokens> SharedTokens for std::sync::Arc<T> {
    fn token(
        &self,
        app: &str,
    ) -> impl std::future::Future<Output = StateResult<Option<(Secret, Duration)>>> + Send {
        (**self).token(app)
    }

    fn store_token(
        &self,
        app: &str,
        token: &Secret,
        lifetime: Duration,
    ) -> impl std::future::Future<Output = StateResult<()>> + Send {
        (**self).store_token(app, token, lifetime)
    }

    fn lock_refresh(
        &self,
        app: &str,
        holder: &str,
        hold: Duration,
    ) -> impl std::future::Future<Output = StateResult<bool>> + Send {
        (**self).lock_refresh(app, holder, hold)
    }

    fn unlock_refresh(
        &self,
        app: &str,
        holder: &str,
    ) -> impl std::future::Future<Output = StateResult<()>> + Send {
        (**self).unlock_refresh(app, holder)
    }
}
