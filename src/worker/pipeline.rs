//! One job's way through the worker, as a value: decode, validate, de-duplicate, expire,
//! rate-limit, token, send, classify. [`process`] decides; the consumer carries it out.
//!
//! Every "not now" (the id is being sent elsewhere, shared state or the token is unavailable,
//! the outcome could not be published) becomes a retry copy that waits in a delay tier and
//! uses no attempt: a delivery is never handed back to its queue to be redelivered in a loop,
//! which RabbitMQ 4.x counts and ends by dropping the message.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::Context;
use crate::broker::headers::{MAX_JOB_HEADERS, MAX_REASON_BYTES};
use crate::job::{self, Job, Rejection};
use crate::kinds::Override;
use crate::metrics::Metrics;
use crate::outcome::{SendOutcome, SendStatus};
use crate::quota::Admission;
use crate::retry::{Next, RetryState};
use crate::state::{Claim, Holder, Renewal};
use crate::text::bounded;
use crate::wechat::client::SendReply;
use crate::wechat::client::TokenError;
use crate::wechat::errcode::{self, Class};
use crate::wechat::reason::Ending;

/// Whether the outcome of a send could be published now. The pipeline asks right before
/// each WeChat call: a message whose outcome cannot be published is not sent.
pub trait Outlet: Sync {
    fn is_open(&self) -> bool;
}

/// A delivery as the pipeline sees it.
pub struct Incoming<'a> {
    pub app: &'a str,
    pub body: &'a [u8],
    pub message_id: Option<&'a str>,
    /// The encoded size of the delivery's AMQP headers.
    pub headers_len: usize,
    pub retry: RetryState,
    pub outlet: &'a dyn Outlet,
}

/// Why a job waits in the broker before its next try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// WeChat or the network failed: the backoff counts toward `retry.max_attempts`.
    Transient,
    /// WeChat said the app's quota is spent (45009): the app is paused.
    Quota,
    /// The job could not be tried now, for this reason; no attempt was used.
    NotNow(&'static str),
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
        wait: Wait,
    },
}

const IN_FLIGHT_ELSEWHERE: &str = "its id is being sent by another delivery";
const STATE_DOWN: &str = "shared state is unavailable";
const RATE_DOWN: &str = "the shared rate limit is unavailable";
const OUTLET_DOWN: &str = "its outcome could not be published (broker channel down)";

pub fn now_ms() -> u64 {
    OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 / 1_000_000
}

/// Runs the pipeline for one delivery.
pub async fn process(ctx: &Context, incoming: Incoming<'_>) -> Step {
    let job = match job::parse(incoming.body, incoming.message_id) {
        Ok(job) => job,
        Err(rejection) => return reject(incoming.app, &rejection, incoming.retry),
    };
    if incoming.headers_len > MAX_JOB_HEADERS {
        let rejection = Rejection {
            id: Some(job.id.clone()),
            field: "headers".into(),
            rule: format!(
                "are {} bytes of AMQP headers, over the {} KiB limit",
                incoming.headers_len,
                MAX_JOB_HEADERS / 1024
            ),
            meta: job.meta.clone(),
            kind: Some(job.kind.name()),
        };
        return reject(incoming.app, &rejection, incoming.retry);
    }
    if let Some(app) = ctx.settings.apps.get(incoming.app)
        && !app.sends(job.kind.name())
    {
        let rejection = Rejection {
            id: Some(job.id.clone()),
            field: "kind".into(),
            rule: format!(
                "{:?} is not a kind this app sends (apps.{}.kinds = {:?})",
                job.kind.name(),
                incoming.app,
                app.kinds
            ),
            meta: job.meta.clone(),
            kind: Some(job.kind.name()),
        };
        return reject(incoming.app, &rejection, incoming.retry);
    }
    let mut state = incoming.retry;
    tracing::Span::current().record("id", job.id.as_str());
    // De-duplication first: a job sent just before `not_after` and redelivered after it was
    // still sent.
    let holder = match ctx.state.claim(incoming.app, &job.id).await {
        Ok(Claim::Fresh(holder)) => holder,
        Ok(Claim::AlreadySent(msgid)) => {
            return Step::Finish(duplicate(incoming.app, &job, &state, msgid));
        }
        Ok(Claim::InFlight) => {
            return not_now(ctx, incoming.app, &job, &state, IN_FLIGHT_ELSEWHERE);
        }
        // Without shared state there is no de-duplication: the job waits in the broker.
        Err(_) => return not_now(ctx, incoming.app, &job, &state, STATE_DOWN),
    };
    let claim = ClaimHeld {
        holder,
        since: Instant::now(),
    };
    let step = if job.expired_at(OffsetDateTime::now_utc()) {
        Step::Finish(expired(incoming.app, &job, &state))
    } else if let Some(rejection) = ctx.catalog_refusal(incoming.app, &job).await {
        // Before the token is taken: a job its template cannot show costs no quota.
        reject(incoming.app, &rejection, state)
    } else {
        send(ctx, &incoming, &job, &mut state, &claim).await
    };
    if !matches!(&step, Step::Finish(o) if o.status == SendStatus::Sent) {
        ctx.state.release(incoming.app, &job.id, holder).await;
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
    if let Some(kind) = r.kind.and_then(crate::kinds::by_name) {
        kind.outcome_fields(&mut o);
    }
    Step::Reject { outcome: o, reason }
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
    job.kind.outcome_fields(&mut o);
    o
}

fn expired(app: &str, job: &Job, state: &RetryState) -> SendOutcome {
    finished(
        app,
        job,
        SendStatus::Expired,
        state,
        "not_after passed before it could be sent",
    )
}

/// A job whose id already reached `sent`: the first msgid, never a second send.
fn duplicate(app: &str, job: &Job, state: &RetryState, msgid: u64) -> SendOutcome {
    let mut o = finished(app, job, SendStatus::Sent, state, "");
    o.msgid = Some(msgid);
    o.errcode = Some(0);
    o.errmsg = Some("ok".into());
    o.duplicate = true;
    o
}

/// The last WeChat answer, kept for a failed outcome.
type LastAnswer = Option<SendReply>;

/// Waits `after` in the broker without using an attempt. `retry.max_age` runs from here on,
/// so a job that never gets its turn still ends. `seen` is an errcode met without a send
/// answer (a refused token fetch), kept for the failed outcome's reason.
#[allow(clippy::too_many_arguments)]
fn later(
    ctx: &Context,
    app: &str,
    job: &Job,
    state: &RetryState,
    last: LastAnswer,
    seen: Option<i64>,
    after: Duration,
    wait: Wait,
) -> Step {
    let mut state = *state;
    state.first_try_ms.get_or_insert_with(now_ms);
    match ctx.schedule.after_pause(&state, now_ms(), after) {
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
            Step::Finish(failed(ctx, app, job, &state, last, why, ending))
        }
    }
}

/// Not now, for `why`: back in the shortest delay tier.
fn not_now(ctx: &Context, app: &str, job: &Job, state: &RetryState, why: &'static str) -> Step {
    tracing::debug!(app, id = %job.id, reason = why, "not now; the job waits in a delay queue");
    let soon = ctx.schedule.tiers()[0];
    later(ctx, app, job, state, None, None, soon, Wait::NotNow(why))
}

async fn send(
    ctx: &Context,
    incoming: &Incoming<'_>,
    job: &Job,
    state: &mut RetryState,
    claim: &ClaimHeld,
) -> Step {
    let gate = &ctx.app(incoming.app).gate;
    let probe = match gate.admit().await {
        Admission::Send { probe } => probe,
        // The app is paused: wait in the broker, not here.
        Admission::Wait(pause) => {
            return later(
                ctx,
                incoming.app,
                job,
                state,
                None,
                None,
                pause,
                Wait::Quota,
            );
        }
    };
    let step = send_admitted(ctx, incoming, job, state, claim, probe).await;
    if probe {
        // A probe that ended without any WeChat answer hands probing to the next send.
        gate.probe_unanswered();
    }
    step
}

/// Right before the call: is the claim still ours? Renewed only once it has aged, so a job
/// sent promptly costs no extra round trip to shared state.
async fn still_ours(
    ctx: &Context,
    app: &str,
    job: &Job,
    state: &RetryState,
    claim: &ClaimHeld,
) -> Result<(), Step> {
    if claim.since.elapsed() < ctx.claim_ttl / 3 {
        return Ok(());
    }
    match ctx.state.renew(app, &job.id, claim.holder).await {
        Ok(Renewal::Held) => Ok(()),
        Ok(Renewal::AlreadySent(msgid)) => Err(Step::Finish(duplicate(app, job, state, msgid))),
        Ok(Renewal::Lost) => Err(not_now(ctx, app, job, state, IN_FLIGHT_ELSEWHERE)),
        Err(_) => Err(not_now(ctx, app, job, state, STATE_DOWN)),
    }
}

async fn send_admitted(
    ctx: &Context,
    incoming: &Incoming<'_>,
    job: &Job,
    state: &mut RetryState,
    claim: &ClaimHeld,
    probe: bool,
) -> Step {
    let app_name = incoming.app;
    let app = ctx.app(app_name);
    let body = job.wechat_body();
    let mut refreshed_for_this_job = false;
    loop {
        state.first_try_ms.get_or_insert_with(now_ms);
        let waiting = Instant::now();
        if app.limiter.until_ready(app_name, &ctx.state).await.is_err() {
            // Without the shared bucket the rate cannot be kept.
            return not_now(ctx, app_name, job, state, RATE_DOWN);
        }
        app.metrics.limiter_waited(waiting.elapsed());
        if job.expired_at(OffsetDateTime::now_utc()) {
            return Step::Finish(expired(app_name, job, state));
        }
        let token = match app.keeper.get().await {
            Ok(token) => token,
            Err(e) => {
                // Every job of the app would fail the same way: pause the app (its jobs wait
                // in the broker) until the keeper may fetch again, and use no attempt.
                ctx.metrics
                    .token_fetch_failures
                    .get_or_create(&Metrics::app(app_name))
                    .inc();
                let wait = app.keeper.backing_off().unwrap_or(ctx.schedule.tiers()[0]);
                let pause = app.gate.pause_for(wait, "cannot get an access token");
                tracing::error!(app = app_name, error = %e, retry_in = ?pause, "cannot get an access token; the app is paused");
                let seen = match e {
                    TokenError::Refused { errcode, .. } => Some(errcode),
                    TokenError::Call(_) => None,
                };
                return later(
                    ctx,
                    app_name,
                    job,
                    state,
                    None,
                    seen,
                    pause,
                    Wait::NotNow("no access token could be had"),
                );
            }
        };
        let (reply, took) = {
            let _slot = ctx.in_flight.acquire().await;
            if !incoming.outlet.is_open() {
                return not_now(ctx, app_name, job, state, OUTLET_DOWN);
            }
            if let Err(step) = still_ours(ctx, app_name, job, state, claim).await {
                return step;
            }
            state.attempts += 1;
            tracing::Span::current().record("attempt", state.attempts);
            let started = Instant::now();
            let reply = ctx
                .client
                .post_json(job.kind.endpoint(), &token.value, body.clone())
                .await;
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
        let class = match job.kind.override_of(reply.errcode) {
            Some(Override {
                class: Some(class), ..
            }) if reply.errcode != 0 => *class,
            _ => ctx.classifier.classify(reply.errcode),
        };
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
                state.quota_sends += 1;
                let pause = app.gate.quota_spent();
                return later(
                    ctx,
                    app_name,
                    job,
                    state,
                    Some(reply),
                    None,
                    pause,
                    Wait::Quota,
                );
            }
            Class::Transient => {
                let why = describe(job, &reply);
                return transient(ctx, app_name, job, state, Some(reply), why);
            }
            Class::Permanent => {
                let why = describe(job, &reply);
                let ending = Ending::Refused(reply.errcode);
                return Step::Finish(failed(ctx, app_name, job, state, Some(reply), why, ending));
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

/// A failed outcome; every one carries the reason its `ending` maps to.
fn failed(
    ctx: &Context,
    app: &str,
    job: &Job,
    state: &RetryState,
    last: LastAnswer,
    why: String,
    ending: Ending,
) -> SendOutcome {
    let mut o = finished(app, job, SendStatus::Failed, state, &why);
    // The kind's own reading of a refusal comes before the configured sets.
    let own = match ending {
        Ending::Refused(code) => job.kind.override_of(code).and_then(|o| o.reason),
        Ending::GaveUp { .. } => None,
    };
    o.reason = Some(own.unwrap_or_else(|| ctx.settings.wechat.reason_codes.decide(ending)));
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
            wait: Wait::Transient,
        },
        Next::GiveUp(limit) => {
            let ending = Ending::GaveUp {
                quota_paused: false,
                errcode: last.as_ref().map(|r| r.errcode),
            };
            let why = format!("{why}; {limit}");
            Step::Finish(failed(ctx, app, job, state, last, why, ending))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::config::{AppSettings, Secret, Settings};
    use crate::sim::{DEFAULT_APPID, DEFAULT_SECRET, SimOptions, Simulator};

    struct FakeOutlet(AtomicBool);

    impl Outlet for FakeOutlet {
        fn is_open(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    static OPEN: FakeOutlet = FakeOutlet(AtomicBool::new(true));

    /// A context with memory state and one app `a` whose WeChat is `base_url` (nothing
    /// listens there unless a test starts a simulator).
    fn context(base_url: &str) -> Context {
        let mut s = Settings::default();
        s.wechat.base_url = base_url.into();
        s.apps.insert(
            "a".into(),
            AppSettings::new(DEFAULT_APPID, Secret::new(DEFAULT_SECRET)),
        );
        Context::new(s).unwrap()
    }

    fn body(id: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": id,
            "touser": "o0000000000000000000000000001",
            "template_id": "t1",
            "data": {"k": {"value": "v"}}
        }))
        .unwrap()
    }

    fn incoming<'a>(body: &'a [u8], outlet: &'a dyn Outlet) -> Incoming<'a> {
        Incoming {
            app: "a",
            body,
            message_id: None,
            headers_len: 0,
            retry: RetryState::default(),
            outlet,
        }
    }

    #[tokio::test]
    async fn a_job_turned_back_by_a_pause_uses_no_attempt_and_starts_its_max_age_clock() {
        let ctx = context("http://127.0.0.1:9");
        ctx.app("a").gate.quota_spent();
        let body = body("j1");
        let step = process(&ctx, incoming(&body, &OPEN)).await;
        let Step::Retry { state, wait, .. } = step else {
            panic!("{step:?}")
        };
        assert_eq!(wait, Wait::Quota);
        assert_eq!(state.attempts, 0);
        assert!(
            state.first_try_ms.is_some(),
            "max_age runs from the first turn-back"
        );
        // Its claim was given up: another delivery of the id may go ahead.
        assert!(matches!(
            ctx.state.claim("a", "j1").await.unwrap(),
            Claim::Fresh(_)
        ));
    }

    #[tokio::test]
    async fn an_id_in_flight_elsewhere_waits_without_an_attempt() {
        let ctx = context("http://127.0.0.1:9");
        let Claim::Fresh(_) = ctx.state.claim("a", "j2").await.unwrap() else {
            panic!()
        };
        let body = body("j2");
        let step = process(&ctx, incoming(&body, &OPEN)).await;
        assert!(
            matches!(step, Step::Retry { wait: Wait::NotNow(IN_FLIGHT_ELSEWHERE), state, .. } if state.attempts == 0),
            "{step:?}"
        );
    }

    #[tokio::test]
    async fn a_sent_id_is_a_duplicate_even_after_its_not_after() {
        let ctx = context("http://127.0.0.1:9");
        ctx.state.record_sent("a", "j3", 77, None).await.unwrap();
        let mut job: serde_json::Value = serde_json::from_slice(&body("j3")).unwrap();
        job["not_after"] = "2000-01-01T00:00:00Z".into();
        let body = serde_json::to_vec(&job).unwrap();
        let Step::Finish(o) = process(&ctx, incoming(&body, &OPEN)).await else {
            panic!()
        };
        assert_eq!(
            (o.status, o.duplicate, o.msgid),
            (SendStatus::Sent, true, Some(77))
        );
    }

    #[tokio::test]
    async fn headers_over_the_limit_are_a_rejection_naming_them() {
        let ctx = context("http://127.0.0.1:9");
        let body = body("j4");
        let mut i = incoming(&body, &OPEN);
        i.headers_len = MAX_JOB_HEADERS + 1;
        let Step::Reject { outcome, reason } = process(&ctx, i).await else {
            panic!()
        };
        assert!(reason.starts_with("headers:"), "{reason}");
        assert_eq!(outcome.id.as_deref(), Some("j4"));
    }

    #[tokio::test]
    async fn nothing_is_sent_while_the_outcome_could_not_be_published() {
        let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
            .await
            .unwrap();
        let ctx = context(&sim.base_url());
        let closed = FakeOutlet(AtomicBool::new(false));
        let body = body("j5");
        let step = process(&ctx, incoming(&body, &closed)).await;
        assert!(
            matches!(step, Step::Retry { wait: Wait::NotNow(OUTLET_DOWN), state, .. } if state.attempts == 0),
            "{step:?}"
        );
        assert_eq!(sim.stats().apps[DEFAULT_APPID].send_calls, 0);
        sim.stop();
    }

    #[tokio::test]
    async fn a_token_that_cannot_be_had_pauses_the_app_without_an_attempt() {
        // Nothing listens on port 9: the token fetch fails.
        let ctx = context("http://127.0.0.1:9");
        let body = body("j6");
        let step = process(&ctx, incoming(&body, &OPEN)).await;
        assert!(
            matches!(step, Step::Retry { wait: Wait::NotNow(_), state, .. } if state.attempts == 0 && state.first_try_ms.is_some()),
            "{step:?}"
        );
        assert!(
            matches!(ctx.app("a").gate.admit().await, Admission::Wait(_)),
            "paused"
        );
    }
}
