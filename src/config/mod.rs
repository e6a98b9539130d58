//! Typed settings: the TOML file, then `WXCOURIER_…` environment variables, then validation.
//! The section types live in `sections`, the environment layer in `env`, the rules in
//! `validate`.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Serialize};

mod env;
mod sections;
mod service_links;
mod validate;

pub(crate) use env::ENV_PREFIX;
pub use sections::{
    AmqpSettings, AppKinds, AppSettings, CallbackMode, HttpSettings, RetrySettings, StateSettings,
    TokenMode, WechatSettings, WorkerSettings,
};
/// The contract's code sets, which tests build a classifier from.
#[cfg(test)]
pub(crate) use sections::{DEFAULT_QUOTA, DEFAULT_TOKEN, DEFAULT_TRANSIENT};
pub(crate) use sections::{LogFormat, LogSettings, ReasonCodes};
pub(crate) use service_links::is_service_link;
pub(crate) use validate::is_app_name;

use env::{describe_figment_error, env_path, env_provider, raw_app_key};

/// The file `run`, `check` and the other verbs read when `--config` is not given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "config/default.toml";

/// A configuration problem, always naming the key to fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read the config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Parse(String),
    #[error("{key} {rule}")]
    Invalid { key: String, rule: String },
}

fn invalid(key: impl Into<String>, rule: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        rule: rule.into(),
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub wechat: WechatSettings,
    pub retry: RetrySettings,
    pub state: StateSettings,
    pub http: HttpSettings,
    pub(crate) log: LogSettings,
    pub worker: WorkerSettings,
    pub apps: BTreeMap<String, AppSettings>,
    /// `WXCOURIER_…` variables left out because they are Kubernetes service links (names
    /// only), for `run` to log once logging is set up.
    #[serde(skip)]
    pub(crate) ignored_env: Vec<String>,
}

impl Settings {
    /// Loads `path` (a missing file is an error unless it is the default path), layers the
    /// environment on top and validates the result.
    pub(crate) fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(path, &env)
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests).
    pub(crate) fn load_from(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        // Defaults come from `#[serde(default)]` as the layers are read, not from serializing
        // `Settings::default()`: a serialized secret reads `[redacted]`.
        let mut figment = Figment::new();
        let explicit = path.is_some();
        let path = path.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            figment = figment.merge(Toml::string(&text));
        } else if explicit {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                reason: "no such file".into(),
            });
        }
        let (links, ours): (Vec<_>, Vec<_>) = env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .partition(|(k, v)| is_service_link(k, v));
        if let Some((k, _)) = ours
            .iter()
            .find(|(k, _)| env_path(k).iter().any(|p| p.is_empty()))
        {
            return Err(ConfigError::Parse(format!(
                "{k} is not a configuration key: levels are joined by exactly two underscores, \
                 as in {ENV_PREFIX}AMQP__URL"
            )));
        }
        let typed_env: Vec<(String, String)> = ours
            .into_iter()
            .filter(|(k, _)| raw_app_key(k).is_none())
            .cloned()
            .collect();
        figment = figment.merge(env_provider(&typed_env));
        for (key, value) in env {
            if let Some((app, field)) = raw_app_key(key) {
                figment = figment.merge((format!("apps.{app}.{field}"), value.clone()));
            }
        }
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| describe_figment_error(e, &typed_env))?;
        settings.validate()?;
        settings.ignored_env = links.into_iter().map(|(k, _)| k.clone()).collect();
        Ok(settings)
    }

    /// The verbs that send need at least one app; producers (`send`) do not.
    pub(crate) fn require_apps(&self) -> Result<(), ConfigError> {
        if self.apps.is_empty() {
            return Err(invalid(
                "apps",
                "names no app: add an [apps.NAME] table with appid and secret",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
