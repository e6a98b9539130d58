//! Whether a callback request is WeChat's, and what it says: every check (the app, the size,
//! the form its `callback_mode` allows, the signature or `msg_signature`, the age, the AppID,
//! the XML, the event) as pure functions of the app's settings, the query, the body and the
//! time, so the whole refusal matrix is a unit test.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::events::{self, Event};
use super::refusal::Refusal;
use super::xml::{self, CallbackXml};
use crate::config::{CallbackMode, Settings};
use crate::types::{Secret, decode_aes_key};
use crate::wechat::crypto::{self, CryptoError, Envelope};

/// Largest body accepted (WeChat's events are a few hundred bytes).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// One app's callback settings: its keys, the form its messages must arrive in, and the
/// replay window.
pub(crate) struct CallbackApp {
    /// The app's name, as reports carry it.
    pub(crate) name: String,
    pub(crate) token: Secret,
    pub(crate) envelope: Option<Envelope>,
    pub(crate) mode: CallbackMode,
    /// `http.callback_max_age`; `None` when off.
    pub(crate) max_age: Option<Duration>,
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
            let callback = CallbackApp {
                name: name.clone(),
                token,
                envelope,
                mode: app.resolved_callback_mode(),
                max_age: settings.http.callback_window(),
            };
            Some((name.clone(), callback))
        })
        .collect()
}

/// How each third-party platform's pushes are checked, by platform name: with the platform's
/// Token and key, sealed for its component AppID, safe mode only. Its own pushes (tickets,
/// authorizations) and its authorizers' (reported as `NAME:APPID`, from the URL) alike.
pub(crate) fn platforms_from(settings: &Settings) -> HashMap<String, CallbackApp> {
    settings
        .platforms
        .iter()
        .filter_map(|(name, platform)| {
            let key = platform.aes_key()?;
            let callback = CallbackApp {
                name: name.clone(),
                token: platform.token.clone(),
                envelope: Some(Envelope::new(key, platform.component_appid.clone())),
                mode: CallbackMode::Safe,
                max_age: settings.http.callback_window(),
            };
            Some((name.clone(), callback))
        })
        .collect()
}

impl CallbackApp {
    /// The same checks, reporting as `name` (a platform's authorizer).
    pub(crate) fn reporting_as(&self, name: String) -> Self {
        Self {
            name,
            token: self.token.clone(),
            envelope: self.envelope.clone(),
            mode: self.mode,
            max_age: self.max_age,
        }
    }
}

/// The query string WeChat signs.
#[derive(Deserialize, Default, Debug, Clone)]
pub(crate) struct Params {
    pub(crate) signature: Option<String>,
    pub(crate) timestamp: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) echostr: Option<String>,
    pub(crate) encrypt_type: Option<String>,
    pub(crate) msg_signature: Option<String>,
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

    /// Safe mode's `msg_signature` over the token, timestamp, nonce and ciphertext.
    fn msg_signed(&self, token: &Secret, encrypted: &str) -> bool {
        match (&self.msg_signature, &self.timestamp, &self.nonce) {
            (Some(sig), Some(ts), Some(nonce)) => {
                crypto::signature_matches(&[token.expose(), ts, nonce, encrypted], sig)
            }
            _ => false,
        }
    }

    /// Whether the signed timestamp lies within `max_age` of `now` (Unix seconds), either
    /// way; always true without a window.
    fn fresh(&self, max_age: Option<Duration>, now: u64) -> bool {
        let Some(max_age) = max_age else {
            return true;
        };
        self.timestamp
            .as_deref()
            .and_then(|t| t.parse::<u64>().ok())
            .is_some_and(|sent| now.abs_diff(sent) <= max_age.as_secs())
    }
}

/// `GET`: the URL check the WeChat console makes when the server address is saved. The
/// answer is `echostr`.
pub(crate) fn verify(
    app: Option<&CallbackApp>,
    params: &Params,
    now: u64,
) -> Result<String, Refusal> {
    let app = app.ok_or(Refusal::UnknownApp)?;
    match &params.echostr {
        Some(echo) if params.signed(&app.token) => {
            if !params.fresh(app.max_age, now) {
                return Err(Refusal::Stale);
            }
            Ok(echo.clone())
        }
        _ => Err(Refusal::BadSignature),
    }
}

/// `POST`: a message or event, in the form the app's `callback_mode` allows, at `now` (Unix
/// seconds); the reports it makes.
pub(crate) fn open(
    app: Option<&CallbackApp>,
    params: &Params,
    body: &[u8],
    now: u64,
) -> Result<Event, Refusal> {
    let app = app.ok_or(Refusal::UnknownApp)?;
    let message = read(app, params, body, now)?;
    events::map(&app.name, &message).map_err(|e| Refusal::BadEvent(e.to_string()))
}

/// The message of a `POST`, once its size, form, signature, age and AppID hold; what it says
/// is the caller's to read (the delivery callback's events, or a platform's pushes).
pub(crate) fn read(
    app: &CallbackApp,
    params: &Params,
    body: &[u8],
    now: u64,
) -> Result<CallbackXml, Refusal> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Refusal::TooLarge);
    }
    let sealed = params.encrypt_type.as_deref() == Some("aes");
    match (app.mode, sealed) {
        (CallbackMode::Safe, false) => return Err(Refusal::PlainInSafeMode),
        (CallbackMode::Plain, true) => return Err(Refusal::SealedInPlainMode),
        _ => {}
    }
    let message = if sealed {
        let envelope = app.envelope.as_ref().ok_or(Refusal::NoKey)?;
        let text = std::str::from_utf8(body)
            .map_err(|_| Refusal::Unreadable("the body is not UTF-8".into()))?;
        let outer = xml::fields(text).map_err(|e| Refusal::Unreadable(e.to_string()))?;
        let encrypted = outer
            .get("Encrypt")
            .ok_or_else(|| Refusal::Unreadable("no Encrypt element".into()))?;
        if !params.msg_signed(&app.token, encrypted) {
            return Err(Refusal::BadSignature);
        }
        // Checked as soon as the signature holds: a replay costs no decryption.
        if !params.fresh(app.max_age, now) {
            return Err(Refusal::Stale);
        }
        let inner = envelope.open(encrypted).map_err(|e| match e {
            CryptoError::AppId => Refusal::OtherAppId,
            e => Refusal::Undecryptable(e.to_string()),
        })?;
        xml::message(&inner).map_err(|e| Refusal::BadXml(e.to_string()))?
    } else {
        // The signature is on the query string: checked before the body is read at all.
        if !params.signed(&app.token) {
            return Err(Refusal::BadSignature);
        }
        if !params.fresh(app.max_age, now) {
            return Err(Refusal::Stale);
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| Refusal::BadXml("the body is not UTF-8".into()))?;
        xml::message(text).map_err(|e| Refusal::BadXml(e.to_string()))?
    };
    Ok(message)
}
