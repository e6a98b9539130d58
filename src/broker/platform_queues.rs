//! A third-party platform's job queue, `wxcourier.jobs.NAME`, shared by all its authorizers:
//! declared like an app's queue but bound once per authorizer (`NAME:APPID`) rather than to
//! its own name, so a job for an account nobody authorized finds no binding and lands in
//! `wxcourier.unrouted`. Bindings are the broker's, so one instance's bind serves every
//! instance.

use lapin::options::QueueBindOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::names::{JOBS_EXCHANGE, job_queue};
use super::topology::{LegacyQueue, TopologyError, job_queue_args, limited_queue};

/// Declares the job queue of each platform in `names`, without bindings.
pub async fn declare(
    conn: &Connection,
    names: &[String],
) -> Result<Vec<LegacyQueue>, TopologyError> {
    let mut legacy = Vec::new();
    for name in names {
        legacy.extend(limited_queue(conn, &job_queue(name), job_queue_args()).await?);
    }
    Ok(legacy)
}

/// Routes jobs with routing key `account` to `platform`'s queue.
pub(crate) async fn bind(ch: &Channel, platform: &str, account: &str) -> lapin::Result<()> {
    ch.queue_bind(
        job_queue(platform).as_str().into(),
        JOBS_EXCHANGE.into(),
        account.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// Stops routing `account`'s jobs to `platform`'s queue: from then on they land in
/// `wxcourier.unrouted`. Unbinding a binding that is not there is not an error.
pub(crate) async fn unbind(ch: &Channel, platform: &str, account: &str) -> lapin::Result<()> {
    ch.queue_unbind(
        job_queue(platform).as_str().into(),
        JOBS_EXCHANGE.into(),
        account.into(),
        FieldTable::default(),
    )
    .await
}
