//! Job queues no configured app or platform consumes (an app removed from the config while its
//! jobs still wait): found at start and by `check`, so they never disappear silently.
//!
//! AMQP cannot list queues, so the names come from RabbitMQ's management HTTP API; the depths
//! come from AMQP (a passive declare), which is exact where the API's figures lag by seconds.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

pub use super::management::{ManagementApi, ManagementError};
use super::names::JOBS_EXCHANGE;
use crate::config::Settings;
use crate::metrics::Metrics;

/// A `wxcourier.jobs.*` queue without a configured app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub queue: String,
    /// Messages waiting in it; `None` when the queue could not be inspected (it was deleted
    /// meanwhile, or another connection holds it exclusively).
    pub messages: Option<u32>,
}

impl Orphan {
    /// The queue and its depth, as the orphan gauges take them.
    pub fn gauge(&self) -> (&str, Option<u32>) {
        (&self.queue, self.messages)
    }
}

/// The names among `names` that are job queues of no app and no third-party platform (whose
/// authorizers share one queue, `wxcourier.jobs.NAME`) in `settings`, sorted.
pub(crate) fn orphan_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
    settings: &Settings,
) -> Vec<String> {
    let prefix = format!("{JOBS_EXCHANGE}.");
    let served =
        |name: &str| settings.apps.contains_key(name) || settings.platforms.contains_key(name);
    let mut found: Vec<String> = names
        .into_iter()
        .filter(|n| n.strip_prefix(&prefix).is_some_and(|name| !served(name)))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The job queues without a configured app, with their depths, read over `conn`.
pub async fn find(
    settings: &Settings,
    api: &ManagementApi,
    conn: &Connection,
) -> Result<Vec<Orphan>, ManagementError> {
    let names = api.queue_names().await?;
    let mut orphans = Vec::new();
    let mut channel: Option<Channel> = None;
    for queue in orphan_names(names.iter().map(String::as_str), settings) {
        let messages = depth(conn, &mut channel, &queue).await;
        orphans.push(Orphan { queue, messages });
    }
    // Closed before the connection is: closing a connection under a channel still open makes
    // lapin log an error about the channel's state.
    if let Some(ch) = channel {
        let _ = ch.close(200, "checked".into()).await;
    }
    Ok(orphans)
}

/// A passive declare; a failure (404, 405) closes the channel, so the next queue gets a new one.
async fn depth(conn: &Connection, channel: &mut Option<Channel>, queue: &str) -> Option<u32> {
    if channel.as_ref().is_none_or(|c| !c.status().connected()) {
        *channel = conn.create_channel().await.ok();
    }
    let ch = channel.as_ref()?;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match ch
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
    {
        Ok(q) => Some(q.message_count()),
        Err(_) => {
            *channel = None;
            None
        }
    }
}

/// Once at start: warns about every job queue without an app, naming it and its depth, and
/// sets the `orphan_*` gauges. A broker without a reachable management API is said once at
/// info level; the worker goes on either way.
pub(crate) async fn report_at_start(settings: &Settings, metrics: &Metrics) {
    let api = match ManagementApi::from_settings(&settings.amqp) {
        Ok(api) => api,
        Err(e) => {
            tracing::info!(error = %e, "not checking for job queues without an app");
            return;
        }
    };
    let conn = match super::connect(&settings.amqp, "wxcourier orphan check").await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::info!(error = %e, "not checking for job queues without an app");
            return;
        }
    };
    match find(settings, &api, &conn).await {
        Ok(orphans) => {
            metrics.set_orphans(orphans.iter().map(Orphan::gauge));
            for o in &orphans {
                match o.messages {
                    Some(n) => tracing::warn!(
                        queue = %o.queue,
                        messages = n,
                        "job queue with no configured app: its jobs are not sent; configure the app again, or move its jobs and delete the queue"
                    ),
                    None => tracing::warn!(
                        queue = %o.queue,
                        "job queue with no configured app (its depth could not be read): its jobs are not sent"
                    ),
                }
            }
        }
        Err(e) => tracing::info!(
            management = %api.describe(),
            error = %e,
            "cannot list queues through the RabbitMQ management API; not checking for job queues without an app"
        ),
    }
    let _ = conn.close(200, "orphan check done".into()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppSettings, PlatformSettings};
    use crate::types::Secret;

    #[test]
    fn only_job_queues_of_unconfigured_apps_and_platforms_are_orphans() {
        let mut settings = Settings::default();
        settings
            .apps
            .insert("shop".to_owned(), AppSettings::new("wx1", Secret::new("s")));
        let platform = PlatformSettings::new(
            "wxc1",
            Secret::new("s"),
            Secret::new("t"),
            Secret::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
        );
        settings.platforms.insert("saas".to_owned(), platform);
        let names = [
            "wxcourier.jobs.saas",
            "wxcourier.jobs.shop",
            "wxcourier.jobs.old_shop",
            "wxcourier.jobs.",
            "wxcourier.jobsx",
            "wxcourier.dead",
            "wxcourier.retry.1000ms",
            "other.jobs.gone",
            "wxcourier.jobs.old_shop",
        ];
        assert_eq!(
            orphan_names(names, &settings),
            vec!["wxcourier.jobs.", "wxcourier.jobs.old_shop"]
        );
    }
}
