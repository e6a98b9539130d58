//! The delivery policies a valid job meets before it may claim its id (CONTRACT §1 and §2:
//! `not_before`, and the app's policies of `apps.NAME`): each may hold the job until a time,
//! or end it without a WeChat call. They run in a fixed order, the cheapest first, and none of
//! them spends quota.

use std::time::Duration;

use time::OffsetDateTime;

use crate::clock::Clock;
use crate::job::Rejection;
use crate::retry::RetryState;
use crate::worker::deps::Seams;

use super::step::{SCHEDULED, Step};
use super::turn::{Turn, reject};

/// How far ahead a job may be scheduled: the longest wait a job is held in the delay tiers.
pub(crate) const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(30 * 86_400);
/// How far in the past a `not_before` may lie: further back is a producer's mistake (a wrong
/// zone or epoch), not a job that waited in the broker.
pub(crate) const MAX_SCHEDULE_BEHIND: Duration = Duration::from_secs(30 * 86_400);

impl<S: Seams> Turn<'_, S> {
    /// What the policies decide before the claim: `None` lets the job go on.
    pub(super) fn before_claim(&self, state: &RetryState) -> Option<Step> {
        let now = self.deps.clock.now();
        if let Some(at) = self.job.not_before {
            if let Some(rule) = out_of_range(at, now) {
                let rejection = Rejection {
                    id: Some(self.job.id.clone()),
                    field: "not_before".into(),
                    rule,
                    meta: self.job.meta.clone(),
                    kind: Some(self.job.kind),
                };
                return Some(reject(self.name, &rejection, *state, now));
            }
            if at > now {
                return Some(self.wait_until(state, at, SCHEDULED));
            }
        }
        // Quiet hours first: a job they hold until morning need not look at a pause all night.
        self.quiet_hours(state)
            .or_else(|| self.held_by_pause(state))
    }
}

/// Why `not_before` cannot be honoured, if it cannot. Only a job's first delivery can meet
/// the limit ahead (later ones are nearer); one far behind was never valid.
fn out_of_range(at: OffsetDateTime, now: OffsetDateTime) -> Option<String> {
    if at - now > MAX_SCHEDULE_AHEAD {
        return Some(format!(
            "is more than {} days ahead (the longest a job is held)",
            MAX_SCHEDULE_AHEAD.as_secs() / 86_400
        ));
    }
    if now - at > MAX_SCHEDULE_BEHIND {
        return Some(format!(
            "is more than {} days in the past",
            MAX_SCHEDULE_BEHIND.as_secs() / 86_400
        ));
    }
    None
}
