//! The send limits in Redis, shared by every instance: each recipient's window is a sorted
//! set of job ids scored by the time of their send (`wxcourier:{APP}:cap:TOUSER`), each
//! content's mark a key holding the job id that took it (`wxcourier:{APP}:dedup:DIGEST`).
//! One script decides and takes both, on Redis's own clock, so concurrent jobs on any number of
//! instances are counted exactly; both keys carry the app's hash tag, so in a Cluster the
//! script runs on one node.

use std::sync::LazyLock;
use std::time::Duration;

use super::keys::key;
use super::{RedisState, millis};
use crate::state::error::StateResult;
use crate::state::send_limits::{LimitRequest, Reservation, SendLimits};

/// KEYS[1] the recipient's window, KEYS[2] the content's mark; ARGV[1] the job id, ARGV[2]
/// the cap's count (0: no cap), ARGV[3] its window in ms, ARGV[4] the content window in ms (0:
/// no de-duplication). Returns {'granted', 0}, {'duplicate', 0}, or {'capped', ms until the
/// oldest send leaves the window}. A job id already in the window or holding the mark is
/// granted again and takes nothing more.
const RESERVE: &str = r"
local id = ARGV[1]
local count = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local dedup = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if dedup > 0 then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= id then return {'duplicate', 0} end
end
if count > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - per)
  if not redis.call('ZSCORE', KEYS[1], id) then
    if redis.call('ZCARD', KEYS[1]) >= count then
      local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
      return {'capped', math.max(1, tonumber(oldest[2]) + per - now)}
    end
    redis.call('ZADD', KEYS[1], now, id)
  end
  redis.call('PEXPIRE', KEYS[1], per)
end
if dedup > 0 then redis.call('SET', KEYS[2], id, 'PX', dedup) end
return {'granted', 0}
";

/// KEYS and ARGV[1] as in RESERVE; ARGV[2] and ARGV[3] say whether the cap and the mark are
/// in force. Only what the job id itself holds is removed.
const GIVE_BACK: &str = r"
local id = ARGV[1]
if ARGV[2] == '1' then redis.call('ZREM', KEYS[1], id) end
if ARGV[3] == '1' and redis.call('GET', KEYS[2]) == id then redis.call('DEL', KEYS[2]) end
return 1
";

static RESERVE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RESERVE));
static GIVE_BACK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GIVE_BACK));

/// The two keys a request names. A limit not in force still names a key of the app (never
/// touched), so both keys sit in the app's slot.
fn keys_of(app: &str, r: &LimitRequest<'_>) -> [String; 2] {
    [
        key(app, "cap", r.cap.map_or("", |c| c.touser)),
        key(app, "dedup", r.content.map_or("", |c| c.digest)),
    ]
}

impl SendLimits for RedisState {
    async fn reserve(&self, app: &str, request: &LimitRequest<'_>) -> StateResult<Reservation> {
        let [cap_key, dedup_key] = keys_of(app, request);
        let mut inv = RESERVE_SCRIPT.key(cap_key);
        inv.key(dedup_key).arg(request.id);
        match request.cap {
            Some(cap) => inv.arg(cap.count.get()).arg(millis(cap.per)),
            None => inv.arg(0).arg(0),
        };
        inv.arg(request.content.map_or(0, |c| millis(c.window)));
        let (answer, ms): (String, u64) = self.script(inv).await?;
        Ok(match answer.as_str() {
            "granted" => Reservation::Granted,
            "duplicate" => Reservation::Duplicate,
            _ => Reservation::Capped {
                free_in: Duration::from_millis(ms.max(1)),
            },
        })
    }

    async fn give_back(&self, app: &str, request: &LimitRequest<'_>) -> StateResult<()> {
        let [cap_key, dedup_key] = keys_of(app, request);
        let mut inv = GIVE_BACK_SCRIPT.key(cap_key);
        inv.key(dedup_key)
            .arg(request.id)
            .arg(u8::from(request.cap.is_some()))
            .arg(u8::from(request.content.is_some()));
        let _: i64 = self.script(inv).await?;
        Ok(())
    }
}
