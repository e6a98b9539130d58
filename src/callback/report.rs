//! Publishing the reports of one push: each at most once per [`ReportKey`], however often
//! WeChat repeats the push, and a delivery report tied to the job that got its MsgID. Over two
//! seams, the reports' state and the outlet, and nothing of HTTP: the receiver turns a
//! [`ReportError`] into its answer. A delivery report carries its job's trace headers on, and
//! its span links to that trace.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::events::{Pending, Report};
use super::gating::change_of;
use super::outlet::{OutletError, ReportOutlet};
use crate::broker::publish::Landing;
use crate::broker::returned::count_returned;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::preferences::AppGates;
use crate::state::{ReportKey, Reports, StateError};
use crate::telemetry;
use crate::trail::{Entry, StepName, Trails};

/// WeChat gives up on an answer after 5 s: reports not confirmed by then are refused (and
/// the push retried by WeChat) rather than answered late. One deadline for the whole push,
/// however many items it holds.
pub(crate) const PUSH_DEADLINE: Duration = Duration::from_secs(4);

/// The pauses before each retry of an un-mark that failed. Short: the push is answered only
/// after them, and WeChat waits 5 s for an answer.
const UNMARK_RETRIES: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];

/// Why a push's reports were not all published: WeChat is to retry it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ReportError {
    #[error("cannot mark or look up a report: {0}")]
    State(#[from] StateError),
    #[error("a report was not published: {0}")]
    Outlet(#[from] OutletError),
    #[error("the broker did not confirm a report within {PUSH_DEADLINE:?}")]
    Deadline,
}

/// What publishing needs: where reports are marked, where they go, and what counts them.
pub(crate) struct Reporter {
    pub(crate) reports: Arc<dyn Reports>,
    pub(crate) outlet: Arc<dyn ReportOutlet>,
    pub(crate) metrics: Arc<Metrics>,
    /// Where a delivery report joins its job's story.
    pub(crate) trails: Arc<Trails>,
    /// The preference gates of the apps that honour preferences.
    pub(crate) gates: AppGates,
    /// The time a gate is set at.
    pub(crate) clock: Arc<dyn Clock>,
}

impl Reporter {
    /// Publishes every report not published before. On the first failure the rest are left
    /// for WeChat's retry of the push: those already published are marked and skipped then.
    pub(crate) async fn publish_all(
        &self,
        app: &str,
        reports: Vec<Pending>,
    ) -> Result<(), ReportError> {
        let deadline = Instant::now() + PUSH_DEADLINE;
        for pending in reports {
            self.publish_one(app, pending, deadline).await?;
        }
        Ok(())
    }

    async fn publish_one(
        &self,
        app: &str,
        Pending { mut report, seen }: Pending,
        deadline: Instant,
    ) -> Result<(), ReportError> {
        if let Some(key) = &seen
            && !self.reports.mark_report(app, key).await?
        {
            return Ok(());
        }
        // Before the report goes out: whoever reads it may send to that user at once. A
        // gate that cannot be changed leaves the push to WeChat's retry, like a publish.
        let gated = self.change_gate(app, &report).await;
        let published = match gated {
            Ok(()) => self.tie_and_publish(app, &mut report, deadline).await,
            Err(e) => Err(e),
        };
        let landing = match published {
            Ok(landing) => landing,
            Err(why) => {
                // Not published: let WeChat's retry of this push try again.
                if let Some(key) = &seen {
                    self.unmark(app, key).await;
                }
                let key = report.routing_key();
                tracing::warn!(app, routing_key = %key, error = %why, "callback report not published; WeChat will retry");
                return Err(why);
            }
        };
        // Published, but no queue took it: WeChat's retry would find nobody either.
        if let Landing::Returned(returned) = &landing {
            count_returned(&self.metrics, returned);
        }
        self.metrics.callback_event(app, report.status());
        if let Report::Delivery(delivery) = &report
            && let Some(id) = &delivery.id
        {
            let step = Entry::new(time::OffsetDateTime::now_utc(), StepName::Delivery)
                .with("status", delivery.status.as_str())
                .with("msgid", delivery.msgid)
                .with("wechat_status", delivery.wechat_status.as_str());
            self.trails.keep(app, id, &[step]).await;
        }
        tracing::debug!(app, routing_key = %report.routing_key(), "callback report published");
        Ok(())
    }

    /// Sets or lifts the user's gate a follow or preference report names, for an app that
    /// honours preferences.
    async fn change_gate(&self, app: &str, report: &Report) -> Result<(), ReportError> {
        let (Some(gates), Some((openid, change))) = (self.gates.of(app), change_of(report)) else {
            return Ok(());
        };
        gates
            .apply(app, openid, &change, self.clock.now().unix_timestamp())
            .await?;
        tracing::debug!(app, ?change, "preference gate changed by a user event");
        Ok(())
    }

    /// Ties a delivery report to its job (by its MsgID), then publishes it by `deadline`.
    async fn tie_and_publish(
        &self,
        app: &str,
        report: &mut Report,
        deadline: Instant,
    ) -> Result<Landing, ReportError> {
        let mut trace = None;
        if let Report::Delivery(delivery) = report
            && delivery.msgid != 0
        {
            let job = self.reports.job_for_msgid(app, delivery.msgid).await?;
            delivery.id = job.as_ref().map(|j| j.id.clone());
            trace = job.as_ref().and_then(|j| j.trace.clone());
            delivery.meta = job.and_then(|j| j.meta);
        }
        // The report's own span, linked to the trace of the job it tells about.
        let span = tracing::info_span!("delivery_report", app, routing_key = %report.routing_key());
        if let Some(trace) = &trace {
            telemetry::link_to(&span, trace);
        }
        let publishing = self.outlet.publish(report, trace.as_ref()).instrument(span);
        match tokio::time::timeout_at(deadline, publishing).await {
            Ok(published) => Ok(published?),
            Err(_) => Err(ReportError::Deadline),
        }
    }

    /// Undoes a mark, so WeChat's retry of the push is not taken for a repeat; tried again a
    /// few times, and logged and counted when it never goes through: until the mark expires
    /// (`state.idempotency_ttl`), the report is then lost.
    async fn unmark(&self, app: &str, key: &ReportKey) {
        let mut pauses = UNMARK_RETRIES.iter();
        loop {
            let Err(e) = self.reports.unmark_report(app, key).await else {
                return;
            };
            match pauses.next() {
                Some(pause) => {
                    tracing::warn!(app, error = %e, "cannot undo a report's mark; trying again");
                    tokio::time::sleep(*pause).await;
                }
                None => {
                    tracing::error!(
                        app,
                        error = %e,
                        "cannot undo a report's mark: WeChat's retries of this push will be taken \
                         for repeats until the mark expires (state.idempotency_ttl)"
                    );
                    self.metrics.callback_unmark_failed(app);
                    return;
                }
            }
        }
    }
}
