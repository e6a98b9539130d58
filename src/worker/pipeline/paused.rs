//! The kill switch in a job's turn (`apps.NAME.paused_templates`, `wxcourier pause`): a job of
//! a paused template, or of a paused app, is not sent. With `pause_mode = "defer"` it waits in
//! the delay tiers, before any claim, and looks again about once a minute until it is resumed
//! or its `not_after` passes (then it ends `expired`); with `"drop"` it
//! ends `suppressed` with reason `paused`, after the claim, so a job already sent still gets
//! its duplicate `sent` outcome, not a second, different one.

use std::time::Duration;

use crate::clock::Clock;
use crate::config::PauseMode;
use crate::outcome::{OutcomeReason, SendOutcome};
use crate::retry::RetryState;
use crate::worker::deps::Seams;
use crate::worker::kill_switch::Action;

use super::step::{PAUSED, Step};
use super::turn::Turn;

/// How long a held job waits before it looks again: the longest delay tier within this. A
/// resumed template's jobs go out within about this long; a shorter wait would send a paused
/// backlog through the broker more often for nothing.
pub(crate) const PAUSE_RECHECK: Duration = Duration::from_secs(60);

impl<S: Seams> Turn<'_, S> {
    /// Holds the job while its template is paused and the app defers paused jobs.
    pub(super) fn held_by_pause(&self, state: &RetryState) -> Option<Step> {
        let switch = &self.app.switch;
        if switch.mode() != PauseMode::Defer || !switch.holds(&self.job.template_id) {
            return None;
        }
        let now = self.deps.clock.now();
        if self.job.expired_at(now) {
            // Let it go on to the claim, where it ends `expired` like any job past its time.
            return None;
        }
        switch.count(Action::Held);
        let until = now + PAUSE_RECHECK;
        Some(self.wait_until(state, until, PAUSED))
    }

    /// Ends the job while its template is paused and the app drops paused jobs.
    pub(super) fn dropped_by_pause(&self, state: &RetryState) -> Option<SendOutcome> {
        let switch = &self.app.switch;
        if switch.mode() != PauseMode::Drop || !switch.holds(&self.job.template_id) {
            return None;
        }
        switch.count(Action::Dropped);
        Some(self.suppressed(
            state,
            OutcomeReason::Paused,
            "its template (or its app) is paused",
        ))
    }
}
