//! Plain values every layer shares: secrets that never print, durations written as text, the
//! class of a WeChat answer, the form of an app's EncodingAESKey, and a job's trace headers.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Deserializer, Serialize};

/// A job's W3C Trace Context, as its producer sent it and once checked: the `traceparent`
/// (`VERSION-TRACEID-PARENTID-FLAGS`) and its `tracestate`, if any. Kept with the job's sent
/// record, so its delivery report, minutes later, carries the same trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeaders {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// The longest `tracestate` passed on: 32 list members of the W3C limits fit in it.
const MAX_TRACESTATE: usize = 512;

impl TraceHeaders {
    /// Trace headers worth passing on from text that crossed a trust boundary (a producer's
    /// AMQP headers, a record read back from shared state): `None` without a valid
    /// `traceparent` (a `tracestate` without one means nothing), and the `tracestate` only when
    /// it is valid too.
    pub fn checked(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        if !valid_traceparent(traceparent) {
            return None;
        }
        Some(Self {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate
                .filter(|s| valid_tracestate(s))
                .map(str::to_owned),
        })
    }
}

/// `VERSION-TRACEID-PARENTID-FLAGS` in lowercase hex (2-32-16-2), with a trace id and parent
/// id that are not all zeros and a version other than `ff`, as W3C Trace Context asks.
fn valid_traceparent(p: &str) -> bool {
    let parts: Vec<&str> = p.split('-').collect();
    let [version, trace, parent, flags] = parts[..] else {
        return false;
    };
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2)
}

/// Printable ASCII within the length limit: the list's own grammar is the vendors' business.
fn valid_tracestate(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_TRACESTATE && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A string that must never be printed: `Debug`, `Display` and `Serialize` all show
/// `[redacted]`, so a secret cannot reach a log, an error, an outcome or a dump of the settings.
/// Code that must send it calls [`Secret::expose`] by name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(scalar_string(d)?))
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// What a secret shows wherever it is printed or serialized.
const REDACTED: &str = "[redacted]";

/// Accepts any scalar as a string (environment values arrive typed by guesswork).
pub(crate) fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        U(u64),
        I(i64),
        F(f64),
        B(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::S(s) => s,
        Scalar::U(n) => n.to_string(),
        Scalar::I(n) => n.to_string(),
        Scalar::F(n) => n.to_string(),
        Scalar::B(b) => b.to_string(),
    })
}

/// A duration written as a string such as `"500ms"`, `"30s"`, `"2m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "a duration must be a string such as \"500ms\", \"30s\" or \"2m\"",
            )
        })?;
        humantime::parse_duration(&text).map(Span).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration such as \"500ms\", \"30s\" or \"2m\" ({e})"
            ))
        })
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// What a WeChat answer means for the job (CONTRACT §4). The code sets behind each class are
/// configuration; the table that applies them is `wechat::errcode`, and a message kind may
/// name its own class for a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Ok,
    /// Retry later with backoff.
    Transient,
    /// Retry, and pause the app: its quota is spent.
    Quota,
    /// The access token is bad: refresh it and send again.
    Token,
    /// Refused for good.
    Permanent,
}

impl Class {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Transient => "transient",
            Class::Quota => "quota",
            Class::Token => "token",
            Class::Permanent => "permanent",
        }
    }
}

/// `EncodingAESKey` (43 characters, base64 without its `=`) → the 32-byte AES key of an app's
/// safe-mode callbacks. Config checks the form with it; callback crypto uses the bytes.
pub fn decode_aes_key(encoding_aes_key: &str) -> Option<[u8; 32]> {
    if encoding_aes_key.len() != 43 {
        return None;
    }
    // WeChat's keys are random, so their last character often carries non-zero spare bits,
    // which strict base64 refuses.
    let lenient = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let bytes = lenient.decode(format!("{encoding_aes_key}=")).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_keys_must_be_43_base64_characters() {
        const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        assert!(decode_aes_key(KEY).is_some());
        assert!(decode_aes_key(&KEY[..42]).is_none());
        assert!(decode_aes_key(&format!("{}!", &KEY[..42])).is_none());
        assert!(decode_aes_key(&format!("{KEY}A")).is_none());
    }

    #[test]
    fn a_secret_never_prints_nor_serializes_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_span_reads_and_writes_humantime() {
        let s: Span = serde_json::from_str("\"1m 30s\"").unwrap();
        assert_eq!(s.0, Duration::from_secs(90));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"1m 30s\"");
        assert!(serde_json::from_str::<Span>("90").is_err());
    }
}
