//! `wxcourier run`: the worker daemon.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::shared::{ConfigArg, bad_config, termination};
use crate::startup::Application;

/// Apps named in the start line.
const STARTING_APPS_NAMED: usize = 10;

pub(crate) async fn run(args: ConfigArg) -> ExitCode {
    let terminated = termination();
    let settings = match args.load().and_then(|s| s.require_apps().map(|_| s)) {
        Ok(s) => s,
        Err(e) => return bad_config(&e),
    };
    let export = match crate::telemetry::init_logging(&settings.log) {
        Ok(export) => export,
        Err(e) => {
            eprintln!("wxcourier: {e}");
            return ExitCode::from(super::shared::EXIT_BAD_CONFIG);
        }
    };
    settings.log_load_notes();
    let app = match Application::build(settings) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("wxcourier: cannot start: {e}");
            return ExitCode::from(super::shared::EXIT_BAD_CONFIG);
        }
    };
    let ctx = &app.pipeline;
    // A platform may serve thousands of apps: the start line names the first few only.
    let names: Vec<_> = ctx
        .apps
        .iter()
        .take(STARTING_APPS_NAMED)
        .map(|a| &a.name)
        .collect();
    tracing::info!(apps = ctx.apps.len(), first = ?names, "wxcourier starting");
    let stop = CancellationToken::new();
    // The signal is awaited here, beside the run, not in a task of its own: every task the
    // process starts belongs to the run.
    let running = app.run(stop.clone());
    tokio::pin!(running);
    let result = tokio::select! {
        result = &mut running => result,
        _ = terminated => {
            tracing::info!("stop requested; draining");
            stop.cancel();
            running.await
        }
    };
    if let Some(export) = export {
        export.finish().await;
    }
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
