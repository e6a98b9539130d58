//! Preference gates in Redis, shared by every instance. Each user's gates are one hash,
//! `wxcourier:{APP}:gate:OPENID` (scope → `WHY SET_AT EXPIRES`), that lapses with its last
//! gate; the app's users with gates are a sorted set, `wxcourier:{APP}:gates:index`, scored
//! by when their last gate lapses, so a listing needs no SCAN (which a Cluster would split
//! across nodes). Both keys carry the app's hash tag: each script touches one slot.

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::RedisState;
use super::keys::key;
use crate::state::error::StateResult;
use crate::state::gates::{Gate, GateScope, GateWhy, Gates, sorted};

/// Sets one gate (KEYS[1] the user's hash, KEYS[2] the app's index; ARGV: scope, value, lapse
/// time in ms, now in ms, openid). The hash and the user's score lapse with the latest of its
/// gates; lapsed users leave the index here, the one place it grows.
const SET_GATE: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local lapse = tonumber(ARGV[3])
local before = redis.call('ZSCORE', KEYS[2], ARGV[5])
if before and tonumber(before) > lapse then lapse = tonumber(before) end
local at = string.format('%.0f', lapse)
redis.call('PEXPIREAT', KEYS[1], at)
redis.call('ZADD', KEYS[2], at, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[2], string.format('%.0f', tonumber(last[2]))) end
return 1
";

/// Lifts one gate (KEYS and ARGV[1] as in SET_GATE; ARGV[2] the openid); a user left with
/// none leaves the index.
const LIFT_GATE: &str = r"
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[2]) end
return 1
";

static SET_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SET_GATE));
static LIFT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(LIFT_GATE));

/// Users read per round trip when a whole app is listed.
const LIST_CHUNK: usize = 200;

/// The hash of `openid`'s gates.
pub(super) fn user_key(app: &str, openid: &str) -> String {
    key(app, "gate", openid)
}

fn index_key(app: &str) -> String {
    key(app, "gates", "index")
}

/// One user's hash as gates, the lapsed and unreadable left out.
fn user_gates(openid: &str, fields: Vec<(String, String)>, now: i64) -> Vec<Gate> {
    fields
        .into_iter()
        .filter_map(|(field, value)| {
            Gate::from_value(openid, GateScope::from_field(&field)?, &value)
        })
        .filter(|g| g.live_at(now))
        .collect()
}

impl RedisState {
    async fn gates_of(&self, app: &str, openid: Option<&str>, now: i64) -> StateResult<Vec<Gate>> {
        let users: Vec<String> = match openid {
            Some(user) => vec![user.to_owned()],
            None => {
                self.call(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(index_key(app))
                        .arg(now.saturating_mul(1000))
                        .arg("+inf"),
                )
                .await?
            }
        };
        let mut gates = Vec::new();
        for chunk in users.chunks(LIST_CHUNK) {
            let mut pipe = redis::pipe();
            for user in chunk {
                pipe.cmd("HGETALL").arg(user_key(app, user));
            }
            let hashes: Vec<Vec<(String, String)>> = self.pipeline(&pipe).await?;
            for (user, fields) in chunk.iter().zip(hashes) {
                gates.extend(user_gates(user, fields, now));
            }
        }
        Ok(sorted(gates))
    }
}

impl Gates for RedisState {
    fn set_gate<'a>(
        &'a self,
        app: &'a str,
        openid: &'a str,
        scope: &'a GateScope,
        why: GateWhy,
        now: i64,
        ttl: Duration,
    ) -> BoxFuture<'a, StateResult<()>> {
        Box::pin(async move {
            let gate = Gate {
                openid: openid.to_owned(),
                scope: scope.clone(),
                why,
                set_at: now,
                expires_at: now.saturating_add(ttl.as_secs() as i64),
            };
            let mut inv = SET_SCRIPT.key(user_key(app, openid));
            inv.key(index_key(app))
                .arg(scope.field())
                .arg(gate.value())
                .arg(gate.expires_at.saturating_mul(1000))
                .arg(now.saturating_mul(1000))
                .arg(openid);
            let _: i64 = self.script(inv).await?;
            Ok(())
        })
    }

    fn lift_gate<'a>(
        &'a self,
        app: &'a str,
        openid: &'a str,
        scope: &'a GateScope,
    ) -> BoxFuture<'a, StateResult<()>> {
        Box::pin(async move {
            let mut inv = LIFT_SCRIPT.key(user_key(app, openid));
            inv.key(index_key(app)).arg(scope.field()).arg(openid);
            let _: i64 = self.script(inv).await?;
            Ok(())
        })
    }

    fn gate_for<'a>(
        &'a self,
        app: &'a str,
        openid: &'a str,
        template: &'a str,
        now: i64,
    ) -> BoxFuture<'a, StateResult<Option<Gate>>> {
        Box::pin(async move {
            let scopes = [GateScope::All, GateScope::Template(template.to_owned())];
            let values: Vec<Option<String>> = self
                .call(
                    redis::cmd("HMGET")
                        .arg(user_key(app, openid))
                        .arg(scopes[0].field())
                        .arg(scopes[1].field()),
                )
                .await?;
            Ok(scopes
                .into_iter()
                .zip(values)
                .filter_map(|(scope, value)| Gate::from_value(openid, scope, &value?))
                .find(|g| g.live_at(now)))
        })
    }

    fn list_gates<'a>(
        &'a self,
        app: &'a str,
        openid: Option<&'a str>,
        now: i64,
    ) -> BoxFuture<'a, StateResult<Vec<Gate>>> {
        Box::pin(self.gates_of(app, openid, now))
    }

    fn clear_gates<'a>(
        &'a self,
        app: &'a str,
        openid: Option<&'a str>,
        now: i64,
    ) -> BoxFuture<'a, StateResult<usize>> {
        Box::pin(async move {
            let live = self.gates_of(app, openid, now).await?.len();
            let index = index_key(app);
            match openid {
                Some(user) => {
                    let mut pipe = redis::pipe();
                    pipe.cmd("DEL").arg(user_key(app, user));
                    pipe.cmd("ZREM").arg(&index).arg(user);
                    let _: (i64, i64) = self.pipeline(&pipe).await?;
                }
                None => {
                    // Every user the index names, lapsed or not: their hashes go with it.
                    let users: Vec<String> = self
                        .call(redis::cmd("ZRANGE").arg(&index).arg(0).arg(-1))
                        .await?;
                    for chunk in users.chunks(LIST_CHUNK) {
                        let mut del = redis::cmd("DEL");
                        for user in chunk {
                            del.arg(user_key(app, user));
                        }
                        let _: i64 = self.call(&del).await?;
                    }
                    let _: i64 = self.call(redis::cmd("DEL").arg(&index)).await?;
                }
            }
            Ok(live)
        })
    }
}
