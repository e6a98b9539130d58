//! Logs (human or JSON), spans to an OpenTelemetry collector when `log.otlp` is on, and the
//! health flags behind `/healthz` and `/readyz`.

mod export;
mod otlp;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings};

pub(crate) use otlp::{Export, SetupError, adopt_parent, exporting, link_to};

/// Starts logging to stderr, and with `log.otlp` the span export. `RUST_LOG` wins over
/// `log.level` for the log; the export takes the worker's own spans at `info` whatever the log
/// shows. Colour only on a terminal: a log collector (journald, `kubectl logs`, a file) would
/// otherwise store escape codes. Needs the tokio runtime when `log.otlp` is on.
pub(crate) fn init_logging(settings: &LogSettings) -> Result<Option<Export>, SetupError> {
    let spec = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|s| !s.is_empty() && EnvFilter::try_new(s).is_ok())
        .unwrap_or_else(|| settings.level.clone());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = quiet_returns(filter, &spec);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match settings.format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Human => fmt.boxed(),
    };
    let (export, failed) = match settings.otlp {
        true => match otlp::start() {
            Ok(export) => (Some(export), None),
            Err(e) => (None, Some(e)),
        },
        false => (None, None),
    };
    let spans = export.as_ref().map(|e| {
        tracing_opentelemetry::layer()
            .with_tracer(e.tracer.clone())
            .with_filter(Targets::new().with_target("wxcourier", Level::INFO))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(spans)
        .try_init();
    match failed {
        Some(e) => Err(e),
        None => Ok(export),
    }
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
