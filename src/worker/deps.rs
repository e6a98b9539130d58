//! What the pipeline needs and nothing more: the seams it calls through (WeChat, the
//! idempotency store, each app's rate gate and token keeper, the clock) and the few settings it
//! reads. [`Live`] names the production implementations; the pipeline's tests name fakes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Catalog;
use crate::config::{AppSettings, Settings};
use crate::job::{Job, Rejection};
use crate::limiter::{AppLimiter, InFlight, RateGate};
use crate::metrics::{AppMetrics, Metrics};
use crate::quota::QuotaGate;
use crate::retry::Schedule;
use crate::state::{Idempotency, State, StateError};
use crate::wechat::client::{CallError, WechatApi, WechatClient};
use crate::wechat::errcode::Classifier;
use crate::wechat::reason::ReasonCodes;
use crate::wechat::shared_token::SharedTokenSource;
use crate::wechat::token::{TokenKeeper, TokenSource, WechatTokenSource};

use super::clock::{Clock, SystemClock};

/// The implementations behind the pipeline's seams, chosen together. Static dispatch: the
/// pipeline calls each of them for every job.
pub trait Seams: Send + Sync + 'static {
    type Wechat: WechatApi;
    type Store: Idempotency;
    type Rate: RateGate;
    type Clock: Clock;
}

/// Production: HTTP to WeChat, the configured state backend, the apps' limiters, the system
/// clock.
pub struct Live;

impl Seams for Live {
    type Wechat = WechatClient;
    type Store = State;
    type Rate = AppLimiter;
    type Clock = SystemClock;
}

/// One configured app, as the pipeline sees it.
pub struct AppDeps<S: Seams = Live> {
    pub metrics: AppMetrics,
    /// The token seam: a keeper over the app's token source.
    pub keeper: TokenKeeper,
    pub rate: S::Rate,
    pub gate: QuotaGate,
    /// `apps.NAME.kinds`: the kinds this app sends.
    pub kinds: Vec<String>,
    /// The account's templates, when `apps.NAME.catalog` is on.
    pub catalog: Option<Catalog>,
}

impl<S: Seams> AppDeps<S> {
    /// Whether this app may send jobs of `kind`.
    pub fn sends(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }

    /// Why the app's catalog refuses `job`, if it does (CONTRACT: rejected, never sent).
    pub async fn catalog_refusal(&self, job: &Job) -> Option<Rejection> {
        let catalog = self.catalog.as_ref()?;
        let e = catalog.check(job).await.err()?;
        Some(Rejection {
            id: Some(job.id.clone()),
            field: e.field,
            rule: e.rule,
            meta: job.meta.clone(),
            kind: Some(job.kind.name()),
        })
    }
}

/// Everything [`super::process`] reads or calls.
pub struct Deps<S: Seams = Live> {
    pub wechat: S::Wechat,
    pub store: Arc<S::Store>,
    pub clock: S::Clock,
    pub apps: HashMap<String, AppDeps<S>>,
    pub schedule: Schedule,
    pub classifier: Classifier,
    /// `wechat.reason_codes`: the `reason` of a failed outcome.
    pub reasons: ReasonCodes,
    /// How long a claim on a job id lasts without being renewed.
    pub claim_ttl: Duration,
    /// The cap on WeChat calls in flight across all apps.
    pub in_flight: InFlight,
    pub metrics: Arc<Metrics>,
}

impl<S: Seams> Deps<S> {
    /// A configured app. Deliveries only come from configured apps' queues.
    pub fn app(&self, name: &str) -> &AppDeps<S> {
        &self.apps[name]
    }
}

/// How long a claim on a job id lasts if its holder dies. The claim is renewed right before
/// the send once it has aged a third of this, so it outlives the call and the record that
/// follows; a redelivered job waits behind a dead holder's claim for about this long at most.
pub fn claim_ttl(settings: &Settings) -> Duration {
    settings.wechat.timeout.0 * 3 + Duration::from_secs(30)
}

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error("cannot set up the WeChat client: {0}")]
    Wechat(#[from] CallError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl Deps<Live> {
    /// The production pipeline over `state`. Fails when the backend lacks a capability the
    /// settings need across instances ([`crate::state::Capabilities::check`]); with one it
    /// provides, tokens and rates go through it.
    pub fn live(
        settings: &Settings,
        state: Arc<State>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, DepsError> {
        state.capabilities().check(settings)?;
        let wechat = WechatClient::new(&settings.wechat.base_url, settings.wechat.timeout.0)?;
        let schedule = Schedule::new(&settings.retry);
        let apps = settings
            .apps
            .iter()
            .map(|(name, app)| {
                let deps = AppDeps {
                    metrics: AppMetrics::new(metrics.clone(), name),
                    keeper: TokenKeeper::new(token_source(name, app, &wechat, &state, &metrics)),
                    rate: AppLimiter::new(name, app, state.rate_share()),
                    gate: QuotaGate::new(
                        name,
                        schedule.clone(),
                        metrics
                            .app_paused
                            .get_or_create(&Metrics::app(name))
                            .clone(),
                    ),
                    kinds: app.kinds.clone(),
                    catalog: app.catalog.then(|| {
                        // The first fetch takes a token and a list call, each within the
                        // timeout; jobs at start wait that long for it, no longer.
                        Catalog::new(
                            name,
                            settings.wechat.timeout.0 * 2 + Duration::from_secs(1),
                            metrics
                                .catalog_templates
                                .get_or_create(&Metrics::app(name))
                                .clone(),
                        )
                    }),
                };
                (name.clone(), deps)
            })
            .collect();
        Ok(Self {
            classifier: Classifier::from_settings(&settings.wechat),
            reasons: settings.wechat.reason_codes.clone(),
            in_flight: InFlight::new(settings.wechat.max_in_flight),
            claim_ttl: claim_ttl(settings),
            store: state,
            clock: SystemClock,
            wechat,
            apps,
            schedule,
            metrics,
        })
    }
}

/// WeChat in the app's mode; through the shared token when the backend shares one, so every
/// instance uses one token and one refresh.
fn token_source(
    name: &str,
    app: &AppSettings,
    wechat: &WechatClient,
    state: &State,
    metrics: &Metrics,
) -> Box<dyn TokenSource> {
    let source = WechatTokenSource {
        client: wechat.clone(),
        appid: app.appid.clone(),
        secret: app.secret.clone(),
        mode: app.token_mode,
        fetched: metrics
            .token_refreshes
            .get_or_create(&Metrics::app(name))
            .clone(),
    };
    match state.token_share() {
        Some(shared) => Box::new(SharedTokenSource {
            app: name.to_owned(),
            shared,
            wechat: source,
        }),
        None => Box::new(source),
    }
}
