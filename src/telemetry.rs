//! Logs (human or JSON) and the health flags behind `/healthz` and `/readyz`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Starts logging to stderr. `RUST_LOG` wins over `log.level`. Colour only on a terminal: a
/// log collector (journald, `kubectl logs`, a file) would otherwise store escape codes.
pub(crate) fn init_logging(settings: &LogSettings) {
    let spec = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|s| !s.is_empty() && EnvFilter::try_new(s).is_ok())
        .unwrap_or_else(|| settings.level.clone());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = quiet_returns(filter, &spec);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// lapin logs a warning for every message the broker returns, with the whole message in it (a
/// job's recipient and `meta`): results no queue takes are counted and warned about once per
/// app and status instead (`broker::returned`), so that line per message is left out, unless
/// the filter names lapin itself.
const QUIET_RETURNS: &str = "lapin::returned_messages=error";

fn quiet_returns(filter: EnvFilter, spec: &str) -> EnvFilter {
    if spec.contains("lapin") {
        return filter;
    }
    filter.add_directive(QUIET_RETURNS.parse().expect("a valid directive"))
}

/// Whether the worker is ready to take work: connected, consuming, not draining.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapins_line_per_returned_message_is_left_out_unless_lapin_is_named() {
        let quiet = quiet_returns(EnvFilter::new("info"), "info").to_string();
        assert!(quiet.contains(QUIET_RETURNS), "{quiet}");
        let spec = "info,lapin=debug";
        let asked = quiet_returns(EnvFilter::new(spec), spec).to_string();
        assert!(!asked.contains("returned_messages"), "{asked}");
    }
}
