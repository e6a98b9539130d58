//! State shared by the pipeline: idempotency (which ids were sent, and as which msgid; the
//! cancels kept beside them),
//! msgid → job for delivery reports, and de-duplication of reports (by MsgID) and of pushed
//! user events (by a key naming the event), and the kill switch's pauses; with several
//! instances, also the access token and the send rate; and each app's send limits
//! (`send_limits`). In memory for one instance, or in Redis for many. Each capability is a
//! trait (`capability`, `send_limits`, `pauses`); a backend declares which it provides.

pub(crate) mod cancels;
pub(crate) mod capability;
pub(crate) mod error;
#[cfg(test)]
pub(crate) mod fakes;
pub(crate) mod gates;
pub(crate) mod health;
pub(crate) mod limit_windows;
pub(crate) mod memory;
pub(crate) mod pauses;
pub(crate) mod platforms;
pub mod rate_lease;
pub(crate) mod redis;
pub(crate) mod send_limits;
pub(crate) mod share;
pub(crate) mod values;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::types::TraceHeaders;

pub use cancels::{CancelFound, Cancels};
pub(crate) use capability::Capabilities;
pub use capability::{Idempotency, Reports, SharedRate, SharedTokens};
pub use error::StateError;
pub(crate) use error::StateResult;
pub use gates::{Gate, GateScope, GateWhy, Gates};
pub(crate) use health::StateHealth;
pub(crate) use memory::MemoryState;
pub use pauses::{PauseScope, Paused, Pauses};
pub use platforms::{Authorizer, CodeClaim, PlatformStore, Standing, Ticket};
pub(crate) use redis::RedisState;
pub use send_limits::{
    ClaimReserving, ContentWindow, GateAsk, LimitRequest, RecipientCap, Reservation, SendLimits,
};
pub(crate) use share::{RateShare, TokenShare};
pub use values::{Claim, Holder, Renewal, ReportKey, SentJob};

/// Reads `state.ca_file`: a PEM file with at least one certificate (an empty trust store would
/// only fail later, at every handshake, with a vaguer error).
fn read_ca(path: &str) -> StateResult<Vec<u8>> {
    let pem = std::fs::read(path)
        .map_err(|e| StateError::Settings(format!("cannot read state.ca_file {path}: {e}")))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(StateError::Settings(format!(
            "state.ca_file {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(pem)
}

/// The configured state backend. What each one provides is in [`State::capabilities`]; the
/// shared token and rate are reached through [`State::token_share`] and [`State::rate_share`].
pub enum State {
    Memory(Box<MemoryState>, StateHealth),
    Redis(Arc<RedisState>),
}

impl State {
    /// The preference gates this state keeps: shared through Redis, or this process's own in
    /// memory (at most `state.memory_capacity` of them). The same gates a reservation asks
    /// ([`LimitRequest::gate`]), so what the callback sets is what a send meets.
    pub fn gate_store(&self) -> Arc<dyn Gates> {
        match self {
            State::Memory(m, _) => m.gates(),
            State::Redis(redis) => redis.clone(),
        }
    }

    /// What third-party platforms keep (tickets, authorizers): shared through Redis, or this
    /// process's own in memory.
    pub fn platform_store(&self) -> Arc<dyn PlatformStore> {
        match self {
            State::Memory(..) => Arc::new(platforms::MemoryPlatforms::default()),
            State::Redis(redis) => redis.clone(),
        }
    }

    /// `memory`, or a Redis URL (one node, Sentinel or Cluster). A claim on an id lasts
    /// `in_flight_ttl` if its holder dies.
    pub fn from_url(
        url: &str,
        ttl: Duration,
        capacity: usize,
        in_flight_ttl: Duration,
    ) -> StateResult<Self> {
        Self::open(url, None, ttl, capacity, in_flight_ttl)
    }

    /// The state `[state]` configures, with `state.ca_file` read for a TLS URL.
    pub fn from_settings(
        settings: &crate::config::StateSettings,
        in_flight_ttl: Duration,
    ) -> StateResult<Self> {
        let ca = settings.ca_file.as_deref().map(read_ca).transpose()?;
        Self::open(
            settings.url.expose(),
            ca,
            settings.idempotency_ttl.get(),
            settings.memory_capacity.get(),
            in_flight_ttl,
        )
    }

    fn open(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        ttl: Duration,
        capacity: usize,
        in_flight_ttl: Duration,
    ) -> StateResult<Self> {
        if url == "memory" {
            Ok(State::Memory(
                Box::new(MemoryState::new(ttl, capacity)),
                StateHealth::default(),
            ))
        } else {
            let redis = RedisState::new(url, ca_pem, ttl, in_flight_ttl)?;
            Ok(State::Redis(Arc::new(redis)))
        }
    }

    /// What this backend provides, for the start-up check (`Capabilities::check`).
    pub fn capabilities(&self) -> Capabilities {
        let (backend, shared_ids) = match self {
            State::Memory(..) => ("memory", false),
            State::Redis(_) => ("redis", true),
        };
        Capabilities {
            backend,
            shared_ids,
            shared_tokens: self.token_share().is_some(),
            shared_rate: self.rate_share().is_some(),
        }
    }

    /// The access token every instance shares, if this backend shares one.
    pub fn token_share(&self) -> Option<TokenShare> {
        match self {
            State::Memory(..) => None,
            State::Redis(r) => Some(TokenShare::Redis(r.clone())),
        }
    }

    /// The send rate every instance shares, if this backend shares one.
    pub fn rate_share(&self) -> Option<RateShare> {
        match self {
            State::Memory(..) => None,
            State::Redis(r) => Some(RateShare::Redis(r.clone())),
        }
    }

    pub fn health(&self) -> &StateHealth {
        match self {
            State::Memory(_, h) => h,
            State::Redis(r) => r.health(),
        }
    }

    /// Whether the backend answers (always, in memory).
    pub async fn ping(&self) -> StateResult<()> {
        match self {
            State::Memory(..) => Ok(()),
            State::Redis(r) => r.ping().await,
        }
    }

    /// Reaches the backend and says how: `memory`, or Redis's mode (`single node`, `sentinel,
    /// primary HOST:PORT of master NAME`, `cluster with N masters`).
    pub async fn describe(&self) -> StateResult<String> {
        match self {
            State::Memory(..) => Ok("memory".into()),
            State::Redis(r) => r.describe().await,
        }
    }

    /// For a backend that can become unreachable: checks it every second when down and every
    /// five when up, so consumers stop and resume without a restart. Returns when `stop` fires.
    pub(crate) async fn watch(&self, stop: tokio_util::sync::CancellationToken) {
        let State::Redis(redis) = self else { return };
        loop {
            let up = redis.ping().await.is_ok();
            if up {
                redis.health().mark_up();
            }
            let every = if up {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

impl Reports for State {
    fn job_for_msgid<'a>(
        &'a self,
        app: &'a str,
        msgid: u64,
    ) -> BoxFuture<'a, StateResult<Option<SentJob>>> {
        match self {
            State::Memory(m, _) => m.job_for_msgid(app, msgid),
            State::Redis(r) => r.job_for_msgid(app, msgid),
        }
    }

    fn mark_report<'a>(
        &'a self,
        app: &'a str,
        key: &'a ReportKey,
    ) -> BoxFuture<'a, StateResult<bool>> {
        match self {
            State::Memory(m, _) => m.mark_report(app, key),
            State::Redis(r) => r.mark_report(app, key),
        }
    }

    fn unmark_report<'a>(
        &'a self,
        app: &'a str,
        key: &'a ReportKey,
    ) -> BoxFuture<'a, StateResult<()>> {
        match self {
            State::Memory(m, _) => m.unmark_report(app, key),
            State::Redis(r) => r.unmark_report(app, key),
        }
    }
}

impl Idempotency for State {
    async fn claim_as(
        &self,
        app: &str,
        id: &str,
        mine: Holder,
        previous: Option<Holder>,
    ) -> StateResult<Claim> {
        match self {
            State::Memory(m, _) => Ok(m.claim_as(app, id, mine, previous)),
            State::Redis(r) => r.claim_as(app, id, mine, previous).await,
        }
    }

    async fn renew(&self, app: &str, id: &str, holder: Holder) -> StateResult<Renewal> {
        match self {
            State::Memory(m, _) => Ok(m.renew(app, id, holder)),
            State::Redis(r) => r.renew(app, id, holder).await,
        }
    }

    async fn release(&self, app: &str, id: &str, holder: Holder) -> StateResult<()> {
        match self {
            State::Memory(m, _) => {
                m.release(app, id, holder);
                Ok(())
            }
            State::Redis(r) => r.release(app, id, holder).await,
        }
    }

    async fn record_sent(
        &self,
        app: &str,
        id: &str,
        msgid: Option<u64>,
        meta: Option<&Value>,
        trace: Option<&TraceHeaders>,
    ) -> StateResult<()> {
        match self {
            State::Memory(m, _) => {
                m.record_sent(app, id, msgid, meta, trace);
                Ok(())
            }
            State::Redis(r) => r.record_sent(app, id, msgid, meta, trace).await,
        }
    }
}

impl ClaimReserving for State {
    async fn claim_reserving(
        &self,
        app: &str,
        id: &str,
        mine: Holder,
        previous: Option<Holder>,
        request: &LimitRequest<'_>,
    ) -> StateResult<(Claim, Option<Reservation>)> {
        match self {
            // Memory's reservation cannot fail.
            State::Memory(m, _) => match m.claim_as(app, id, mine, previous) {
                claim @ Claim::Fresh(_) => Ok((claim, Some(m.reserve(app, request).await?))),
                claim => Ok((claim, None)),
            },
            State::Redis(r) => r.claim_reserving(app, id, mine, previous, request).await,
        }
    }
}

impl SendLimits for State {
    async fn reserve(&self, app: &str, request: &LimitRequest<'_>) -> StateResult<Reservation> {
        match self {
            State::Memory(m, _) => m.reserve(app, request).await,
            State::Redis(r) => r.reserve(app, request).await,
        }
    }

    async fn give_back(&self, app: &str, request: &LimitRequest<'_>) -> StateResult<()> {
        match self {
            State::Memory(m, _) => m.give_back(app, request).await,
            State::Redis(r) => r.give_back(app, request).await,
        }
    }
}

impl Pauses for State {
    async fn paused(&self, app: &str) -> StateResult<Paused> {
        match self {
            State::Memory(m, _) => m.paused(app).await,
            State::Redis(r) => r.paused(app).await,
        }
    }

    async fn pause(&self, app: &str, scope: &PauseScope) -> StateResult<Paused> {
        match self {
            State::Memory(m, _) => m.pause(app, scope).await,
            State::Redis(r) => r.pause(app, scope).await,
        }
    }

    async fn resume(&self, app: &str, scope: &PauseScope) -> StateResult<Paused> {
        match self {
            State::Memory(m, _) => m.resume(app, scope).await,
            State::Redis(r) => r.resume(app, scope).await,
        }
    }
}

impl Cancels for State {
    async fn record_cancel(&self, app: &str, id: &str, keep: Duration) -> StateResult<CancelFound> {
        match self {
            State::Memory(m, _) => Ok(m.record_cancel(app, id, keep)),
            State::Redis(r) => r.record_cancel(app, id, keep).await,
        }
    }

    async fn is_cancelled(&self, app: &str, id: &str) -> StateResult<bool> {
        match self {
            State::Memory(m, _) => Ok(m.is_cancelled(app, id)),
            State::Redis(r) => r.is_cancelled(app, id).await,
        }
    }
}
