//! The send limits in Redis, shared by every instance: each recipient's window is a sorted
//! set of job ids scored by the time of their send (`wxcourier:{APP}:cap:TOUSER`), each
//! content's mark a key holding the job id that took it (`wxcourier:{APP}:dedup:DIGEST`).
//! One script decides and takes both, on Redis's own clock, so concurrent jobs on any number of
//! instances are counted exactly; asked, it reads the recipient's preference gates first. The
//! pipeline takes it in the same script as the job's claim, so an app with limits and gates
//! pays the one round trip before its send an app without them pays. Every key carries the
//! app's hash tag, so in a Cluster the script runs on one node.

use std::sync::LazyLock;
use std::time::Duration;

use super::gates::user_key;
use super::keys::key;
use super::{CLAIM_FN, RedisState, claim_from, millis};
use crate::state::error::{StateError, StateResult};
use crate::state::gates::{Gate, GateScope};
use crate::state::send_limits::{ClaimReserving, LimitRequest, Reservation, SendLimits};
use crate::state::values::{Claim, Holder};

/// `reserve(window, mark, gates, id, count, per, dedup, ask, field, now)`: the reservation,
/// as a Lua function both scripts below define. `window` is the recipient's window, `mark` the
/// content's mark, `gates` the recipient's gates (`redis::gates`); `count` the cap's count (0:
/// no cap), `per` its window in ms, `dedup` the content window in ms (0: no de-duplication),
/// `ask` '1' when the gates are asked, `field` the template's gate field, `now` Unix seconds.
/// Returns {'gated', FIELD, VALUE} for the first live gate (every template's first),
/// {'duplicate', '', ''}, {'capped', MS, ''} (ms until the oldest send leaves the window) or
/// {'granted', '', ''}. A job id already in the window or holding the mark is granted again and
/// takes nothing more.
///
/// A gate is live as `Gate::from_value` and `Gate::live_at` read it: `WHY SET_AT EXPIRES`
/// split on single spaces (more parts are ignored), WHY one of the two reasons, both times
/// integers (of at most 18 digits, which any i64 reading takes), and EXPIRES after now; text
/// no version wrote holds nothing back.
const RESERVE_FN: &str = r"
local function int(x)
  local digits = x and string.match(x, '^[+-]?(%d+)$')
  return digits and #digits <= 18
end
local function reserve(window, mark, gates, id, count, per, dedup, ask, field, now)
  count, per, dedup = tonumber(count), tonumber(per), tonumber(dedup)
  if ask == '1' then
    local fields = {'all', field}
    local values = redis.call('HMGET', gates, fields[1], fields[2])
    for i = 1, 2 do
      local v = values[i]
      if v then
        local parts = {}
        for part in string.gmatch(v .. ' ', '([^ ]*) ') do parts[#parts + 1] = part end
        local why, set_at, expires = parts[1], parts[2], parts[3]
        if (why == 'not_following' or why == 'recipient_refused')
            and int(set_at) and int(expires) and tonumber(expires) > tonumber(now) then
          return {'gated', fields[i], v}
        end
      end
    end
  end
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if dedup > 0 then
    local holder = redis.call('GET', mark)
    if holder and holder ~= id then return {'duplicate', '', ''} end
  end
  if count > 0 then
    redis.call('ZREMRANGEBYSCORE', window, '-inf', ms - per)
    if not redis.call('ZSCORE', window, id) then
      if redis.call('ZCARD', window) >= count then
        local oldest = redis.call('ZRANGE', window, 0, 0, 'WITHSCORES')
        return {'capped', tostring(math.max(1, tonumber(oldest[2]) + per - ms)), ''}
      end
      redis.call('ZADD', window, ms, id)
    end
    redis.call('PEXPIRE', window, per)
  end
  if dedup > 0 then redis.call('SET', mark, id, 'PX', dedup) end
  return {'granted', '', ''}
end
";

/// KEYS[1] the window, KEYS[2] the mark, KEYS[3] the gates; ARGV[1..7] the rest of
/// `reserve`'s arguments, in order.
const RESERVE: &str = r"
return reserve(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
";

/// The claim and, only when it is fresh, the reservation: KEYS[1] the id's key, KEYS[2..4] as
/// in RESERVE, KEYS[5] (when given) the id's key before hash tags; ARGV[1..3] `claim`'s
/// holder, ttl and previous holder, ARGV[4..10] as RESERVE's ARGV[1..7]. Returns what the claim
/// found and `reserve`'s answer, or three empty strings when the claim was not taken. Several
/// keys in a Cluster: refused while the app's slot moves, as RESERVE is.
const CLAIM_RESERVING: &str = r"
local found = claim(KEYS[1], KEYS[5], ARGV[1], ARGV[2], ARGV[3])
if found ~= ARGV[1] then return {found, '', '', ''} end
local r = reserve(KEYS[2], KEYS[3], KEYS[4], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
return {found, r[1], r[2], r[3]}
";

/// KEYS and ARGV[1] as in RESERVE; ARGV[2] and ARGV[3] say whether the cap and the mark are
/// in force. Only what the job id itself holds is removed.
const GIVE_BACK: &str = r"
local id = ARGV[1]
if ARGV[2] == '1' then redis.call('ZREM', KEYS[1], id) end
if ARGV[3] == '1' and redis.call('GET', KEYS[2]) == id then redis.call('DEL', KEYS[2]) end
return 1
";

static RESERVE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(&format!("{RESERVE_FN}{RESERVE}")));
static CLAIM_RESERVING_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(&format!("{CLAIM_FN}{RESERVE_FN}{CLAIM_RESERVING}")));
static GIVE_BACK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GIVE_BACK));

/// The window's and the mark's keys a request names. A limit not in force still names a key
/// of the app (never touched), so every key sits in the app's slot.
fn keys_of(app: &str, r: &LimitRequest<'_>) -> [String; 2] {
    [
        key(app, "cap", r.cap.map_or("", |c| c.touser)),
        key(app, "dedup", r.content.map_or("", |c| c.digest)),
    ]
}

/// Adds `reserve`'s three keys: the window, the mark and the gates.
fn reserve_keys(inv: &mut redis::ScriptInvocation<'_>, app: &str, request: &LimitRequest<'_>) {
    let [cap_key, dedup_key] = keys_of(app, request);
    let gates_key = user_key(app, request.gate.map_or("", |g| g.openid));
    inv.key(cap_key).key(dedup_key).key(gates_key);
}

/// `reserve`'s arguments after its keys.
fn reserve_args(inv: &mut redis::ScriptInvocation<'_>, request: &LimitRequest<'_>) {
    inv.arg(request.id);
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
}

/// `reserve`'s answer as a reservation.
fn reservation(
    request: &LimitRequest<'_>,
    (answer, first, second): (&str, String, String),
) -> StateResult<Reservation> {
    Ok(match answer {
        "granted" => Reservation::Granted,
        "duplicate" => Reservation::Duplicate,
        "gated" => {
            let openid = request.gate.map_or("", |g| g.openid);
            // The script judged it live by the same reading; text it let through is a gate
            // by construction.
            match GateScope::from_field(&first)
                .and_then(|scope| Gate::from_value(openid, scope, &second))
            {
                Some(gate) => Reservation::Gated(gate),
                None => {
                    return Err(StateError::Unavailable(format!(
                        "the reservation script answered with a gate this version cannot read \
                         ({first:?})"
                    )));
                }
            }
        }
        _ => Reservation::Capped {
            free_in: Duration::from_millis(first.parse::<u64>().unwrap_or(1).max(1)),
        },
    })
}

impl ClaimReserving for RedisState {
    async fn claim_reserving(
        &self,
        app: &str,
        id: &str,
        mine: Holder,
        previous: Option<Holder>,
        request: &LimitRequest<'_>,
    ) -> StateResult<(Claim, Option<Reservation>)> {
        let tag = mine.tag();
        let mut inv = CLAIM_RESERVING_SCRIPT.key(key(app, "id", id));
        reserve_keys(&mut inv, app, request);
        if let Some(legacy) = self.legacy_id_key(app, id) {
            inv.key(legacy);
        }
        inv.arg(&tag)
            .arg(millis(self.in_flight_ttl))
            .arg(previous.map(Holder::tag).unwrap_or_default());
        reserve_args(&mut inv, request);
        let (found, answer, first, second): (String, String, String, String) =
            self.script(inv).await?;
        let claim = claim_from(&found, &tag, mine);
        if !matches!(claim, Claim::Fresh(_)) {
            return Ok((claim, None));
        }
        let reserved = reservation(request, (&answer, first, second))?;
        Ok((claim, Some(reserved)))
    }
}

impl SendLimits for RedisState {
    async fn reserve(&self, app: &str, request: &LimitRequest<'_>) -> StateResult<Reservation> {
        let mut inv = RESERVE_SCRIPT.prepare_invoke();
        reserve_keys(&mut inv, app, request);
        reserve_args(&mut inv, request);
        let (answer, first, second): (String, String, String) = self.script(inv).await?;
        reservation(request, (&answer, first, second))
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
