//! What every verb shares: the `--config` argument, the exit codes of CONTRACT §7, the
//! bad-config report and the stop signals. In a file of its own, so the verbs need not reach
//! back into `cli/mod.rs`, which dispatches to them.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{ConfigError, Settings, Uses};

/// Exit code for a configuration that cannot be used (CONTRACT §7).
pub(super) const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code for arguments that cannot be used: the code clap gives its own argument errors.
/// Success is `ExitCode::SUCCESS` (0) and any other failure `ExitCode::FAILURE` (1).
pub(super) const EXIT_USAGE: u8 = 2;

#[derive(clap::Args, Clone, Default)]
pub(crate) struct ConfigArg {
    /// The TOML config (default config/default.toml; if that is missing, built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    pub(super) fn load(&self) -> Result<Settings, ConfigError> {
        Settings::load(self.config.as_deref())
    }

    /// The settings for a verb that only talks to the broker: the apps' secrets may be absent.
    pub(super) fn load_for_broker(&self) -> Result<Settings, ConfigError> {
        Settings::load_for(self.config.as_deref(), Uses::BrokerOnly)
    }
}

/// Prints a config problem as one sentence and returns the bad-config exit code.
pub(super) fn bad_config(e: &ConfigError) -> ExitCode {
    eprintln!("wxcourier: bad config: {e}");
    ExitCode::from(EXIT_BAD_CONFIG)
}

/// Takes over SIGTERM and SIGINT now, and returns a future that resolves on the first of them.
/// Registering before any work starts matters: a signal that arrives before the handlers
/// exist kills the process outright instead of draining it.
pub(super) fn termination() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A Unix time as the verbs print it: RFC 3339 in UTC, or the number when it is no date.
pub(super) fn when(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}
