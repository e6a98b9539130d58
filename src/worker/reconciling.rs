//! Keeps each platform's refresh tokens reconciled with WeChat's authorizer list: one instance
//! per `platforms.NAME.reconcile_every` (a claim in the state), and at once after the state
//! lost its data, since the claim went with it. Each instance looks every few seconds; a look
//! is one state write when the round is not due.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::platform::Platform;
use crate::platform::reconcile::RECONCILE_ROUND;

/// How often an instance looks whether the round is due.
const LOOK: Duration = Duration::from_secs(5);

/// How long a failed round waits before any instance tries again: the list has a daily quota.
const AFTER_FAILURE: Duration = Duration::from_secs(300);

/// Runs until `stop`.
pub(crate) async fn keep(
    platform: Arc<Platform>,
    every: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        reconcile_if_due(&platform, every, &metrics).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(LOOK) => {}
        }
    }
}

/// One look: once the platform has a ticket (without one there is no component token to read
/// the list with), claims the round and reconciles.
async fn reconcile_if_due(platform: &Platform, every: Duration, metrics: &Metrics) {
    let (store, component) = (&platform.store, platform.component_appid());
    if !matches!(store.ticket(component).await, Ok(Some(_))) {
        return;
    }
    if !matches!(
        store.claim_round(component, RECONCILE_ROUND, every).await,
        Ok(true)
    ) {
        return;
    }
    match platform.reconcile().await {
        Ok(found) => {
            metrics.reconciled(&platform.name, Some(found.restored.len()));
            let level_info = found.restored.is_empty() && found.without_token.is_empty();
            if level_info {
                tracing::info!(
                    platform = platform.name,
                    listed = found.listed,
                    not_listed = found.not_listed,
                    "refresh tokens reconciled with the authorizer list: none missing"
                );
            } else {
                tracing::warn!(
                    platform = platform.name,
                    listed = found.listed,
                    restored = ?found.restored,
                    without_token = ?found.without_token,
                    not_listed = found.not_listed,
                    "refresh tokens the state had lost were kept again from the authorizer list"
                );
            }
        }
        Err(e) => {
            metrics.reconciled(&platform.name, None);
            tracing::warn!(platform = platform.name, error = %e, "cannot reconcile the refresh tokens with the authorizer list; tried again in 5 minutes");
            // Held for a shorter while, so some instance tries again soon, but not at every look.
            let _ = store.release_round(component, RECONCILE_ROUND).await;
            let _ = store
                .claim_round(component, RECONCILE_ROUND, AFTER_FAILURE)
                .await;
        }
    }
}
