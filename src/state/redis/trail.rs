//! Each job's story in Redis: a list of steps per job, capped and expiring, written in one
//! round trip and read in one.

use std::sync::LazyLock;
use std::time::Duration;

use super::RedisState;
use super::keys::key;
use super::millis;
use crate::state::StateResult;

/// Appends ARGV[3..] to the list KEYS[1], keeps its last ARGV[1] and sets it to expire in
/// ARGV[2] ms. A script of one key rather than a pipeline: while a Cluster moves the slot, a
/// pipeline is redirected as a whole, a script of one key is redirected as one command.
const APPEND: &str = r"
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

static APPEND_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(APPEND));

impl RedisState {
    /// Appends `steps` to the job's list, keeps its last `max` and sets it to expire `ttl`
    /// from now, on the app's slot.
    pub(crate) async fn trail_append(
        &self,
        app: &str,
        id: &str,
        steps: &[String],
        max: usize,
        ttl: Duration,
    ) -> StateResult<()> {
        if steps.is_empty() {
            return Ok(());
        }
        let mut inv = APPEND_SCRIPT.key(key(app, "trail", id));
        inv.arg(max.max(1)).arg(millis(ttl)).arg(steps);
        let _: i64 = self.script(inv).await?;
        Ok(())
    }

    /// Every step kept for the job, oldest first; empty when none is.
    pub(crate) async fn trail_read(&self, app: &str, id: &str) -> StateResult<Vec<String>> {
        self.call(
            redis::cmd("LRANGE")
                .arg(key(app, "trail", id))
                .arg(0)
                .arg(-1),
        )
        .await
    }
}
