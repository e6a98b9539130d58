//! In-memory stand-ins for the state capabilities, for unit tests: each can be switched into an
//! outage, and records what was done through it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use futures_util::future::BoxFuture;

use super::cancels::{CancelFound, Cancels};
use super::capability::{Idempotency, Reports, SharedTokens};
use super::error::{StateError, StateResult};
use super::memory::MemoryState;
use super::send_limits::{ClaimReserving, LimitRequest, Reservation, SendLimits};
use super::values::{Claim, Holder, Renewal, ReportKey, SentJob};
use crate::types::{Secret, TraceHeaders};

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
    Reserved(String),
    GaveBack(String),
    CancelRecorded(String),
    CancelAsked(String),
}

/// Idempotency in memory (the memory backend's own rules), with outages on demand.
pub(crate) struct FakeStore {
    inner: MemoryState,
    /// Every call fails.
    pub(crate) down: AtomicBool,
    /// Only `record_sent` fails.
    pub(crate) record_fails: AtomicBool,
    /// Only the send limits' calls fail.
    pub(crate) limits_down: AtomicBool,
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
            limits_down: AtomicBool::new(false),
            renewal: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
        }
    }
}

impl FakeStore {
    /// A claim for `holder` that reached the store although its call failed (a timed-out
    /// call whose command was still on its way).
    pub(crate) fn claim_landed_late(&self, app: &str, id: &str, holder: Holder) {
        self.inner.claim_as(app, id, holder, None);
    }

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
    async fn claim_as(
        &self,
        app: &str,
        id: &str,
        mine: Holder,
        previous: Option<Holder>,
    ) -> StateResult<Claim> {
        self.up()?;
        self.calls.lock().push(StoreCall::Claimed(id.into()));
        Ok(self.inner.claim_as(app, id, mine, previous))
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
        trace: Option<&TraceHeaders>,
    ) -> StateResult<()> {
        self.up()?;
        if self.record_fails.load(Ordering::SeqCst) {
            return Err(outage());
        }
        self.calls
            .lock()
            .push(StoreCall::Recorded(id.into(), msgid));
        self.inner.record_sent(app, id, msgid, meta, trace);
        Ok(())
    }
}

impl FakeStore {
    /// The preference gates its memory state keeps, which its reservations read.
    pub(crate) fn gates(&self) -> std::sync::Arc<dyn super::gates::Gates> {
        self.inner.gates()
    }
}

impl SendLimits for FakeStore {
    async fn reserve(&self, app: &str, request: &LimitRequest<'_>) -> StateResult<Reservation> {
        self.up()?;
        if self.limits_down.load(Ordering::SeqCst) {
            return Err(outage());
        }
        self.calls
            .lock()
            .push(StoreCall::Reserved(request.id.into()));
        self.inner.reserve(app, request).await
    }

    async fn give_back(&self, app: &str, request: &LimitRequest<'_>) -> StateResult<()> {
        self.up()?;
        if self.limits_down.load(Ordering::SeqCst) {
            return Err(outage());
        }
        self.calls
            .lock()
            .push(StoreCall::GaveBack(request.id.into()));
        self.inner.give_back(app, request).await
    }
}

impl ClaimReserving for FakeStore {}

impl Cancels for FakeStore {
    async fn record_cancel(&self, app: &str, id: &str, keep: Duration) -> StateResult<CancelFound> {
        self.up()?;
        self.calls.lock().push(StoreCall::CancelRecorded(id.into()));
        Ok(self.inner.record_cancel(app, id, keep))
    }

    async fn is_cancelled(&self, app: &str, id: &str) -> StateResult<bool> {
        self.up()?;
        self.calls.lock().push(StoreCall::CancelAsked(id.into()));
        Ok(self.inner.is_cancelled(app, id))
    }
}

/// What was done through a [`FakeReports`], in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReportCall {
    Marked(ReportKey),
    Unmarked(ReportKey),
    Looked(u64),
}

/// Report marks and msgid → job in memory (the memory backend's own rules), with outages on
/// demand: every call, or only the first few un-marks.
pub(crate) struct FakeReports {
    inner: MemoryState,
    /// Every call fails.
    pub(crate) down: AtomicBool,
    /// This many un-marks fail before one goes through.
    pub(crate) unmark_failures: AtomicUsize,
    /// Successful calls only.
    pub(crate) calls: Mutex<Vec<ReportCall>>,
}

impl Default for FakeReports {
    fn default() -> Self {
        Self {
            inner: MemoryState::new(Duration::from_secs(3600), 1000),
            down: AtomicBool::new(false),
            unmark_failures: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
        }
    }
}

impl FakeReports {
    fn up(&self) -> StateResult<()> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(outage()),
            false => Ok(()),
        }
    }

    /// Records that `id` was sent as `msgid`, as the pipeline would.
    pub(crate) fn sent(&self, app: &str, id: &str, msgid: u64, meta: Option<&Value>) {
        self.inner.record_sent(app, id, Some(msgid), meta, None);
    }

    /// Records that `id`, which carried `trace`, was sent as `msgid`.
    pub(crate) fn sent_traced(&self, app: &str, id: &str, msgid: u64, trace: &TraceHeaders) {
        self.inner
            .record_sent(app, id, Some(msgid), None, Some(trace));
    }

    pub(crate) fn calls(&self) -> Vec<ReportCall> {
        self.calls.lock().clone()
    }
}

impl Reports for FakeReports {
    fn job_for_msgid<'a>(
        &'a self,
        app: &'a str,
        msgid: u64,
    ) -> BoxFuture<'a, StateResult<Option<SentJob>>> {
        Box::pin(async move {
            self.up()?;
            self.calls.lock().push(ReportCall::Looked(msgid));
            self.inner.job_for_msgid(app, msgid).await
        })
    }

    fn mark_report<'a>(
        &'a self,
        app: &'a str,
        key: &'a ReportKey,
    ) -> BoxFuture<'a, StateResult<bool>> {
        Box::pin(async move {
            self.up()?;
            self.calls.lock().push(ReportCall::Marked(key.clone()));
            self.inner.mark_report(app, key).await
        })
    }

    fn unmark_report<'a>(
        &'a self,
        app: &'a str,
        key: &'a ReportKey,
    ) -> BoxFuture<'a, StateResult<()>> {
        Box::pin(async move {
            self.up()?;
            let failing =
                self.unmark_failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if failing.is_ok() {
                return Err(outage());
            }
            self.calls.lock().push(ReportCall::Unmarked(key.clone()));
            self.inner.unmark_report(app, key).await
        })
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
