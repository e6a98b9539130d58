//! Whether shared state can be trusted right now. While Redis is unreachable the worker stops
//! consuming (jobs wait in the broker) rather than send without de-duplication or limits.

use tokio::sync::watch;

/// Up or down, watched by the consumers and `/readyz`.
pub struct StateHealth {
    up: watch::Sender<bool>,
}

impl Default for StateHealth {
    fn default() -> Self {
        Self {
            up: watch::channel(true).0,
        }
    }
}

impl StateHealth {
    /// Starts down for a backend that must prove itself reachable first.
    pub(crate) fn starting_down() -> Self {
        Self {
            up: watch::channel(false).0,
        }
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Records a failed call; logged once per outage.
    pub(crate) fn mark_down(&self, why: &str) {
        if self.up.send_replace(false) {
            tracing::error!(
                error = why,
                "shared state (Redis) unreachable: consuming stops until it is back"
            );
        }
    }

    pub(crate) fn mark_up(&self) {
        if !self.up.send_replace(true) {
            tracing::info!("shared state (Redis) reachable again: consuming resumes");
        }
    }

    /// Resolves when the state goes down.
    pub(crate) async fn down(&self) {
        let mut rx = self.up.subscribe();
        let _ = rx.wait_for(|up| !*up).await;
    }

    /// Resolves when the state is up.
    pub(crate) async fn up(&self) {
        let mut rx = self.up.subscribe();
        let _ = rx.wait_for(|up| *up).await;
    }
}
