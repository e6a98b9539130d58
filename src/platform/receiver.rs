//! The platform's authorization event URL, `POST /wechat/platform/NAME`: every 10 minutes a
//! verify ticket, and a merchant's authorization, its update and its withdrawal. Safe mode
//! only, checked as the delivery callback checks its pushes (`callback::open::read`: size,
//! `msg_signature`, age, the sealed AppID = the component AppID). A push is answered `success`
//! only once what it carries is kept; otherwise 503, and WeChat pushes again.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio_util::task::TaskTracker;

use super::push::{self, Push};
use super::{Platform, PlatformError, account_name};
use crate::callback::open::{self, CallbackApp, MAX_BODY_BYTES, Params};
use crate::callback::refusal::Refusal;
use crate::clock::Clock;
use crate::config::Settings;

/// What WeChat must get back for it to stop pushing.
const ACK: &str = "success";

/// One platform as its pushes are checked and applied.
struct Served {
    check: CallbackApp,
    platform: Arc<Platform>,
}

/// What the receiver needs.
pub(crate) struct PlatformReceiver {
    platforms: HashMap<String, Served>,
    tasks: TaskTracker,
    clock: Arc<dyn Clock>,
}

impl PlatformReceiver {
    /// The receiver for `platforms`, with the replay window of `settings`; a push is applied
    /// on `tasks`, so a stop waits for it.
    pub(crate) fn new(
        settings: &Settings,
        platforms: &[Arc<Platform>],
        tasks: TaskTracker,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // The same checks the callback makes of an authorizer's pushes on the platform's
        // message URL: the platform's Token and key, sealed for its component AppID.
        let mut checks = open::platforms_from(settings);
        let platforms = platforms
            .iter()
            .filter_map(|p| {
                let check = checks.remove(&p.name)?;
                let served = Served {
                    check,
                    platform: p.clone(),
                };
                Some((p.name.clone(), served))
            })
            .collect();
        Self {
            platforms,
            tasks,
            clock,
        }
    }
}

pub(crate) fn routes(ctx: Arc<PlatformReceiver>) -> Router {
    Router::new()
        .route("/wechat/platform/{platform}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(ctx)
}

fn refused(platform: &str, refusal: Refusal) -> Response {
    if refusal.signed() {
        tracing::warn!(platform, "platform push refused: {refusal}");
    } else {
        tracing::info!(platform, "platform push refused: {refusal}");
    }
    refusal.into_response()
}

async fn receive(
    State(ctx): State<Arc<PlatformReceiver>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let Some(served) = ctx.platforms.get(&name) else {
        return refused(&name, Refusal::UnknownApp);
    };
    let message = match open::read(&served.check, &params, &body, ctx.clock.now_secs()) {
        Ok(message) => message,
        Err(refusal) => return refused(&name, refusal),
    };
    let push = match push::read(&message, served.platform.component_appid()) {
        Ok(push) => push,
        Err(e) => return refused(&name, Refusal::BadEvent(e.to_string())),
    };
    // Its own task: a request cut off half-way must not leave a code claimed and unexchanged.
    let platform = served.platform.clone();
    let task = ctx.tasks.spawn(async move { apply(&platform, push).await });
    match task.await {
        Ok(Ok(())) => ACK.into_response(),
        Ok(Err(e)) => {
            tracing::warn!(platform = name, error = %e, "a platform push is not kept yet; WeChat will push it again");
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response(),
    }
}

/// Keeps what `push` carries.
async fn apply(platform: &Platform, push: Push) -> Result<(), PlatformError> {
    let name = &platform.name;
    match push {
        Push::Ticket(ticket) => {
            let newest = platform
                .store
                .keep_ticket(platform.component_appid(), &ticket)
                .await?;
            tracing::debug!(platform = name, newest, "component_verify_ticket received");
            return Ok(());
        }
        Push::Authorized {
            appid,
            code,
            created_at,
        } => {
            if platform
                .authorize(&appid, &code, created_at)
                .await?
                .is_some()
            {
                tracing::info!(
                    platform = name,
                    account = account_name(name, &appid),
                    "authorizer authorized: its refresh token is kept"
                );
            }
        }
        Push::Unauthorized { appid, created_at } => {
            let retired = platform.revoke(&appid, created_at).await?;
            tracing::warn!(
                platform = name,
                account = account_name(name, &appid),
                retired,
                "authorizer withdrew its authorization"
            );
        }
        Push::Other(info) => {
            tracing::info!(
                platform = name,
                info_type = info,
                "platform push of another kind: not used"
            );
            return Ok(());
        }
    }
    platform.changed.notify_waiters();
    Ok(())
}
