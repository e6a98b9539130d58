//! The values the state capabilities speak in: a claim on a job id and its holder, a renewal,
//! the job behind a msgid, and what names a report for de-duplication.

use serde_json::Value;

use crate::types::TraceHeaders;

/// Proof of a claim on a job id: only its holder renews or releases it, so a holder whose
/// claim lapsed can never remove the claim another delivery took since.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Holder(u64);

impl Holder {
    pub fn new() -> Self {
        Holder(rand::random())
    }

    /// How the claim is stored in Redis.
    pub(crate) fn tag(self) -> String {
        format!("inflight:{:016x}", self.0)
    }

    /// The number a retry copy carries to the job's next turn.
    pub(crate) fn raw(self) -> u64 {
        self.0
    }

    pub(crate) fn from_raw(raw: u64) -> Self {
        Holder(raw)
    }
}

impl Default for Holder {
    fn default() -> Self {
        Self::new()
    }
}

/// What the idempotency check says about a job id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not sent yet; this caller now owns the send.
    Fresh(Holder),
    /// Already sent, as this msgid (none when WeChat accepted it without one): do not send
    /// again.
    AlreadySent(Option<u64>),
    /// Another delivery of the same id is being sent right now.
    InFlight,
    /// A cancel for the id came before any send: it must end `cancelled`, unclaimed.
    Cancelled,
}

/// Whether a claim still stands, checked (and extended) right before the send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours, good for another claim lifetime.
    Held,
    /// Sent meanwhile by another delivery, as this msgid (if WeChat gave one).
    AlreadySent(Option<u64>),
    /// It lapsed and another delivery holds it now.
    Lost,
    /// It lapsed, and a cancel for the id came meanwhile: not taken again, never sent.
    Cancelled,
}

/// The job behind a msgid, for delivery reports.
#[derive(Clone, Debug, PartialEq)]
pub struct SentJob {
    pub id: String,
    pub meta: Option<Value>,
    /// The job's checked trace headers, for its delivery report to carry on.
    pub trace: Option<TraceHeaders>,
}

/// What names a published report, so that WeChat's repeats of a push (up to three) publish it
/// once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReportKey {
    /// WeChat's MsgID: also what ties a delivery report to its job.
    MsgId(u64),
    /// A pushed user event without a MsgID: its event, time, user and what it decided.
    Event(String),
}
