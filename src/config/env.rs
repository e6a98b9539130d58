//! The environment layer: `WXCOURIER_…` variables as keys (two underscores between levels),
//! the keys read raw, and figment's errors told as one sentence naming the key and variable.

use figment::providers::Serialized;

use super::error::ConfigError;
use super::keys::{ENV_PREFIX, env_path};
use super::renamed::{self, RenamedKey};

/// Keys that hold secrets or opaque strings: read raw from the environment so that a value
/// such as `0123` is never reinterpreted as the number 123.
const RAW_STRING_APP_KEYS: [&str; 4] = ["secret", "callback_token", "encoding_aes_key", "appid"];
/// The same for a `[platforms.NAME]` table.
const RAW_STRING_PLATFORM_KEYS: [&str; 4] = [
    "component_appid",
    "component_secret",
    "token",
    "encoding_aes_key",
];

/// `WXCOURIER_APPS__SHOP__SECRET` → `("apps", "shop", "secret")`, and
/// `WXCOURIER_PLATFORMS__SAAS__COMPONENT_SECRET` → `("platforms", "saas", "component_secret")`,
/// for the keys read raw.
pub(super) fn raw_key(env_key: &str) -> Option<(&'static str, String, &'static str)> {
    let rest = env_key.strip_prefix(ENV_PREFIX)?;
    let (section, rest, fields) = if let Some(rest) = rest.strip_prefix("APPS__") {
        ("apps", rest, &RAW_STRING_APP_KEYS)
    } else {
        let rest = rest.strip_prefix("PLATFORMS__")?;
        ("platforms", rest, &RAW_STRING_PLATFORM_KEYS)
    };
    let (name, field) = rest.split_once("__")?;
    let field = field.to_ascii_lowercase();
    let field = fields.iter().copied().find(|k| *k == field)?;
    Some((section, name.to_ascii_lowercase(), field))
}

pub(super) fn env_provider(vars: &[(String, String)]) -> Serialized<figment::value::Dict> {
    // The nested dictionary is built here (not by figment's `Env`) so that tests can pass an
    // environment explicitly; values are typed the way figment types environment values.
    let mut dict = figment::value::Dict::new();
    for (key, value) in vars {
        let path = env_path(key);
        let parsed: figment::value::Value = value.parse().expect("parsing a value is infallible");
        insert_path(&mut dict, &path, parsed);
    }
    Serialized::defaults(dict)
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    use figment::value::{Dict, Value};
    let (head, rest) = path.split_first().expect("path is non-empty");
    if rest.is_empty() {
        dict.insert(head.clone(), value);
        return;
    }
    let entry = dict
        .entry(head.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if let Value::Dict(_, inner) = entry {
        insert_path(inner, rest, value);
    } else {
        *entry = Value::from(Dict::new());
        if let Value::Dict(_, inner) = entry {
            insert_path(inner, rest, value);
        }
    }
}

/// Turns figment's error into one sentence that names the key, and the variable when the key
/// came from the environment (`WXCOURIER_AMQP_URL` reads as the top-level key `amqp_url`).
pub(super) fn describe_figment_error(
    err: figment::Error,
    env: &[(String, String)],
    renamed_keys: &[RenamedKey],
) -> ConfigError {
    // A value under a former name is reported under the name it was written with.
    let from_env = |full: &str| {
        env.iter()
            .find(|(k, _)| renamed::current(&env_path(k).join(".")) == full)
            .map(|(k, _)| format!(" (set by {k})"))
            .or_else(|| {
                renamed_keys
                    .iter()
                    .find(|r| r.key == full && !r.written.starts_with(ENV_PREFIX))
                    .map(|r| format!(" (written as {})", r.written))
            })
            .unwrap_or_default()
    };
    let mut sentences = Vec::new();
    for e in err {
        let key = e.path.join(".");
        let what = match &e.kind {
            figment::error::Kind::UnknownField(field, _) => {
                // figment's path already ends with the unknown field.
                let full = if e.path.last() == Some(field) || key.is_empty() {
                    key.clone()
                } else {
                    format!("{key}.{field}")
                };
                let full = if full.is_empty() { field.clone() } else { full };
                format!("{full} is not a known key{}", from_env(&full))
            }
            figment::error::Kind::MissingField(field) => {
                let full = if key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                };
                format!("{full} is missing")
            }
            kind if key.is_empty() => kind.to_string(),
            // The value types' own rules ("must be > 0") read as a sentence after the key.
            figment::error::Kind::Message(rule)
                if rule.starts_with("must ") || rule.starts_with("is ") =>
            {
                format!("{key}{} {rule}", from_env(&key))
            }
            kind => format!("{key}{}: {kind}", from_env(&key)),
        };
        sentences.push(what);
    }
    ConfigError::Parse(one_line(&sentences.join("; ")))
}

/// TOML errors come with a drawn excerpt of the file; keep the words, on one line.
fn one_line(text: &str) -> String {
    let is_excerpt = |l: &str| {
        l.starts_with('|')
            || l.split_once('|')
                .is_some_and(|(n, _)| n.trim().parse::<u32>().is_ok())
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_excerpt(l))
        .collect::<Vec<_>>()
        .join(" ")
}
