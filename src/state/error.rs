//! Why shared state failed: a call that got no usable answer, a setting that cannot open a
//! backend, or a backend that lacks a capability the settings need.

use std::time::Duration;

/// A state failure. Callers branch on it only as "state, not WeChat": a Redis outage must
/// never read as "cannot reach WeChat" in a log or an outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The backend refused or dropped the call (connection, TLS, an error reply).
    #[error("shared state (Redis) is unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer in time.
    #[error("shared state (Redis) is unavailable: no answer within {0:?}")]
    Timeout(Duration),
    /// Another instance held the shared token's refresh lock past its time.
    #[error("another instance held the shared access token's refresh lock for over {0:?}")]
    LockHeld(Duration),
    /// `state.url` or `state.ca_file` cannot open a backend.
    #[error("{0}")]
    Settings(String),
    /// A backend shared by every instance lacks a capability the settings need.
    #[error(
        "state.url ({backend}) shares sent ids between instances but not {capability}, which {needed_by} needs; use a backend that provides it (redis://…)"
    )]
    Lacks {
        backend: &'static str,
        capability: &'static str,
        needed_by: String,
    },
}

pub(crate) type StateResult<T> = Result<T, StateError>;
