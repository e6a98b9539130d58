//! The receiver for WeChat's pushes on `/wechat/callback/APP`: verifies the signature,
//! decrypts safe mode, and publishes the reports the push makes (CONTRACT §5): delivery
//! reports, and users' subscription preferences and follows (`events`).

pub(crate) mod events;
mod report;
pub mod xml;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::broker::CurrentPublisher;
use crate::config::{CallbackMode, Settings};
use crate::metrics::Metrics;
use crate::state;
use crate::types::{Secret, decode_aes_key};
use crate::wechat::crypto::{self, Envelope};

/// Largest body accepted (WeChat's events are a few hundred bytes).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// What WeChat must get back for it to stop retrying.
const ACK: &str = "success";

/// One app's callback keys and the form its messages must arrive in.
pub(crate) struct CallbackApp {
    token: Secret,
    envelope: Option<Envelope>,
    mode: CallbackMode,
}

/// What the receiver needs, and nothing more.
pub(crate) struct CallbackState {
    /// Apps that receive WeChat's pushes, by name.
    pub(crate) apps: HashMap<String, CallbackApp>,
    /// Where a report's MsgID is marked seen and looked up for its job.
    pub(crate) state: Arc<state::State>,
    /// Where reports are published: the worker's broker session in force.
    pub(crate) results: CurrentPublisher,
    /// The replay window for signed callbacks (`http.callback_max_age`); `None` when off.
    pub(crate) max_age: Option<Duration>,
    pub(crate) metrics: Arc<Metrics>,
}

/// The apps that have a `callback_token`, by name.
pub(crate) fn apps_from(settings: &Settings) -> HashMap<String, CallbackApp> {
    settings
        .apps
        .iter()
        .filter_map(|(name, app)| {
            let token = app.callback_token.clone()?;
            let envelope = app
                .encoding_aes_key
                .as_ref()
                .and_then(|k| decode_aes_key(k.expose()))
                .map(|key| Envelope::new(key, app.appid.clone()));
            let mode = app.resolved_callback_mode();
            Some((
                name.clone(),
                CallbackApp {
                    token,
                    envelope,
                    mode,
                },
            ))
        })
        .collect()
}

#[derive(Deserialize, Default)]
struct Params {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
    encrypt_type: Option<String>,
    msg_signature: Option<String>,
}

impl Params {
    /// The plain signature: `sha1(sorted(token, timestamp, nonce))`.
    fn signed(&self, token: &Secret) -> bool {
        match (&self.signature, &self.timestamp, &self.nonce) {
            (Some(sig), Some(ts), Some(nonce)) => {
                crypto::signature_matches(&[token.expose(), ts, nonce], sig)
            }
            _ => false,
        }
    }

    /// Whether the signed timestamp lies within `max_age` of now, either way; always true
    /// without a window.
    fn fresh(&self, max_age: Option<Duration>) -> bool {
        let Some(max_age) = max_age else {
            return true;
        };
        let Some(sent) = self
            .timestamp
            .as_deref()
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return false;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        now.abs_diff(sent) <= max_age.as_secs()
    }

    /// Safe mode's `msg_signature` over the token, timestamp, nonce and ciphertext.
    fn msg_signed(&self, token: &Secret, encrypted: &str) -> bool {
        match (&self.msg_signature, &self.timestamp, &self.nonce) {
            (Some(sig), Some(ts), Some(nonce)) => {
                crypto::signature_matches(&[token.expose(), ts, nonce, encrypted], sig)
            }
            _ => false,
        }
    }
}

pub(crate) fn routes(ctx: Arc<CallbackState>) -> Router {
    Router::new()
        .route("/wechat/callback/{app}", get(verify_url).post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(ctx)
}

const STALE: &str = "the timestamp is outside http.callback_max_age";

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, why.to_owned()).into_response()
}

/// `GET`: the URL check the WeChat console makes when the server address is saved.
async fn verify_url(
    State(ctx): State<Arc<CallbackState>>,
    Path(app): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let Some(cb) = ctx.apps.get(&app) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no callback is configured for this app",
        );
    };
    match (&params.echostr, params.signed(&cb.token)) {
        (Some(_), true) if !params.fresh(ctx.max_age) => refuse(StatusCode::FORBIDDEN, STALE),
        (Some(echo), true) => echo.clone().into_response(),
        _ => refuse(StatusCode::FORBIDDEN, "bad signature"),
    }
}

/// `POST`: a message or event, in the form the app's `callback_mode` allows.
async fn receive(
    State(ctx): State<Arc<CallbackState>>,
    Path(app): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let Some(cb) = ctx.apps.get(&app) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no callback is configured for this app",
        );
    };
    let sealed = params.encrypt_type.as_deref() == Some("aes");
    match (cb.mode, sealed) {
        // The plain `signature` covers the token, timestamp and nonce but not the body, and
        // WeChat sends it in safe mode too: anyone who saw one push could attach any body.
        (CallbackMode::Safe, false) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "callback_mode is safe: only encrypted messages with a msg_signature are accepted",
            );
        }
        (CallbackMode::Plain, true) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "callback_mode is plain: encrypted messages are not accepted",
            );
        }
        _ => {}
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    let message = if sealed {
        let Some(envelope) = &cb.envelope else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "safe mode is not configured for this app",
            );
        };
        let outer = match xml::fields(text) {
            Ok(f) => f,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let Some(encrypted) = outer.get("Encrypt") else {
            return refuse(StatusCode::BAD_REQUEST, "no Encrypt element");
        };
        if !params.msg_signed(&cb.token, encrypted) {
            return refuse(StatusCode::FORBIDDEN, "bad msg_signature");
        }
        let inner = match envelope.open(encrypted) {
            Ok(xml) => xml,
            Err(crypto::CryptoError::AppId) => {
                return refuse(StatusCode::FORBIDDEN, "the message is for another AppID");
            }
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        match xml::message(&inner) {
            Ok(m) => m,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    } else {
        // The signature is on the query string: checked before the body is parsed at all.
        if !params.signed(&cb.token) {
            return refuse(StatusCode::FORBIDDEN, "bad signature");
        }
        match xml::message(text) {
            Ok(m) => m,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    };
    // Checked once the signature holds, so a forgery is always told "bad signature".
    if !params.fresh(ctx.max_age) {
        return refuse(StatusCode::FORBIDDEN, STALE);
    }
    let mapped = match events::map(&app, &message) {
        Ok(m) => m,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    for why in &mapped.ignored {
        tracing::warn!(app, "part of a callback push was ignored: {why}");
    }
    if mapped.reports.is_empty() {
        return ACK.into_response();
    }
    // Its own task: once a report is marked seen, the publish (or the undo of the mark) must
    // finish even if this request is cut off by http.request_timeout or the client going
    // away; dropped half-way, the mark would make WeChat's retry a "repeat" and the report
    // would never be published.
    let task = {
        let ctx = ctx.clone();
        tokio::spawn(async move { report::publish_all(&ctx, &app, mapped.reports).await })
    };
    match task.await {
        Ok(Ok(())) => ACK.into_response(),
        Ok(Err(response)) => response,
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "try again"),
    }
}
