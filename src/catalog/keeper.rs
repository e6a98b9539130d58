//! Keeps a catalog fresh: fetches the template list at start and every `catalog_refresh`,
//! logging what changed, and keeping the last good list when a fetch fails.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Catalog;
use super::list::{self, Listed};
use crate::wechat::lookup::{Lookup, LookupError};

/// Fetches the account's templates once.
pub async fn fetch(lookup: &Lookup<'_>) -> Result<Listed, LookupError> {
    let answer = lookup.call(list::PATH, None).await?;
    list::parse(&answer).map_err(|e| {
        LookupError::Call(crate::wechat::client::CallError::Body(format!(
            "the template list: {e}"
        )))
    })
}

/// Fetches once into `catalog`, logging the outcome; returns whether it worked.
pub(crate) async fn refresh(catalog: &Catalog, lookup: &Lookup<'_>) -> bool {
    match fetch(lookup).await {
        Ok(listed) => {
            let before = catalog.templates();
            let ids = |ts: &[super::Template]| ts.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
            let added: Vec<String> = listed
                .templates
                .iter()
                .filter(|t| before.as_ref().is_none_or(|b| !b.contains_key(&t.id)))
                .map(|t| t.id.clone())
                .collect();
            let removed: Vec<String> = before
                .as_ref()
                .map(|b| {
                    let now = ids(&listed.templates);
                    b.keys().filter(|id| !now.contains(id)).cloned().collect()
                })
                .unwrap_or_default();
            if listed.skipped > 0 {
                tracing::warn!(app = %catalog.app, skipped = listed.skipped, "template list entries without a usable template_id were skipped");
            }
            if before.is_none() {
                tracing::info!(app = %catalog.app, templates = listed.templates.len(), "template catalog loaded");
            } else if !added.is_empty() || !removed.is_empty() {
                tracing::info!(app = %catalog.app, added = %added.join(", "), removed = %removed.join(", "), "template catalog changed");
            }
            catalog.replace(listed.templates);
            true
        }
        Err(e) => {
            match catalog.templates() {
                Some(last) => {
                    tracing::warn!(app = %catalog.app, error = %e, templates = last.len(), "cannot refresh the template catalog; the last one fetched stays in force")
                }
                None => {
                    tracing::warn!(app = %catalog.app, error = %e, "cannot fetch the template catalog; template jobs are sent unchecked until it loads")
                }
            }
            catalog.fetch_failed();
            false
        }
    }
}

/// Refreshes `catalog` now and every `every` until `stop`.
pub(crate) async fn keep(
    catalog: &Catalog,
    lookup: Lookup<'_>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        refresh(catalog, &lookup).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
