//! The send itself: admission past the app's quota pause, the rate limit, the token, the last
//! checks right before the call (outlet open, claim still ours), the call, and what WeChat's
//! answer means for the job.

use bytes::Bytes;
use tokio::time::Instant;
use tracing::Instrument;

use crate::clock::Clock;
use crate::job::Job;
use crate::kinds::Override;
use crate::limiter::RateGate;
use crate::metrics::Metrics;
use crate::pause::Admission;
use crate::retry::RetryState;
use crate::state::{Idempotency, Renewal};
use crate::telemetry;
use crate::types::Class;
use crate::wechat::client::{SendReply, WechatApi};
use crate::wechat::errcode;
use crate::wechat::reason::Ending;
use crate::worker::deps::Seams;

use super::step::{IN_FLIGHT_ELSEWHERE, OUTLET_DOWN, Outlet, RATE_DOWN, STATE_DOWN, Step, Wait};
use super::turn::{ClaimHeld, Turn};

impl<S: Seams> Turn<'_, S> {
    pub(super) async fn send(
        &self,
        outlet: &dyn Outlet,
        state: &mut RetryState,
        claim: &ClaimHeld,
    ) -> Step {
        let gate = &self.app.gate;
        let probe = match gate.admit().await {
            Admission::Send { probe } => probe,
            // The app is paused: wait in the broker, not here.
            Admission::Wait(pause) => return self.later(state, None, None, pause, Wait::Quota),
        };
        let step = self.send_admitted(outlet, state, claim, probe).await;
        if probe {
            // A probe that ended without any WeChat answer hands probing to the next send.
            gate.probe_unanswered();
        }
        step
    }

    /// Right before the call: is the claim still ours? Renewed only once it has aged, so a job
    /// sent promptly costs no extra round trip to shared state.
    async fn still_ours(&self, state: &RetryState, claim: &ClaimHeld) -> Result<(), Step> {
        if claim.since.elapsed() < self.deps.claim_ttl / 3 {
            return Ok(());
        }
        let renewal = self
            .deps
            .store
            .renew(self.name, &self.job.id, claim.holder)
            .await;
        match renewal {
            Ok(Renewal::Held) => Ok(()),
            Ok(Renewal::AlreadySent(msgid)) => Err(Step::Finish(self.duplicate(state, msgid))),
            Ok(Renewal::Lost) => Err(self.not_now(state, IN_FLIGHT_ELSEWHERE)),
            Ok(Renewal::Cancelled) => Err(Step::Finish(self.cancelled(state))),
            Err(_) => Err(self.not_now(state, STATE_DOWN)),
        }
    }

    async fn send_admitted(
        &self,
        outlet: &dyn Outlet,
        state: &mut RetryState,
        claim: &ClaimHeld,
        probe: bool,
    ) -> Step {
        // Cloned per attempt by reference count, not by copy.
        let body = Bytes::from(self.job.wechat_body());
        let mut refreshed_for_this_job = false;
        loop {
            state
                .first_try_ms
                .get_or_insert_with(|| self.deps.clock.now_ms());
            let waiting = Instant::now();
            let turn = match self.app.rate_park {
                None => self.app.rate.until_ready().await.map(|()| None),
                Some(limit) => self.app.rate.ready_within(limit).await,
            };
            match turn {
                Ok(None) => {}
                Ok(Some(wait)) => return self.rate_parked(state, wait),
                // Without the shared bucket the rate cannot be kept.
                Err(_) => return self.not_now(state, RATE_DOWN),
            }
            self.app.metrics.limiter_waited(waiting.elapsed());
            if self.job.expired_at(self.deps.clock.now()) {
                return Step::Finish(self.expired(state));
            }
            let token = match self.app.keeper.get().await {
                Ok(token) => token,
                Err(e) => return self.no_token(state, &e),
            };
            let (reply, took) = {
                let _slot = self.deps.in_flight.acquire().await;
                if !outlet.is_open() {
                    return self.not_now(state, OUTLET_DOWN);
                }
                if let Err(step) = self.still_ours(state, claim).await {
                    return step;
                }
                state.attempts += 1;
                tracing::Span::current().record("attempt", state.attempts);
                let call = wechat_call_span(self.job, state.attempts);
                let started = Instant::now();
                let reply = self
                    .deps
                    .wechat
                    .send(self.job.kind.endpoint(), &token.value, body.clone())
                    .instrument(call.clone())
                    .await;
                match &reply {
                    Ok(r) => call.record("errcode", r.errcode),
                    Err(e) => call.record("error", e.kind().as_str()),
                };
                (reply, started.elapsed())
            };
            match &reply {
                Ok(r) => self.app.metrics.wechat_call(Ok(r.errcode), took),
                Err(e) => self.app.metrics.wechat_call(Err(&e.kind()), took),
            }
            let reply = match reply {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::debug!(app = self.name, id = %self.job.id, attempt = state.attempts, error = %e, "send failed");
                    return self.transient(state, None, e.to_string());
                }
            };
            let class = match self.job.kind.override_of(reply.errcode) {
                Some(Override {
                    class: Some(class), ..
                }) if reply.errcode != 0 => *class,
                _ => self.deps.classifier.classify(reply.errcode),
            };
            tracing::debug!(app = self.name, id = %self.job.id, attempt = state.attempts, errcode = reply.errcode, class = class.as_str(), "wechat answered");
            if class != Class::Quota {
                state.quota_strikes = 0;
                self.app.gate.answered(probe);
            }
            match class {
                Class::Ok => return self.accepted(state, reply).await,
                Class::Token => {
                    self.deps
                        .metrics
                        .token_errors
                        .get_or_create(&Metrics::app(self.name))
                        .inc();
                    self.app.keeper.invalidate(&token);
                    if !refreshed_for_this_job {
                        // Refresh (single-flight across jobs) and send again at once.
                        refreshed_for_this_job = true;
                        continue;
                    }
                    let why = format!("access token refused twice (errcode {})", reply.errcode);
                    return self.transient(state, Some(reply), why);
                }
                Class::Quota => {
                    state.quota_strikes += 1;
                    state.quota_sends += 1;
                    let pause = self.app.gate.quota_spent();
                    return self.later(state, Some(reply), None, pause, Wait::Quota);
                }
                Class::Transient => {
                    let why = describe(self.job, &reply);
                    return self.transient(state, Some(reply), why);
                }
                Class::Permanent => {
                    let why = describe(self.job, &reply);
                    let ending = Ending::Refused(reply.errcode);
                    return Step::Finish(self.failed(state, Some(reply), why, ending));
                }
            }
        }
    }

    /// WeChat accepted the message: it is `sent`, and recorded so that it is never sent again.
    /// The subscribe kinds' endpoints may answer errcode 0 without a msgid: the message is
    /// still sent (trying again could deliver it twice), with a null msgid, and nothing is
    /// recorded by msgid, since no report can name it. A msgid of 0 is no msgid.
    async fn accepted(&self, state: &RetryState, reply: SendReply) -> Step {
        let msgid = reply.msgid.filter(|&m| m != 0);
        let meta = self.job.meta.as_ref();
        if let Err(e) = self
            .deps
            .store
            .record_sent(self.name, &self.job.id, msgid, meta, self.trace)
            .await
        {
            // It was sent: the outcome says so. A resubmission within WeChat's 10-minute
            // client_msg_id window is still not delivered twice.
            tracing::error!(error = %e, msgid = ?msgid, "sent, but not recorded for de-duplication");
        }
        if msgid.is_none() {
            tracing::debug!(app = self.name, id = %self.job.id, "WeChat accepted the message without a msgid");
        }
        Step::Finish(self.sent(state, msgid, reply))
    }
}

/// The WeChat call as a child of the job's span, with the errcode WeChat answered (or the
/// transport failure): only while spans are exported, since nothing else reads it.
fn wechat_call_span(job: &Job, attempt: u32) -> tracing::Span {
    if !telemetry::exporting() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "wechat_call",
        endpoint = job.kind.endpoint(),
        attempt,
        errcode = tracing::field::Empty,
        error = tracing::field::Empty,
    )
}

fn describe(job: &Job, reply: &SendReply) -> String {
    let words = match job.kind.override_of(reply.errcode) {
        Some(o) => o.describe,
        None => errcode::describe(reply.errcode),
    };
    format!("{words} (errcode {})", reply.errcode)
}
