//! A configuration problem, always naming the key to fix; in a file of its own so every part of
//! the config module can make one without reaching back into `config/mod.rs`.

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

pub(super) fn invalid(key: impl Into<String>, rule: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        rule: rule.into(),
    }
}
