//! The HTTP server on `http.listen`: `/healthz`, `/readyz`, `/metrics`, and serving them
//! with the callback's routes within the limits of `[http]`.

pub(crate) mod admin;
pub(crate) mod server;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::sync::Arc;

use crate::config::HttpSettings;
use crate::metrics::Metrics;
use crate::state;
use crate::telemetry::Health;

/// What the health and metrics routes read.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) health: Health,
    /// Shared state's reachability is part of readiness.
    pub(crate) state: Arc<state::State>,
    pub(crate) metrics: Arc<Metrics>,
}

/// `/healthz`, `/readyz` and `/metrics`; the callback's routes are merged in at start-up.
pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Ready: connected, consuming, not draining, and shared state (Redis) reachable.
async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.health.is_ready() && s.state.health().is_up() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(s): State<HttpState>) -> impl axum::response::IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// Binds `listen` and serves until `stop` fires, within the limits of `[http]`: the accept
/// loop and each connection are tasks on `tasks`.
pub(crate) async fn serve(
    listen: &str,
    settings: &HttpSettings,
    app: Router,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let limits = server::Limits::from(settings);
    tracing::info!(%listen, max_connections = limits.max_connections, "http listening");
    tasks.spawn(server::run(listener, app, limits, stop, tasks.clone()));
    Ok(())
}
