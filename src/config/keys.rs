//! How a key is written in the environment: the variables' prefix, and a variable's name read
//! as a key's path. Both the environment layer and the former key names read them.

/// Prefix of every environment variable that overrides a key.
pub(crate) const ENV_PREFIX: &str = "WXCOURIER_";

/// `WXCOURIER_APPS__SHOP__RATE_PER_SECOND` → `["apps", "shop", "rate_per_second"]`.
pub(super) fn env_path(key: &str) -> Vec<String> {
    key[ENV_PREFIX.len()..]
        .split("__")
        .map(|p| p.to_ascii_lowercase())
        .collect()
}
