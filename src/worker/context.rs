//! What the worker runs on: its context, built once per process by [`crate::startup`], and each
//! app as it is served. In a file of its own so the consumers and the peer watch, which read it,
//! need not reach back into `worker/mod.rs`, which starts them.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::CurrentPublisher;
use crate::config::{AmqpSettings, AppSettings};
use crate::daily_quota;
use crate::metrics::Metrics;
use crate::state::{PlatformStore, State};
use crate::telemetry::Health;
use crate::trail::Trails;
use crate::wechat::lookup::Lookup;

use super::deps::{AppDeps, Deps};

/// Everything the worker needs, built once per process by [`crate::startup`] from the
/// settings: only what the worker reads, derived once, never the settings themselves.
pub struct Context {
    /// The broker: its nodes, the prefetch, consumers per connection, the publish deadline.
    pub(crate) amqp: AmqpSettings,
    /// How long a stop waits for the jobs in flight (`worker.drain_timeout`).
    pub(crate) drain_timeout: Duration,
    /// WeChat calls in flight at most across all apps (`wechat.max_in_flight`).
    pub(crate) wechat_slots: usize,
    /// Every configured app, with what its consumer and its lookups hold.
    pub(crate) apps: Vec<ServedApp>,
    /// What the pipeline reads and calls.
    pub(crate) pipeline: Deps,
    pub(crate) state: Arc<State>,
    pub health: Health,
    pub metrics: Arc<Metrics>,
    /// The current session's publisher, shared with the callback for delivery reports.
    pub results: CurrentPublisher,
    /// Whether results no queue takes are kept in `wxcourier.results.unrouted`
    /// (`results.keep_unrouted`).
    pub(crate) keep_unrouted: bool,
    /// Each job's story, kept as the consumers settle its steps.
    pub(crate) trails: Arc<Trails>,
    /// Third-party platforms, whose authorizers' jobs share one queue per platform.
    pub(crate) platforms: Vec<ServedPlatform>,
}

/// A third-party platform as the worker serves it: one queue for all its authorizers, bound to
/// each active one as the state's authorizers change.
pub(crate) struct ServedPlatform {
    pub(crate) name: String,
    pub(crate) component_appid: String,
    pub(crate) store: Arc<dyn PlatformStore>,
    /// Told when this process kept a change of an authorizer: the bindings follow at once.
    pub(crate) changed: Arc<tokio::sync::Notify>,
}

/// One configured app as the worker serves it: its name, its part of the pipeline's context
/// (the same one the pipeline finds by name), and its polls beside the sends.
pub(crate) struct ServedApp {
    pub(crate) name: String,
    pub(crate) deps: Arc<AppDeps>,
    /// How often the catalog is fetched again (`apps.NAME.catalog_refresh`); used only when
    /// the app has a catalog.
    pub(crate) catalog_refresh: Duration,
    /// The WeChat endpoints whose daily quota is polled, and how often (`wechat.quota_refresh`;
    /// zero: never).
    pub(crate) quota_endpoints: Vec<&'static str>,
    pub(crate) quota_refresh: Duration,
}

impl ServedApp {
    /// `name`'s part of the pipeline's context and its polls, from its settings.
    pub(crate) fn new(
        name: &str,
        deps: AppDeps,
        settings: &AppSettings,
        quota_refresh: Duration,
    ) -> Self {
        Self {
            name: name.to_owned(),
            deps: Arc::new(deps),
            catalog_refresh: settings.catalog_refresh.0,
            quota_endpoints: daily_quota::endpoints(settings),
            quota_refresh,
        }
    }
}

impl Context {
    pub(crate) fn app_names(&self) -> Vec<String> {
        self.apps.iter().map(|a| a.name.clone()).collect()
    }

    /// The WeChat lookups of `app`, with its token.
    pub(super) fn lookup<'a>(&'a self, app: &'a AppDeps) -> Lookup<'a> {
        Lookup {
            client: &self.pipeline.wechat,
            keeper: &app.keeper,
            classifier: &self.pipeline.classifier,
        }
    }
}
