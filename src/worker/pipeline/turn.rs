//! One valid job's turn through the pipeline, and the outcomes it can end in: each written
//! with what the job said and what WeChat answered, never with an answer WeChat did not give.

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::broker::headers::MAX_REASON_BYTES;
use crate::clock::Clock;
use crate::job::{Job, Rejection};
use crate::outcome::{OutcomeReason, SendOutcome, SendStatus};
use crate::retry::RetryState;
use crate::state::Holder;
use crate::text::bounded;
use crate::types::TraceHeaders;
use crate::wechat::client::SendReply;
use crate::wechat::reason::Ending;
use crate::worker::deps::{AppDeps, Deps, Seams};

use super::step::Step;

/// The claim this delivery holds on its job id.
pub(super) struct ClaimHeld {
    pub(super) holder: Holder,
    pub(super) since: Instant,
}

/// The last WeChat answer, kept for a failed outcome.
pub(super) type LastAnswer = Option<SendReply>;

/// A job that broke the rules (or could not be read): its dead copy's reason and outcome.
pub(super) fn reject(app: &str, r: &Rejection, state: RetryState, now: OffsetDateTime) -> Step {
    let reason = bounded(&r.to_string(), MAX_REASON_BYTES);
    let mut o = SendOutcome::new(app, SendStatus::Rejected, now);
    o.id = r.id.clone();
    o.meta = r.meta.clone();
    o.attempts = state.attempts;
    o.error = Some(reason.clone());
    if let Some(kind) = r.kind {
        kind.outcome_fields(&mut o);
    }
    Step::Reject { outcome: o, reason }
}

/// One valid job's turn: what every decision about it reads.
pub(super) struct Turn<'a, S: Seams> {
    pub(super) deps: &'a Deps<S>,
    pub(super) app: &'a AppDeps<S>,
    pub(super) name: &'a str,
    pub(super) job: &'a Job,
    pub(super) trace: Option<&'a TraceHeaders>,
}

impl<S: Seams> Turn<'_, S> {
    /// An outcome of this job, finished now by the pipeline's clock.
    pub(super) fn finished(
        &self,
        status: SendStatus,
        state: &RetryState,
        error: &str,
    ) -> SendOutcome {
        let job = self.job;
        let mut o = SendOutcome::new(self.name, status, self.deps.clock.now());
        o.id = Some(job.id.clone());
        o.touser = Some(job.touser.clone());
        o.template_id = Some(job.template_id.clone());
        o.meta = job.meta.clone();
        o.attempts = state.attempts;
        o.error = (!error.is_empty()).then(|| error.to_owned());
        o.warnings = job.warnings.for_outcome();
        job.kind.outcome_fields(&mut o);
        o
    }

    pub(super) fn expired(&self, state: &RetryState) -> SendOutcome {
        self.finished(
            SendStatus::Expired,
            state,
            "not_after passed before it could be sent",
        )
    }

    /// Ended by a delivery policy before any WeChat call: `suppressed`, with the policy's
    /// reason and what it saw.
    pub(super) fn suppressed(
        &self,
        state: &RetryState,
        reason: OutcomeReason,
        why: &str,
    ) -> SendOutcome {
        let mut o = self.finished(SendStatus::Suppressed, state, why);
        o.reason = Some(reason);
        o
    }

    /// Ended by a cancel for its id that came before it was sent.
    pub(super) fn cancelled(&self, state: &RetryState) -> SendOutcome {
        self.finished(SendStatus::Cancelled, state, "cancelled before it was sent")
    }

    /// A job WeChat accepted: `sent`, with its msgid when WeChat gave one.
    pub(super) fn sent(
        &self,
        state: &RetryState,
        msgid: Option<u64>,
        reply: SendReply,
    ) -> SendOutcome {
        let mut o = self.finished(SendStatus::Sent, state, "");
        o.msgid = msgid;
        o.errcode = Some(reply.errcode);
        o.errmsg = Some(reply.errmsg);
        o
    }

    /// A job whose id already reached `sent`: the first msgid, never a second send. No WeChat
    /// call was made for it, so it carries no errcode or errmsg.
    pub(super) fn duplicate(&self, state: &RetryState, msgid: Option<u64>) -> SendOutcome {
        let mut o = self.finished(SendStatus::Sent, state, "");
        o.msgid = msgid;
        o.duplicate = true;
        o
    }

    /// A failed outcome; every one carries the reason its `ending` maps to.
    pub(super) fn failed(
        &self,
        state: &RetryState,
        last: LastAnswer,
        why: String,
        ending: Ending,
    ) -> SendOutcome {
        let mut o = self.finished(SendStatus::Failed, state, &why);
        // The kind's own reading of a refusal comes before the configured sets.
        let own = match ending {
            Ending::Refused(code) => self.job.kind.override_of(code).and_then(|o| o.reason),
            Ending::GaveUp { .. } => None,
        };
        o.reason = Some(own.unwrap_or_else(|| self.deps.reasons.decide(ending)));
        if let Some(reply) = last {
            o.errcode = Some(reply.errcode);
            o.errmsg = Some(reply.errmsg);
        }
        o
    }
}
