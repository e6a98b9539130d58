//! The daily call quota WeChat reports for each API (`POST /cgi-bin/openapi/quota/get` with
//! `{"cgi_path": …}`), read for every endpoint an app sends through (by its `kinds`): polled
//! every `wechat.daily_quota_refresh` into the `wxcourier_wechat_quota_*` gauges, and printed by
//! `check`. An errcode (48001 not authorized, 76021 unknown path, …) is logged once and
//! leaves the gauges unset.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::AppSettings;
use crate::metrics::Metrics;
use crate::wechat::lookup::{Lookup, LookupError};

/// The endpoint.
pub(crate) const PATH: &str = "/cgi-bin/openapi/quota/get";

/// One API's quota today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyQuota {
    /// Calls allowed today.
    pub daily_limit: u64,
    /// Calls made today.
    pub used: u64,
    /// Calls left today.
    pub remain: u64,
}

/// What is wrong with an answer that should hold a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QuotaAnswerError {
    #[error("the answer has no quota object")]
    NoQuota,
    /// The field named is missing or not a non-negative integer.
    #[error("quota.{0} is not a count")]
    NotACount(&'static str),
}

/// Reads `{"errcode": 0, "quota": {"daily_limit", "used", "remain"}}`. Each count is a
/// non-negative integer; a string of digits is taken too (some SDKs declare these strings).
pub(crate) fn parse(answer: &Value) -> Result<DailyQuota, QuotaAnswerError> {
    let quota = answer
        .get("quota")
        .and_then(Value::as_object)
        .ok_or(QuotaAnswerError::NoQuota)?;
    let count = |field: &'static str| -> Result<u64, QuotaAnswerError> {
        match quota.get(field) {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok()
            }
            _ => None,
        }
        .ok_or(QuotaAnswerError::NotACount(field))
    };
    Ok(DailyQuota {
        daily_limit: count("daily_limit")?,
        used: count("used")?,
        remain: count("remain")?,
    })
}

/// Asks WeChat for the quota of `endpoint` (`/cgi-bin/…`).
pub async fn fetch(lookup: &Lookup<'_>, endpoint: &str) -> Result<DailyQuota, LookupError> {
    let answer = lookup
        .call(PATH, Some(&serde_json::json!({ "cgi_path": endpoint })))
        .await?;
    parse(&answer)
        .map_err(|e| LookupError::Call(crate::wechat::client::CallError::Body(e.to_string())))
}

/// The endpoints `app` sends through, one per kind it sends.
pub(crate) fn endpoints(app: &AppSettings) -> Vec<&'static str> {
    crate::kinds::Kind::ALL
        .into_iter()
        .filter(|&k| app.kinds.sends(k))
        .map(|k| k.endpoint())
        .collect()
}

/// Polls the quota of `app`'s `endpoints` now and every `every` until `stop`, into `metrics`.
pub(crate) async fn watch(
    app: &str,
    endpoints: &[&'static str],
    lookup: Lookup<'_>,
    metrics: &Metrics,
    every: Duration,
    stop: CancellationToken,
) {
    let mut told = Told::default();
    loop {
        for &endpoint in endpoints {
            match fetch(&lookup, endpoint).await {
                Ok(q) => {
                    told.failing = false;
                    metrics.set_wechat_quota(app, endpoint, q.daily_limit, q.used, q.remain);
                }
                Err(e) => told.failure(app, endpoint, &e),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// What was already logged, so a failure that repeats every poll is said once.
#[derive(Default)]
struct Told {
    /// (endpoint, errcode) pairs WeChat refused.
    refused: HashSet<(&'static str, i64)>,
    /// A call failure was logged and no quota has been read since.
    failing: bool,
}

impl Told {
    fn failure(&mut self, app: &str, endpoint: &'static str, e: &LookupError) {
        let refused = matches!(e, LookupError::Refused { .. });
        let first_time = match e {
            LookupError::Refused { errcode, .. } => self.refused.insert((endpoint, *errcode)),
            _ => !std::mem::replace(&mut self.failing, true),
        };
        if !first_time {
            return;
        }
        if refused {
            tracing::warn!(app, endpoint, error = %e, "WeChat does not give this API's daily quota; its gauges stay unset (logged once)");
        } else {
            tracing::warn!(app, endpoint, error = %e, "cannot read the daily quota; tried again at the next refresh");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wechats_answer_reads_as_the_three_counts() {
        let answer = json!({"errcode": 0, "errmsg": "ok",
            "quota": {"daily_limit": 100000, "used": 12, "remain": 99988}});
        assert_eq!(
            parse(&answer),
            Ok(DailyQuota {
                daily_limit: 100000,
                used: 12,
                remain: 99988
            })
        );
        let strings = json!({"quota": {"daily_limit": "10", "used": "0", "remain": "10"}});
        assert_eq!(parse(&strings).unwrap().daily_limit, 10);
    }

    #[test]
    fn a_malformed_quota_is_an_error_naming_the_field() {
        for (answer, field) in [
            (json!({"errcode": 0}), "quota"),
            (json!({"quota": []}), "quota"),
            (
                json!({"quota": {"daily_limit": -1, "used": 0, "remain": 0}}),
                "daily_limit",
            ),
            (
                json!({"quota": {"daily_limit": 1.5, "used": 0, "remain": 0}}),
                "daily_limit",
            ),
            (json!({"quota": {"daily_limit": 1, "remain": 0}}), "used"),
            (
                json!({"quota": {"daily_limit": 1, "used": "1e3", "remain": 0}}),
                "used",
            ),
            (
                json!({"quota": {"daily_limit": 1, "used": 0, "remain": "99999999999999999999999"}}),
                "remain",
            ),
            (
                json!({"quota": {"daily_limit": 1, "used": 0, "remain": null}}),
                "remain",
            ),
        ] {
            let e = parse(&answer).unwrap_err().to_string();
            assert!(e.contains(field), "{answer}: {e}");
        }
    }

    #[test]
    fn an_app_is_asked_about_the_endpoints_of_its_kinds() {
        let mut app = AppSettings::new("wx", crate::types::Secret::new("s"));
        assert_eq!(endpoints(&app), ["/cgi-bin/message/template/send"]);
        app.kinds = [
            crate::kinds::Kind::MiniprogramSubscribe,
            crate::kinds::Kind::Template,
        ]
        .into_iter()
        .collect();
        assert_eq!(
            endpoints(&app),
            [
                "/cgi-bin/message/template/send",
                "/cgi-bin/message/subscribe/send"
            ]
        );
    }

    #[test]
    fn a_refusal_is_told_once_per_endpoint_and_code() {
        let mut told = Told::default();
        let refused = LookupError::Refused {
            errcode: 76021,
            errmsg: "cgi_path not found, please check".into(),
        };
        told.failure("a", "/x", &refused);
        told.failure("a", "/x", &refused);
        told.failure("a", "/y", &refused);
        assert_eq!(told.refused.len(), 2);
        let down = LookupError::Call(crate::wechat::client::CallError::Timeout);
        told.failure("a", "/x", &down);
        assert!(
            told.failing,
            "a call failure is told until a quota is read again"
        );
        assert_eq!(told.refused.len(), 2, "and is no refusal");
    }
}
