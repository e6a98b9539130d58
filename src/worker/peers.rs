//! The safety net for `state.url = "memory"`: counts the consumers of each app's queue, and
//! warns while some other process takes jobs from it too, since the send rate and idempotency
//! are then per process (N consumers may send N times the rate, and a redelivered or
//! resubmitted job twice). A platform's queue is stricter: its refresh tokens cannot live in
//! two memories, so a start that finds it consumed elsewhere is refused.

use std::sync::Arc;
use std::time::Duration;

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::{Context, ServedApp};
use crate::broker::{BrokerError, job_queue};
use crate::metrics::Metrics;
use crate::pause::Phase;

/// The first count, once this worker's own consumers have had time to register.
const FIRST_CHECK: Duration = Duration::from_secs(2);
/// How often the queues are counted.
const POLL: Duration = Duration::from_secs(15);
/// A sighting is confirmed this soon, so a warning at start-up comes within seconds.
const CONFIRM: Duration = Duration::from_secs(2);
/// While other consumers stay, the warning is repeated this often.
pub(crate) const REMIND: Duration = Duration::from_secs(10 * 60);

/// What one count of an app's other consumers calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// Nothing to say.
    Quiet,
    /// Seen once: count again soon before saying anything (a consumer of this worker's own
    /// previous connection may linger for a moment after a reconnect).
    Unconfirmed,
    /// Other consumers, seen twice in a row: warn.
    Appeared(u32),
    /// Still there, `REMIND` after the last warning: warn again.
    Remains(u32),
    /// They are gone.
    Gone,
}

/// One app's history of counts: a pure state machine, so its timing is tested without a broker.
#[derive(Debug, Default)]
pub(crate) struct Nag {
    /// Whether the last count saw others that were not yet reported.
    pending: bool,
    /// When the last warning was logged; `None` while nothing is reported.
    warned: Option<Instant>,
}

impl Nag {
    /// Takes one count of other consumers at `now`.
    pub(crate) fn observe(&mut self, others: u32, now: Instant) -> Notice {
        if others == 0 {
            self.pending = false;
            return if self.warned.take().is_some() {
                Notice::Gone
            } else {
                Notice::Quiet
            };
        }
        match self.warned {
            None if self.pending => {
                self.pending = false;
                self.warned = Some(now);
                Notice::Appeared(others)
            }
            None => {
                self.pending = true;
                Notice::Unconfirmed
            }
            Some(last) if now.duration_since(last) >= REMIND => {
                self.warned = Some(now);
                Notice::Remains(others)
            }
            Some(_) => Notice::Quiet,
        }
    }
}

/// Counts every app's consumers until `stop`, then closes `ch`. Only started with memory state.
pub(crate) async fn watch(ctx: Arc<Context>, ch: Channel, stop: CancellationToken) {
    let mut apps: Vec<(&ServedApp, Nag)> =
        ctx.apps.iter().map(|app| (app, Nag::default())).collect();
    let mut platforms: Vec<(&str, Nag)> = ctx
        .platforms
        .iter()
        .map(|p| (p.name.as_str(), Nag::default()))
        .collect();
    let mut wait = FIRST_CHECK;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = ch.close(200, "stopping".into()).await;
                return;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        wait = POLL;
        for (app, nag) in &mut apps {
            // A paused app has cancelled its own consumer (or is about to): its count says
            // nothing about others until it consumes again.
            if matches!(app.deps.gate.phase(), Phase::Paused { .. }) {
                continue;
            }
            let app = &app.name;
            let queue = job_queue(app);
            let Ok(consumers) = consumer_count(&ch, &queue).await else {
                // The channel or connection is gone; the session is ending.
                return;
            };
            // This worker has one consumer per app queue.
            let others = consumers.saturating_sub(1);
            ctx.metrics
                .foreign_consumers
                .get_or_create(&Metrics::app(app))
                .set(i64::from(others));
            match nag.observe(others, Instant::now()) {
                Notice::Quiet => {}
                Notice::Unconfirmed => wait = CONFIRM,
                Notice::Appeared(n) | Notice::Remains(n) => tracing::warn!(
                    app = %app,
                    queue = %queue,
                    other_consumers = n,
                    "another consumer takes jobs from this queue while state.url is \"memory\": \
                     the send rate and idempotency are per process, so together the consumers \
                     may exceed rate_per_second and send a redelivered or resubmitted job twice; \
                     point every instance at the same Redis (state.url = \"redis://…\")"
                ),
                Notice::Gone => tracing::info!(
                    app = %app,
                    queue = %queue,
                    "no other consumer takes jobs from this queue now"
                ),
            }
        }
        // Two instances that started together both found the queue free.
        for (platform, nag) in &mut platforms {
            let queue = job_queue(platform);
            let Ok(consumers) = consumer_count(&ch, &queue).await else {
                return;
            };
            let others = consumers.saturating_sub(1);
            match nag.observe(others, Instant::now()) {
                Notice::Quiet | Notice::Gone => {}
                Notice::Unconfirmed => wait = CONFIRM,
                Notice::Appeared(n) | Notice::Remains(n) => tracing::error!(
                    "{}",
                    SharedPlatform {
                        platform: platform.to_string(),
                        queue,
                        consumers: n,
                    }
                ),
            }
        }
    }
}

/// Another instance consumes a platform's queue while this one keeps its state in memory.
#[derive(Debug, thiserror::Error)]
#[error(
    "platform {platform}: its queue {queue} has {consumers} other consumer(s), so another \
     instance serves it, and with state.url = \"memory\" their verify tickets, tokens and \
     refresh tokens are not shared (each refresh replaces the token the other holds, until \
     WeChat refuses it with 61023); point every instance at the same Redis \
     (state.url = \"redis://…\")"
)]
pub(crate) struct SharedPlatform {
    platform: String,
    queue: String,
    consumers: u32,
}

/// How long a start waits for other consumers of a platform's queue to go: an instance it
/// replaces may still be draining (a rolling update starts the new one first).
const PREDECESSOR_GRACE: Duration = Duration::from_secs(5);

/// At start with memory state: the platform whose queue another instance consumes, once any
/// predecessor had its drain and a little more to leave (`Some`: it must not be served here,
/// since a platform cannot be served by instances that do not share its state).
pub(crate) async fn platform_served_elsewhere(
    ctx: &Context,
    conn: &lapin::Connection,
) -> Result<Option<SharedPlatform>, BrokerError> {
    if ctx.platforms.is_empty() {
        return Ok(None);
    }
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| BrokerError::channel("opening a channel to count consumers", e))?;
    let deadline = Instant::now() + ctx.drain_timeout + PREDECESSOR_GRACE;
    let mut warned = false;
    for platform in &ctx.platforms {
        let queue = job_queue(&platform.name);
        loop {
            let consumers = consumer_count(&ch, &queue)
                .await
                .map_err(|e| BrokerError::channel("counting consumers", e))?;
            if consumers == 0 {
                break;
            }
            if Instant::now() >= deadline {
                let _ = ch.close(200, "refused".into()).await;
                return Ok(Some(SharedPlatform {
                    platform: platform.name.clone(),
                    queue,
                    consumers,
                }));
            }
            if !std::mem::replace(&mut warned, true) {
                tracing::warn!(
                    platform = platform.name,
                    queue = %queue,
                    consumers,
                    "another instance consumes this platform's queue while state.url is \"memory\"; \
                     waiting for it to stop (an instance being replaced) before refusing to start"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let _ = ch.close(200, "counted".into()).await;
    Ok(None)
}

/// Consumers of `queue` (a passive declare: it never creates the queue).
async fn consumer_count(ch: &Channel, queue: &str) -> lapin::Result<u32> {
    let opts = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    Ok(ch
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await?
        .consumer_count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn others_are_reported_once_confirmed_then_every_remind_interval() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut nag = Nag::default();
        assert_eq!(nag.observe(0, at(0)), Notice::Quiet);
        assert_eq!(nag.observe(1, at(15)), Notice::Unconfirmed);
        assert_eq!(nag.observe(1, at(17)), Notice::Appeared(1));
        // Not on every count while they stay.
        for s in (32..617).step_by(15) {
            assert_eq!(nag.observe(2, at(s)), Notice::Quiet, "at {s}s");
        }
        assert_eq!(nag.observe(2, at(617)), Notice::Remains(2));
        assert_eq!(nag.observe(2, at(632)), Notice::Quiet);
        assert_eq!(nag.observe(0, at(647)), Notice::Gone);
        assert_eq!(nag.observe(0, at(662)), Notice::Quiet);
        // A new arrival is a new sighting.
        assert_eq!(nag.observe(1, at(677)), Notice::Unconfirmed);
        assert_eq!(nag.observe(1, at(679)), Notice::Appeared(1));
    }

    #[test]
    fn a_single_sighting_is_never_reported() {
        let t0 = Instant::now();
        let mut nag = Nag::default();
        assert_eq!(nag.observe(1, t0), Notice::Unconfirmed);
        assert_eq!(nag.observe(0, t0 + Duration::from_secs(2)), Notice::Quiet);
        assert_eq!(
            nag.observe(1, t0 + Duration::from_secs(17)),
            Notice::Unconfirmed
        );
    }
}
