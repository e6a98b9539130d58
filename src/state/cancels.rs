//! Cancels (CONTRACT, *Delivery policy*): a cancel for a job id is kept beside the id's
//! idempotency record, and decided against it in one atomic step, so that a cancel racing a
//! send gives exactly one of two endings:
//!
//! - the cancel is kept ([`CancelFound::Kept`], answered `accepted`) only while nobody holds a
//!   claim on the id and it was not sent; every claim (and the retaking of a lapsed claim
//!   right before a send) checks for a kept cancel in the same atomic step that takes it, and
//!   ends the job `cancelled` instead ([`super::Claim::Cancelled`], [`super::Renewal::Cancelled`]);
//! - a cancel for an id that was sent is answered `too_late` ([`CancelFound::Sent`]);
//! - a cancel that finds a claim held ([`CancelFound::InFlight`]) decides nothing: the send
//!   may be past its last check, so the cancel waits until the claim ends (sent, or released
//!   for a later turn, which then sees the cancel).
//!
//! A job sends only while it holds its claim, and a claim is taken only where no cancel is
//! kept; a cancel is kept only where no claim is held. So no cancel is `accepted` for a job
//! that is then sent, and none is `too_late` for a job that is not.

use std::future::Future;
use std::time::Duration;

use super::error::StateResult;

/// What recording a cancel found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelFound {
    /// Nothing claimed or sent the id: the cancel is kept, and the job ends `cancelled`
    /// whenever it comes.
    Kept,
    /// The id was sent: too late.
    Sent,
    /// A delivery holds a claim on the id right now: nothing was recorded; ask again once the
    /// claim has ended.
    InFlight,
}

/// Cancels, kept per app and job id for as long as a job may still come.
pub trait Cancels: Send + Sync {
    /// Keeps a cancel of `id` for `keep`, unless the id was sent or is claimed (see
    /// [`CancelFound`]). Recording it again keeps it `keep` from now.
    fn record_cancel(
        &self,
        app: &str,
        id: &str,
        keep: Duration,
    ) -> impl Future<Output = StateResult<CancelFound>> + Send;
    /// Whether a cancel of `id` is kept: for a job held until a time, which need not wait for
    /// its claim to learn that it is cancelled.
    fn is_cancelled(&self, app: &str, id: &str) -> impl Future<Output = StateResult<bool>> + Send;
}
