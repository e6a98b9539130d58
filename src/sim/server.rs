//! The simulator's HTTP surface: WeChat's endpoints plus `/sim/…` control and stats.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::lookups::{QUOTA_GET, TEMPLATE_LIST};
use super::model::{Answer, Faults, Model, Reply, SimTemplate};
use super::platform::PlatformControlError;
use super::platform_state::PlatformFaults;
use super::push::{CallbackTarget, UserEvent};
use super::reports::UserEventError;
use crate::kinds::Kind;

type Shared = State<Arc<Model>>;

pub(crate) fn router(model: Arc<Model>) -> Router {
    // One route per message kind, at the kind's own endpoint.
    let mut router = Router::new();
    for kind in Kind::ALL {
        router =
            router.route(
                kind.endpoint(),
                post(
                    move |State(m): Shared,
                          Query(q): Query<HashMap<String, String>>,
                          body: Bytes| async move {
                        with_transport(&m, || {
                            m.send(kind, q.get("access_token").map(String::as_str), &body)
                        })
                        .await
                    },
                ),
            );
    }
    router
        .route("/cgi-bin/token", get(classic_token))
        .route("/cgi-bin/stable_token", post(stable_token))
        .route(TEMPLATE_LIST, get(template_list))
        .route(QUOTA_GET, post(quota_get))
        .route("/sim/templates", post(set_templates))
        .route("/sim/deny", post(deny))
        .route("/sim/stats", get(stats))
        .route("/sim/sends", get(sends))
        .route("/sim/faults", post(set_faults))
        .route("/sim/script", post(script))
        .route("/sim/invalidate", post(invalidate))
        .route("/sim/quota", post(quota))
        .route("/sim/refuse", post(refuse))
        .route("/sim/reset", post(reset))
        .route("/sim/callback", post(callback))
        .route("/sim/event", post(user_event))
        .route("/cgi-bin/component/{call}", post(component_call))
        .route("/sim/platform/authorize", post(platform_authorize))
        .route("/sim/platform/unauthorize", post(platform_unauthorize))
        .route("/sim/platform/ticket", post(platform_ticket))
        .route("/sim/platform/faults", post(platform_faults))
        .route("/sim/platform/stats", get(platform_stats))
        .with_state(model)
}

fn respond(reply: Reply) -> Response {
    match reply {
        Reply::Json(v) => axum::Json(v).into_response(),
        Reply::Http(code) => StatusCode::from_u16(code)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        Reply::BadJson => (
            [("content-type", "application/json")],
            "<html>502 Bad Gateway</html>",
        )
            .into_response(),
        // A body that fails mid-stream makes the server abort the connection.
        Reply::Drop | Reply::Hang => {
            let stream = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other(
                    "connection dropped by the simulator",
                ))
            });
            Response::new(Body::from_stream(stream))
        }
    }
}

/// Applies latency and random transport faults, then runs `handle`.
async fn with_transport(model: &Model, handle: impl FnOnce() -> Reply) -> Response {
    let (latency, fault) = model.transport();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let reply = match fault {
        Some(f) => f,
        None => handle(),
    };
    if reply == Reply::Hang {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    respond(reply)
}

async fn classic_token(State(m): Shared, Query(q): Query<HashMap<String, String>>) -> Response {
    with_transport(&m, || {
        m.token(
            q.get("grant_type").map(String::as_str),
            q.get("appid").map(String::as_str),
            q.get("secret").map(String::as_str),
            false,
            false,
        )
    })
    .await
}

#[derive(Deserialize)]
struct StableTokenBody {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    force_refresh: bool,
}

async fn stable_token(State(m): Shared, body: Bytes) -> Response {
    with_transport(&m, || {
        match serde_json::from_slice::<StableTokenBody>(&body) {
            Ok(b) => m.token(
                b.grant_type.as_deref(),
                b.appid.as_deref(),
                b.secret.as_deref(),
                true,
                b.force_refresh,
            ),
            Err(_) => {
                Reply::Json(serde_json::json!({"errcode": 47001, "errmsg": "data format error"}))
            }
        }
    })
    .await
}

async fn template_list(State(m): Shared, Query(q): Query<HashMap<String, String>>) -> Response {
    with_transport(&m, || {
        m.template_list(q.get("access_token").map(String::as_str))
    })
    .await
}

async fn quota_get(
    State(m): Shared,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    with_transport(&m, || {
        m.quota_get(q.get("access_token").map(String::as_str), &body)
    })
    .await
}

#[derive(Deserialize)]
struct TemplatesBody {
    appid: String,
    template_list: Vec<SimTemplate>,
}

async fn set_templates(State(m): Shared, axum::Json(t): axum::Json<TemplatesBody>) -> StatusCode {
    m.set_templates(&t.appid, t.template_list);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct DenyBody {
    appid: String,
    path: String,
    errcode: i64,
}

async fn deny(State(m): Shared, axum::Json(d): axum::Json<DenyBody>) -> StatusCode {
    m.deny(&d.appid, &d.path, d.errcode);
    StatusCode::NO_CONTENT
}

async fn stats(State(m): Shared) -> Response {
    axum::Json(m.stats()).into_response()
}

async fn sends(State(m): Shared) -> Response {
    axum::Json(m.sends()).into_response()
}

async fn set_faults(State(m): Shared, axum::Json(f): axum::Json<Faults>) -> StatusCode {
    m.set_faults(f);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct ScriptBody {
    touser: String,
    answers: Vec<Answer>,
}

async fn script(State(m): Shared, axum::Json(s): axum::Json<ScriptBody>) -> StatusCode {
    m.script(&s.touser, s.answers);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct AppBody {
    appid: String,
    left: Option<u64>,
}

async fn invalidate(State(m): Shared, axum::Json(a): axum::Json<AppBody>) -> StatusCode {
    m.invalidate(&a.appid);
    StatusCode::NO_CONTENT
}

async fn quota(State(m): Shared, axum::Json(a): axum::Json<AppBody>) -> StatusCode {
    m.set_quota_left(&a.appid, a.left.unwrap_or(0));
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct RefuseBody {
    touser: String,
    #[serde(default = "yes")]
    refuse: bool,
}

fn yes() -> bool {
    true
}

async fn refuse(State(m): Shared, axum::Json(r): axum::Json<RefuseBody>) -> StatusCode {
    m.set_refusing(&r.touser, r.refuse);
    StatusCode::NO_CONTENT
}

async fn reset(State(m): Shared) -> StatusCode {
    m.reset_stats();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CallbackBody {
    appid: String,
    target: Option<CallbackTarget>,
}

async fn callback(State(m): Shared, axum::Json(c): axum::Json<CallbackBody>) -> StatusCode {
    m.set_callback(&c.appid, c.target);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct UserEventBody {
    appid: String,
    touser: String,
    #[serde(flatten)]
    event: UserEvent,
}

/// `POST /sim/event`: push a user event now (204), or say why not.
async fn user_event(State(m): Shared, axum::Json(e): axum::Json<UserEventBody>) -> Response {
    match m.user_event(&e.appid, &e.touser, e.event) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(why @ UserEventError::NoCallback(_)) => {
            (StatusCode::CONFLICT, why.to_string()).into_response()
        }
        Err(why @ UserEventError::Invalid(_)) => {
            (StatusCode::BAD_REQUEST, why.to_string()).into_response()
        }
    }
}

/// `POST /cgi-bin/component/CALL`: the third-party platform's endpoints.
async fn component_call(
    State(m): Shared,
    Path(call): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    with_transport(&m, || {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(b) => m.component_call(
                &call,
                q.get("component_access_token").map(String::as_str),
                &b,
            ),
            Err(_) => {
                Reply::Json(serde_json::json!({"errcode": 47001, "errmsg": "data format error"}))
            }
        }
    })
    .await
}

#[derive(Deserialize)]
struct AuthorizerBody {
    component_appid: String,
    authorizer_appid: String,
}

fn controlled(result: Result<(), PlatformControlError>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(why @ PlatformControlError::Unknown(_)) => {
            (StatusCode::NOT_FOUND, why.to_string()).into_response()
        }
        Err(why @ PlatformControlError::Invalid(_)) => {
            (StatusCode::BAD_REQUEST, why.to_string()).into_response()
        }
    }
}

/// `POST /sim/platform/authorize`: a merchant authorizes (or re-authorizes) a platform; the
/// answer holds the authorization code pushed.
async fn platform_authorize(
    State(m): Shared,
    axum::Json(a): axum::Json<AuthorizerBody>,
) -> Response {
    match m.authorize(&a.component_appid, &a.authorizer_appid) {
        Ok(code) => axum::Json(serde_json::json!({ "authorization_code": code })).into_response(),
        Err(e) => controlled(Err(e)),
    }
}

/// `POST /sim/platform/unauthorize`: a merchant withdraws its authorization.
async fn platform_unauthorize(
    State(m): Shared,
    axum::Json(a): axum::Json<AuthorizerBody>,
) -> Response {
    controlled(m.unauthorize(&a.component_appid, &a.authorizer_appid))
}

#[derive(Deserialize)]
struct ComponentBody {
    component_appid: String,
}

/// `POST /sim/platform/ticket`: push a verify ticket now.
async fn platform_ticket(State(m): Shared, axum::Json(c): axum::Json<ComponentBody>) -> Response {
    controlled(m.push_ticket(&c.component_appid))
}

#[derive(Deserialize)]
struct PlatformFaultsBody {
    component_appid: String,
    #[serde(flatten)]
    faults: PlatformFaults,
}

async fn platform_faults(
    State(m): Shared,
    axum::Json(f): axum::Json<PlatformFaultsBody>,
) -> Response {
    controlled(m.set_platform_faults(&f.component_appid, f.faults))
}

async fn platform_stats(State(m): Shared) -> Response {
    axum::Json(m.platform_stats()).into_response()
}
