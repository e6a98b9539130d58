//! The send limits in Redis, shared by every instance: each recipient's window is a sorted
//! set of job ids scored by the time of their send (`wxcourier:{APP}:cap:TOUSER`), each
//! content's mark a key holding the job id that took it (`wxcourier:{APP}:dedup:DIGEST`).
//! One script decides and takes both, on Redis's own clock, so concurrent jobs on any number of
//! instances are counted exactly; asked, it reads the recipient's preference gates first, so
//! an app that honours preferences and keeps a limit pays one round trip for both. Every key
//! carries the app's hash tag, so in a Cluster the script runs on one node.

use std::sync::LazyLock;
use std::time::Duration;

use super::gates::user_key;
use super::keys::key;
use super::{RedisState, millis};
use crate::state::error::{StateError, StateResult};
use crate::state::gates::{Gate, GateScope};
use crate::state::send_limits::{LimitRequest, Reservation, SendLimits};

/// KEYS[1] the recipient's window, KEYS[2] the content's mark, KEYS[3] the recipient's gates
/// (`redis::gates`); ARGV[1] the job id, ARGV[2] the cap's count (0: no cap), ARGV[3] its
/// window in ms, ARGV[4] the content window in ms (0: no de-duplication), ARGV[5] '1' when the
/// gates are asked, ARGV[6] the template's gate field, ARGV[7] now in Unix seconds. Returns
/// {'gated', FIELD, VALUE} for the first live gate (every template's first), {'duplicate', '',
/// ''}, {'capped', MS, ''} (ms until the oldest send leaves the window) or {'granted', '', ''}.
/// A job id already in the window or holding the mark is granted again and takes nothing more.
///
/// A gate is live as `Gate::from_value` and `Gate::live_at` read it: `WHY SET_AT EXPIRES`
/// split on single spaces (more parts are ignored), WHY one of the two reasons, both times
/// integers (of at most 18 digits, which any i64 reading takes), and EXPIRES after now; text
/// no version wrote holds nothing back.
const RESERVE: &str = r"
local id = ARGV[1]
local count = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local dedup = tonumber(ARGV[4])
if ARGV[5] == '1' then
  local fields = {'all', ARGV[6]}
  local values = redis.call('HMGET', KEYS[3], fields[1], fields[2])
  local now = tonumber(ARGV[7])
  for i = 1, 2 do
    local v = values[i]
    local function int(x)
      local digits = x and string.match(x, '^[+-]?(%d+)$')
      return digits and #digits <= 18
    end
    if v then
      local parts = {}
      for part in string.gmatch(v .. ' ', '([^ ]*) ') do parts[#parts + 1] = part end
      local why, set_at, expires = parts[1], parts[2], parts[3]
      if (why == 'not_following' or why == 'recipient_refused')
          and int(set_at) and int(expires) and tonumber(expires) > now then
        return {'gated', fields[i], v}
      end
    end
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if dedup > 0 then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= id then return {'duplicate', '', ''} end
end
if count > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - per)
  if not redis.call('ZSCORE', KEYS[1], id) then
    if redis.call('ZCARD', KEYS[1]) >= count then
      local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
      return {'capped', tostring(math.max(1, tonumber(oldest[2]) + per - now)), ''}
    end
    redis.call('ZADD', KEYS[1], now, id)
  end
  redis.call('PEXPIRE', KEYS[1], per)
end
if dedup > 0 then redis.call('SET', KEYS[2], id, 'PX', dedup) end
return {'granted', '', ''}
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

/// The window's and the mark's keys a request names. A limit not in force still names a key
/// of the app (never touched), so every key sits in the app's slot.
fn keys_of(app: &str, r: &LimitRequest<'_>) -> [String; 2] {
    [
        key(app, "cap", r.cap.map_or("", |c| c.touser)),
        key(app, "dedup", r.content.map_or("", |c| c.digest)),
    ]
}

impl SendLimits for RedisState {
    async fn reserve(&self, app: &str, request: &LimitRequest<'_>) -> StateResult<Reservation> {
        let [cap_key, dedup_key] = keys_of(app, request);
        let gates_key = user_key(app, request.gate.map_or("", |g| g.openid));
        let mut inv = RESERVE_SCRIPT.key(cap_key);
        inv.key(dedup_key).key(gates_key).arg(request.id);
        match request.cap {
            Some(cap) => inv.arg(cap.count.get()).arg(millis(cap.per)),
            None => inv.arg(0).arg(0),
        };
        inv.arg(request.content.map_or(0, |c| millis(c.window)));
        match request.gate {
            Some(ask) => inv
                .arg(1)
                .arg(GateScope::Template(ask.template.to_owned()).field())
                .arg(ask.now),
            None => inv.arg(0).arg("").arg(0),
        };
        let (answer, first, second): (String, String, String) = self.script(inv).await?;
        Ok(match answer.as_str() {
            "granted" => Reservation::Granted,
            "duplicate" => Reservation::Duplicate,
            "gated" => {
                let openid = request.gate.map_or("", |g| g.openid);
                // The script judged it live by the same reading; text it let through is
                // a gate by construction.
                match GateScope::from_field(&first)
                    .and_then(|scope| Gate::from_value(openid, scope, &second))
                {
                    Some(gate) => Reservation::Gated(gate),
                    None => {
                        return Err(StateError::Unavailable(format!(
                            "the reservation script answered with a gate this version cannot \
                             read ({first:?})"
                        )));
                    }
                }
            }
            _ => Reservation::Capped {
                free_in: Duration::from_millis(first.parse::<u64>().unwrap_or(1).max(1)),
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
