//! State shared by every instance, in Redis: idempotency, msgid → job, delivery-report and
//! user-event de-duplication, the shared access token and its refresh lock, the shared
//! GCRA bucket, each app's send limits (`send_limits`) and the kill switch's pauses
//! (`pauses`). On one node, a Sentinel-watched
//! primary or a Cluster (`link`); each key's name is in `keys`.
//! Every call has a timeout; a failure marks the state down (see [`super::health`]).

mod cancels;
mod gates;
mod keys;
mod link;
mod pauses;
mod platforms;
mod send_limits;
mod sentinel;
mod trail;

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use keys::{key, legacy_key};
use link::{CALL_TIMEOUT, Link};

use super::capability::{Idempotency, Reports, SharedRate, SharedTokens};
use super::error::{StateError, StateResult};
use super::health::StateHealth;
use super::pauses::{PauseScope, Paused, Pauses};
use super::rate_lease::SlotGrant;
use super::values::{Claim, Holder, Renewal, ReportKey, SentJob};
use crate::config::RedisUrl;
use crate::types::{Secret, TraceHeaders};

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

/// Claims the id KEYS[1] for the holder ARGV[1] for ARGV[2] ms unless something is there (a
/// msgid, another holder's claim, or a kept cancel: `cancelled`, see `cancels`), which it
/// returns; the holder's own tag means "claimed". KEYS[2], when given, is the same id's key in
/// the layout before hash tags: what it holds counts as well, so an id sent before an upgrade
/// is not sent again. A claim equal to ARGV[3] (the job's previous turn's, which has ended) is
/// taken over. One key in a Cluster: a script of several keys is refused while its slot moves.
const CLAIM: &str = r"
return claim(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
";

/// `claim(key, legacy, holder, ttl, previous)`: CLAIM's work as a Lua function, which the
/// send limits' claim-and-reserve script defines too. `legacy` may be nil.
pub(super) const CLAIM_FN: &str = r"
local function claim(key, legacy, holder, ttl, previous)
  local v = redis.call('GET', key)
  if v and v ~= previous then return v end
  if not v and legacy then
    local old = redis.call('GET', legacy)
    if old then return old end
  end
  redis.call('SET', key, holder, 'PX', ttl)
  return holder
end
";

/// Extends the claim KEYS[1] if ARGV[1] still holds it, takes it again if it lapsed, and
/// otherwise returns what is there (a msgid, another holder's claim, or `cancelled`: a lapsed
/// claim is not taken again once a cancel is kept). KEYS[2] as in CLAIM.
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 'held' end
if not v then
  if KEYS[2] then
    local old = redis.call('GET', KEYS[2])
    if old then return old end
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'held'
end
return v
";

/// What an id's record holds while a cancel is kept for it (see `cancels`), and so what CLAIM
/// and RENEW answer then.
const CANCELLED: &str = "cancelled";

/// Deletes KEYS[1] only if it still holds ARGV[1] (a claim or a lock of ours).
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub struct RedisState {
    link: Link,
    /// Whether keys of the layout before hash tags may be here (see `keys`).
    legacy: bool,
    ttl: Duration,
    in_flight_ttl: Duration,
    health: StateHealth,
    gcra: redis::Script,
    delete_if: redis::Script,
    claim: redis::Script,
    renew: redis::Script,
    change_pauses: redis::Script,
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

/// What a claim script's answer `found` means for the holder tagged `tag`.
fn claim_from(found: &str, tag: &str, holder: Holder) -> Claim {
    if found == tag {
        Claim::Fresh(holder)
    } else if found == CANCELLED {
        Claim::Cancelled
    } else {
        match sent_as(found) {
            Some(msgid) => Claim::AlreadySent(msgid),
            None => Claim::InFlight,
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl RedisState {
    /// Connects lazily: a Redis that is down at start-up only keeps the worker from consuming.
    /// `ca_pem`: the CAs a `rediss…` server must chain to, instead of the system's roots.
    pub(crate) fn new(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        ttl: Duration,
        in_flight_ttl: Duration,
    ) -> StateResult<Self> {
        let url =
            RedisUrl::parse(url).map_err(|why| StateError::Settings(format!("state.url {why}")))?;
        let link = Link::open(&url, ca_pem).map_err(StateError::Settings)?;
        Ok(Self {
            legacy: link.may_hold_legacy_keys(),
            link,
            ttl,
            in_flight_ttl,
            health: StateHealth::starting_down(),
            gcra: redis::Script::new(GCRA_LEASE),
            delete_if: redis::Script::new(DELETE_IF),
            claim: redis::Script::new(&format!("{CLAIM_FN}{CLAIM}")),
            renew: redis::Script::new(RENEW),
            change_pauses: redis::Script::new(pauses::CHANGE_PAUSES),
        })
    }

    /// Reaches Redis and says in which mode (for `wxcourier check`).
    pub(crate) async fn describe(&self) -> StateResult<String> {
        let result = tokio::time::timeout(CALL_TIMEOUT, self.link.describe()).await;
        self.settle(result)
    }

    /// The key of an id in the layout before hash tags, where such keys may be.
    fn legacy_id_key(&self, app: &str, id: &str) -> Option<String> {
        self.legacy.then(|| legacy_key(app, "id", id))
    }

    pub(crate) fn health(&self) -> &StateHealth {
        &self.health
    }

    /// Runs one call with the timeout; a failure marks the state down.
    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> StateResult<T> {
        let mut conn = self.link.conn();
        let result = tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<T>(&mut conn)).await;
        self.settle(result)
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> StateResult<T> {
        let mut conn = self.link.conn();
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

    async fn pipeline<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> StateResult<T> {
        let mut conn = self.link.conn();
        let result = tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<T>(&mut conn)).await;
        self.settle(result)
    }

    async fn sent_job(&self, app: &str, msgid: u64) -> StateResult<Option<SentJob>> {
        let raw: Option<String> = if self.legacy {
            // Both layouts in one round trip: a report may name a msgid sent before an upgrade.
            let (now, before): (Option<String>, Option<String>) = self
                .pipeline(
                    redis::pipe()
                        .cmd("GET")
                        .arg(key(app, "msgid", msgid))
                        .cmd("GET")
                        .arg(legacy_key(app, "msgid", msgid)),
                )
                .await?;
            now.or(before)
        } else {
            self.call(redis::cmd("GET").arg(key(app, "msgid", msgid)))
                .await?
        };
        Ok(raw.and_then(|r| {
            let v: Value = serde_json::from_str(&r).ok()?;
            Some(SentJob {
                id: v.get("id")?.as_str()?.to_owned(),
                meta: v.get("meta").filter(|m| !m.is_null()).cloned(),
                // A record written before traces were kept has none. Shared state is read as
                // untrusted as a producer's headers: what does not pass their check is left out.
                trace: v
                    .get("trace")
                    .and_then(|t| serde_json::from_value::<TraceHeaders>(t.clone()).ok())
                    .and_then(|t| TraceHeaders::checked(&t.traceparent, t.tracestate.as_deref())),
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
    async fn claim_as(
        &self,
        app: &str,
        id: &str,
        holder: Holder,
        previous: Option<Holder>,
    ) -> StateResult<Claim> {
        let tag = holder.tag();
        let mut inv = self.claim.key(key(app, "id", id));
        if let Some(legacy) = self.legacy_id_key(app, id) {
            inv.key(legacy);
        }
        // ARGV[3]: the claim this job's previous turn took, taken over if it is still there
        // ("" names none: no claim is empty).
        let previous = previous.map(Holder::tag).unwrap_or_default();
        inv.arg(&tag).arg(millis(self.in_flight_ttl)).arg(previous);
        let found: String = self.script(inv).await?;
        Ok(claim_from(&found, &tag, holder))
    }

    async fn renew(&self, app: &str, id: &str, holder: Holder) -> StateResult<Renewal> {
        let mut inv = self.renew.key(key(app, "id", id));
        if let Some(legacy) = self.legacy_id_key(app, id) {
            inv.key(legacy);
        }
        inv.arg(holder.tag()).arg(millis(self.in_flight_ttl));
        let found: String = self.script(inv).await?;
        Ok(match found.as_str() {
            "held" => Renewal::Held,
            CANCELLED => Renewal::Cancelled,
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
        trace: Option<&TraceHeaders>,
    ) -> StateResult<()> {
        // 0 is never a msgid (a report naming it is tied to no job).
        let msgid = msgid.filter(|&m| m != 0);
        let ttl = millis(self.ttl);
        let sent = msgid.map_or_else(|| SENT_WITHOUT_MSGID.to_owned(), |m| m.to_string());
        let mut record = redis::cmd("SET");
        record.arg(key(app, "id", id)).arg(sent).arg("PX").arg(ttl);
        let Some(msgid) = msgid else {
            return self.call(&record).await;
        };
        let job = match trace {
            Some(trace) => serde_json::json!({ "id": id, "meta": meta, "trace": trace }),
            None => serde_json::json!({ "id": id, "meta": meta }),
        };
        let mut lookup = redis::cmd("SET");
        lookup
            .arg(key(app, "msgid", msgid))
            .arg(job.to_string())
            .arg("PX")
            .arg(ttl);
        // Two commands in flight together, not one pipeline: the same round trip on one
        // connection, and each routed on its own. While a Cluster slot migrates, the id key
        // (claimed earlier) is still on the source and the new msgid key is created on the
        // target after an ASK; a pipeline redirected as a whole would write the id key on the
        // target too, leaving two copies that differ and a migration that stops on them.
        let (recorded, looked_up) =
            tokio::join!(self.call::<()>(&record), self.call::<()>(&lookup));
        recorded.and(looked_up)
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
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&k).cmd("PTTL").arg(&k);
        let (token, pttl): (Option<String>, i64) = if self.legacy {
            // Instances of a version before hash tags share the token under the old key: read
            // it too (same round trip), so an upgrade costs no token fetch.
            let old = legacy_key(app, "token", "current");
            pipe.cmd("GET").arg(&old).cmd("PTTL").arg(&old);
            let (token, pttl, old_token, old_pttl): (Option<String>, i64, Option<String>, i64) =
                self.pipeline(&pipe).await?;
            match token.filter(|_| pttl > 0) {
                Some(t) => (Some(t), pttl),
                None => (old_token, old_pttl),
            }
        } else {
            self.pipeline(&pipe).await?
        };
        Ok(token
            .filter(|_| pttl > 0)
            .map(|t| (Secret::new(t), Duration::from_millis(pttl as u64))))
    }

    async fn store_token(&self, app: &str, token: &Secret, lifetime: Duration) -> StateResult<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(key(app, "token", "current"))
            .arg(token.expose())
            .arg("PX")
            .arg(millis(lifetime))
            .ignore();
        if self.legacy {
            // While older instances still run beside this one, they read the old key: a
            // classic-mode refresh here retires the token they hold, so they get the new one.
            pipe.cmd("SET")
                .arg(legacy_key(app, "token", "current"))
                .arg(token.expose())
                .arg("PX")
                .arg(millis(lifetime))
                .ignore();
        }
        self.pipeline(&pipe).await
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

impl Pauses for RedisState {
    async fn paused(&self, app: &str) -> StateResult<Paused> {
        let members: Vec<String> = self
            .call(redis::cmd("SMEMBERS").arg(pauses::set_key(app)))
            .await?;
        Ok(pauses::from_members(members))
    }

    async fn pause(&self, app: &str, scope: &PauseScope) -> StateResult<Paused> {
        self.change_pauses(app, "add", scope).await
    }

    /// The whole app's resume clears the set: every pause of the app is lifted.
    async fn resume(&self, app: &str, scope: &PauseScope) -> StateResult<Paused> {
        let op = match scope {
            PauseScope::App => "clear",
            PauseScope::Template(_) => "remove",
        };
        self.change_pauses(app, op, scope).await
    }
}

impl RedisState {
    /// A change to the app's pauses and the set after it, in one script.
    async fn change_pauses(&self, app: &str, op: &str, scope: &PauseScope) -> StateResult<Paused> {
        let mut inv = self.change_pauses.key(pauses::set_key(app));
        inv.arg(op).arg(pauses::member(scope));
        let members: Vec<String> = self.script(inv).await?;
        Ok(pauses::from_members(members))
    }
}
