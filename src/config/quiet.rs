//! `apps.NAME.quiet_hours`, `timezone`, `quiet_mode` and `quiet_spread`: the rule that spans
//! them (the spread must fit in the hours that are not quiet), and the policy the pipeline
//! gets. Each value alone is checked by its own type while the file is read.

use super::error::{ConfigError, invalid};
use super::sections::AppSettings;
use crate::quiet_hours::{QuietHours, QuietPolicy};

/// A spread as long as the hours that are not quiet would send some held jobs into the next
/// night, to be held again.
pub(super) fn validate(name: &str, app: &AppSettings) -> Result<(), ConfigError> {
    let Some(window) = app.quiet_hours else {
        return Ok(());
    };
    let open = window.open_each_day();
    if app.quiet_spread.0 >= open {
        return Err(invalid(
            format!("apps.{name}.quiet_spread"),
            format!(
                "must be shorter than the {} each day outside quiet_hours = \"{window}\"",
                humantime::format_duration(open)
            ),
        ));
    }
    Ok(())
}

impl AppSettings {
    /// The app's quiet hours as the pipeline applies them; `None` without `quiet_hours`.
    pub(crate) fn quiet_policy(&self) -> Option<QuietPolicy> {
        Some(QuietPolicy {
            hours: QuietHours {
                window: self.quiet_hours?,
                zone: self.timezone.clone(),
            },
            mode: self.quiet_mode,
            spread: self.quiet_spread.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{MINIMAL, load};
    use crate::quiet_hours::QuietMode;

    fn error(extra: &str) -> String {
        load(&format!("{MINIMAL}{extra}"), &[])
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn quiet_hours_are_off_by_default_with_the_contracts_defaults_beside_them() {
        let s = load(MINIMAL, &[]).unwrap();
        let app = &s.apps["shop"];
        assert_eq!(app.quiet_hours, None);
        assert!(app.quiet_policy().is_none());
        assert_eq!(app.timezone.name(), "Asia/Shanghai");
        assert_eq!(app.quiet_mode, QuietMode::Defer);
        assert_eq!(app.quiet_spread.0, Duration::from_secs(600));
    }

    #[test]
    fn quiet_hours_are_read_from_the_file_or_the_environment() {
        let s = load(
            &format!(
                "{MINIMAL}quiet_hours = \"22:00-08:00\"\ntimezone = \"America/New_York\"\n\
                 quiet_mode = \"drop\"\nquiet_spread = \"2m\"\n"
            ),
            &[],
        )
        .unwrap();
        let policy = s.apps["shop"].quiet_policy().unwrap();
        assert_eq!(policy.hours.window.to_string(), "22:00-08:00");
        assert_eq!(policy.hours.zone.name(), "America/New_York");
        assert_eq!(policy.mode, QuietMode::Drop);
        assert_eq!(policy.spread, Duration::from_secs(120));
        let s = load(
            MINIMAL,
            &[
                ("WXCOURIER_APPS__SHOP__QUIET_HOURS", "23:00-07:30"),
                ("WXCOURIER_APPS__SHOP__TIMEZONE", "Europe/Berlin"),
            ],
        )
        .unwrap();
        let policy = s.apps["shop"].quiet_policy().unwrap();
        assert_eq!(policy.hours.window.to_string(), "23:00-07:30");
        assert_eq!(policy.hours.zone.name(), "Europe/Berlin");
        assert_eq!(policy.mode, QuietMode::Defer);
    }

    #[test]
    fn bad_quiet_settings_are_refused_naming_the_key() {
        for (extra, key, rule) in [
            (
                "quiet_hours = \"25:00-08:00\"\n",
                "apps.shop.quiet_hours",
                "not a time of day",
            ),
            (
                "quiet_hours = \"22-08\"\n",
                "apps.shop.quiet_hours",
                "HH:MM-HH:MM",
            ),
            (
                "quiet_hours = \"08:00-08:00\"\n",
                "apps.shop.quiet_hours",
                "is empty",
            ),
            ("quiet_hours = 22\n", "apps.shop.quiet_hours", "22:00-08:00"),
            (
                "timezone = \"Mars/Olympus\"\n",
                "apps.shop.timezone",
                "IANA",
            ),
            ("quiet_mode = \"later\"\n", "apps.shop.quiet_mode", "defer"),
            (
                "quiet_spread = \"soon\"\n",
                "apps.shop.quiet_spread",
                "duration",
            ),
            (
                "quiet_hours = \"22:00-21:55\"\nquiet_spread = \"5m\"\n",
                "apps.shop.quiet_spread",
                "shorter than the 5m each day outside",
            ),
        ] {
            let e = error(extra);
            assert!(e.contains(key) && e.contains(rule), "{extra}: {e}");
        }
        // A spread that fits is fine, and "0s" turns it off.
        load(
            &format!("{MINIMAL}quiet_hours = \"22:00-21:55\"\nquiet_spread = \"4m\"\n"),
            &[],
        )
        .unwrap();
        load(
            &format!("{MINIMAL}quiet_hours = \"22:00-08:00\"\nquiet_spread = \"0s\"\n"),
            &[],
        )
        .unwrap();
    }
}
