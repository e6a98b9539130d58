//! State shared by every instance, in Redis: idempotency, msgid → job, delivery-report and
//! user-event de-duplication, the shared access token and its refresh lock, and the shared
//! GCRA bucket.
//! Every call has a timeout; a failure marks the state down (see [`super::health`]).

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;

use super::capability::{Idempotency, Reports, SharedRate, SharedTokens};
use super::error::{StateError, StateResult};
use super::health::StateHealth;
use super::rate_lease::SlotGrant;
use super::values::{Claim, Holder, Renewal, ReportKey, SentJob};
use crate::types::Secret;

/// Each call gives up after this long: a hung Redis must not hang the worker.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// GCRA on Redis's own clock, so every instance shares one bucket, granting up to ARGV[3] slots
/// at once: returns how many were granted (at least 1), or minus the microseconds until one is
/// free.
const GCRA_LEASE: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local free = math.floor((now + burst * interval - tat) / interval)
if free < 1 then return -(tat + interval - now - burst * interval) end
local n = math.min(free, want)
local new_tat = tat + n * interval
-- %.0f: Lua would print a large number in exponent form and lose the microseconds.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return n
";

/// Extends the claim KEYS[1] if ARGV[1] still holds it, takes it again if it lapsed, and
/// otherwise returns what is there (a msgid, or another holder's claim).
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 'held' end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 'held' end
return v
";

/// Deletes KEYS[1] only if it still holds ARGV[1] (a claim or a lock of ours).
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub struct RedisState {
    conn: ConnectionManager,
    ttl: Duration,
    in_flight_ttl: Duration,
    health: StateHealth,
    gcra: redis::Script,
    delete_if: redis::Script,
    renew: redis::Script,
}

fn key(app: &str, kind: &str, rest: impl std::fmt::Display) -> String {
    format!("wxcourier:{app}:{kind}:{rest}")
}

/// The value of a sent id's key when WeChat gave no msgid (a claim is `inflight:…`, a msgid
/// is its digits).
const SENT_WITHOUT_MSGID: &str = "sent";

/// What a sent id's key holds: `Some(msgid)` for a send, `None` for a claim.
fn sent_as(value: &str) -> Option<Option<u64>> {
    if value == SENT_WITHOUT_MSGID {
        return Some(None);
    }
    value.parse::<u64>().ok().map(Some)
}

fn millis(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl RedisState {
    /// Connects lazily: a Redis that is down at start-up only keeps the worker from consuming.
    /// `ca_pem`: the CAs a `rediss://` server must chain to, instead of the system's roots.
    pub(crate) fn new(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        ttl: Duration,
        in_flight_ttl: Duration,
    ) -> StateResult<Self> {
        let client = match ca_pem {
            None => redis::Client::open(url),
            Some(root_cert) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
        }
        .map_err(|e| StateError::Settings(format!("state.url is not a Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StateError::Settings(format!("cannot set up Redis: {e}")))?;
        Ok(Self {
            conn,
            ttl,
            in_flight_ttl,
            health: StateHealth::starting_down(),
            gcra: redis::Script::new(GCRA_LEASE),
            delete_if: redis::Script::new(DELETE_IF),
            renew: redis::Script::new(RENEW),
        })
    }

    pub(crate) fn health(&self) -> &StateHealth {
        &self.health
    }

    /// Runs one call with the timeout; a failure marks the state down.
    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> StateResult<T> {
        let mut conn = self.conn.clone();
        let result = tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<T>(&mut conn)).await;
        self.settle(result)
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> StateResult<T> {
        let mut conn = self.conn.clone();
        let result = tokio::time::timeout(CALL_TIMEOUT, inv.invoke_async::<T>(&mut conn)).await;
        self.settle(result)
    }

    fn settle<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> StateResult<T> {
        let error = match result {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => StateError::Unavailable(e.to_string()),
            Err(_) => StateError::Timeout(CALL_TIMEOUT),
        };
        self.health.mark_down(&error.to_string());
        Err(error)
    }

    /// Checks the connection (for the health probe).
    pub(crate) async fn ping(&self) -> StateResult<()> {
        let _: String = self.call(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// `SET key value NX PX ttl`: true when the key was set, false when it was there already.
    /// The one form of every first-writer-wins key here (a claim, a report, a refresh lock).
    async fn set_new(
        &self,
        key: &str,
        value: impl redis::ToRedisArgs,
        ttl: Duration,
    ) -> StateResult<bool> {
        let set: Option<String> = self
            .call(
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl)),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn sent_job(&self, app: &str, msgid: u64) -> StateResult<Option<SentJob>> {
        let raw: Option<String> = self
            .call(redis::cmd("GET").arg(key(app, "msgid", msgid)))
            .await?;
        Ok(raw.and_then(|r| {
            let v: Value = serde_json::from_str(&r).ok()?;
            Some(SentJob {
                id: v.get("id")?.as_str()?.to_owned(),
                meta: v.get("meta").filter(|m| !m.is_null()).cloned(),
            })
        }))
    }
}

/// Where a report's mark is kept: MsgIDs and user events apart, so neither can name the other.
fn report_key(app: &str, report: &ReportKey) -> String {
    match report {
        ReportKey::MsgId(msgid) => key(app, "report", msgid),
        ReportKey::Event(event) => key(app, "event", event),
    }
}

impl Reports for RedisState {
    fn job_for_msgid<'a>(
        &'a self,
        app: &'a str,
        msgid: u64,
    ) -> BoxFuture<'a, StateResult<Option<SentJob>>> {
        Box::pin(self.sent_job(app, msgid))
    }

    fn mark_report<'a>(
        &'a self,
        app: &'a str,
        key: &'a ReportKey,
    ) -> BoxFuture<'a, StateResult<bool>> {
        Box::pin(async move { self.set_new(&report_key(app, key), 1, self.ttl).await })
    }

    fn unmark_report<'a>(
        &'a self,
        app: &'a str,
        key: &'a ReportKey,
    ) -> BoxFuture<'a, StateResult<()>> {
        Box::pin(async move {
            let _: i64 = self
                .call(redis::cmd("DEL").arg(report_key(app, key)))
                .await?;
            Ok(())
        })
    }
}

impl Idempotency for RedisState {
    async fn claim(&self, app: &str, id: &str) -> StateResult<Claim> {
        let k = key(app, "id", id);
        let holder = Holder::new();
        if self.set_new(&k, holder.tag(), self.in_flight_ttl).await? {
            return Ok(Claim::Fresh(holder));
        }
        let held: Option<String> = self.call(redis::cmd("GET").arg(&k)).await?;
        Ok(match held.as_deref().and_then(sent_as) {
            Some(msgid) => Claim::AlreadySent(msgid),
            None => Claim::InFlight,
        })
    }

    async fn renew(&self, app: &str, id: &str, holder: Holder) -> StateResult<Renewal> {
        let mut inv = self.renew.key(key(app, "id", id));
        inv.arg(holder.tag()).arg(millis(self.in_flight_ttl));
        let found: String = self.script(inv).await?;
        Ok(match found.as_str() {
            "held" => Renewal::Held,
            other => match sent_as(other) {
                Some(msgid) => Renewal::AlreadySent(msgid),
                None => Renewal::Lost,
            },
        })
    }

    async fn release(&self, app: &str, id: &str, holder: Holder) -> StateResult<()> {
        let mut inv = self.delete_if.key(key(app, "id", id));
        inv.arg(holder.tag());
        let _: i64 = self.script(inv).await?;
        Ok(())
    }

    async fn record_sent(
        &self,
        app: &str,
        id: &str,
        msgid: Option<u64>,
        meta: Option<&Value>,
    ) -> StateResult<()> {
        // 0 is never a msgid (a report naming it is tied to no job).
        let msgid = msgid.filter(|&m| m != 0);
        let ttl = millis(self.ttl);
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        let sent = msgid.map_or_else(|| SENT_WITHOUT_MSGID.to_owned(), |m| m.to_string());
        pipe.cmd("SET")
            .arg(key(app, "id", id))
            .arg(sent)
            .arg("PX")
            .arg(ttl)
            .ignore();
        if let Some(msgid) = msgid {
            let job = serde_json::json!({ "id": id, "meta": meta });
            pipe.cmd("SET")
                .arg(key(app, "msgid", msgid))
                .arg(job.to_string())
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        let result = tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
        self.settle(result)
    }
}

impl SharedRate for RedisState {
    /// Asks this app's bucket, shared by every instance, for up to `want` send slots.
    async fn grant(
        &self,
        app: &str,
        interval: Duration,
        burst: u32,
        want: u32,
    ) -> StateResult<SlotGrant> {
        let mut inv = self.gcra.key(key(app, "rate", "gcra"));
        inv.arg(interval.as_micros().max(1) as u64)
            .arg(burst)
            .arg(want.max(1));
        let answer: i64 = self.script(inv).await?;
        Ok(match u32::try_from(answer) {
            Ok(n) if n > 0 => SlotGrant::Slots(n),
            _ => SlotGrant::Wait(
                Duration::from_micros(answer.unsigned_abs()).max(Duration::from_micros(1)),
            ),
        })
    }
}

impl SharedTokens for RedisState {
    /// The shared access token and how long Redis will keep it.
    async fn token(&self, app: &str) -> StateResult<Option<(Secret, Duration)>> {
        let k = key(app, "token", "current");
        let mut conn = self.conn.clone();
        let pipe = redis::pipe().cmd("GET").arg(&k).cmd("PTTL").arg(&k).clone();
        let result = tokio::time::timeout(
            CALL_TIMEOUT,
            pipe.query_async::<(Option<String>, i64)>(&mut conn),
        )
        .await;
        let (token, pttl) = self.settle(result)?;
        Ok(token
            .filter(|_| pttl > 0)
            .map(|t| (Secret::new(t), Duration::from_millis(pttl as u64))))
    }

    async fn store_token(&self, app: &str, token: &Secret, lifetime: Duration) -> StateResult<()> {
        let _: () = self
            .call(
                redis::cmd("SET")
                    .arg(key(app, "token", "current"))
                    .arg(token.expose())
                    .arg("PX")
                    .arg(millis(lifetime)),
            )
            .await?;
        Ok(())
    }

    async fn lock_refresh(&self, app: &str, holder: &str, hold: Duration) -> StateResult<bool> {
        self.set_new(&key(app, "token", "lock"), holder, hold).await
    }

    async fn unlock_refresh(&self, app: &str, holder: &str) -> StateResult<()> {
        let mut inv = self.delete_if.key(key(app, "token", "lock"));
        inv.arg(holder);
        let _: i64 = self.script(inv).await?;
        Ok(())
    }
}
