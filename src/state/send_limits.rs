//! The send limits of an app as a state capability: at most `count` sends to one recipient in
//! a sliding window (`apps.NAME.recipient_limit`), and no second job with the same content
//! within a window (`apps.NAME.content_dedup`).
//!
//! A job takes a *reservation* after it claimed its id and before its send, in one atomic step
//! per backend (one Lua script in Redis, one lock in memory), so jobs racing on several
//! instances can never take more slots than the cap has. The reservation is named by the job
//! id: a job that asks again (a retry copy, a redelivery) finds its own slot instead of taking
//! a second one. What becomes of it is the pipeline's choice: a sent job keeps it, any other
//! ending gives it back ([`SendLimits::give_back`]).

use std::future::Future;
use std::num::NonZeroU32;
use std::time::Duration;

use super::capability::Idempotency;
use super::error::StateResult;
use super::gates::Gate;
use super::values::{Claim, Holder};

/// At most `count` sends to `touser` in any window of `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecipientCap<'a> {
    pub touser: &'a str,
    pub count: NonZeroU32,
    pub per: Duration,
}

/// No other job with the content `digest` (a hash naming the kind, template, recipient and
/// data) within `window` of the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentWindow<'a> {
    pub digest: &'a str,
    pub window: Duration,
}

/// The preference gates to look at before anything is taken (`apps.NAME.honor_preferences`
/// beside a limit): those of `openid` for every template and for `template`, live at `now`
/// (Unix seconds, the pipeline's clock). Asked here, the gates cost no round trip of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateAsk<'a> {
    pub openid: &'a str,
    pub template: &'a str,
    pub now: i64,
}

/// What one job asks of its app's limits; an absent limit is not checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitRequest<'a> {
    /// The job id, which names the reservation.
    pub id: &'a str,
    pub cap: Option<RecipientCap<'a>>,
    pub content: Option<ContentWindow<'a>>,
    /// The gates that must hold nothing back first; read from the gates this same backend
    /// keeps ([`super::State::gate_store`]).
    pub gate: Option<GateAsk<'a>>,
}

/// The answer to a reservation. Nothing is taken unless it is `Granted`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The job holds a slot in its recipient's window and its content's mark.
    Granted,
    /// A live preference gate holds the job back (the one for every template first).
    Gated(Gate),
    /// Another job with the same content holds the mark.
    Duplicate,
    /// The recipient's window is full; its oldest send leaves it in `free_in`.
    Capped { free_in: Duration },
}

/// The send limits every instance sharing the backend keeps together.
pub trait SendLimits: Send + Sync {
    /// Checks the asked gates first, then the content mark, then the recipient's window, and
    /// takes mark and slot only if all three allow the job (or already name it).
    fn reserve(
        &self,
        app: &str,
        request: &LimitRequest<'_>,
    ) -> impl Future<Output = StateResult<Reservation>> + Send;
    /// Gives back what `request.id` holds: its slot and its content mark, if they are still
    /// its own. Giving back nothing is no error.
    fn give_back(
        &self,
        app: &str,
        request: &LimitRequest<'_>,
    ) -> impl Future<Output = StateResult<()>> + Send;
}

/// A job's claim and its reservation in one step of the state: an app with send limits pays
/// one round trip to shared state before its send, as an app without them does.
pub trait ClaimReserving: Idempotency + SendLimits {
    /// Claims `id` as [`Idempotency::claim_as`] does and, only when the claim is fresh, takes
    /// what `request` asks as [`SendLimits::reserve`] does; `None` when the claim was not
    /// taken. What is reserved is the caller's to give back if the job is not sent. After an
    /// error no claim should be held (one whose release failed, or that reached the state after
    /// a call timed out, is taken over by the caller's next turn as `mine`'s successor).
    /// Sequential by default; a backend with scripts does both in one atomic step.
    fn claim_reserving(
        &self,
        app: &str,
        id: &str,
        mine: Holder,
        previous: Option<Holder>,
        request: &LimitRequest<'_>,
    ) -> impl Future<Output = StateResult<(Claim, Option<Reservation>)>> + Send {
        async move {
            let claim = self.claim_as(app, id, mine, previous).await?;
            if !matches!(claim, Claim::Fresh(_)) {
                return Ok((claim, None));
            }
            match self.reserve(app, request).await {
                Ok(reserved) => Ok((claim, Some(reserved))),
                Err(e) => {
                    // Best effort, as the caller could not: it knows of no claim.
                    let _ = self.release(app, id, mine).await;
                    Err(e)
                }
            }
        }
    }
}
