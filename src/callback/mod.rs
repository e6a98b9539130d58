//! The receiver for WeChat's pushes on `/wechat/callback/APP`: verifies the signature,
//! decrypts safe mode, and publishes the reports the push makes (CONTRACT §5): delivery
//! reports, and users' subscription preferences and follows (`events`).
//!
//! Every check is the pure [`open::open`], given the time of day from the `Clock` seam; a
//! refusal is a [`refusal::Refusal`]. Publishing goes through two seams, the reports' state and
//! the outlet, held as `Arc<dyn …>`, and runs on a task tracker start-up owns, so a stop waits
//! for a push being published.

pub(crate) mod events;
mod gating;
pub(crate) mod open;
mod outlet;
pub(crate) mod refusal;
mod report;
#[cfg(test)]
mod tests;
pub mod xml;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::preferences::AppGates;
use crate::state::Reports;
use crate::trail::Trails;
use open::{CallbackApp, MAX_BODY_BYTES, Params};
pub(crate) use outlet::ReportOutlet;
use refusal::Refusal;
use report::Reporter;

/// What WeChat must get back for it to stop retrying.
const ACK: &str = "success";

/// What the receiver needs, and nothing more.
pub(crate) struct CallbackState {
    /// Apps that receive WeChat's pushes, by name.
    apps: HashMap<String, CallbackApp>,
    /// Third-party platforms, whose authorizers' pushes come to `/wechat/platform/NAME/APPID`.
    platforms: HashMap<String, CallbackApp>,
    reporter: Arc<Reporter>,
    /// Where a push's publishing runs: start-up waits for it on a stop.
    tasks: TaskTracker,
    /// The time of day, for the replay window.
    clock: Arc<dyn Clock>,
}

impl CallbackState {
    /// The receiver for the apps of `settings` that have a `callback_token`: reports are marked
    /// and tied to their jobs in `reports`, published on `outlet`, and published on `tasks`;
    /// a push's age is measured on `clock`.
    pub(crate) fn new(
        settings: &Settings,
        reports: Arc<dyn Reports>,
        outlet: Arc<dyn ReportOutlet>,
        metrics: Arc<Metrics>,
        trails: Arc<Trails>,
        tasks: TaskTracker,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            apps: open::apps_from(settings),
            platforms: open::platforms_from(settings),
            reporter: Arc::new(Reporter {
                reports,
                outlet,
                metrics,
                trails,
                gates: AppGates::default(),
                clock: clock.clone(),
            }),
            tasks,
            clock,
        }
    }
}

impl CallbackState {
    /// The same receiver, setting and lifting the preference gates of the apps in `gates`
    /// as users' events come.
    pub(crate) fn with_gates(mut self, gates: AppGates) -> Self {
        let r = &self.reporter;
        self.reporter = Arc::new(Reporter {
            reports: r.reports.clone(),
            outlet: r.outlet.clone(),
            metrics: r.metrics.clone(),
            trails: r.trails.clone(),
            gates,
            clock: r.clock.clone(),
        });
        self
    }
}

pub(crate) fn routes(ctx: Arc<CallbackState>) -> Router {
    Router::new()
        .route("/wechat/callback/{app}", get(verify_url).post(receive))
        .route(
            "/wechat/platform/{platform}/{appid}",
            axum::routing::post(receive_for_authorizer),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(ctx)
}

/// Logs a refusal (the caller may not be told why) and answers it.
fn refused(app: &str, refusal: Refusal) -> Response {
    if refusal.signed() {
        tracing::warn!(app, "callback refused: {refusal}");
    } else {
        // Anyone can send these: not worth a warning each, but the caller is not told why, so
        // the log is where a wrong console setting (its mode, its Token) shows.
        tracing::info!(app, "callback refused: {refusal}");
    }
    refusal.into_response()
}

/// `GET`: the URL check the WeChat console makes when the server address is saved.
async fn verify_url(
    State(ctx): State<Arc<CallbackState>>,
    Path(app): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    match open::verify(ctx.apps.get(&app), &params, ctx.clock.now_secs()) {
        Ok(echo) => echo.into_response(),
        Err(refusal) => refused(&app, refusal),
    }
}

/// `POST`: a message or event, in the form the app's `callback_mode` allows.
async fn receive(
    State(ctx): State<Arc<CallbackState>>,
    Path(app): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let checks = ctx.apps.get(&app);
    receive_as(&ctx, checks, app.clone(), &params, body).await
}

/// `POST /wechat/platform/NAME/APPID`: a platform's *message and event URL*, where WeChat
/// pushes its authorizer APPID's messages and events, sealed with the platform's keys. Its
/// reports name the account `NAME:APPID`.
async fn receive_for_authorizer(
    State(ctx): State<Arc<CallbackState>>,
    Path((platform, appid)): Path<(String, String)>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let account = format!("{platform}:{appid}");
    let checks = match ctx.platforms.get(&platform) {
        Some(p) if crate::config::is_account_name(&account) => {
            Some(p.reporting_as(account.clone()))
        }
        _ => None,
    };
    receive_as(&ctx, checks.as_ref(), account, &params, body).await
}

/// A push checked with `checks` (`None`: nobody here takes it), reported as `app`.
async fn receive_as(
    ctx: &Arc<CallbackState>,
    checks: Option<&CallbackApp>,
    app: String,
    params: &Params,
    body: Bytes,
) -> Response {
    let event = match open::open(checks, params, &body, ctx.clock.now_secs()) {
        Ok(event) => event,
        Err(refusal) => return refused(&app, refusal),
    };
    for why in &event.ignored {
        tracing::warn!(app, "part of a callback push was ignored: {why}");
    }
    if event.reports.is_empty() {
        return ACK.into_response();
    }
    // Its own task: once a report is marked, the publish (or the undo of the mark) must finish
    // even if this request is cut off by http.request_timeout or the client going away;
    // dropped half-way, the mark would make WeChat's retry a "repeat" and the report would
    // never be published. On the tracker, so a stop waits for it.
    let reporter = ctx.reporter.clone();
    let task = ctx
        .tasks
        .spawn(async move { reporter.publish_all(&app, event.reports).await });
    match task.await {
        Ok(Ok(())) => ACK.into_response(),
        // Said in the log by the reporter; WeChat retries the push.
        Ok(Err(_)) => (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response(),
    }
}
