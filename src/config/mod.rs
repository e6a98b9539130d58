//! Typed settings: the TOML file, then `WXCOURIER_…` environment variables, then validation.
//! The section types live in `sections`, the whole in `settings`, the environment layer in
//! `env`, the rules in `validate`.

use std::path::Path;

use figment::providers::{Format, Serialized, Toml};
use figment::{Figment, Profile, Provider};

mod admin;
mod env;
mod error;
mod keys;
mod platforms;
mod quiet;
mod redis_url;
mod renamed;
mod sections;
mod send_limits;
mod service_links;
mod settings;
mod validate;
mod values;

pub use admin::AdminSettings;
pub(crate) use error::ConfigError;
pub(crate) use keys::ENV_PREFIX;
pub use platforms::PlatformSettings;
pub(crate) use platforms::secret_env as platform_secret_env;
pub use redis_url::{Endpoints, HostPort, RedisUrl, SingleUrl};
pub use sections::{
    AmqpSettings, AppKinds, AppSettings, CallbackMode, HttpSettings, PauseMode, ResultsSettings,
    RetrySettings, StateSettings, TokenMode, WechatSettings, WorkerSettings,
};
/// The contract's code sets, which tests build a classifier from.
#[cfg(test)]
pub(crate) use sections::{DEFAULT_QUOTA, DEFAULT_TOKEN, DEFAULT_TRANSIENT};
pub(crate) use sections::{LogFormat, LogSettings, ReasonCodes};
pub(crate) use send_limits::AppLimits;
pub use send_limits::{CapMode, RecipientLimit};
pub(crate) use service_links::is_service_link;
pub use settings::Settings;
pub(crate) use settings::Uses;
pub(crate) use validate::{is_account_name, is_authorizer_appid};
pub use values::{NonZeroSpan, Rate};

use env::{describe_figment_error, env_provider, raw_key};
use error::invalid;
use keys::env_path;

/// The file `run`, `check` and the other verbs read when `--config` is not given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "config/default.toml";

impl Settings {
    /// Loads `path` (a missing file is an error unless it is the default path), layers the
    /// environment on top and validates the result.
    pub(crate) fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_for(path, Uses::Everything)
    }

    /// As [`Settings::load`], validating only what a verb that `uses` this much needs.
    pub(crate) fn load_for(path: Option<&Path>, uses: Uses) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from_for(path, &env, uses)
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests).
    #[cfg(test)]
    pub(crate) fn load_from(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        Self::load_from_for(path, env, Uses::Everything)
    }

    /// As [`Settings::load_for`], with the environment given explicitly (for tests).
    pub(crate) fn load_from_for(
        path: Option<&Path>,
        env: &[(String, String)],
        uses: Uses,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        let mut renamed_keys = Vec::new();
        let explicit = path.is_some();
        let path = path.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let mut file = Toml::string(&text)
                .data()
                .map_err(|e| describe_figment_error(e, &[], &[]))?
                .remove(&Profile::Default)
                .unwrap_or_default();
            renamed_keys = renamed::rename_in_file(&mut file)?;
            admin::refuse_token_in_file(&file)?;
            platforms::refuse_secret_in_file(&file)?;
            figment = figment.merge(Serialized::defaults(file));
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
            .filter(|(k, _)| raw_key(k).is_none() && k != admin::ADMIN_TOKEN_ENV)
            .cloned()
            .collect();
        let (current_env, renamed_env) = renamed::rename_in_env(&typed_env)?;
        renamed_keys.extend(renamed_env);
        figment = figment.merge(env_provider(&current_env));
        for (key, value) in env {
            if let Some((section, name, field)) = raw_key(key) {
                figment = figment.merge((format!("{section}.{name}.{field}"), value.clone()));
            }
        }
        if let Some((_, token)) = env.iter().find(|(k, _)| k == admin::ADMIN_TOKEN_ENV) {
            figment = figment.merge(("admin.token", token.clone()));
        }
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| describe_figment_error(e, &typed_env, &renamed_keys))?;
        settings.validate(uses)?;
        settings.ignored_env = links.into_iter().map(|(k, _)| k.clone()).collect();
        settings.renamed_keys = renamed_keys;
        Ok(settings)
    }

    /// Logs what loading noticed but did not refuse: variables skipped as Kubernetes service
    /// links, and keys written under a former name (one warning each, naming the new key).
    pub(crate) fn log_load_notes(&self) {
        for name in &self.ignored_env {
            tracing::debug!(variable = %name, "ignored: a Kubernetes service link, not a setting");
        }
        for renamed in &self.renamed_keys {
            tracing::warn!(key = renamed.key, written = %renamed.written, "{}", renamed.advice());
        }
    }

    /// The verbs that send need at least one app or platform; producers (`send`) do not.
    pub(crate) fn require_apps(&self) -> Result<(), ConfigError> {
        if self.apps.is_empty() && self.platforms.is_empty() {
            return Err(invalid(
                "apps",
                "names no app: add an [apps.NAME] table with appid and secret (or a \
                 [platforms.NAME] table for a third-party platform)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
