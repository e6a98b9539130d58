//! What the pipeline is given and what it decides: a delivery as it sees it, and the step the
//! consumer carries out (an outcome, a dead copy, or a retry copy and why it waits).

use std::time::Duration;

use crate::outcome::SendOutcome;
use crate::outcome::cancel::CancelAnswer;
use crate::retry::RetryState;
use crate::types::TraceHeaders;

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
    /// The job's checked trace headers, kept with its sent record for its delivery report.
    pub(crate) trace: Option<&'a TraceHeaders>,
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
    /// A delivery policy holds the job until a time (its `not_before`, the end of quiet
    /// hours): no attempt is used and `retry.max_age` does not run.
    Until(&'static str),
}

impl Wait {
    /// The `cause` label of `wxcourier_retries_total`.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            Wait::Transient => "transient",
            Wait::Quota => "quota",
            Wait::NotNow(_) => "not_now",
            Wait::Until(_) => "held",
        }
    }
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
    /// A cancel decided: publish its answer, and with `dead` (it was refused, for this reason)
    /// the original to `wxcourier.dead`, then ack.
    Answer {
        answer: CancelAnswer,
        dead: Option<String>,
    },
    /// Publish a retry copy that waits `after` in the broker, then ack.
    Retry {
        after: Duration,
        state: RetryState,
        wait: Wait,
        /// WeChat's errcode of the try that led here (or of a refused token fetch), for the
        /// job's story; none when no answer came.
        errcode: Option<i64>,
    },
}

// The reasons of a `Wait::NotNow`, as they read in a failed outcome once `retry.max_age` ends
// the waiting.
pub(super) const IN_FLIGHT_ELSEWHERE: &str = "its id is being sent by another delivery";
pub(super) const STATE_DOWN: &str = "shared state is unavailable";
pub(super) const RATE_DOWN: &str = "the shared rate limit is unavailable";
pub(super) const RATE_TAKEN: &str = "its account's send rate is taken by the jobs ahead of it";
pub(super) const OUTLET_DOWN: &str = "its outcome could not be published (broker channel down)";
pub(super) const NO_TOKEN: &str = "no access token could be had";

pub(super) const CANCEL_WAITS: &str = "the job it cancels is being sent";

// The reasons of a `Wait::Until`, as the job's log lines name them.
pub(super) const SCHEDULED: &str = "its not_before has not come";
pub(super) const QUIET_HOURS: &str = "the app's quiet hours hold it";
pub(super) const PAUSED: &str = "its template (or its app) is paused";
