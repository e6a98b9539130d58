//! `[platforms.NAME]`: a WeChat third-party platform (Open Platform, 第三方平台) that sends on
//! behalf of the merchant accounts that authorized it. Its component secret comes from the
//! environment only (`WXCOURIER_PLATFORMS__NAME__COMPONENT_SECRET`); the other keys say how its
//! pushes are checked and what its authorizers' send defaults are.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, invalid};
use super::keys::ENV_PREFIX;
use super::sections::{AppKinds, default_burst, default_rate};
use super::values::{NonZeroSpan, Rate, count};
use crate::types::{Secret, decode_aes_key, scalar_string};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSettings {
    /// The platform's own AppID, the one WeChat seals its authorization pushes for.
    #[serde(default, deserialize_with = "scalar_string")]
    pub component_appid: String,
    /// The platform's AppSecret; from the environment only.
    #[serde(default)]
    pub component_secret: Secret,
    /// The message-check Token set in the platform's console.
    #[serde(default)]
    pub token: Secret,
    /// The platform's 43-character EncodingAESKey: its pushes come in safe mode only.
    #[serde(default)]
    pub encoding_aes_key: Secret,
    /// Each authorizer's send rate, as `apps.NAME.rate_per_second` is a configured app's.
    #[serde(default = "default_rate")]
    pub rate_per_second: Rate,
    #[serde(default = "default_burst", deserialize_with = "count")]
    pub burst: NonZeroU32,
    /// The message kinds the authorizers send.
    #[serde(default)]
    pub kinds: AppKinds,
    /// Check template jobs against each authorizer's template list before sending: not
    /// supported yet, so `true` is refused rather than ignored.
    #[serde(default)]
    pub catalog: bool,
    /// How often every authorizer's refresh token is checked against WeChat's authorizer list
    /// (by one instance), so a state that lost some gets them back before a send needs them.
    #[serde(default = "default_reconcile_every")]
    pub reconcile_every: NonZeroSpan,
}

/// Once a day: the list changes only when merchants authorize or withdraw, which the pushes
/// already tell.
fn default_reconcile_every() -> NonZeroSpan {
    NonZeroSpan::new(std::time::Duration::from_secs(86_400)).expect("a day is a valid span")
}

impl PlatformSettings {
    /// A platform with the defaults for its authorizers.
    pub fn new(
        component_appid: impl Into<String>,
        component_secret: Secret,
        token: Secret,
        encoding_aes_key: Secret,
    ) -> Self {
        Self {
            component_appid: component_appid.into(),
            component_secret,
            token,
            encoding_aes_key,
            rate_per_second: default_rate(),
            burst: default_burst(),
            kinds: AppKinds::default(),
            catalog: false,
            reconcile_every: default_reconcile_every(),
        }
    }

    /// The key behind the platform's pushes.
    pub(crate) fn aes_key(&self) -> Option<[u8; 32]> {
        decode_aes_key(self.encoding_aes_key.expose())
    }
}

/// The variable a platform's component secret is read from.
pub(crate) fn secret_env(name: &str) -> String {
    format!(
        "{ENV_PREFIX}PLATFORMS__{}__COMPONENT_SECRET",
        name.to_ascii_uppercase()
    )
}

/// A file that names a `component_secret` is refused: the secret lets anyone holding it act for
/// every merchant of the platform, and the file may be read by more people than the process's
/// environment.
pub(super) fn refuse_secret_in_file(file: &figment::value::Dict) -> Result<(), ConfigError> {
    let Some(figment::value::Value::Dict(_, platforms)) = file.get("platforms") else {
        return Ok(());
    };
    for (name, platform) in platforms {
        if let figment::value::Value::Dict(_, keys) = platform
            && keys.contains_key("component_secret")
        {
            return Err(invalid(
                format!("platforms.{name}.component_secret"),
                format!(
                    "may come from the environment only ({}), not the file",
                    secret_env(name)
                ),
            ));
        }
    }
    Ok(())
}
