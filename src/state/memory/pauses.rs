//! The run-time pauses of one process's apps, in memory: the record behind `MemoryState`'s
//! `Pauses`.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::state::pauses::Paused;

/// Each app's record; an app with nothing paused has no entry.
#[derive(Default)]
pub(crate) struct PauseBook(Mutex<HashMap<String, Paused>>);

impl PauseBook {
    pub(crate) fn get(&self, app: &str) -> Paused {
        self.0.lock().get(app).cloned().unwrap_or_default()
    }

    /// Applies `change` to the app's record and returns the record after it.
    pub(crate) fn change(&self, app: &str, change: impl FnOnce(Paused) -> Paused) -> Paused {
        let mut book = self.0.lock();
        let now = change(book.remove(app).unwrap_or_default());
        if !now.is_empty() {
            book.insert(app.to_owned(), now.clone());
        }
        now
    }
}
