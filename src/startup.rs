//! Start-up: builds each part's own state from the settings — the pipeline's context, the
//! callback receiver's state, the HTTP server's state — and runs them under one stop signal,
//! every task they start owned by one tracker that the run waits for. Only here do the parts
//! meet; none of them imports another to reach its state.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod accounts;

use crate::broker::{self, CurrentPublisher};
use crate::callback::{self, CallbackState};
use crate::clock::SystemClock;
use crate::config::{Settings, WechatSettings};
use crate::http::admin::AdminState;
use crate::http::{self, HttpState};
use crate::limiter::InFlight;
use crate::metrics::Metrics;
use crate::platform::Platform;
use crate::platform::receiver::{self, PlatformReceiver};
use crate::preferences::AppGates;
use crate::retry::Schedule;
use crate::state::State;
use crate::telemetry::Health;
use crate::trail::Trails;
use crate::wechat::client::WechatClient;
use crate::wechat::errcode::Classifier;
use crate::worker::deps::{Accounts, Live};
use crate::worker::{self, Context, Deps, ServedApp, ServedPlatform};
use accounts::{AppBuilder, PlatformAccounts};

/// The worker process, built and ready to run.
pub struct Application {
    /// What the worker and its pipeline use, derived from the settings.
    pub pipeline: Arc<Context>,
    pub(crate) callback: Arc<CallbackState>,
    /// The third-party platforms' authorization event URLs.
    platforms: Arc<PlatformReceiver>,
    /// Each third-party platform, for the reconciliation of its refresh tokens.
    served_platforms: Vec<Arc<Platform>>,
    pub(crate) http: HttpState,
    /// The admin endpoint's state, when `admin.listen` is set.
    admin: Option<AdminState>,
    /// Read here only: where to listen, the server's limits, the start-up report of job
    /// queues without an app.
    settings: Settings,
    /// The one owner of every task the process starts: [`Application::run`] cancels them on
    /// stop and waits for them before it returns.
    tasks: TaskTracker,
}

/// What more than one part holds: one registry, one store, one readiness flag, one publisher,
/// one owner for their tasks.
struct Shared {
    metrics: Arc<Metrics>,
    state: Arc<State>,
    health: Health,
    results: CurrentPublisher,
    trails: Arc<Trails>,
    tasks: TaskTracker,
}

impl Application {
    /// Builds every part from `settings`; fails on what no retry fixes (a bad state URL, a
    /// CA file that cannot be read).
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let state = State::from_settings(&settings.state, claim_ttl(&settings.wechat))?;
        let metrics = Arc::new(Metrics::new());
        let trails = Arc::new(Trails::for_state(
            &state,
            settings.state.trail_ttl.get(),
            metrics.trail_failures.clone(),
        ));
        let shared = Shared {
            metrics,
            state: Arc::new(state),
            health: Health::default(),
            results: CurrentPublisher::default(),
            trails,
            tasks: TaskTracker::new(),
        };
        // One store of preference gates for the callback, which sets them, and the pipeline,
        // which reads them: in memory they must be the same map.
        let gates = AppGates::new(&settings, &shared.state.gate_store());
        let callback = Arc::new(
            CallbackState::new(
                &settings,
                shared.state.clone(),
                Arc::new(shared.results.clone()),
                shared.metrics.clone(),
                shared.trails.clone(),
                shared.tasks.clone(),
                Arc::new(SystemClock),
            )
            .with_gates(gates.clone()),
        );
        // One pooled client for the pipeline and the platforms alike.
        let wechat = WechatClient::new(&settings.wechat.base_url, settings.wechat.timeout.get())?;
        let served_platforms = platforms(&settings, &shared.state, &wechat);
        let platforms = Arc::new(PlatformReceiver::new(
            &settings,
            &served_platforms,
            shared.tasks.clone(),
            Arc::new(SystemClock),
        ));
        let http = HttpState {
            health: shared.health.clone(),
            state: shared.state.clone(),
            metrics: shared.metrics.clone(),
        };
        let tasks = shared.tasks.clone();
        // Validation holds a token whenever `admin.listen` is set.
        let admin = (settings.admin.listen.as_ref())
            .and(settings.admin.token.as_ref())
            .map(|token| AdminState::new(shared.trails.clone(), token));
        let pipeline = Arc::new(pipeline(
            &settings,
            shared,
            &gates,
            wechat,
            &served_platforms,
        )?);
        Ok(Self {
            pipeline,
            callback,
            platforms,
            served_platforms,
            http,
            admin,
            settings,
            tasks,
        })
    }

    /// The owner of every task [`Application::run`] starts: closed and empty once it returned.
    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// Serves `http.listen` (when set), reports job queues without an app, and runs the worker
    /// until `stop` fires; then waits for every task it started, within the drain deadline.
    /// Errors when the port cannot be bound, or for what the worker cannot retry (a topology
    /// clash); its tasks are stopped and waited for then too.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        // Ends every task on `stop`, and also when a part fails.
        let stop = stop.child_token();
        let tasks = self.tasks.clone();
        let drain = self.pipeline.drain_timeout;
        let running = self.start(&stop);
        tokio::pin!(running);
        let mut stopped_at = None;
        let result = loop {
            tokio::select! {
                result = &mut running => break result,
                _ = stop.cancelled(), if stopped_at.is_none() => stopped_at = Some(Instant::now()),
            }
        };
        stop.cancel();
        tasks.close();
        // Every task heard the stop when the worker did: all share its drain deadline. What
        // the worker dropped at its end (jobs past the deadline) gets a moment to unwind.
        let deadline = stopped_at.unwrap_or_else(Instant::now) + drain;
        let deadline = deadline.max(Instant::now() + UNWIND);
        if tokio::time::timeout_at(deadline, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = tasks.len(),
                "tasks still running past the drain deadline"
            );
        }
        result
    }

    async fn start(self, stop: &CancellationToken) -> anyhow::Result<()> {
        let Self {
            pipeline,
            callback,
            platforms,
            served_platforms,
            http,
            admin,
            settings,
            tasks,
        } = self;
        if let (Some(listen), Some(admin)) = (&settings.admin.listen, admin) {
            let routes = http::admin::routes(admin);
            http::serve(listen, &settings.http, routes, stop.clone(), &tasks)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on admin.listen {listen}: {e}"))?;
        }
        if let Some(listen) = &settings.http.listen {
            let routes = http::router(http)
                .merge(callback::routes(callback))
                .merge(receiver::routes(platforms));
            http::serve(listen, &settings.http, routes, stop.clone(), &tasks)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on http.listen {listen}: {e}"))?;
        }
        for platform in served_platforms {
            let every = settings.platforms[&platform.name].reconcile_every.get();
            let (metrics, stop) = (pipeline.metrics.clone(), stop.clone());
            tasks.spawn(worker::reconciling::keep(platform, every, metrics, stop));
        }
        {
            // Once, beside the start: a slow or missing management API never delays consuming.
            let (stop, metrics) = (stop.clone(), pipeline.metrics.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = async {
                        broker::results_policy::apply_at_start(&settings).await;
                        broker::orphans::report_at_start(&settings, &metrics).await;
                    } => {}
                }
            });
        }
        worker::run(pipeline, stop.clone(), &tasks).await
    }
}

/// How long the tasks a run dropped at its end (jobs past the drain deadline) get to unwind.
const UNWIND: Duration = Duration::from_secs(1);

/// How long a claim on a job id lasts without being renewed. A claim is renewed right before
/// the send once it has aged a third of this, so it outlives the call and the record that
/// follows; it lapses if its holder dies, so a redelivered job waits behind it for about this
/// long at most.
fn claim_ttl(wechat: &WechatSettings) -> Duration {
    wechat.timeout.get() * 3 + Duration::from_secs(30)
}

/// The errcode table of `wechat.*_codes`.
pub fn classifier(wechat: &WechatSettings) -> Classifier {
    Classifier::new(
        &wechat.transient_codes,
        &wechat.quota_codes,
        &wechat.token_codes,
    )
}

/// The pipeline's context: its seams in production (the WeChat client, the state backend,
/// each app's token keeper, rate gate, quota gate and catalog, the system clock) and the
/// shared parts. Fails when the backend lacks a capability the settings need across instances
/// ([`crate::state::Capabilities::check`]); with one it provides, tokens and rates go through
/// it.
fn pipeline(
    settings: &Settings,
    shared: Shared,
    gates: &AppGates,
    wechat: WechatClient,
    platforms: &[Arc<Platform>],
) -> anyhow::Result<Context> {
    let Shared {
        metrics,
        state,
        health,
        results,
        trails,
        tasks: _,
    } = shared;
    state.capabilities().check(settings)?;
    let schedule = Schedule::new(&settings.retry);
    let builder = AppBuilder::new(settings, metrics.clone(), state.clone(), gates.clone());
    let apps: Vec<ServedApp> = settings
        .apps
        .iter()
        .map(|(name, app)| {
            let deps = builder.app(name, app, &wechat);
            ServedApp::new(name, deps, app, settings.wechat.daily_quota_refresh.0)
        })
        .collect();
    let accounts: Option<Arc<dyn Accounts<Live>>> = match platforms.is_empty() {
        true => None,
        false => Some(Arc::new(PlatformAccounts::new(platforms, builder))),
    };
    let deps = Deps {
        classifier: classifier(&settings.wechat),
        reasons: settings.wechat.reason_codes.clone(),
        in_flight: InFlight::new(settings.wechat.max_in_flight),
        claim_ttl: claim_ttl(&settings.wechat),
        store: state.clone(),
        clock: SystemClock,
        wechat,
        // The same apps the worker serves, found by name: built together, so none is missing.
        apps: apps
            .iter()
            .map(|a| (a.name.clone(), a.deps.clone()))
            .collect(),
        accounts,
        schedule,
        metrics: metrics.clone(),
    };
    Ok(Context {
        amqp: settings.amqp.clone(),
        drain_timeout: settings.worker.drain_timeout.0,
        wechat_slots: settings.wechat.max_in_flight.get(),
        apps,
        pipeline: deps,
        state,
        health,
        metrics,
        results,
        keep_unrouted: settings.results.keep_unrouted,
        trails,
        platforms: platforms
            .iter()
            .map(|p| ServedPlatform {
                name: p.name.clone(),
                component_appid: p.component_appid().to_owned(),
                store: p.store.clone(),
                changed: p.changed.clone(),
            })
            .collect(),
    })
}

/// Each configured third-party platform, sharing one client and one platform store.
fn platforms(settings: &Settings, state: &State, wechat: &WechatClient) -> Vec<Arc<Platform>> {
    if settings.platforms.is_empty() {
        return Vec::new();
    }
    let store = state.platform_store();
    settings
        .platforms
        .keys()
        .filter_map(|name| Platform::new(name, settings, wechat.clone(), state, store.clone()))
        .map(Arc::new)
        .collect()
}
