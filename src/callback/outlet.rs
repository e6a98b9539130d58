//! Where the callback's reports go: a seam (the same kind as the pipeline's outlet), so the
//! receiver's tests need no broker. In production it is the broker session in force.

use futures_util::future::BoxFuture;

use super::events::Report;
use crate::broker::publish::{Landing, result_message};
use crate::broker::trace::field_table;
use crate::broker::{CurrentPublisher, PublishError};
use crate::types::TraceHeaders;

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
    /// Publishes `report` under its routing key, with its job's `trace` headers when it has
    /// them; returns once the broker confirmed it, with whether a queue took it.
    fn publish<'a>(
        &'a self,
        report: &'a Report,
        trace: Option<&'a TraceHeaders>,
    ) -> BoxFuture<'a, Result<Landing, OutletError>>;
}

impl ReportOutlet for CurrentPublisher {
    fn publish<'a>(
        &'a self,
        report: &'a Report,
        trace: Option<&'a TraceHeaders>,
    ) -> BoxFuture<'a, Result<Landing, OutletError>> {
        Box::pin(async move {
            let publisher = self.get().ok_or(OutletError::Disconnected)?;
            let key = report.routing_key();
            let body = serde_json::to_vec(report).expect("reports always serialize");
            let mut message = result_message(&key, &body, report.job_id());
            if let Some(trace) = trace {
                message.properties = message.properties.with_headers(field_table(trace));
            }
            Ok(publisher.publish(message).await?)
        })
    }
}
