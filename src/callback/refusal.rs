//! Why a callback request is refused, and what the caller is told. Before the signature holds
//! the caller may be anyone, so it is told the status and nothing more: no parser or crypto
//! text, not even the app's `callback_mode`. The full reason goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A refused callback request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    // Before the signature holds.
    #[error("no callback is configured for this app")]
    UnknownApp,
    #[error("the body is over the callback's size limit")]
    TooLarge,
    /// WeChat's plain `signature` covers the token, timestamp and nonce but not the body, and
    /// it comes in safe mode too: anyone who saw one push could attach any body to it.
    #[error("callback_mode is safe: only encrypted messages with a msg_signature are accepted")]
    PlainInSafeMode,
    #[error("callback_mode is plain: encrypted messages are not accepted")]
    SealedInPlainMode,
    #[error("an encrypted message came, and this app has no encoding_aes_key")]
    NoKey,
    #[error("the encrypted body cannot be read: {0}")]
    Unreadable(String),
    #[error("bad signature")]
    BadSignature,
    // Once the signature holds: the caller holds the token, and is told why.
    #[error("the timestamp is outside http.callback_max_age")]
    Stale,
    #[error("the message is for another AppID")]
    OtherAppId,
    #[error("{0}")]
    Undecryptable(String),
    #[error("{0}")]
    BadXml(String),
    #[error("{0}")]
    BadEvent(String),
}

impl Refusal {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::UnknownApp => StatusCode::NOT_FOUND,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::PlainInSafeMode
            | Refusal::BadSignature
            | Refusal::Stale
            | Refusal::OtherAppId => StatusCode::FORBIDDEN,
            Refusal::SealedInPlainMode
            | Refusal::NoKey
            | Refusal::Unreadable(_)
            | Refusal::Undecryptable(_)
            | Refusal::BadXml(_)
            | Refusal::BadEvent(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether the request's signature held: only then is the caller told why.
    pub(crate) fn signed(&self) -> bool {
        match self {
            Refusal::UnknownApp
            | Refusal::TooLarge
            | Refusal::PlainInSafeMode
            | Refusal::SealedInPlainMode
            | Refusal::NoKey
            | Refusal::Unreadable(_)
            | Refusal::BadSignature => false,
            Refusal::Stale
            | Refusal::OtherAppId
            | Refusal::Undecryptable(_)
            | Refusal::BadXml(_)
            | Refusal::BadEvent(_) => true,
        }
    }

    /// What the caller reads: the reason once the signature held, else the status's name.
    pub(crate) fn answer(&self) -> String {
        if self.signed() {
            self.to_string()
        } else {
            let status = self.status();
            status.canonical_reason().unwrap_or("refused").to_owned()
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status(), self.answer()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_the_signature_holds_the_answer_is_the_status_alone() {
        let parser_text = "unexpected end of input at byte 12";
        for (refusal, answer) in [
            (Refusal::UnknownApp, "Not Found"),
            (Refusal::TooLarge, "Payload Too Large"),
            (Refusal::PlainInSafeMode, "Forbidden"),
            (Refusal::SealedInPlainMode, "Bad Request"),
            (Refusal::NoKey, "Bad Request"),
            (Refusal::Unreadable(parser_text.into()), "Bad Request"),
            (Refusal::BadSignature, "Forbidden"),
        ] {
            assert!(!refusal.signed(), "{refusal:?}");
            assert_eq!(refusal.answer(), answer, "{refusal:?}");
        }
    }

    #[test]
    fn once_the_signature_holds_the_caller_is_told_why() {
        for refusal in [
            Refusal::Stale,
            Refusal::OtherAppId,
            Refusal::Undecryptable("bad padding".into()),
            Refusal::BadXml("no root element".into()),
            Refusal::BadEvent("Status is missing".into()),
        ] {
            assert!(refusal.signed(), "{refusal:?}");
            assert_eq!(refusal.answer(), refusal.to_string());
        }
        assert!(Refusal::Stale.answer().contains("callback_max_age"));
    }
}
