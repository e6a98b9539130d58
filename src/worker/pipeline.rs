//! One job's way through the worker, as a value: decode, validate, de-duplicate, expire,
//! rate-limit, token, send, classify. [`process`] decides; the consumer carries it out. Every
//! effect goes through a seam of [`Deps`] (WeChat, idempotency, rate, token, clock), so each
//! path runs in a unit test with fakes and paused time.
//!
//! Every "not now" (the id is being sent elsewhere, shared state or the token is unavailable,
//! the outcome could not be published) becomes a retry copy that waits in a delay tier and
//! uses no attempt: a delivery is never handed back to its queue to be redelivered in a loop,
//! which RabbitMQ 4.x counts and ends by dropping the message.
//!
//! By concern: `step` (what comes in and what is decided), `turn` (one valid job and the
//! outcomes it can end in), `waits` (backoff, pauses and holds), `quiet` (the app's quiet
//! hours), `paused` (the kill switch), `policy` (the delivery policies met before the claim, in
//! order), `cancel` (cancel messages, and a held job's cancel), `send` (the WeChat call and its
//! answer), `gates` (the preference gates, and the refusals that set them), `limits` (the app's
//! send limits around the send, which read the gates too when both are on). Each file uses only
//! those before it in this list.

mod cancel;
mod gates;
mod limits;
mod paused;
mod policy;
mod quiet;
mod send;
mod step;
mod turn;
mod waits;

use tokio::time::Instant;

use super::deps::{Deps, Seams};
use crate::broker::headers::MAX_JOB_HEADERS;
use crate::clock::Clock;
use crate::job::{self, Rejection};
use crate::outcome::SendStatus;
use crate::state::{Claim, ClaimReserving, Holder, Idempotency, Reservation};

pub(crate) use step::Wait;
use step::{IN_FLIGHT_ELSEWHERE, STATE_DOWN};
pub(crate) use step::{Incoming, Outlet, Step};
use turn::{ClaimHeld, Turn, reject};

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
        trace,
    } = incoming;
    // A cancel comes in the app's queue beside its jobs.
    if let Some(read) = job::cancel::read(body) {
        return cancel::decide(deps, name, read, retry).await;
    }
    // Read as the app asks; a job for no configured app is read as the contract has it, and
    // rejected below.
    let reading = deps.app(name).map(|a| a.reading).unwrap_or_default();
    let job = match job::parse_with(body, message_id, reading) {
        Ok(job) => job,
        Err(rejection) => return reject(name, &rejection, retry, deps.clock.now()),
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
        return reject(name, &rejection, retry, deps.clock.now());
    }
    let Some(app) = deps.app(name) else {
        // Consumers exist only for configured apps' queues; a job that still names another
        // app is kept in wxcourier.dead with the reason, never sent.
        let rejection = Rejection {
            id: Some(job.id.clone()),
            field: "app".into(),
            rule: format!("{name:?} is not a configured app"),
            meta: job.meta.clone(),
            kind: Some(job.kind),
        };
        return reject(name, &rejection, retry, deps.clock.now());
    };
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
        return reject(name, &rejection, retry, deps.clock.now());
    }
    let turn = Turn {
        deps,
        app: &app,
        name,
        job: &job,
        trace,
    };
    let mut state = retry;
    tracing::Span::current().record("id", job.id.as_str());
    // A job held by a policy holds no claim while it waits.
    if let Some(step) = turn.before_claim(&state) {
        return turn.held_unless_cancelled(step, &state).await;
    }
    // De-duplication first: a job sent just before `not_after` and redelivered after it was
    // still sent.
    // This turn's holder rides on any retry copy it schedules: a claim that reached shared
    // state after its call timed out, or outlived a failed release, is then the next turn's to
    // take over instead of holding the job back until it lapses.
    let previous = state.claim.map(Holder::from_raw);
    let mine = Holder::new();
    state.claim = Some(mine.raw());
    let digest = turn.digest_if_deduped();
    let request = turn.limit_request(digest.as_deref());
    let store = &deps.store;
    let (claimed, gate) = match &request {
        // The reservation (with the gates it asks) is taken in the claim's own step.
        Some(request) => {
            let claimed = store.claim_reserving(name, &job.id, mine, previous, request);
            (claimed.await, None)
        }
        None => {
            let claimed =
                async { Ok((store.claim_as(name, &job.id, mine, previous).await?, None)) };
            tokio::join!(claimed, turn.gate_lookup())
        }
    };
    let (holder, reservation) = match claimed {
        Ok((Claim::Fresh(holder), reservation)) => (holder, reservation),
        Ok((Claim::AlreadySent(msgid), _)) => return Step::Finish(turn.duplicate(&state, msgid)),
        Ok((Claim::InFlight, _)) => return turn.not_now(&state, IN_FLIGHT_ELSEWHERE),
        // A cancel came first: no claim was taken, nothing to release.
        Ok((Claim::Cancelled, _)) => return Step::Finish(turn.cancelled(&state)),
        // Without shared state there is no de-duplication: the job waits in the broker.
        Err(_) => return turn.not_now(&state, STATE_DOWN),
    };
    let claim = ClaimHeld {
        holder,
        since: Instant::now(),
    };
    let reserved = request.as_ref().zip(reservation);
    let ended_before_send = if job.expired_at(deps.clock.now()) {
        Some(Step::Finish(turn.expired(&state)))
    } else if let Some(dropped) = turn
        .dropped_by_quiet_hours(&state)
        .or_else(|| turn.dropped_by_pause(&state))
    {
        Some(Step::Finish(dropped))
    } else if let Some(rejection) = app.catalog_refusal(&job).await {
        // Before the token is taken: a job its template cannot show costs no quota.
        Some(reject(name, &rejection, state, deps.clock.now()))
    } else {
        // With the claim held: a job already sent gets no second outcome.
        turn.gated(&state, gate)
    };
    let step = match ended_before_send {
        Some(step) => {
            if let Some((request, Reservation::Granted)) = &reserved {
                turn.give_back(request).await;
            }
            step
        }
        None => {
            let step = turn
                .send_within_limits(outlet, &mut state, &claim, reserved)
                .await;
            turn.learn_from(&step).await;
            step
        }
    };
    if !matches!(&step, Step::Finish(o) if o.status == SendStatus::Sent) {
        // Best effort: a claim that is not released lapses by itself.
        let _ = deps.store.release(name, &job.id, claim.holder).await;
    }
    step
}

#[cfg(test)]
mod tests;
