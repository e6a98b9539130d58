//! The worker's HTTP server on `http.listen`: `/healthz`, `/readyz`, `/metrics` and the
//! WeChat callback.

pub mod server;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::config::HttpSettings;
use crate::worker::Context;

pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ctx.clone())
        .merge(crate::callback::routes(ctx))
}

/// Ready: connected, consuming, not draining, and shared state (Redis) reachable.
async fn readyz(State(ctx): State<Arc<Context>>) -> (StatusCode, &'static str) {
    if ctx.health.is_ready() && ctx.state.health().is_up() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> impl axum::response::IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
}

/// Binds `listen` and serves until `stop` fires, within the limits of `[http]`.
pub async fn serve(
    listen: &str,
    settings: &HttpSettings,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let limits = server::Limits::from(settings);
    tracing::info!(%listen, max_connections = limits.max_connections, "http listening");
    tokio::spawn(server::run(listener, app, limits, stop));
    Ok(())
}
