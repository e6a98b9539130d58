//! How long a job waits in the broker before its next try, and when waiting ends in `failed`:
//! backoff after a failed send, a pause the job does not pay for, and the app's pause when no
//! token can be had.

use std::time::Duration;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::retry::{Next, RetryState};
use crate::wechat::client::{SendReply, TokenError};
use crate::wechat::reason::Ending;
use crate::worker::deps::Seams;

use super::step::{NO_TOKEN, RATE_TAKEN, STATE_DOWN, Step, Wait};
use super::turn::{LastAnswer, Turn};

impl<S: Seams> Turn<'_, S> {
    /// Waits `after` in the broker without using an attempt. `retry.max_age` runs from here
    /// on, so a job that never gets its turn still ends. `seen` is an errcode met without a
    /// send answer (a refused token fetch), kept for the failed outcome's reason.
    pub(super) fn later(
        &self,
        state: &RetryState,
        last: LastAnswer,
        seen: Option<i64>,
        after: Duration,
        wait: Wait,
    ) -> Step {
        let clock = &self.deps.clock;
        let mut state = *state;
        state.first_try_ms.get_or_insert_with(|| clock.now_ms());
        match self
            .deps
            .schedule
            .after_pause(&state, clock.now_ms(), after)
        {
            Next::RetryAfter(after) => Step::Retry {
                after,
                state,
                wait,
                errcode: last.as_ref().map(|r| r.errcode).or(seen),
            },
            Next::GiveUp(why) => {
                let why = match wait {
                    Wait::NotNow(reason) => format!("{reason}; {why}"),
                    Wait::Transient | Wait::Quota | Wait::Until(_) => why,
                };
                let ending = Ending::GaveUp {
                    quota_paused: wait == Wait::Quota,
                    errcode: last.as_ref().map(|r| r.errcode).or(seen),
                };
                Step::Finish(self.failed(&state, last, why, ending))
            }
        }
    }

    /// Held by a delivery policy until `until`, for `why`: the job waits in the delay tiers,
    /// chained when the wait is longer than the longest, and arrives at `until` or at most one
    /// shortest tier after it, never before. It uses no attempt, and `retry.max_age` does not
    /// start: a job scheduled days ahead has not begun trying.
    pub(super) fn wait_until(
        &self,
        state: &RetryState,
        until: time::OffsetDateTime,
        why: &'static str,
    ) -> Step {
        let remaining = until - self.deps.clock.now();
        let remaining = std::time::Duration::try_from(remaining).unwrap_or_default();
        tracing::debug!(app = self.name, id = %self.job.id, reason = why, ?remaining, "held; the job waits in a delay queue");
        Step::Retry {
            after: self.deps.schedule.tier_within(remaining),
            state: *state,
            wait: Wait::Until(why),
            errcode: None,
        }
    }

    /// Not now, for `why`: back in the shortest delay tier.
    pub(super) fn not_now(&self, state: &RetryState, why: &'static str) -> Step {
        tracing::debug!(app = self.name, id = %self.job.id, reason = why, "not now; the job waits in a delay queue");
        let soon = self.deps.schedule.tiers()[0];
        self.later(state, None, None, soon, Wait::NotNow(why))
    }

    /// The account's rate is taken by the jobs ahead of this one for about `wait`, on a queue
    /// other accounts share: the job waits that long in the delay tiers, using no attempt.
    pub(super) fn rate_parked(&self, state: &RetryState, wait: Duration) -> Step {
        tracing::debug!(app = self.name, id = %self.job.id, ?wait, "the account's rate is taken; the job waits in a delay queue");
        self.later(state, None, None, wait, Wait::NotNow(RATE_TAKEN))
    }

    /// Backoff after a failed send, or `failed` once retries run out.
    pub(super) fn transient(&self, state: &RetryState, last: LastAnswer, why: String) -> Step {
        let (jitter, pick) = (rand::random::<f64>(), rand::random::<f64>());
        let now_ms = self.deps.clock.now_ms();
        match self
            .deps
            .schedule
            .after_transient(state, now_ms, jitter, pick)
        {
            Next::RetryAfter(after) => Step::Retry {
                after,
                state: *state,
                wait: Wait::Transient,
                errcode: last.as_ref().map(|r| r.errcode),
            },
            Next::GiveUp(limit) => {
                let ending = Ending::GaveUp {
                    quota_paused: false,
                    errcode: last.as_ref().map(|r| r.errcode),
                };
                let why = format!("{why}; {limit}");
                Step::Finish(self.failed(state, last, why, ending))
            }
        }
    }

    /// The app cannot get a token: every job of the app would fail the same way, so the app
    /// pauses (its jobs wait in the broker) until the keeper may fetch again, and this job
    /// uses no attempt.
    pub(super) fn no_token(&self, state: &RetryState, e: &TokenError) -> Step {
        let (deps, app) = (self.deps, self.app);
        // A platform's authorizer whose authorization is withdrawn (or lost beyond recovery):
        // no wait brings its token back, so the job ends now and says why.
        if let TokenError::Refused { errcode, errmsg } = e
            && deps.reasons.authorization_revoked.contains(errcode)
        {
            let answer = SendReply {
                errcode: *errcode,
                errmsg: errmsg.clone(),
                msgid: None,
            };
            let why = format!("no access token for this account: {errmsg}");
            return Step::Finish(self.failed(state, Some(answer), why, Ending::Refused(*errcode)));
        }
        deps.metrics
            .token_fetch_failures
            .get_or_create(&Metrics::app(self.name))
            .inc();
        // A failure of the shared token store is a state outage, and says so.
        let (why, seen) = match e {
            TokenError::Refused { errcode, .. } => (NO_TOKEN, Some(*errcode)),
            TokenError::Call(_) | TokenError::NoTicket => (NO_TOKEN, None),
            TokenError::State(_) => (STATE_DOWN, None),
        };
        let wait = app.keeper.backing_off().unwrap_or(deps.schedule.tiers()[0]);
        let pause = app.gate.pause_for(wait, why);
        tracing::error!(app = self.name, error = %e, retry_in = ?pause, "cannot get an access token; the app is paused");
        self.later(state, None, seen, pause, Wait::NotNow(why))
    }
}
