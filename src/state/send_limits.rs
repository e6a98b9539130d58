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

use super::error::StateResult;

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

/// What one job asks of its app's limits; an absent limit is not checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitRequest<'a> {
    /// The job id, which names the reservation.
    pub id: &'a str,
    pub cap: Option<RecipientCap<'a>>,
    pub content: Option<ContentWindow<'a>>,
}

/// The answer to a reservation. Nothing is taken unless it is `Granted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The job holds a slot in its recipient's window and its content's mark.
    Granted,
    /// Another job with the same content holds the mark.
    Duplicate,
    /// The recipient's window is full; its oldest send leaves it in `free_in`.
    Capped { free_in: Duration },
}

/// The send limits every instance sharing the backend keeps together.
pub trait SendLimits: Send + Sync {
    /// Checks the content mark first, then the recipient's window, and takes both only if
    /// both allow the job (or already name it).
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
