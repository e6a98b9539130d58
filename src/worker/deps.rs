//! What the pipeline needs and nothing more: the seams it calls through (WeChat, the
//! idempotency store, each app's rate gate and token keeper, the clock) and the few settings it
//! reads. [`Live`] names the production implementations, which [`crate::startup`] builds; the
//! pipeline's tests name fakes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Catalog;
use crate::config::{AppKinds, AppLimits, ReasonCodes};
use crate::job::{Job, Rejection};
use crate::kinds::ReadOptions;
use crate::limiter::{AppLimiter, InFlight, RateGate};
use crate::metrics::{AppMetrics, Metrics};
use crate::pause::PauseGate;
use crate::preferences::PreferenceGates;
use crate::quiet_hours::QuietPolicy;
use crate::retry::Schedule;
use crate::state::{Cancels, ClaimReserving, State};
use crate::wechat::client::{WechatApi, WechatClient};
use crate::wechat::errcode::Classifier;
use crate::wechat::token::TokenKeeper;

use crate::clock::{Clock, SystemClock};

use super::kill_switch::KillSwitch;

/// The implementations behind the pipeline's seams, chosen together. Static dispatch: the
/// pipeline calls each of them for every job.
pub(crate) trait Seams: Send + Sync + 'static {
    type Wechat: WechatApi;
    type Store: ClaimReserving + Cancels;
    type Rate: RateGate;
    type Clock: Clock;
}

/// Production: HTTP to WeChat, the configured state backend, the apps' limiters, the system
/// clock.
pub(crate) struct Live;

impl Seams for Live {
    type Wechat = WechatClient;
    type Store = State;
    type Rate = AppLimiter;
    type Clock = SystemClock;
}

/// One configured app, as the pipeline sees it.
pub(crate) struct AppDeps<S: Seams = Live> {
    pub(crate) metrics: AppMetrics,
    /// The token seam: a keeper over the app's token source.
    pub(crate) keeper: TokenKeeper,
    pub(crate) rate: S::Rate,
    /// On a queue other accounts share (a platform's), the longest a job waits here for its
    /// turn at the rate; one that would wait longer waits in the delay tiers instead, so it
    /// does not hold a share of the queue's prefetch the other accounts' jobs need. `None` on
    /// an app's own queue, where only its own jobs are behind it.
    pub(crate) rate_park: Option<Duration>,
    pub(crate) gate: PauseGate,
    /// `apps.NAME.kinds`: the kinds this app sends.
    pub(crate) kinds: AppKinds,
    /// The account's templates, when `apps.NAME.catalog` is on.
    pub(crate) catalog: Option<Catalog>,
    /// How this app's jobs are read (`apps.NAME.truncate`).
    pub(crate) reading: ReadOptions,
    /// `apps.NAME.recipient_limit` and `content_dedup`.
    pub(crate) limits: AppLimits,
    /// `apps.NAME.quiet_hours`, when set.
    pub(crate) quiet: Option<QuietPolicy>,
    /// Which of its templates are paused (`apps.NAME.paused_templates`, `wxcourier pause`).
    pub(crate) switch: KillSwitch,
    /// The app's preference gates, when it honours preferences (`apps.NAME.honor_preferences`).
    pub(crate) preferences: Option<PreferenceGates>,
}

impl<S: Seams> AppDeps<S> {
    /// Why the app's catalog refuses `job`, if it does (CONTRACT: rejected, never sent).
    pub(crate) async fn catalog_refusal(&self, job: &Job) -> Option<Rejection> {
        let catalog = self.catalog.as_ref()?;
        let e = catalog.check(job).await.err()?;
        Some(Rejection {
            id: Some(job.id.clone()),
            field: e.field,
            rule: e.rule,
            meta: job.meta.clone(),
            kind: Some(job.kind),
        })
    }
}

/// Everything [`super::pipeline::process`] reads or calls.
pub(crate) struct Deps<S: Seams = Live> {
    pub(crate) wechat: S::Wechat,
    pub(crate) store: Arc<S::Store>,
    pub(crate) clock: S::Clock,
    /// Shared with the consumer and the lookups of each app, which hold their app's own.
    pub(crate) apps: HashMap<String, Arc<AppDeps<S>>>,
    /// Accounts learnt at run time (a third-party platform's authorizers), found by name when
    /// no configured app has it.
    pub(crate) accounts: Option<Arc<dyn Accounts<S>>>,
    pub(crate) schedule: Schedule,
    pub(crate) classifier: Classifier,
    /// `wechat.reason_codes`: the `reason` of a failed outcome.
    pub(crate) reasons: ReasonCodes,
    /// How long a claim on a job id lasts without being renewed.
    pub(crate) claim_ttl: Duration,
    /// The cap on WeChat calls in flight across all apps.
    pub(crate) in_flight: InFlight,
    pub(crate) metrics: Arc<Metrics>,
}

/// Where accounts that are not in the config come from: built the first time a job names
/// one, and `None` for a name that is no such account (or one that cannot send now).
pub(crate) trait Accounts<S: Seams>: Send + Sync {
    fn account(&self, name: &str) -> Option<Arc<AppDeps<S>>>;
}

impl<S: Seams> Deps<S> {
    /// The configured app or learnt account `name`; `None` for a name that is neither.
    pub(crate) fn app(&self, name: &str) -> Option<Arc<AppDeps<S>>> {
        if let Some(app) = self.apps.get(name) {
            return Some(app.clone());
        }
        self.accounts.as_ref()?.account(name)
    }
}
