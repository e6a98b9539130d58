//! Keys that took a new name so that each name has one meaning ("pause" for the 45009 pause,
//! "daily_quota" for the quota WeChat reports per API). The old name is still read, from the file
//! and from the environment, and each use of it is kept for `run` to warn about; both names in
//! one source is an error naming both, since the two values could disagree.

use figment::value::{Dict, Value};

use super::error::{ConfigError, invalid};
use super::keys::{ENV_PREFIX, env_path};

/// Old key → the key it is now, as dotted paths of one section and one field.
const RENAMED: [(&str, &str); 3] = [
    ("retry.quota_pause", "retry.pause"),
    ("retry.max_quota_pause", "retry.max_pause"),
    ("wechat.quota_refresh", "wechat.daily_quota_refresh"),
];

/// One use of an old name: where it was written (a key of the file, or a variable) and the key
/// it now goes by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RenamedKey {
    pub(crate) written: String,
    pub(crate) key: &'static str,
}

impl RenamedKey {
    /// The warning `run` logs, naming the key to write instead.
    pub(crate) fn advice(&self) -> String {
        format!(
            "{} is the former name of {}: it is still read, but write {} instead",
            self.written,
            self.key,
            written_as(self.key, self.written.starts_with(ENV_PREFIX))
        )
    }
}

/// `retry.pause`, or `WXCOURIER_RETRY__PAUSE` when the old name was a variable.
fn written_as(key: &str, variable: bool) -> String {
    if variable {
        format!(
            "{ENV_PREFIX}{}",
            key.replace('.', "__").to_ascii_uppercase()
        )
    } else {
        key.to_owned()
    }
}

/// The key a dotted path means today: `retry.quota_pause` → `retry.pause`; others unchanged.
pub(super) fn current(path: &str) -> &str {
    RENAMED
        .iter()
        .find(|(old, _)| *old == path)
        .map_or(path, |(_, new)| new)
}

/// Moves the file's old keys to their new names.
pub(super) fn rename_in_file(file: &mut Dict) -> Result<Vec<RenamedKey>, ConfigError> {
    let mut renamed = Vec::new();
    for (old, new) in RENAMED {
        let (section, old_field) = old.split_once('.').expect("a section and a field");
        let new_field = &new[section.len() + 1..];
        let Some(Value::Dict(_, table)) = file.get_mut(section) else {
            continue;
        };
        let Some(value) = table.remove(old_field) else {
            continue;
        };
        if table.contains_key(new_field) {
            return Err(both(new, old));
        }
        table.insert(new_field.to_owned(), value);
        renamed.push(RenamedKey {
            written: old.to_owned(),
            key: new,
        });
    }
    Ok(renamed)
}

/// `WXCOURIER_…` variables as (name, value).
type Vars = Vec<(String, String)>;

/// The variables with old names given their new names, and the uses of old names.
pub(super) fn rename_in_env(
    vars: &[(String, String)],
) -> Result<(Vars, Vec<RenamedKey>), ConfigError> {
    let named = |path: &str| vars.iter().find(|(k, _)| env_path(k).join(".") == path);
    let mut renamed = Vec::new();
    let mut out = vars.to_vec();
    for (old, new) in RENAMED {
        let Some((old_var, _)) = named(old) else {
            continue;
        };
        if let Some((new_var, _)) = named(new) {
            return Err(both(new_var, old_var));
        }
        for (k, _) in out.iter_mut().filter(|(k, _)| k == old_var) {
            *k = written_as(new, true);
        }
        renamed.push(RenamedKey {
            written: old_var.clone(),
            key: new,
        });
    }
    Ok((out, renamed))
}

fn both(new: &str, old: &str) -> ConfigError {
    invalid(
        new,
        format!("and {old} are both set: {old} is the former name of {new}; keep {new} only"),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{MINIMAL, load};

    /// Each renamed key: its old and new name in the file, the variables, and a value.
    const CASES: [(&str, &str, &str, &str, &str, &str, u64); 3] = [
        (
            "retry",
            "quota_pause",
            "pause",
            "WXCOURIER_RETRY__QUOTA_PAUSE",
            "WXCOURIER_RETRY__PAUSE",
            "7s",
            7,
        ),
        (
            "retry",
            "max_quota_pause",
            "max_pause",
            "WXCOURIER_RETRY__MAX_QUOTA_PAUSE",
            "WXCOURIER_RETRY__MAX_PAUSE",
            "2h",
            7200,
        ),
        (
            "wechat",
            "quota_refresh",
            "daily_quota_refresh",
            "WXCOURIER_WECHAT__QUOTA_REFRESH",
            "WXCOURIER_WECHAT__DAILY_QUOTA_REFRESH",
            "9m",
            540,
        ),
    ];

    fn value(s: &super::super::Settings, field: &str) -> Duration {
        match field {
            "pause" => s.retry.pause.get(),
            "max_pause" => s.retry.max_pause.0,
            "daily_quota_refresh" => s.wechat.daily_quota_refresh.0,
            _ => unreachable!("{field}"),
        }
    }

    #[test]
    fn an_old_name_in_the_file_still_works_and_is_kept_for_a_warning_naming_the_new_key() {
        for (section, old, new, _, _, text, secs) in CASES {
            let s = load(&format!("{MINIMAL}[{section}]\n{old} = \"{text}\"\n"), &[]).unwrap();
            assert_eq!(value(&s, new), Duration::from_secs(secs), "{old}");
            assert_eq!(s.renamed_keys.len(), 1, "{old}: one warning");
            let advice = s.renamed_keys[0].advice();
            assert!(
                advice.contains(&format!("{section}.{old}"))
                    && advice.contains(&format!("write {section}.{new} instead")),
                "{advice}"
            );
        }
    }

    #[test]
    fn an_old_variable_still_works_and_is_kept_for_a_warning_naming_the_new_variable() {
        for (_, old, new, old_var, new_var, text, secs) in CASES {
            let s = load(MINIMAL, &[(old_var, text)]).unwrap();
            assert_eq!(value(&s, new), Duration::from_secs(secs), "{old}");
            assert_eq!(s.renamed_keys.len(), 1, "{old}: one warning");
            let advice = s.renamed_keys[0].advice();
            assert!(
                advice.contains(old_var) && advice.contains(&format!("write {new_var} instead")),
                "{advice}"
            );
        }
    }

    #[test]
    fn a_new_name_works_without_a_warning() {
        for (section, _, new, _, new_var, text, secs) in CASES {
            let s = load(&format!("{MINIMAL}[{section}]\n{new} = \"{text}\"\n"), &[]).unwrap();
            assert_eq!(value(&s, new), Duration::from_secs(secs), "{new}");
            let s = load(MINIMAL, &[(new_var, text)]).unwrap();
            assert_eq!(value(&s, new), Duration::from_secs(secs), "{new_var}");
            assert!(s.renamed_keys.is_empty(), "{:?}", s.renamed_keys);
        }
    }

    #[test]
    fn both_names_at_once_are_an_error_naming_both() {
        for (section, old, new, old_var, new_var, text, _) in CASES {
            let err = load(
                &format!("{MINIMAL}[{section}]\n{old} = \"{text}\"\n{new} = \"{text}\"\n"),
                &[],
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with(&format!("{section}.{new} and {section}.{old} are both set")),
                "{err}"
            );
            let err = load(MINIMAL, &[(old_var, text), (new_var, text)])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("{new_var} and {old_var} are both set")),
                "{err}"
            );
        }
    }

    #[test]
    fn an_old_name_in_the_file_is_overridden_by_the_new_variable_as_any_key_is() {
        let s = load(
            &format!("{MINIMAL}[retry]\nquota_pause = \"7s\"\n"),
            &[("WXCOURIER_RETRY__PAUSE", "9s")],
        )
        .unwrap();
        assert_eq!(s.retry.pause.get(), Duration::from_secs(9));
    }

    #[test]
    fn a_bad_value_under_an_old_name_is_named_as_written() {
        let err = load(&format!("{MINIMAL}[retry]\nquota_pause = \"0s\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "retry.pause (written as retry.quota_pause) must be longer than 0s"
        );
        let err = load(MINIMAL, &[("WXCOURIER_RETRY__QUOTA_PAUSE", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("retry.pause (set by WXCOURIER_RETRY__QUOTA_PAUSE)"),
            "{err}"
        );
    }

    #[test]
    fn run_logs_one_warning_per_old_name_naming_the_new_key() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let s = load(
            &format!("{MINIMAL}[retry]\nquota_pause = \"7s\"\n"),
            &[("WXCOURIER_WECHAT__QUOTA_REFRESH", "9m")],
        )
        .unwrap();
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || s.log_load_notes());
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 2, "{text}");
        assert!(warnings[0].contains("write retry.pause instead"), "{text}");
        assert!(
            warnings[1].contains("write WXCOURIER_WECHAT__DAILY_QUOTA_REFRESH instead"),
            "{text}"
        );
    }
}
