//! Cancels in Redis: a kept cancel is the id's own record, `wxcourier:{APP}:id:ID` holding
//! `cancelled` (for as long as it is kept), decided against what that record holds in one
//! script, as [`crate::state::cancels`] explains. The claim and renewal scripts read the same
//! key, so each of these scripts touches one key: a script of several keys is refused while a
//! Cluster moves its slot.

use std::sync::LazyLock;
use std::time::Duration;

use super::keys::key;
use super::{CANCELLED, RedisState, millis};
use crate::state::cancels::{CancelFound, Cancels};
use crate::state::error::{StateError, StateResult};

/// Keeps a cancel in the id's record KEYS[1] for ARGV[1] ms unless that record (or, when
/// given, KEYS[2], the same id in the layout before hash tags) shows it sent (a msgid's
/// digits, or `sent`): `too_late`; or claimed (anything else there): `in_flight`, nothing kept.
/// A cancel already kept is kept again, for the whole time.
const RECORD_CANCEL: &str = r"
local v = redis.call('GET', KEYS[1])
if v == 'cancelled' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return 'kept'
end
if not v and KEYS[2] then v = redis.call('GET', KEYS[2]) end
if v then
  if v == 'sent' or string.match(v, '^%d+$') then return 'too_late' end
  return 'in_flight'
end
redis.call('SET', KEYS[1], 'cancelled', 'PX', ARGV[1])
return 'kept'
";

static RECORD: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RECORD_CANCEL));

impl Cancels for RedisState {
    async fn record_cancel(&self, app: &str, id: &str, keep: Duration) -> StateResult<CancelFound> {
        let mut inv = RECORD.key(key(app, "id", id));
        if let Some(legacy) = self.legacy_id_key(app, id) {
            inv.key(legacy);
        }
        inv.arg(millis(keep));
        let found: String = self.script(inv).await?;
        match found.as_str() {
            "kept" => Ok(CancelFound::Kept),
            "too_late" => Ok(CancelFound::Sent),
            "in_flight" => Ok(CancelFound::InFlight),
            other => Err(StateError::Unavailable(format!(
                "the cancel script answered {other:?}"
            ))),
        }
    }

    async fn is_cancelled(&self, app: &str, id: &str) -> StateResult<bool> {
        let found: Option<String> = self.call(redis::cmd("GET").arg(key(app, "id", id))).await?;
        Ok(found.as_deref() == Some(CANCELLED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_reads_a_send_without_a_msgid_and_a_kept_cancel_as_the_state_writes_them() {
        assert!(RECORD_CANCEL.contains(&format!("'{}'", super::super::SENT_WITHOUT_MSGID)));
        assert!(RECORD_CANCEL.contains(&format!("'{CANCELLED}'")));
    }
}
