//! State shared by the pipeline: idempotency (which ids were sent, and as which msgid) and the
//! msgid → job map used by delivery reports.

pub mod memory;

use serde_json::Value;

pub use memory::MemoryState;

/// What the idempotency check says about a job id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not sent yet; this caller now owns the send.
    Fresh,
    /// Already sent: do not send again.
    AlreadySent(u64),
    /// Another delivery of the same id is being sent right now.
    InFlight,
}

/// The job behind a msgid, for delivery reports.
#[derive(Clone, Debug, PartialEq)]
pub struct SentJob {
    pub id: String,
    pub meta: Option<Value>,
}

/// The configured state backend.
pub enum State {
    Memory(MemoryState),
}

impl State {
    pub fn claim(&self, app: &str, id: &str) -> Claim {
        match self {
            State::Memory(m) => m.claim(app, id),
        }
    }

    /// Gives up a claim without a send (the job is retried or failed).
    pub fn release(&self, app: &str, id: &str) {
        match self {
            State::Memory(m) => m.release(app, id),
        }
    }

    pub fn record_sent(&self, app: &str, id: &str, msgid: u64, meta: Option<&Value>) {
        match self {
            State::Memory(m) => m.record_sent(app, id, msgid, meta),
        }
    }

    pub fn job_for_msgid(&self, app: &str, msgid: u64) -> Option<SentJob> {
        match self {
            State::Memory(m) => m.job_for_msgid(app, msgid),
        }
    }

    /// Undoes [`State::first_report`] when the report could not be published, so WeChat's
    /// retry of the event is not ignored.
    pub fn forget_report(&self, app: &str, msgid: u64) {
        match self {
            State::Memory(m) => m.forget_report(app, msgid),
        }
    }

    /// Records a delivery event's MsgID; false when it was seen before (WeChat retries).
    pub fn first_report(&self, app: &str, msgid: u64) -> bool {
        match self {
            State::Memory(m) => m.first_report(app, msgid),
        }
    }
}
