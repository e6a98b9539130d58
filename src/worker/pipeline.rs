//! One job's way through the worker, as a value: decode, validate, de-duplicate, expire,
//! rate-limit, token, send, classify. [`process`] decides; the consumer carries it out. Every
//! effect goes through a seam of [`Deps`] (WeChat, idempotency, rate, token, clock), so each
//! path runs in a unit test with fakes and paused time.
//!
//! Every "not now" (the id is being sent elsewhere, shared state or the token is unavailable,
//! the outcome could not be published) becomes a retry copy that waits in a delay tier and
//! uses no attempt: a delivery is never handed back to its queue to be redelivered in a loop,
//! which RabbitMQ 4.x counts and ends by dropping the message.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::clock::Clock;
pub(crate) use super::clock::now_ms;
use super::deps::{AppDeps, Deps, Seams};
use crate::broker::headers::{MAX_JOB_HEADERS, MAX_REASON_BYTES};
use crate::job::{self, Job, Rejection};
use crate::kinds::Override;
use crate::limiter::RateGate;
use crate::metrics::Metrics;
use crate::outcome::{SendOutcome, SendStatus};
use crate::quota::Admission;
use crate::retry::{Next, RetryState};
use crate::state::{Claim, Holder, Idempotency, Renewal};
use crate::text::bounded;
use crate::types::Class;
use crate::wechat::client::{SendReply, TokenError, WechatApi};
use crate::wechat::errcode;
use crate::wechat::reason::Ending;

/// Whether the outcome of a send could be published now. The pipeline asks right before
/// each WeChat call: a message whose outcome cannot be published is not sent.
pub(crate) trait Outlet: Sync {
    fn is_open(&self) -> bool;
}

/// A delivery as the pipeline sees it.
pub(crate) struct Incoming<'a> {
    pub(crate) app: &'a str,
    pub(crate) body: &'a [u8],
    pub(crate) message_id: Option<&'a str>,
    /// The encoded size of the delivery's AMQP headers.
    pub(crate) headers_len: usize,
    pub(crate) retry: RetryState,
    pub(crate) outlet: &'a dyn Outlet,
}

/// Why a job waits in the broker before its next try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// WeChat or the network failed: the backoff counts toward `retry.max_attempts`.
    Transient,
    /// WeChat said the app's quota is spent (45009): the app is paused.
    Quota,
    /// The job could not be tried now, for this reason; no attempt was used.
    NotNow(&'static str),
}

/// What to do with the delivery.
#[derive(Debug)]
pub(crate) enum Step {
    /// Publish this final outcome, then ack.
    Finish(SendOutcome),
    /// Publish the original to `wxcourier.dead` with this reason and the outcome, then ack.
    Reject {
        outcome: SendOutcome,
        reason: String,
    },
    /// Publish a retry copy that waits `after` in the broker, then ack.
    Retry {
        after: Duration,
        state: RetryState,
        wait: Wait,
    },
}

const IN_FLIGHT_ELSEWHERE: &str = "its id is being sent by another delivery";
const STATE_DOWN: &str = "shared state is unavailable";
const RATE_DOWN: &str = "the shared rate limit is unavailable";
const OUTLET_DOWN: &str = "its outcome could not be published (broker channel down)";
const NO_TOKEN: &str = "no access token could be had";

/// Runs the pipeline for one delivery.
pub(crate) async fn process<S: Seams>(deps: &Deps<S>, incoming: Incoming<'_>) -> Step {
    // Taken apart at once: a whole delivery kept alive across the awaits below would make
    // every waiting job's state larger.
    let Incoming {
        app: name,
        body,
        message_id,
        headers_len,
        retry,
        outlet,
    } = incoming;
    let job = match job::parse(body, message_id) {
        Ok(job) => job,
        Err(rejection) => return reject(name, &rejection, retry),
    };
    if headers_len > MAX_JOB_HEADERS {
        let rejection = Rejection {
            id: Some(job.id.clone()),
            field: "headers".into(),
            rule: format!(
                "are {} bytes of AMQP headers, over the {} KiB limit",
                headers_len,
                MAX_JOB_HEADERS / 1024
            ),
            meta: job.meta.clone(),
            kind: Some(job.kind),
        };
        return reject(name, &rejection, retry);
    }
    let app = deps.app(name);
    if !app.kinds.sends(job.kind) {
        let rejection = Rejection {
            id: Some(job.id.clone()),
            field: "kind".into(),
            rule: format!(
                "{:?} is not a kind this app sends (apps.{}.kinds = {:?})",
                job.kind.name(),
                name,
                app.kinds
            ),
            meta: job.meta.clone(),
            kind: Some(job.kind),
        };
        return reject(name, &rejection, retry);
    }
    let turn = Turn {
        deps,
        app,
        name,
        job: &job,
    };
    let mut state = retry;
    tracing::Span::current().record("id", job.id.as_str());
    // De-duplication first: a job sent just before `not_after` and redelivered after it was
    // still sent.
    let holder = match deps.store.claim(name, &job.id).await {
        Ok(Claim::Fresh(holder)) => holder,
        Ok(Claim::AlreadySent(msgid)) => return Step::Finish(turn.duplicate(&state, msgid)),
        Ok(Claim::InFlight) => return turn.not_now(&state, IN_FLIGHT_ELSEWHERE),
        // Without shared state there is no de-duplication: the job waits in the broker.
        Err(_) => return turn.not_now(&state, STATE_DOWN),
    };
    let claim = ClaimHeld {
        holder,
        since: Instant::now(),
    };
    let step = if job.expired_at(deps.clock.now()) {
        Step::Finish(turn.expired(&state))
    } else if let Some(rejection) = app.catalog_refusal(&job).await {
        // Before the token is taken: a job its template cannot show costs no quota.
        reject(name, &rejection, state)
    } else {
        turn.send(outlet, &mut state, &claim).await
    };
    if !matches!(&step, Step::Finish(o) if o.status == SendStatus::Sent) {
        // Best effort: a claim that is not released lapses by itself.
        let _ = deps.store.release(name, &job.id, claim.holder).await;
    }
    step
}

/// The claim this delivery holds on its job id.
struct ClaimHeld {
    holder: Holder,
    since: Instant,
}

fn reject(app: &str, r: &Rejection, state: RetryState) -> Step {
    let reason = bounded(&r.to_string(), MAX_REASON_BYTES);
    let mut o = SendOutcome::new(app, SendStatus::Rejected);
    o.id = r.id.clone();
    o.meta = r.meta.clone();
    o.attempts = state.attempts;
    o.error = Some(reason.clone());
    if let Some(kind) = r.kind {
        kind.outcome_fields(&mut o);
    }
    Step::Reject { outcome: o, reason }
}

/// The last WeChat answer, kept for a failed outcome.
type LastAnswer = Option<SendReply>;

/// One valid job's turn: what every decision about it reads.
struct Turn<'a, S: Seams> {
    deps: &'a Deps<S>,
    app: &'a AppDeps<S>,
    name: &'a str,
    job: &'a Job,
}

impl<S: Seams> Turn<'_, S> {
    fn finished(&self, status: SendStatus, state: &RetryState, error: &str) -> SendOutcome {
        let job = self.job;
        let mut o = SendOutcome::new(self.name, status);
        o.id = Some(job.id.clone());
        o.touser = Some(job.touser.clone());
        o.template_id = Some(job.template_id.clone());
        o.meta = job.meta.clone();
        o.attempts = state.attempts;
        o.error = (!error.is_empty()).then(|| error.to_owned());
        job.kind.outcome_fields(&mut o);
        o
    }

    fn expired(&self, state: &RetryState) -> SendOutcome {
        self.finished(
            SendStatus::Expired,
            state,
            "not_after passed before it could be sent",
        )
    }

    /// A job whose id already reached `sent`: the first msgid, never a second send.
    fn duplicate(&self, state: &RetryState, msgid: u64) -> SendOutcome {
        let mut o = self.finished(SendStatus::Sent, state, "");
        o.msgid = Some(msgid);
        o.errcode = Some(0);
        o.errmsg = Some("ok".into());
        o.duplicate = true;
        o
    }

    /// A failed outcome; every one carries the reason its `ending` maps to.
    fn failed(
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

    /// Waits `after` in the broker without using an attempt. `retry.max_age` runs from here
    /// on, so a job that never gets its turn still ends. `seen` is an errcode met without a
    /// send answer (a refused token fetch), kept for the failed outcome's reason.
    fn later(
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
            Next::RetryAfter(after) => Step::Retry { after, state, wait },
            Next::GiveUp(why) => {
                let why = match wait {
                    Wait::NotNow(reason) => format!("{reason}; {why}"),
                    Wait::Transient | Wait::Quota => why,
                };
                let ending = Ending::GaveUp {
                    quota_paused: wait == Wait::Quota,
                    errcode: last.as_ref().map(|r| r.errcode).or(seen),
                };
                Step::Finish(self.failed(&state, last, why, ending))
            }
        }
    }

    /// Not now, for `why`: back in the shortest delay tier.
    fn not_now(&self, state: &RetryState, why: &'static str) -> Step {
        tracing::debug!(app = self.name, id = %self.job.id, reason = why, "not now; the job waits in a delay queue");
        let soon = self.deps.schedule.tiers()[0];
        self.later(state, None, None, soon, Wait::NotNow(why))
    }

    /// Backoff after a failed send, or `failed` once retries run out.
    fn transient(&self, state: &RetryState, last: LastAnswer, why: String) -> Step {
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

    async fn send(&self, outlet: &dyn Outlet, state: &mut RetryState, claim: &ClaimHeld) -> Step {
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
            Err(_) => Err(self.not_now(state, STATE_DOWN)),
        }
    }

    /// The app cannot get a token: every job of the app would fail the same way, so the app
    /// pauses (its jobs wait in the broker) until the keeper may fetch again, and this job
    /// uses no attempt.
    fn no_token(&self, state: &RetryState, e: &TokenError) -> Step {
        let (deps, app) = (self.deps, self.app);
        deps.metrics
            .token_fetch_failures
            .get_or_create(&Metrics::app(self.name))
            .inc();
        // A failure of the shared token store is a state outage, and says so.
        let (why, seen) = match e {
            TokenError::Refused { errcode, .. } => (NO_TOKEN, Some(*errcode)),
            TokenError::Call(_) => (NO_TOKEN, None),
            TokenError::State(_) => (STATE_DOWN, None),
        };
        let wait = app.keeper.backing_off().unwrap_or(deps.schedule.tiers()[0]);
        let pause = app.gate.pause_for(wait, why);
        tracing::error!(app = self.name, error = %e, retry_in = ?pause, "cannot get an access token; the app is paused");
        self.later(state, None, seen, pause, Wait::NotNow(why))
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
            if self.app.rate.until_ready().await.is_err() {
                // Without the shared bucket the rate cannot be kept.
                return self.not_now(state, RATE_DOWN);
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
                let started = Instant::now();
                let reply = self
                    .deps
                    .wechat
                    .send(self.job.kind.endpoint(), &token.value, body.clone())
                    .await;
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
                Class::Ok => {
                    let msgid = reply.msgid.unwrap_or(0);
                    if let Err(e) = self
                        .deps
                        .store
                        .record_sent(self.name, &self.job.id, msgid, self.job.meta.as_ref())
                        .await
                    {
                        // It was sent: the outcome says so. A resubmission within WeChat's
                        // 10-minute client_msg_id window is still not delivered twice.
                        tracing::error!(error = %e, msgid, "sent, but not recorded for de-duplication");
                    }
                    let mut o = self.finished(SendStatus::Sent, state, "");
                    o.msgid = Some(msgid);
                    o.errcode = Some(0);
                    o.errmsg = Some(reply.errmsg);
                    return Step::Finish(o);
                }
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
}

fn describe(job: &Job, reply: &SendReply) -> String {
    let words = match job.kind.override_of(reply.errcode) {
        Some(o) => o.describe,
        None => errcode::describe(reply.errcode),
    };
    format!("{words} (errcode {})", reply.errcode)
}

#[cfg(test)]
mod tests;
