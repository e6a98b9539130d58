//! One job's way through the worker, as a value: decode, validate, expire, de-duplicate,
//! rate-limit, token, send, classify. [`process`] decides; the consumer carries it out.

use std::time::Duration;

use time::OffsetDateTime;

use super::Context;
use crate::job::{self, Job, Rejection};
use crate::metrics::Metrics;
use crate::outcome::{SendOutcome, SendStatus};
use crate::quota::Admission;
use crate::retry::{Next, RetryState};
use crate::state::Claim;
use crate::wechat::client::SendReply;
use crate::wechat::errcode::{self, Class};

/// A delivery as the pipeline sees it.
pub struct Incoming<'a> {
    pub app: &'a str,
    pub body: &'a [u8],
    pub message_id: Option<&'a str>,
    pub retry: RetryState,
}

/// What to do with the delivery.
#[derive(Debug)]
pub enum Step {
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
        /// Set when WeChat said the app's quota is spent.
        quota: bool,
    },
    /// Another delivery of the same id is being sent now: hand this one back to the broker.
    HandBack,
}

pub fn now_ms() -> u64 {
    OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 / 1_000_000
}

/// Runs the pipeline for one delivery.
pub async fn process(ctx: &Context, incoming: Incoming<'_>) -> Step {
    let job = match job::parse(incoming.body, incoming.message_id) {
        Ok(job) => job,
        Err(rejection) => return reject(incoming.app, &rejection, incoming.retry),
    };
    let mut state = incoming.retry;
    tracing::Span::current().record("id", job.id.as_str());
    if job.expired_at(OffsetDateTime::now_utc()) {
        return Step::Finish(finished(
            incoming.app,
            &job,
            SendStatus::Expired,
            &state,
            "not_after passed before it could be sent",
        ));
    }
    let claim = match ctx.state.claim(incoming.app, &job.id).await {
        Ok(claim) => claim,
        // Without shared state there is no de-duplication: the job waits in the broker.
        Err(_) => return Step::HandBack,
    };
    match claim {
        Claim::AlreadySent(msgid) => {
            let mut o = finished(incoming.app, &job, SendStatus::Sent, &state, "");
            o.error = None;
            o.msgid = Some(msgid);
            o.errcode = Some(0);
            o.errmsg = Some("ok".into());
            o.duplicate = true;
            return Step::Finish(o);
        }
        Claim::InFlight => return Step::HandBack,
        Claim::Fresh => {}
    }
    let step = send(ctx, incoming.app, &job, &mut state).await;
    if !matches!(&step, Step::Finish(o) if o.status == SendStatus::Sent) {
        ctx.state.release(incoming.app, &job.id).await;
    }
    step
}

fn reject(app: &str, r: &Rejection, state: RetryState) -> Step {
    let mut o = SendOutcome::new(app, SendStatus::Rejected);
    o.id = r.id.clone();
    o.meta = r.meta.clone();
    o.attempts = state.attempts;
    o.error = Some(r.to_string());
    Step::Reject {
        outcome: o,
        reason: r.to_string(),
    }
}

fn finished(
    app: &str,
    job: &Job,
    status: SendStatus,
    state: &RetryState,
    error: &str,
) -> SendOutcome {
    let mut o = SendOutcome::new(app, status);
    o.id = Some(job.id.clone());
    o.touser = Some(job.touser.clone());
    o.template_id = Some(job.template_id.clone());
    o.meta = job.meta.clone();
    o.attempts = state.attempts;
    o.error = (!error.is_empty()).then(|| error.to_owned());
    o
}

/// The last WeChat answer, kept for a failed outcome.
type LastAnswer = Option<SendReply>;

async fn send(ctx: &Context, app_name: &str, job: &Job, state: &mut RetryState) -> Step {
    let gate = &ctx.app(app_name).gate;
    let probe = match gate.admit().await {
        Admission::Send { probe } => probe,
        // The app is paused for its quota: wait in the broker, not here.
        Admission::Wait(pause) => return after_quota(ctx, app_name, job, state, None, pause),
    };
    let step = send_admitted(ctx, app_name, job, state, probe).await;
    if probe {
        // A probe that ended without any WeChat answer hands probing to the next send.
        gate.probe_unanswered();
    }
    step
}

fn after_quota(
    ctx: &Context,
    app: &str,
    job: &Job,
    state: &RetryState,
    last: LastAnswer,
    pause: Duration,
) -> Step {
    match ctx.schedule.after_quota(state, now_ms(), pause) {
        Next::RetryAfter(after) => Step::Retry {
            after,
            state: *state,
            quota: true,
        },
        Next::GiveUp(why) => Step::Finish(failed(app, job, state, last, why)),
    }
}

async fn send_admitted(
    ctx: &Context,
    app_name: &str,
    job: &Job,
    state: &mut RetryState,
    probe: bool,
) -> Step {
    let app = ctx.app(app_name);
    let body = job.wechat_body();
    let mut refreshed_for_this_job = false;
    loop {
        state.first_try_ms.get_or_insert_with(now_ms);
        let waiting = std::time::Instant::now();
        if app.limiter.until_ready(app_name, &ctx.state).await.is_err() {
            // Without the shared bucket the rate cannot be kept: back to the broker.
            return Step::HandBack;
        }
        app.metrics.limiter_waited(waiting.elapsed());
        if job.expired_at(OffsetDateTime::now_utc()) {
            return Step::Finish(finished(
                app_name,
                job,
                SendStatus::Expired,
                state,
                "not_after passed before it could be sent",
            ));
        }
        let token = match app.keeper.get().await {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(app = app_name, error = %e, "cannot get an access token");
                return transient(
                    ctx,
                    app_name,
                    job,
                    state,
                    None,
                    format!("no access token: {e}"),
                );
            }
        };
        let (reply, took) = {
            let _slot = ctx.in_flight.acquire().await;
            state.attempts += 1;
            tracing::Span::current().record("attempt", state.attempts);
            let started = std::time::Instant::now();
            let reply = ctx.client.send_template(&token.value, body.clone()).await;
            (reply, started.elapsed())
        };
        let errcode = match &reply {
            Ok(r) => Ok(r.errcode),
            Err(e) => Err(e.kind()),
        };
        app.metrics.wechat_call(errcode, took);
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(app = app_name, id = %job.id, attempt = state.attempts, error = %e, "send failed");
                return transient(ctx, app_name, job, state, None, e.to_string());
            }
        };
        let class = ctx.classifier.classify(reply.errcode);
        tracing::debug!(app = app_name, id = %job.id, attempt = state.attempts, errcode = reply.errcode, class = class.as_str(), "wechat answered");
        if class != Class::Quota {
            state.quota_strikes = 0;
            app.gate.answered(probe);
        }
        match class {
            Class::Ok => {
                let msgid = reply.msgid.unwrap_or(0);
                if let Err(e) = ctx
                    .state
                    .record_sent(app_name, &job.id, msgid, job.meta.as_ref())
                    .await
                {
                    // It was sent: the outcome says so. A resubmission within WeChat's
                    // 10-minute client_msg_id window is still not delivered twice.
                    tracing::error!(error = %e, msgid, "sent, but not recorded for de-duplication");
                }
                let mut o = finished(app_name, job, SendStatus::Sent, state, "");
                o.msgid = Some(msgid);
                o.errcode = Some(0);
                o.errmsg = Some(reply.errmsg);
                return Step::Finish(o);
            }
            Class::Token => {
                ctx.metrics
                    .token_errors
                    .get_or_create(&Metrics::app(app_name))
                    .inc();
                app.keeper.invalidate(&token);
                if !refreshed_for_this_job {
                    // Refresh (single-flight across jobs) and send again at once.
                    refreshed_for_this_job = true;
                    continue;
                }
                let why = format!("access token refused twice (errcode {})", reply.errcode);
                return transient(ctx, app_name, job, state, Some(reply), why);
            }
            Class::Quota => {
                state.quota_strikes += 1;
                let pause = app.gate.quota_spent();
                return after_quota(ctx, app_name, job, state, Some(reply), pause);
            }
            Class::Transient => {
                let why = format!(
                    "{} (errcode {})",
                    errcode::describe(reply.errcode),
                    reply.errcode
                );
                return transient(ctx, app_name, job, state, Some(reply), why);
            }
            Class::Permanent => {
                let why = format!(
                    "{} (errcode {})",
                    errcode::describe(reply.errcode),
                    reply.errcode
                );
                return Step::Finish(failed(app_name, job, state, Some(reply), why));
            }
        }
    }
}

fn failed(app: &str, job: &Job, state: &RetryState, last: LastAnswer, why: String) -> SendOutcome {
    let mut o = finished(app, job, SendStatus::Failed, state, &why);
    if let Some(reply) = last {
        o.errcode = Some(reply.errcode);
        o.errmsg = Some(reply.errmsg);
    }
    o
}

fn transient(
    ctx: &Context,
    app: &str,
    job: &Job,
    state: &RetryState,
    last: LastAnswer,
    why: String,
) -> Step {
    let (jitter, pick) = (rand::random::<f64>(), rand::random::<f64>());
    match ctx.schedule.after_transient(state, now_ms(), jitter, pick) {
        Next::RetryAfter(after) => Step::Retry {
            after,
            state: *state,
            quota: false,
        },
        Next::GiveUp(limit) => {
            Step::Finish(failed(app, job, state, last, format!("{why}; {limit}")))
        }
    }
}
