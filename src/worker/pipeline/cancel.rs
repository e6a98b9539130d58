//! Cancels in the pipeline (CONTRACT, *Delivery policy*). A cancel message is decided against
//! its job id's claim and sent record in one atomic step of the state (`state::cancels` says
//! why that makes a cancel racing a send end exactly one way): kept, and answered `accepted`;
//! `too_late` for a sent id; or, while a delivery holds the id's claim, it waits in the
//! shortest delay tier and asks again once the claim has ended. The job side needs nothing
//! more than its claim: a claim, or a lapsed claim retaken right before the send, that meets a
//! kept cancel ends the job `cancelled`. A job held until a time (its `not_before`, quiet hours)
//! holds no claim, so it looks for a cancel at each hop instead, and ends without waiting out
//! its hold.

use crate::clock::Clock;
use crate::job::Rejection;
use crate::job::cancel::Cancel;
use crate::outcome::cancel::{CancelAnswer, CancelStatus};
use crate::retry::{Next, RetryState};
use crate::state::{CancelFound, Cancels};
use crate::worker::deps::{Deps, Seams};

use super::policy::MAX_SCHEDULE_AHEAD;
use super::step::{CANCEL_WAITS, STATE_DOWN, Step, Wait};
use super::turn::Turn;

/// How long a cancel is kept: for as long as its job may still come. A job waits at most
/// [`MAX_SCHEDULE_AHEAD`] for its `not_before`, then tries for at most `retry.max_age`.
fn kept_for<S: Seams>(deps: &Deps<S>) -> std::time::Duration {
    MAX_SCHEDULE_AHEAD + deps.schedule.max_age()
}

/// Decides one cancel message for the app `name`: its answer, or a wait in the broker.
pub(super) async fn decide<S: Seams>(
    deps: &Deps<S>,
    name: &str,
    read: Result<Cancel, Rejection>,
    retry: RetryState,
) -> Step {
    let cancel = match read {
        Ok(cancel) => cancel,
        Err(rejection) => return refused(name, rejection.id.clone(), rejection.to_string()),
    };
    tracing::Span::current().record("id", cancel.id.as_str());
    if deps.app(name).is_none() {
        // As a job for no configured app: kept in wxcourier.dead with the reason.
        let why = format!("app: {name:?} is not a configured app");
        return refused(name, Some(cancel.id), why);
    }
    let found = deps
        .store
        .record_cancel(name, &cancel.id, kept_for(deps))
        .await;
    let status = match found {
        Ok(CancelFound::Kept) => CancelStatus::Accepted,
        Ok(CancelFound::Sent) => CancelStatus::TooLate,
        Ok(CancelFound::InFlight) => return later(deps, name, cancel, retry, CANCEL_WAITS),
        Err(_) => return later(deps, name, cancel, retry, STATE_DOWN),
    };
    tracing::debug!(app = name, id = %cancel.id, ?status, "cancel decided");
    Step::Answer {
        answer: CancelAnswer::new(name, Some(cancel.id), status),
        dead: None,
    }
}

/// A cancel that cannot be decided now waits in the shortest delay tier, using no attempt; one
/// still undecided after `retry.max_age` is refused with the reason, to be replayed from
/// `wxcourier.dead`.
fn later<S: Seams>(
    deps: &Deps<S>,
    name: &str,
    cancel: Cancel,
    retry: RetryState,
    why: &'static str,
) -> Step {
    let now_ms = deps.clock.now_ms();
    let mut state = retry;
    state.first_try_ms.get_or_insert(now_ms);
    let soon = deps.schedule.tiers()[0];
    match deps.schedule.after_pause(&state, now_ms, soon) {
        Next::RetryAfter(after) => {
            tracing::debug!(app = name, id = %cancel.id, reason = why, "the cancel waits in a delay queue");
            Step::Retry {
                after,
                state,
                wait: Wait::NotNow(why),
                errcode: None,
            }
        }
        Next::GiveUp(limit) => {
            let reason = format!("cancel undecided: {why}; {limit}");
            refused(name, Some(cancel.id), reason)
        }
    }
}

/// A refused cancel: answered `rejected` with the reason, and kept in `wxcourier.dead`.
fn refused(name: &str, id: Option<String>, reason: String) -> Step {
    let reason = crate::text::bounded(&reason, crate::broker::headers::MAX_REASON_BYTES);
    let mut answer = CancelAnswer::new(name, id, CancelStatus::Rejected);
    answer.error = Some(reason.clone());
    Step::Answer {
        answer,
        dead: Some(reason),
    }
}

impl<S: Seams> Turn<'_, S> {
    /// A job a policy holds until a time holds no claim: at each hop it looks for a cancel, and
    /// ends `cancelled` at once when one is kept. Shared state that does not answer only
    /// leaves it held (its claim, later, will look again).
    pub(super) async fn held_unless_cancelled(&self, step: Step, state: &RetryState) -> Step {
        if !matches!(
            step,
            Step::Retry {
                wait: Wait::Until(_),
                ..
            }
        ) {
            return step;
        }
        match self.deps.store.is_cancelled(self.name, &self.job.id).await {
            Ok(true) => Step::Finish(self.cancelled(state)),
            Ok(false) | Err(_) => step,
        }
    }
}
