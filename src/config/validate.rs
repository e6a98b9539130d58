//! The rules the value types cannot express, those that span fields (a ceiling and its floor,
//! a callback mode and its key) or check a form (URLs, addresses, names), each refusal naming
//! the key to fix. A value meaningless on its own (0, negative, NaN) is refused by its type.

use std::time::Duration;

use super::error::{ConfigError, invalid};
use super::keys::ENV_PREFIX;
use super::platforms::{PlatformSettings, secret_env};
use super::redis_url::RedisUrl;
use super::sections::{AmqpSettings, AppSettings, CallbackMode, StateSettings};
use super::settings::{Settings, Uses};

impl Settings {
    /// Checks every rule the types alone cannot express.
    pub(crate) fn validate(&self, uses: Uses) -> Result<(), ConfigError> {
        validate_nodes(&self.amqp)?;
        if let Some(url) = &self.amqp.management_url
            && reqwest::Url::parse(url.expose())
                .map(|u| !matches!(u.scheme(), "http" | "https") || !u.has_host())
                .unwrap_or(true)
        {
            return Err(invalid(
                "amqp.management_url",
                "must be an http:// or https:// URL",
            ));
        }
        if reqwest::Url::parse(&self.wechat.base_url)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            return Err(invalid(
                "wechat.base_url",
                "must be an http:// or https:// URL",
            ));
        }
        if self.retry.max_delay < self.retry.initial_delay.into() {
            return Err(invalid("retry.max_delay", "must be >= retry.initial_delay"));
        }
        if self.retry.max_pause < self.retry.pause.into() {
            return Err(invalid("retry.max_pause", "must be >= retry.pause"));
        }
        if let Some(window) = self.http.callback_window()
            && window < Duration::from_secs(1)
        {
            return Err(invalid(
                "http.callback_max_age",
                "must be at least 1s (timestamps are in seconds), or \"0s\" to turn it off",
            ));
        }
        validate_state(&self.state)?;
        if let Some(listen) = &self.http.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "http.listen",
                "must be an address such as 0.0.0.0:8080",
            ));
        }
        self.admin.validate(&self.http)?;
        for (name, app) in &self.apps {
            validate_app(name, app, uses)?;
        }
        for (name, platform) in &self.platforms {
            validate_platform(name, platform, uses)?;
            if self.apps.contains_key(name) {
                return Err(invalid(
                    format!("platforms.{name}"),
                    format!("has the name of [apps.{name}]: each has a job queue of that name"),
                ));
            }
        }
        validate_lookups(self)?;
        Ok(())
    }
}

/// Every node of `amqp.url` must parse; errors say which node, never what it holds (the URL
/// carries the password).
fn validate_nodes(amqp: &AmqpSettings) -> Result<(), ConfigError> {
    let nodes = amqp.nodes();
    for (i, node) in nodes.iter().enumerate() {
        let which = if nodes.len() == 1 {
            String::new()
        } else {
            format!(" (node {} of {})", i + 1, nodes.len())
        };
        if node.is_empty() {
            return Err(invalid("amqp.url", format!("is empty{which}")));
        }
        if !(node.starts_with("amqp://") || node.starts_with("amqps://")) {
            return Err(invalid(
                "amqp.url",
                format!("must start with amqp:// or amqps://{which}"),
            ));
        }
        if node.parse::<lapin::uri::AMQPUri>().is_err() {
            return Err(invalid(
                "amqp.url",
                format!("is not a valid amqp:// or amqps:// URL{which}"),
            ));
        }
    }
    Ok(())
}

/// `memory`, or a Redis URL for one node, a Sentinel-watched primary or a Cluster; TLS always
/// with the certificate checked.
fn validate_state(state: &StateSettings) -> Result<(), ConfigError> {
    let url = state.url.expose();
    if url == "memory" {
        if state.ca_file.is_some() {
            return Err(not_encrypted());
        }
        return Ok(());
    }
    let parsed = RedisUrl::parse(url).map_err(|why| invalid("state.url", why))?;
    let tls = parsed.tls();
    if tls && url.contains('#') {
        return Err(invalid(
            "state.url",
            "must not end in a #fragment: #insecure would skip the server's certificate check; \
             for a private CA set state.ca_file",
        ));
    }
    if state.ca_file.is_some() && !tls {
        return Err(not_encrypted());
    }
    Ok(())
}

fn not_encrypted() -> ConfigError {
    invalid(
        "state.ca_file",
        "is only used with a TLS state.url (rediss://, rediss+sentinel://, rediss+cluster://); \
         with this URL the connection would not be encrypted",
    )
}

fn validate_app(name: &str, app: &AppSettings, uses: Uses) -> Result<(), ConfigError> {
    let key = |field: &str| format!("apps.{name}.{field}");
    if !is_app_name(name) {
        return Err(invalid(
            format!("apps.{name}"),
            "must be named with 1-32 of a-z, 0-9 and _",
        ));
    }
    if app.appid.is_empty() {
        return Err(invalid(key("appid"), "is missing"));
    }
    if app.paused_templates.iter().any(|t| t.trim().is_empty()) {
        return Err(invalid(
            key("paused_templates"),
            "must name templates by their template_id (an empty one pauses nothing)",
        ));
    }
    if app.secret.is_empty() && uses == Uses::Everything {
        return Err(invalid(
            key("secret"),
            format!(
                "is missing: set it in the file or in {ENV_PREFIX}APPS__{}__SECRET",
                name.to_ascii_uppercase()
            ),
        ));
    }
    if let Some(aes) = &app.encoding_aes_key {
        if crate::types::decode_aes_key(aes.expose()).is_none() {
            return Err(invalid(
                key("encoding_aes_key"),
                "must be the 43-character EncodingAESKey from the WeChat console",
            ));
        }
        if app.callback_token.is_none() {
            return Err(invalid(
                key("callback_token"),
                "is required when encoding_aes_key is set",
            ));
        }
    }
    super::quiet::validate(name, app)?;
    if let Some(mode) = app.callback_mode {
        if app.callback_token.is_none() {
            return Err(invalid(
                key("callback_token"),
                format!(
                    "is required when callback_mode is set (it is {})",
                    mode.as_str()
                ),
            ));
        }
        if mode != CallbackMode::Plain && app.encoding_aes_key.is_none() {
            return Err(invalid(
                key("encoding_aes_key"),
                format!(
                    "is required when callback_mode is {}: set the EncodingAESKey from the WeChat console",
                    mode.as_str()
                ),
            ));
        }
    }
    if app.cap_mode.is_some() && app.recipient_limit.is_none() {
        return Err(invalid(
            key("cap_mode"),
            format!(
                "is set but {}, the cap it applies to, is not",
                key("recipient_limit")
            ),
        ));
    }
    Ok(())
}

/// The template catalog and the quota gauges poll WeChat: at most once a second.
fn validate_lookups(s: &Settings) -> Result<(), ConfigError> {
    let second = Duration::from_secs(1);
    let quota = s.wechat.daily_quota_refresh.0;
    if !quota.is_zero() && quota < second {
        return Err(invalid(
            "wechat.daily_quota_refresh",
            "must be at least 1s, or \"0s\" to turn it off",
        ));
    }
    if let Some(name) = s
        .apps
        .iter()
        .find_map(|(name, app)| (app.catalog_refresh.0 < second).then_some(name))
    {
        return Err(invalid(
            format!("apps.{name}.catalog_refresh"),
            "must be at least 1s",
        ));
    }
    if let Some(name) = s
        .apps
        .iter()
        .find_map(|(name, app)| (app.gate_ttl.0 < second).then_some(name))
    {
        return Err(invalid(
            format!("apps.{name}.gate_ttl"),
            "must be at least 1s",
        ));
    }
    Ok(())
}

/// An account a job can be for: a configured app's name, or a platform's authorizer,
/// `NAME:APPID` (NAME as an app's, APPID 1-32 letters and digits).
pub(crate) fn is_account_name(name: &str) -> bool {
    match name.split_once(':') {
        None => is_app_name(name),
        Some((platform, appid)) => is_app_name(platform) && is_authorizer_appid(appid),
    }
}

/// Whether `appid` can be a platform authorizer's AppID: it becomes part of an account name, a
/// routing key and a queue binding, so 1-32 letters and digits (WeChat's are `wx` and 16 hex
/// digits).
pub(crate) fn is_authorizer_appid(appid: &str) -> bool {
    (1..=32).contains(&appid.len()) && appid.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// App names become routing keys and queue names: `[a-z0-9_]{1,32}`.
pub(crate) fn is_app_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The rules of one `[platforms.NAME]` table; the secret only for the verbs that call WeChat.
fn validate_platform(
    name: &str,
    platform: &PlatformSettings,
    uses: Uses,
) -> Result<(), ConfigError> {
    let key = |field: &str| format!("platforms.{name}.{field}");
    if !is_app_name(name) {
        return Err(invalid(
            format!("platforms.{name}"),
            "must be named with 1-32 of a-z, 0-9 and _",
        ));
    }
    if platform.component_appid.is_empty() {
        return Err(invalid(key("component_appid"), "is missing"));
    }
    if platform.token.is_empty() {
        return Err(invalid(
            key("token"),
            "is missing: the message-check Token of the platform's console",
        ));
    }
    if platform.aes_key().is_none() {
        return Err(invalid(
            key("encoding_aes_key"),
            "must be the 43-character EncodingAESKey of the platform's console",
        ));
    }
    if platform.component_secret.is_empty() && uses == Uses::Everything {
        return Err(invalid(
            key("component_secret"),
            format!("is missing: set {}", secret_env(name)),
        ));
    }
    // Each look reads WeChat's whole authorizer list, which has a daily quota of its own.
    if platform.reconcile_every.get() < std::time::Duration::from_secs(60) {
        return Err(invalid(
            key("reconcile_every"),
            "must be at least 1m: each reconciliation reads WeChat's whole authorizer list",
        ));
    }
    // Taken and ignored, it would promise checks that never happen.
    if platform.catalog {
        return Err(invalid(
            key("catalog"),
            "is not supported yet: authorizers' template jobs are not checked against their \
             template lists; leave it false",
        ));
    }
    Ok(())
}
