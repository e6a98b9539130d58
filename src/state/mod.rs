//! State shared by the pipeline: idempotency (which ids were sent, and as which msgid),
//! msgid → job for delivery reports, and de-duplication of reports (by MsgID) and of pushed
//! user events (by a key naming the event); with several instances, also the access token and
//! the send rate. In memory for one instance, or in Redis for many. Each capability is a trait
//! (`capability`); a backend declares which it provides.

pub(crate) mod capability;
pub(crate) mod error;
#[cfg(test)]
pub(crate) mod fakes;
pub(crate) mod health;
pub(crate) mod memory;
pub mod rate_lease;
pub(crate) mod redis;
pub(crate) mod share;
pub(crate) mod values;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

pub(crate) use capability::Capabilities;
pub use capability::{Idempotency, Reports, SharedRate, SharedTokens};
pub use error::StateError;
pub(crate) use error::StateResult;
pub(crate) use health::StateHealth;
pub(crate) use memory::MemoryState;
pub(crate) use redis::RedisState;
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
    /// `memory`, or a `redis://` URL. A claim on an id lasts `in_flight_ttl` if its holder dies.
    pub fn from_url(
        url: &str,
        ttl: Duration,
        capacity: usize,
        in_flight_ttl: Duration,
    ) -> StateResult<Self> {
        Self::open(url, None, ttl, capacity, in_flight_ttl)
    }

    /// The state `[state]` configures, with `state.ca_file` read for `rediss://`.
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
    async fn claim(&self, app: &str, id: &str) -> StateResult<Claim> {
        match self {
            State::Memory(m, _) => Ok(m.claim(app, id)),
            State::Redis(r) => r.claim(app, id).await,
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
    ) -> StateResult<()> {
        match self {
            State::Memory(m, _) => {
                m.record_sent(app, id, msgid, meta);
                Ok(())
            }
            State::Redis(r) => r.record_sent(app, id, msgid, meta).await,
        }
    }
}
