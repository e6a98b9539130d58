//! The broker's names: the exchanges and queues every part of the broker module declares,
//! publishes to or reads from, in a file of their own so those parts need not reach back into
//! `broker/mod.rs`, which re-exports them.

/// Jobs come in here, routed by app name.
pub const JOBS_EXCHANGE: &str = "wxcourier.jobs";
/// Every outcome and delivery report goes out here, as `STATUS.APP`.
pub(crate) const RESULTS_EXCHANGE: &str = "wxcourier.results";
/// Rejected jobs, unchanged, with `x-wxcourier-error`.
pub const DEAD_QUEUE: &str = "wxcourier.dead";
/// Jobs whose routing key names no configured app (the jobs exchange's alternate exchange).
pub const UNROUTED: &str = "wxcourier.unrouted";
/// Results no queue takes, when `results.keep_unrouted` is on: the fanout exchange a policy
/// makes `wxcourier.results`' alternate exchange, and the bounded queue bound to it (one name
/// for both, as for `wxcourier.unrouted`).
pub const RESULTS_UNROUTED: &str = "wxcourier.results.unrouted";
/// Retry copies go here and wait in the delay tier their header names.
pub(crate) const RETRY_EXCHANGE: &str = "wxcourier.retry";

/// `wxcourier.jobs.NAME`: one queue per app so one account never blocks another.
pub fn job_queue(app: &str) -> String {
    format!("{JOBS_EXCHANGE}.{app}")
}
