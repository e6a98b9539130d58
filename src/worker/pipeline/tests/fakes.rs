//! Fakes for the pipeline's seams: a scripted WeChat, a rate gate that waits on tokio's clock,
//! and a world that wires them (with the state fakes) into one app `a`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use time::OffsetDateTime;

use crate::clock::TokioClock;
use crate::config::{
    DEFAULT_QUOTA, DEFAULT_TOKEN, DEFAULT_TRANSIENT, ReasonCodes, RetrySettings, TokenMode,
};
use crate::limiter::{InFlight, RateGate};
use crate::metrics::{AppMetrics, Metrics};
use crate::pause::PauseGate;
use crate::retry::{RetryState, Schedule};
use crate::state::fakes::{FakeSharedTokens, FakeStore};
use crate::state::{StateError, StateResult};
use crate::types::Secret;
use crate::wechat::client::{CallError, SendReply, TokenError, TokenGrant, WechatApi};
use crate::wechat::errcode::Classifier;
use crate::wechat::shared_token::SharedTokenSource;
use crate::wechat::token::{TokenKeeper, TokenSource, WechatTokenSource};
use crate::worker::deps::{AppDeps, Deps, Seams};
use crate::worker::pipeline::{Incoming, Outlet, Step, process};

/// The wall-clock time every world starts at.
pub(crate) const T0: OffsetDateTime = time::macros::datetime!(2026-03-01 08:00 UTC);

pub(crate) fn t0_ms() -> u64 {
    (T0.unix_timestamp() as u64) * 1000
}

/// One send as WeChat received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) token: String,
    pub(crate) client_msg_id: Option<String>,
}

/// WeChat answering from a script: sends in order (then `ok` with a fresh msgid), tokens in
/// order (then `t1`, `t2`, … as fetched).
#[derive(Default)]
pub(crate) struct FakeWechat {
    sends: Mutex<VecDeque<Result<SendReply, CallError>>>,
    tokens: Mutex<VecDeque<Result<TokenGrant, TokenError>>>,
    received: Mutex<Vec<Received>>,
    token_fetches: AtomicUsize,
    /// How long each send takes.
    pub(crate) latency: Mutex<Duration>,
    /// The msgid an errcode 0 carries, when set (none, or 0, as some endpoints answer);
    /// otherwise a fresh one.
    pub(crate) ok_msgid: Mutex<Option<Option<u64>>>,
}

impl FakeWechat {
    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }

    pub(crate) fn token_fetches(&self) -> usize {
        self.token_fetches.load(Ordering::SeqCst)
    }

    pub(crate) fn answer(&self, reply: Result<SendReply, CallError>) {
        self.sends.lock().push_back(reply);
    }
}

/// WeChat's answer with `errcode` (0 comes with msgid 1000 + the send's number).
pub(crate) fn code(errcode: i64) -> Result<SendReply, CallError> {
    Ok(SendReply {
        errcode,
        errmsg: if errcode == 0 { "ok" } else { "refused" }.into(),
        msgid: None,
    })
}

impl WechatApi for FakeWechat {
    async fn send(&self, path: &str, token: &Secret, body: Bytes) -> Result<SendReply, CallError> {
        let body: serde_json::Value = serde_json::from_slice(&body).expect("the body is JSON");
        let number = {
            let mut received = self.received.lock();
            received.push(Received {
                path: path.into(),
                token: token.expose().into(),
                client_msg_id: body["client_msg_id"].as_str().map(Into::into),
            });
            received.len() as u64
        };
        let latency = *self.latency.lock();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let answer = self.sends.lock().pop_front().unwrap_or_else(|| code(0));
        let ok_msgid = *self.ok_msgid.lock();
        answer.map(|mut reply| {
            if reply.errcode == 0 && reply.msgid.is_none() {
                reply.msgid = ok_msgid.unwrap_or(Some(1000 + number));
            }
            reply
        })
    }

    async fn token(
        &self,
        _appid: &str,
        _secret: &Secret,
        _mode: TokenMode,
    ) -> Result<TokenGrant, TokenError> {
        let n = self.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
        self.tokens.lock().pop_front().unwrap_or_else(|| {
            Ok(TokenGrant {
                token: Secret::new(format!("t{n}")),
                expires_in: Duration::from_secs(7200),
            })
        })
    }
}

/// A rate gate that makes every send wait `wait` (on tokio's clock), or fails like a shared
/// bucket whose store is down.
#[derive(Default)]
pub(crate) struct FakeRate {
    pub(crate) wait: Duration,
    pub(crate) down: AtomicBool,
    pub(crate) turns: AtomicUsize,
}

impl RateGate for FakeRate {
    async fn until_ready(&self) -> StateResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StateError::Timeout(Duration::from_secs(2)));
        }
        tokio::time::sleep(self.wait).await;
        self.turns.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn ready_within(&self, limit: Duration) -> StateResult<Option<Duration>> {
        if !self.down.load(Ordering::SeqCst) && self.wait > limit {
            return Ok(Some(self.wait));
        }
        self.until_ready().await.map(|()| None)
    }
}

pub(crate) struct Fakes;

impl Seams for Fakes {
    type Wechat = Arc<FakeWechat>;
    type Store = FakeStore;
    type Rate = FakeRate;
    type Clock = TokioClock;
}

/// An outlet that is open unless told otherwise.
pub(crate) struct FakeOutlet(pub(crate) AtomicBool);

impl Outlet for FakeOutlet {
    fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub(crate) static OPEN: FakeOutlet = FakeOutlet(AtomicBool::new(true));

/// How a world is set up.
pub(crate) struct Setup {
    /// WeChat's answers to the sends, in order.
    pub(crate) sends: Vec<Result<SendReply, CallError>>,
    /// WeChat's answers to token fetches, in order.
    pub(crate) tokens: Vec<Result<TokenGrant, TokenError>>,
    pub(crate) rate_wait: Duration,
    /// The account's jobs share a queue: the longest one waits for the rate in the worker.
    pub(crate) rate_park: Option<Duration>,
    /// Tokens go through a shared token store (as with Redis), which is up or down.
    pub(crate) shared_tokens: Option<bool>,
    pub(crate) claim_ttl: Duration,
    pub(crate) retry: RetrySettings,
    /// How app `a` reads its jobs.
    pub(crate) reading: crate::kinds::ReadOptions,
    /// App `a`'s send limits.
    pub(crate) limits: crate::config::AppLimits,
    /// App `a`'s quiet hours.
    pub(crate) quiet: Option<crate::quiet_hours::QuietPolicy>,
    /// What app `a` does with a paused job.
    pub(crate) pause_mode: crate::config::PauseMode,
    /// App `a`'s preference gates, when it honours preferences.
    pub(crate) preferences: Option<crate::preferences::PreferenceGates>,
    /// App `a` honours preferences, with gates that last this long, kept by the world's store
    /// (as production wires them: the gates a reservation reads are the ones set).
    pub(crate) store_gates: Option<Duration>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            sends: Vec::new(),
            tokens: Vec::new(),
            rate_wait: Duration::ZERO,
            rate_park: None,
            shared_tokens: None,
            claim_ttl: Duration::from_secs(60),
            retry: RetrySettings::default(),
            reading: crate::kinds::ReadOptions::default(),
            limits: crate::config::AppLimits::default(),
            quiet: None,
            pause_mode: crate::config::PauseMode::default(),
            preferences: None,
            store_gates: None,
        }
    }
}

/// The pipeline over fakes, for one app `a` that sends templates and subscription
/// notifications.
pub(crate) struct World {
    pub(crate) deps: Deps<Fakes>,
    pub(crate) wechat: Arc<FakeWechat>,
}

impl World {
    pub(crate) fn new(setup: Setup) -> Self {
        let wechat = Arc::new(FakeWechat::default());
        setup.sends.into_iter().for_each(|s| wechat.answer(s));
        wechat.tokens.lock().extend(setup.tokens);
        let from_wechat = WechatTokenSource {
            client: wechat.clone(),
            appid: "wx0000000000000000".into(),
            secret: Secret::new("secret"),
            mode: TokenMode::Stable,
            fetched: Counter::default(),
        };
        let source: Box<dyn TokenSource> = match setup.shared_tokens {
            None => Box::new(from_wechat),
            Some(up) => {
                let shared = FakeSharedTokens::default();
                shared.down.store(!up, Ordering::SeqCst);
                Box::new(SharedTokenSource {
                    app: "a".into(),
                    shared,
                    wechat: from_wechat,
                })
            }
        };
        let schedule = Schedule::new(&setup.retry);
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(FakeStore::default());
        let preferences = match setup.store_gates {
            Some(ttl) => Some(crate::preferences::PreferenceGates {
                store: store.gates(),
                ttl,
            }),
            None => setup.preferences,
        };
        let app = AppDeps {
            metrics: AppMetrics::new(metrics.clone(), "a"),
            keeper: TokenKeeper::new(source),
            rate: FakeRate {
                wait: setup.rate_wait,
                ..FakeRate::default()
            },
            rate_park: setup.rate_park,
            gate: PauseGate::new("a", schedule.clone(), Gauge::default()),
            kinds: [crate::kinds::Kind::Template, crate::kinds::Kind::Subscribe]
                .into_iter()
                .collect(),
            catalog: None,
            reading: setup.reading,
            limits: setup.limits,
            quiet: setup.quiet,
            switch: crate::worker::KillSwitch::new("a", &[], setup.pause_mode, metrics.clone()),
            preferences,
        };
        let deps = Deps {
            wechat: wechat.clone(),
            store,
            clock: TokioClock::starting_at(T0),
            apps: [("a".to_owned(), Arc::new(app))].into(),
            accounts: None,
            schedule,
            classifier: Classifier::new(&DEFAULT_TRANSIENT, &DEFAULT_QUOTA, &DEFAULT_TOKEN),
            reasons: ReasonCodes::default(),
            claim_ttl: setup.claim_ttl,
            in_flight: InFlight::new(std::num::NonZeroUsize::new(8).expect("above 0")),
            metrics,
        };
        Self { deps, wechat }
    }

    pub(crate) fn app(&self) -> &AppDeps<Fakes> {
        self.deps.apps.get("a").expect("the world's one app")
    }

    pub(crate) fn store(&self) -> &FakeStore {
        &self.deps.store
    }

    pub(crate) async fn process(&self, body: &[u8], retry: RetryState) -> Step {
        self.process_via(body, retry, &OPEN).await
    }

    pub(crate) async fn process_via(
        &self,
        body: &[u8],
        retry: RetryState,
        outlet: &dyn Outlet,
    ) -> Step {
        let incoming = Incoming {
            app: "a",
            body,
            message_id: None,
            headers_len: 0,
            retry,
            outlet,
            trace: None,
        };
        process(&self.deps, incoming).await
    }
}

/// A template job `id`.
pub(crate) fn template(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "touser": "o0000000000000000000000000001",
        "template_id": "t1",
        "data": {"k": {"value": "v"}}
    })
}

/// A subscription-notification job `id`.
pub(crate) fn subscribe(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "kind": "subscribe",
        "touser": "o0000000000000000000000000001",
        "template_id": "t1",
        "data": {"thing1": {"value": "v"}}
    })
}

/// `job` with `not_after` this many seconds after [`T0`] (before it when negative).
pub(crate) fn not_after(mut job: serde_json::Value, secs: i64) -> serde_json::Value {
    let at = (T0 + time::Duration::seconds(secs))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    job["not_after"] = at.into();
    job
}
