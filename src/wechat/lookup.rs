//! Read-only WeChat calls made beside the sends (the template list, the daily quota): with the
//! app's access token, a bounded answer, WeChat's `errcode` read, and a refused token dropped so
//! the next call (or send) fetches a new one.

use serde_json::Value;

use super::client::{CallError, TokenError, WechatClient};
use super::errcode::Classifier;
use super::token::TokenKeeper;
use crate::types::Class;

/// Largest answer a lookup reads. WeChat's template lists and quota answers are a few KiB; an
/// account holds at most a few dozen templates.
pub(crate) const MAX_LOOKUP_BYTES: usize = 2 * 1024 * 1024;

/// Why a lookup gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error("no access token: {0}")]
    Token(#[from] TokenError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("WeChat answered errcode {errcode} ({errmsg})")]
    Refused { errcode: i64, errmsg: String },
}

/// What one app needs for a lookup.
pub struct Lookup<'a> {
    pub client: &'a WechatClient,
    pub keeper: &'a TokenKeeper,
    pub classifier: &'a Classifier,
}

impl Lookup<'_> {
    /// `GET path` (no body) or `POST path` with `body`; the answer as JSON, once WeChat said
    /// no `errcode` or `errcode` 0.
    pub(crate) async fn call(
        &self,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, LookupError> {
        let token = self.keeper.get().await?;
        let body = body.map(|b| serde_json::to_vec(b).expect("a JSON value serializes"));
        let bytes = self
            .client
            .lookup(path, &token.value, body, MAX_LOOKUP_BYTES)
            .await?;
        let answer: Value =
            serde_json::from_slice(&bytes).map_err(|e| CallError::Body(e.to_string()))?;
        let errcode = answer.get("errcode").and_then(Value::as_i64).unwrap_or(0);
        if errcode == 0 {
            return Ok(answer);
        }
        if self.classifier.classify(errcode) == Class::Token {
            self.keeper.invalidate(&token);
        }
        let errmsg = answer
            .get("errmsg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        Err(LookupError::Refused {
            errcode,
            errmsg: crate::text::bounded(&errmsg, 200),
        })
    }
}
