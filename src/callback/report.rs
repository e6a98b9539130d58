//! Publishing the reports of one push: each at most once per [`Seen`] key, however often
//! WeChat repeats the push, and a delivery report tied to the job that got its MsgID.

use axum::http::StatusCode;
use axum::response::Response;
use tokio::time::Instant;

use super::events::{Pending, Report, Seen};
use super::{CallbackState, refuse};

/// WeChat gives up on an answer after 5 s: reports not confirmed by then are refused (and
/// the push retried by WeChat) rather than answered late. One deadline for the whole push,
/// however many items it holds.
const PUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(4);

fn try_again() -> Response {
    refuse(StatusCode::SERVICE_UNAVAILABLE, "try again")
}

/// Publishes every report not published before. On the first failure the rest are left for
/// WeChat's retry of the push: those already published are marked seen and skipped then.
pub(crate) async fn publish_all(
    ctx: &CallbackState,
    app: &str,
    reports: Vec<Pending>,
) -> Result<(), Response> {
    let deadline = Instant::now() + PUSH_DEADLINE;
    for pending in reports {
        publish_one(ctx, app, pending, deadline).await?;
    }
    Ok(())
}

/// Marks `seen`; false when it was marked before.
async fn mark(ctx: &CallbackState, app: &str, seen: &Seen) -> Result<bool, Response> {
    let first = match seen {
        Seen::MsgId(msgid) => ctx.state.first_report(app, *msgid).await,
        Seen::Event(key) => ctx.state.first_event(app, key).await,
        Seen::Never => Ok(true),
    };
    first.map_err(|_| try_again())
}

/// Undoes [`mark`], so WeChat's retry of the push is not taken for a repeat.
async fn unmark(ctx: &CallbackState, app: &str, seen: &Seen) {
    match seen {
        Seen::MsgId(msgid) => ctx.state.forget_report(app, *msgid).await,
        Seen::Event(key) => ctx.state.forget_event(app, key).await,
        Seen::Never => {}
    }
}

async fn publish_one(
    ctx: &CallbackState,
    app: &str,
    Pending { mut report, seen }: Pending,
    deadline: Instant,
) -> Result<(), Response> {
    if !mark(ctx, app, &seen).await? {
        return Ok(());
    }
    if let (Report::Delivery(delivery), Seen::MsgId(msgid)) = (&mut report, &seen) {
        match ctx.state.job_for_msgid(app, *msgid).await {
            Ok(job) => {
                delivery.id = job.as_ref().map(|j| j.id.clone());
                delivery.meta = job.and_then(|j| j.meta);
            }
            Err(_) => {
                unmark(ctx, app, &seen).await;
                return Err(try_again());
            }
        }
    }
    let publisher = ctx.results.get();
    let published = match publisher {
        Some(p) => {
            let key = report.routing_key();
            let publish = p.publish_result(&key, &report, report.job_id());
            match tokio::time::timeout_at(deadline, publish).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("the broker did not confirm in time".into()),
            }
        }
        None => Err("not connected to the broker".into()),
    };
    let key = report.routing_key();
    if let Err(why) = published {
        // Not published: let WeChat's retry of this push try again.
        unmark(ctx, app, &seen).await;
        tracing::warn!(app, routing_key = %key, error = %why, "callback report not published; WeChat will retry");
        return Err(try_again());
    }
    ctx.metrics.callback_event(app, report.status());
    tracing::debug!(app, routing_key = %key, "callback report published");
    Ok(())
}
