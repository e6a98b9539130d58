//! Platform state in Redis, shared by every instance. Each component AppID has its own hash
//! tag, `{platform:COMPONENT_APPID}` (no app name holds a `:`, so it never meets an app's):
//! the ticket is `…:ticket:current` (`CREATED_AT TICKET`, no expiry: an old ticket beats none),
//! the authorizers one hash `…:authorizers:all` (AppID → `STANDING CHANGED_AT [REFRESH_TOKEN]`,
//! no expiry, with a write counter in its field `__version`), each claimed code `…:code:SHA1`
//! for its claim's life, and each claimed periodic task `…:round:NAME` for its period. Every
//! script touches one key.

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sha1::{Digest, Sha1};

use super::RedisState;
use super::keys::key;
use crate::state::error::StateResult;
use crate::state::platforms::{Authorizer, CodeClaim, PlatformStore, Ticket};

/// Sets KEYS[1] to ARGV[1] unless what it holds starts with a time (its first number) later
/// than ARGV[2]; 1 when set.
const KEEP_NEWER: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local at = tonumber(string.match(cur, '^(%-?%d+) '))
  if at and at > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

/// Sets field ARGV[1] of hash KEYS[1] to ARGV[2] unless it holds a `STANDING CHANGED_AT …`
/// later than ARGV[3], and counts the write in the field `__version` (no AppID has a `_`);
/// 1 when set.
const PUT_NEWER: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local at = tonumber(string.match(cur, '^%S+ (%-?%d+)'))
  if at and at > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], '__version', 1)
return 1
";

/// Claims code key KEYS[1] for ARGV[1] ms: what it holds if anything (`held`, `exchanged`),
/// else `claimed` once it holds `held`.
const CLAIM_CODE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], 'held', 'PX', ARGV[1])
return 'claimed'
";

static CLAIM_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CLAIM_CODE));
static KEEP_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(KEEP_NEWER));
static PUT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PUT_NEWER));

/// The field of the authorizers' hash that counts their writes.
const VERSION_FIELD: &str = "__version";

/// The hash tag's part before the kind: `platform:COMPONENT_APPID`.
fn tag(component: &str) -> String {
    format!("platform:{component}")
}

fn ticket_key(component: &str) -> String {
    key(&tag(component), "ticket", "current")
}

fn authorizers_key(component: &str) -> String {
    key(&tag(component), "authorizers", "all")
}

/// Codes are WeChat's opaque strings: kept by their digest, so the key's length is bounded.
fn code_key(component: &str, code: &str) -> String {
    key(
        &tag(component),
        "code",
        hex::encode(Sha1::digest(code.as_bytes())),
    )
}

fn round_key(component: &str, round: &str) -> String {
    key(&tag(component), "round", round)
}

impl PlatformStore for RedisState {
    fn keep_ticket<'a>(
        &'a self,
        component: &'a str,
        ticket: &'a Ticket,
    ) -> BoxFuture<'a, StateResult<bool>> {
        Box::pin(async move {
            let mut inv = KEEP_SCRIPT.key(ticket_key(component));
            inv.arg(ticket.stored()).arg(ticket.created_at);
            let kept: i64 = self.script(inv).await?;
            Ok(kept == 1)
        })
    }

    fn ticket<'a>(&'a self, component: &'a str) -> BoxFuture<'a, StateResult<Option<Ticket>>> {
        Box::pin(async move {
            let text: Option<String> = self
                .call(redis::cmd("GET").arg(ticket_key(component)))
                .await?;
            Ok(text.as_deref().and_then(Ticket::from_stored))
        })
    }

    fn claim_code<'a>(
        &'a self,
        component: &'a str,
        code: &'a str,
        hold: Duration,
    ) -> BoxFuture<'a, StateResult<CodeClaim>> {
        Box::pin(async move {
            let mut inv = CLAIM_SCRIPT.key(code_key(component, code));
            inv.arg(hold.as_millis().max(1) as u64);
            let found: String = self.script(inv).await?;
            Ok(match found.as_str() {
                "claimed" => CodeClaim::Claimed,
                other => CodeClaim::found(other),
            })
        })
    }

    fn finish_code<'a>(
        &'a self,
        component: &'a str,
        code: &'a str,
        keep: Duration,
    ) -> BoxFuture<'a, StateResult<()>> {
        Box::pin(async move {
            let _: () = self
                .call(
                    redis::cmd("SET")
                        .arg(code_key(component, code))
                        .arg(CodeClaim::Exchanged.stored())
                        .arg("PX")
                        .arg(keep.as_millis().max(1) as u64),
                )
                .await?;
            Ok(())
        })
    }

    fn release_code<'a>(
        &'a self,
        component: &'a str,
        code: &'a str,
    ) -> BoxFuture<'a, StateResult<()>> {
        Box::pin(async move {
            let _: i64 = self
                .call(redis::cmd("DEL").arg(code_key(component, code)))
                .await?;
            Ok(())
        })
    }

    fn claim_round<'a>(
        &'a self,
        component: &'a str,
        round: &'a str,
        hold: Duration,
    ) -> BoxFuture<'a, StateResult<bool>> {
        Box::pin(async move {
            let set: Option<String> = self
                .call(
                    redis::cmd("SET")
                        .arg(round_key(component, round))
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(hold.as_millis().max(1) as u64),
                )
                .await?;
            Ok(set.is_some())
        })
    }

    fn release_round<'a>(
        &'a self,
        component: &'a str,
        round: &'a str,
    ) -> BoxFuture<'a, StateResult<()>> {
        Box::pin(async move {
            let _: i64 = self
                .call(redis::cmd("DEL").arg(round_key(component, round)))
                .await?;
            Ok(())
        })
    }

    fn put_authorizer<'a>(
        &'a self,
        component: &'a str,
        authorizer: &'a Authorizer,
    ) -> BoxFuture<'a, StateResult<bool>> {
        Box::pin(async move {
            let mut inv = PUT_SCRIPT.key(authorizers_key(component));
            inv.arg(&authorizer.appid)
                .arg(authorizer.stored())
                .arg(authorizer.changed_at);
            let written: i64 = self.script(inv).await?;
            Ok(written == 1)
        })
    }

    fn authorizer<'a>(
        &'a self,
        component: &'a str,
        appid: &'a str,
    ) -> BoxFuture<'a, StateResult<Option<Authorizer>>> {
        Box::pin(async move {
            let text: Option<String> = self
                .call(
                    redis::cmd("HGET")
                        .arg(authorizers_key(component))
                        .arg(appid),
                )
                .await?;
            Ok(text.and_then(|t| Authorizer::from_stored(appid, &t)))
        })
    }

    fn authorizers_version<'a>(&'a self, component: &'a str) -> BoxFuture<'a, StateResult<u64>> {
        Box::pin(async move {
            let version: Option<u64> = self
                .call(
                    redis::cmd("HGET")
                        .arg(authorizers_key(component))
                        .arg(VERSION_FIELD),
                )
                .await?;
            Ok(version.unwrap_or(0))
        })
    }

    fn authorizers<'a>(
        &'a self,
        component: &'a str,
    ) -> BoxFuture<'a, StateResult<Vec<Authorizer>>> {
        Box::pin(async move {
            let all: Vec<(String, String)> = self
                .call(redis::cmd("HGETALL").arg(authorizers_key(component)))
                .await?;
            let mut found: Vec<Authorizer> = all
                .iter()
                .filter(|(appid, _)| appid != VERSION_FIELD)
                .filter_map(|(appid, text)| Authorizer::from_stored(appid, text))
                .collect();
            found.sort_by(|a, b| a.appid.cmp(&b.appid));
            Ok(found)
        })
    }
}
