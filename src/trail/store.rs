//! Where stories are kept: in the process with memory state, in Redis with Redis state (a
//! capped list per job, `wxcourier:{APP}:trail:ID`, so all of an app's keys share one Cluster
//! slot). Keeping a step is best effort: a failure is counted and logged, never a job's
//! failure.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::entry::{Entry, MAX_STEPS, Story};
use super::memory::MemoryTrails;
use crate::state::{RedisState, State, StateError};

/// Stories beyond this many jobs are dropped from memory state, oldest first: a few KiB each
/// at most, so a few tens of MiB in all.
pub(crate) const MEMORY_JOBS: usize = 20_000;

enum Backend {
    Memory(MemoryTrails),
    Redis(Arc<RedisState>),
}

/// The stories of every job, in the configured backend.
pub struct Trails {
    backend: Backend,
    ttl: Duration,
    /// Steps that could not be kept.
    failures: Counter,
}

impl Trails {
    /// In the backend `state` is: Redis's, or this process's memory. `failures` counts the
    /// steps that could not be kept.
    pub fn for_state(state: &State, ttl: Duration, failures: Counter) -> Self {
        let backend = match state {
            State::Memory(..) => Backend::Memory(MemoryTrails::new(ttl, MEMORY_JOBS)),
            State::Redis(redis) => Backend::Redis(redis.clone()),
        };
        Self {
            backend,
            ttl,
            failures,
        }
    }

    /// Keeps `steps` at the end of the job's story, best effort: a failure is counted and
    /// logged (without the steps' contents), never returned.
    pub async fn keep(&self, app: &str, id: &str, steps: &[Entry]) {
        if steps.is_empty() {
            return;
        }
        if let Err(e) = self.append(app, id, steps).await {
            self.failures.inc();
            tracing::debug!(app, error = %e, "a job's step could not be kept for its story");
        }
    }

    async fn append(&self, app: &str, id: &str, steps: &[Entry]) -> Result<(), StateError> {
        match &self.backend {
            Backend::Memory(m) => {
                m.append(app, id, steps, std::time::Instant::now());
                Ok(())
            }
            Backend::Redis(r) => {
                let encoded: Vec<String> = steps.iter().map(Entry::encode).collect();
                r.trail_append(app, id, &encoded, MAX_STEPS, self.ttl).await
            }
        }
    }

    /// The job's story, or `None` when nothing is kept for it (an unknown id, or one
    /// forgotten after `state.trail_ttl`).
    pub async fn story(&self, app: &str, id: &str) -> Result<Option<Story>, StateError> {
        let steps = match &self.backend {
            Backend::Memory(m) => m.read(app, id, std::time::Instant::now()),
            Backend::Redis(r) => r
                .trail_read(app, id)
                .await?
                .iter()
                .filter_map(|text| Entry::decode(text))
                .collect(),
        };
        Ok(Story::new(app, id, steps))
    }
}
