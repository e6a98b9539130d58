//! `wxcourier run`: the worker daemon.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{ConfigArg, bad_config, termination};
use crate::startup::Application;

/// Apps named in the start line.
const STARTING_APPS_NAMED: usize = 10;

pub(crate) async fn run(args: ConfigArg) -> ExitCode {
    let terminated = termination();
    let settings = match args.load().and_then(|s| s.require_apps().map(|_| s)) {
        Ok(s) => s,
        Err(e) => return bad_config(&e),
    };
    crate::telemetry::init_logging(&settings.log);
    settings.log_load_notes();
    let app = match Application::build(settings) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("wxcourier: cannot start: {e}");
            return ExitCode::from(super::EXIT_BAD_CONFIG);
        }
    };
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            terminated.await;
            tracing::info!("stop requested; draining");
            stop.cancel();
        });
    }
    let ctx = app.pipeline.clone();
    // A platform may serve thousands of apps: the start line names the first few only.
    let names: Vec<_> = ctx.pipeline.apps.keys().take(STARTING_APPS_NAMED).collect();
    tracing::info!(apps = ctx.pipeline.apps.len(), first = ?names, "wxcourier starting");
    {
        // Once, beside the start: a slow or missing management API never delays consuming.
        tokio::spawn(async move {
            crate::broker::orphans::report_at_start(&ctx.settings, &ctx.metrics).await;
        });
    }
    let result = app.run(stop.clone()).await;
    stop.cancel();
    match result {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wxcourier: {e}");
            ExitCode::FAILURE
        }
    }
}
