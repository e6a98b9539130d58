//! Start-up: builds each part's own state from the settings — the pipeline's context, the
//! callback receiver's state, the HTTP server's state — and runs them under one stop signal,
//! every task they start owned by one tracker that the run waits for. Only here do the parts
//! meet; none of them imports another to reach its state.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{self, CurrentPublisher};
use crate::callback::{self, CallbackState};
use crate::catalog::Catalog;
use crate::clock::SystemClock;
use crate::config::{AppSettings, Settings, WechatSettings};
use crate::http::{self, HttpState};
use crate::limiter::{AppLimiter, InFlight};
use crate::metrics::{AppMetrics, Metrics};
use crate::pause::PauseGate;
use crate::retry::Schedule;
use crate::state::State;
use crate::telemetry::Health;
use crate::wechat::client::WechatClient;
use crate::wechat::errcode::Classifier;
use crate::wechat::shared_token::SharedTokenSource;
use crate::wechat::token::{TokenKeeper, TokenSource, WechatTokenSource};
use crate::worker::{self, AppDeps, Context, Deps, ServedApp};

/// The worker process, built and ready to run.
pub struct Application {
    /// What the worker and its pipeline use, derived from the settings.
    pub pipeline: Arc<Context>,
    pub(crate) callback: Arc<CallbackState>,
    pub(crate) http: HttpState,
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
    tasks: TaskTracker,
}

impl Application {
    /// Builds every part from `settings`; fails on what no retry fixes (a bad state URL, a
    /// CA file that cannot be read).
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let state = State::from_settings(&settings.state, claim_ttl(&settings.wechat))?;
        let shared = Shared {
            metrics: Arc::new(Metrics::new()),
            state: Arc::new(state),
            health: Health::default(),
            results: CurrentPublisher::default(),
            tasks: TaskTracker::new(),
        };
        let callback = Arc::new(CallbackState::new(
            &settings,
            shared.state.clone(),
            Arc::new(shared.results.clone()),
            shared.metrics.clone(),
            shared.tasks.clone(),
            Arc::new(SystemClock),
        ));
        let http = HttpState {
            health: shared.health.clone(),
            state: shared.state.clone(),
            metrics: shared.metrics.clone(),
        };
        let tasks = shared.tasks.clone();
        let pipeline = Arc::new(pipeline(&settings, shared)?);
        Ok(Self {
            pipeline,
            callback,
            http,
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
            http,
            settings,
            tasks,
        } = self;
        if let Some(listen) = &settings.http.listen {
            let routes = http::router(http).merge(callback::routes(callback));
            http::serve(listen, &settings.http, routes, stop.clone(), &tasks)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on http.listen {listen}: {e}"))?;
        }
        {
            // Once, beside the start: a slow or missing management API never delays consuming.
            let (stop, metrics) = (stop.clone(), pipeline.metrics.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = broker::orphans::report_at_start(&settings, &metrics) => {}
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
fn pipeline(settings: &Settings, shared: Shared) -> anyhow::Result<Context> {
    let Shared {
        metrics,
        state,
        health,
        results,
        tasks: _,
    } = shared;
    state.capabilities().check(settings)?;
    let wechat = WechatClient::new(&settings.wechat.base_url, settings.wechat.timeout.get())?;
    let schedule = Schedule::new(&settings.retry);
    let apps: Vec<ServedApp> = settings
        .apps
        .iter()
        .map(|(name, app)| {
            let deps = AppDeps {
                metrics: AppMetrics::new(metrics.clone(), name),
                keeper: TokenKeeper::new(token_source(name, app, &wechat, &state, &metrics)),
                rate: AppLimiter::new(name, app, state.rate_share()),
                gate: PauseGate::new(
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
                        settings.wechat.timeout.get() * 2 + Duration::from_secs(1),
                        metrics
                            .catalog_templates
                            .get_or_create(&Metrics::app(name))
                            .clone(),
                    )
                }),
            };
            ServedApp::new(name, deps, app, settings.wechat.daily_quota_refresh.0)
        })
        .collect();
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
    })
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
