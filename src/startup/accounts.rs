//! What each account the pipeline sends for is built from: one [`AppBuilder`] makes an app's
//! part of the pipeline's context (its token keeper, rate, quota gate, kill switch, catalog)
//! from its settings, for the configured apps at start and for a third-party platform's
//! authorizers ([`PlatformAccounts`]) the first time a job names one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::catalog::Catalog;
use crate::config::is_authorizer_appid;
use crate::config::{AppSettings, Settings};
use crate::limiter::AppLimiter;
use crate::metrics::{AppMetrics, Metrics};
use crate::pause::PauseGate;
use crate::platform::Platform;
use crate::platform::authorizer_token::AuthorizerTokenSource;
use crate::preferences::AppGates;
use crate::retry::Schedule;
use crate::state::State;
use crate::types::Secret;
use crate::wechat::client::WechatClient;
use crate::wechat::shared_token::SharedTokenSource;
use crate::wechat::token::{TokenKeeper, TokenSource, WechatTokenSource};
use crate::worker::deps::Accounts;
use crate::worker::{AppDeps, KillSwitch};

/// Builds an account's part of the pipeline's context.
#[derive(Clone)]
pub(super) struct AppBuilder {
    pub(super) metrics: Arc<Metrics>,
    pub(super) state: Arc<State>,
    pub(super) schedule: Schedule,
    pub(super) gates: AppGates,
    /// How long the first catalog fetch may hold jobs at start.
    pub(super) catalog_wait: Duration,
}

impl AppBuilder {
    pub(super) fn new(
        settings: &Settings,
        metrics: Arc<Metrics>,
        state: Arc<State>,
        gates: AppGates,
    ) -> Self {
        Self {
            metrics,
            state,
            schedule: Schedule::new(&settings.retry),
            gates,
            // The first fetch takes a token and a list call, each within the timeout; jobs at
            // start wait that long for it, no longer.
            catalog_wait: settings.wechat.timeout.get() * 2 + Duration::from_secs(1),
        }
    }

    /// `name`'s part of the context, its token from `tokens` (through the shared token when
    /// the state shares one).
    pub(super) fn build(
        &self,
        name: &str,
        app: &AppSettings,
        tokens: Box<dyn TokenSource>,
    ) -> AppDeps {
        let metrics = &self.metrics;
        let tokens: Box<dyn TokenSource> = match self.state.token_share() {
            Some(shared) => Box::new(SharedTokenSource {
                app: name.to_owned(),
                shared,
                wechat: tokens,
            }),
            None => tokens,
        };
        AppDeps {
            metrics: AppMetrics::new(metrics.clone(), name),
            keeper: TokenKeeper::new(tokens),
            rate: AppLimiter::new(name, app, self.state.rate_share()),
            rate_park: None,
            gate: PauseGate::new(
                name,
                self.schedule.clone(),
                metrics
                    .app_paused
                    .get_or_create(&Metrics::app(name))
                    .clone(),
            ),
            kinds: app.kinds.clone(),
            reading: app.reading(),
            limits: app.limits(),
            quiet: app.quiet_policy(),
            switch: KillSwitch::new(name, &app.paused_templates, app.pause_mode, metrics.clone()),
            preferences: self.gates.of(name).cloned(),
            catalog: app.catalog.then(|| {
                Catalog::new(
                    name,
                    self.catalog_wait,
                    metrics
                        .catalog_templates
                        .get_or_create(&Metrics::app(name))
                        .clone(),
                )
            }),
        }
    }

    /// A configured app: its token from WeChat in its token mode.
    pub(super) fn app(&self, name: &str, app: &AppSettings, wechat: &WechatClient) -> AppDeps {
        let source = WechatTokenSource {
            client: wechat.clone(),
            appid: app.appid.clone(),
            secret: app.secret.clone(),
            mode: app.token_mode,
            fetched: self
                .metrics
                .token_refreshes
                .get_or_create(&Metrics::app(name))
                .clone(),
        };
        self.build(name, app, Box::new(source))
    }
}

/// The longest an authorizer's job waits in the worker for its turn at the rate. An account
/// sending at 50/s keeps about a dozen jobs here; a backlog beyond that waits in the delay tiers,
/// so the platform queue's prefetch keeps moving for the other authorizers.
const RATE_PARK_AFTER: Duration = Duration::from_millis(250);

/// The authorizers of every configured platform, as accounts named `NAME:APPID`. One is built
/// the first time a job names it and kept while the process runs; whether it may still send
/// is its token's question (a revoked authorizer's token fetch says so).
pub(super) struct PlatformAccounts {
    platforms: HashMap<String, (Arc<Platform>, AppSettings)>,
    builder: AppBuilder,
    built: RwLock<HashMap<String, Arc<AppDeps>>>,
}

impl PlatformAccounts {
    pub(super) fn new(platforms: &[Arc<Platform>], builder: AppBuilder) -> Self {
        let platforms = platforms
            .iter()
            .map(|p| {
                let s = &p.settings;
                // An authorizer sends as an app with the platform's defaults; its secret is
                // never known, and no configured app's per-app policy applies to it.
                let app = AppSettings {
                    rate_per_second: s.rate_per_second,
                    burst: s.burst,
                    kinds: s.kinds.clone(),
                    ..AppSettings::new(String::new(), Secret::default())
                };
                (p.name.clone(), (p.clone(), app))
            })
            .collect();
        Self {
            platforms,
            builder,
            built: RwLock::new(HashMap::new()),
        }
    }
}

impl Accounts<crate::worker::deps::Live> for PlatformAccounts {
    fn account(&self, name: &str) -> Option<Arc<AppDeps>> {
        if let Some(found) = self.built.read().get(name) {
            return Some(found.clone());
        }
        let (platform, appid) = name.split_once(':')?;
        let (platform, app) = self.platforms.get(platform)?;
        if !is_authorizer_appid(appid) {
            return None;
        }
        let source = AuthorizerTokenSource {
            platform: platform.clone(),
            appid: appid.to_owned(),
        };
        let mut built = self.built.write();
        let deps = built.entry(name.to_owned()).or_insert_with(|| {
            let mut deps = self.builder.build(name, app, Box::new(source));
            // Its jobs share the platform's queue with every other authorizer's.
            deps.rate_park = Some(RATE_PARK_AFTER);
            Arc::new(deps)
        });
        Some(deps.clone())
    }
}
