//! Where the callback's reports go: a seam (the same kind as the pipeline's outlet), so the
//! receiver's tests need no broker. In production it is the broker session in force.

use futures_util::future::BoxFuture;

use super::events::Report;
use crate::broker::publish::Landing;
use crate::broker::{CurrentPublisher, PublishError};

/// Why a report was not published.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum OutletError {
    #[error("not connected to the broker")]
    Disconnected,
    #[error(transparent)]
    Unconfirmed(#[from] PublishError),
}

/// Publishes reports on the results exchange.
pub(crate) trait ReportOutlet: Send + Sync {
    /// Publishes `report` under its routing key; returns once the broker confirmed it, with
    /// whether a queue took it.
    fn publish<'a>(&'a self, report: &'a Report) -> BoxFuture<'a, Result<Landing, OutletError>>;
}

impl ReportOutlet for CurrentPublisher {
    fn publish<'a>(&'a self, report: &'a Report) -> BoxFuture<'a, Result<Landing, OutletError>> {
        Box::pin(async move {
            let publisher = self.get().ok_or(OutletError::Disconnected)?;
            let key = report.routing_key();
            Ok(publisher
                .publish_result(&key, report, report.job_id())
                .await?)
        })
    }
}
