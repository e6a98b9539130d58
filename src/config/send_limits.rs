//! An app's send limits (`apps.NAME.recipient_limit`, `cap_mode`, `content_dedup`): how often
//! one user may be sent to, and how long a job with the same content as an earlier one is
//! refused. Both are off unless set.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{NonZeroSpan, count};

/// `apps.NAME.recipient_limit = { count = 3, per = "1d" }`: at most `count` sends to one user
/// in any window of `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RecipientLimitFields")]
pub struct RecipientLimit {
    pub count: NonZeroU32,
    pub per: NonZeroSpan,
}

/// The table as written: a missing key is named as such, not as a value of the wrong type
/// (what a duration's own reading would say of its absence).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipientLimitFields {
    #[serde(default, deserialize_with = "some_count")]
    count: Option<NonZeroU32>,
    #[serde(default)]
    per: Option<NonZeroSpan>,
}

fn some_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<NonZeroU32>, D::Error> {
    count(d).map(Some)
}

impl TryFrom<RecipientLimitFields> for RecipientLimit {
    type Error = String;

    fn try_from(fields: RecipientLimitFields) -> Result<Self, Self::Error> {
        let missing = |key| format!("has no {key} (write {{ count = 3, per = \"1d\" }})");
        Ok(Self {
            count: fields.count.ok_or_else(|| missing("count"))?,
            per: fields.per.ok_or_else(|| missing("per"))?,
        })
    }
}

/// `apps.NAME.cap_mode`: what becomes of a job over its recipient's limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CapMode {
    /// It ends `suppressed` with reason `frequency_cap`.
    #[default]
    Suppress,
    /// It waits in the delay tiers until the window has room for it.
    Defer,
}

/// The limits of one app, as the pipeline reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AppLimits {
    pub(crate) recipient_limit: Option<RecipientLimit>,
    pub(crate) cap_mode: CapMode,
    pub(crate) content_dedup: Option<Duration>,
}

impl AppLimits {
    /// Whether no limit is in force (the pipeline then asks the state nothing).
    pub(crate) fn is_off(&self) -> bool {
        self.recipient_limit.is_none() && self.content_dedup.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MINIMAL, load};
    use super::*;

    fn limits_of(extra: &str, env: &[(&str, &str)]) -> Result<AppLimits, String> {
        load(&format!("{MINIMAL}{extra}"), env)
            .map(|s| s.apps["shop"].limits())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn both_limits_are_off_unless_set() {
        let limits = limits_of("", &[]).unwrap();
        assert!(limits.is_off());
        assert_eq!(limits.cap_mode, CapMode::Suppress);
    }

    #[test]
    fn a_cap_and_a_dedup_window_are_read_from_the_file_and_the_environment() {
        let limits = limits_of(
            "recipient_limit = { count = 3, per = \"1d\" }\ncontent_dedup = \"5m\"\n",
            &[],
        )
        .unwrap();
        let cap = limits.recipient_limit.unwrap();
        assert_eq!((cap.count.get(), cap.per.get().as_secs()), (3, 86_400));
        assert_eq!(limits.cap_mode, CapMode::Suppress);
        assert_eq!(limits.content_dedup, Some(Duration::from_secs(300)));
        assert!(!limits.is_off());
        let limits = limits_of(
            "",
            &[
                ("WXCOURIER_APPS__SHOP__RECIPIENT_LIMIT__COUNT", "2"),
                ("WXCOURIER_APPS__SHOP__RECIPIENT_LIMIT__PER", "1h"),
                ("WXCOURIER_APPS__SHOP__CAP_MODE", "defer"),
            ],
        )
        .unwrap();
        assert_eq!(limits.recipient_limit.unwrap().count.get(), 2);
        assert_eq!(limits.cap_mode, CapMode::Defer);
    }

    #[test]
    fn a_cap_of_0_a_bad_window_or_a_bad_mode_is_refused_naming_the_key() {
        for (extra, key, words) in [
            (
                "recipient_limit = { count = 0, per = \"1d\" }\n",
                "apps.shop.recipient_limit.count",
                "> 0",
            ),
            (
                "recipient_limit = { count = 3, per = \"soon\" }\n",
                "apps.shop.recipient_limit.per",
                "not a duration",
            ),
            (
                "recipient_limit = { count = 3, per = \"0s\" }\n",
                "apps.shop.recipient_limit.per",
                "longer than 0s",
            ),
            (
                "recipient_limit = { count = 3 }\n",
                "apps.shop.recipient_limit",
                "has no per",
            ),
            (
                "recipient_limit = { per = \"1d\" }\n",
                "apps.shop.recipient_limit",
                "has no count",
            ),
            (
                "recipient_limit = { count = 3, per = \"1d\", burst = 2 }\n",
                "apps.shop.recipient_limit",
                "burst",
            ),
            (
                "recipient_limit = { count = 3, per = \"1d\" }\ncap_mode = \"later\"\n",
                "apps.shop.cap_mode",
                "later",
            ),
            ("content_dedup = \"0s\"\n", "apps.shop.content_dedup", "0s"),
            (
                "content_dedup = 300\n",
                "apps.shop.content_dedup",
                "duration",
            ),
            (
                "cap_mode = \"defer\"\n",
                "apps.shop.cap_mode",
                "apps.shop.recipient_limit",
            ),
        ] {
            let err = limits_of(extra, &[]).unwrap_err();
            assert!(err.contains(key) && err.contains(words), "{extra}: {err}");
        }
    }
}
