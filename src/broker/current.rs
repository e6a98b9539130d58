//! The publisher of the broker session in force, shared between the worker, which opens and
//! closes sessions, and the callback receiver, which publishes delivery reports on it.

use std::sync::Arc;

use parking_lot::RwLock;

use super::publish::Publisher;

/// The current session's publisher; `None` while disconnected. Clones share one slot.
#[derive(Clone, Default)]
pub struct CurrentPublisher(Arc<RwLock<Option<Publisher>>>);

impl CurrentPublisher {
    /// Puts a new session's publisher in force, or `None` once the session ends.
    pub(crate) fn set(&self, publisher: Option<Publisher>) {
        *self.0.write() = publisher;
    }

    /// The publisher in force, if a session is up.
    pub fn get(&self) -> Option<Publisher> {
        self.0.read().clone()
    }
}
