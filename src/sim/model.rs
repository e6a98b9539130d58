//! The simulator's state, free of HTTP: the accounts it knows, with their tokens, quotas,
//! templates, de-duplication and counts, and the faults it injects. What it does with them is
//! split by concern: `tokens` (token endpoints), `sends` (the send endpoints), `lookups`
//! (template lists and quotas), `reports` (what it pushes to a callback).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::platform_state::{Components, SimPlatform};
use super::push::{CallbackTarget, PushCounts, Queued};
use crate::kinds::Kind;

/// The appid known when no `--app` is given.
pub const DEFAULT_APPID: &str = "wx0000000000000000";
/// Its secret.
pub const DEFAULT_SECRET: &str = "secret";

/// How the simulator behaves.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// `(appid, secret)` pairs it knows.
    pub apps: Vec<(String, String)>,
    /// Lifetime of a token (WeChat: 7200 s).
    pub token_ttl: Duration,
    /// How long a classic token keeps working after a newer one is issued (WeChat: 5 min).
    pub token_grace: Duration,
    /// Sends per app per day before 45009.
    pub daily_quota: u64,
    pub faults: Faults,
    /// Most send records kept for `/sim/sends`.
    pub record_limit: usize,
    /// How long after an accepted send its delivery report is pushed.
    pub report_delay: Duration,
    /// Where to push delivery reports, by appid.
    pub callbacks: std::collections::HashMap<String, CallbackTarget>,
    /// OpenIDs that refused every template: their sends are answered 43101.
    pub refusing: std::collections::HashSet<String>,
    /// Each app's templates (`get_all_private_template`), by appid. An app with a list answers
    /// 40037 to a template message whose template_id is not in it.
    pub templates: std::collections::HashMap<String, Vec<SimTemplate>>,
    /// Third-party platforms it knows.
    pub platforms: Vec<SimPlatform>,
    /// How often every platform with an event URL gets a new verify ticket (WeChat: 10 min).
    pub ticket_interval: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            apps: vec![(DEFAULT_APPID.into(), DEFAULT_SECRET.into())],
            token_ttl: Duration::from_secs(7200),
            token_grace: Duration::from_secs(300),
            daily_quota: 1_000_000,
            faults: Faults::default(),
            record_limit: 100_000,
            report_delay: Duration::from_millis(500),
            callbacks: Default::default(),
            refusing: Default::default(),
            templates: Default::default(),
            platforms: Vec::new(),
            ticket_interval: Duration::from_secs(600),
        }
    }
}

/// First msgid handed out: above 2^53, as WeChat's can be.
const FIRST_MSGID: u64 = 9_007_199_254_740_993;

/// Random faults, as shares of requests in [0, 1].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Sends answered `-1` (system busy).
    pub busy: f64,
    /// Sends answered `45009`.
    pub quota: f64,
    /// Requests answered HTTP 503.
    pub http5xx: f64,
    /// Requests whose connection is dropped without an answer.
    pub drop: f64,
    /// Sends answered with a body that is not JSON.
    pub bad_json: f64,
    /// Sends answered only after 60 s (longer than any sane `wechat.timeout`).
    pub hang: f64,
    /// Added to every request.
    pub latency_ms: u64,
    /// Delivery reports that say `failed:user block` (in a `subscribe_msg_sent_event`, with
    /// `ErrorCode` 43101).
    pub report_blocked: f64,
    /// Delivery reports that say `failed: system failed` (`ErrorCode` -1).
    pub report_failed: f64,
}

/// A scripted answer for one send: an errcode, or one of `http500`, `drop`, `bad_json`,
/// `hang` (answers after 60 s).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Answer {
    Code(i64),
    Named(String),
}

/// What the HTTP layer should do with a request.
#[derive(Debug, PartialEq)]
pub(crate) enum Reply {
    Json(serde_json::Value),
    Http(u16),
    Drop,
    BadJson,
    Hang,
}

/// One send as received.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendRecord {
    pub(crate) appid: String,
    /// The kind whose endpoint was called.
    #[serde(default)]
    pub kind: Kind,
    pub touser: String,
    pub client_msg_id: Option<String>,
    /// The body's `data` as received, so a test can see what the worker sent.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    pub errcode: i64,
    pub(crate) msgid: Option<u64>,
    pub duplicate: bool,
    /// Milliseconds since the simulator started.
    pub at_ms: f64,
}

/// One template of an account, as `get_all_private_template` lists it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SimTemplate {
    pub template_id: String,
    pub title: String,
    pub primary_industry: String,
    pub deputy_industry: String,
    /// The text with its `{{key.DATA}}` placeholders.
    pub content: String,
    pub example: String,
}

/// One API's daily quota, as `openapi/quota/get` answers it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct QuotaCount {
    pub(crate) daily_limit: u64,
    pub(crate) used: u64,
    pub(crate) remain: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AppStats {
    pub classic_token_calls: u64,
    pub stable_token_calls: u64,
    pub send_calls: u64,
    /// `get_all_private_template` calls answered with a list.
    #[serde(default)]
    pub template_list_calls: u64,
    /// `openapi/quota/get` calls answered with a quota.
    #[serde(default)]
    pub(crate) quota_get_calls: u64,
    /// Sends accepted for the first time (errcode 0, not a de-duplicated repeat).
    pub accepted: u64,
    pub duplicates: u64,
    pub(crate) errcodes: BTreeMap<String, u64>,
    /// Sends left today on the endpoint with the fewest.
    pub(crate) quota_left: u64,
    /// Each send endpoint's quota today.
    #[serde(default)]
    pub(crate) quota: BTreeMap<String, QuotaCount>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SimStats {
    pub(crate) requests: u64,
    pub(crate) http_faults: u64,
    pub(crate) drops: u64,
    /// Pushes (delivery reports and user events) the callback answered `success` to.
    pub reports_delivered: u64,
    /// Pushes given up on after three tries.
    pub reports_failed: u64,
    pub apps: BTreeMap<String, AppStats>,
}

pub(super) struct TokenInfo {
    pub(super) appid: String,
    pub(super) expires: Instant,
}

/// The sends one endpoint may still take today: every accepted send counts.
#[derive(Clone, Copy)]
pub(super) struct Quota {
    pub(super) limit: u64,
    pub(super) used: u64,
}

impl Quota {
    pub(super) fn count(self) -> QuotaCount {
        QuotaCount {
            daily_limit: self.limit,
            used: self.used,
            remain: self.limit.saturating_sub(self.used),
        }
    }
}

pub(super) struct App {
    pub(super) secret: String,
    pub(super) classic: Option<String>,
    pub(super) stable: Option<String>,
    /// By send endpoint (one per kind).
    pub(super) quota: BTreeMap<&'static str, Quota>,
    /// Its template messages' templates; when empty, any template_id is taken.
    pub(super) templates: Vec<SimTemplate>,
    pub(super) dedup: HashMap<(String, String), (u64, Instant)>,
    pub(super) dedup_order: VecDeque<(Instant, (String, String))>,
    pub(super) stats: AppStats,
}

pub(super) struct Inner {
    pub(super) options: SimOptions,
    pub(super) apps: HashMap<String, App>,
    pub(super) tokens: HashMap<String, TokenInfo>,
    /// Old classic tokens and when they stop working.
    pub(super) retiring: VecDeque<(Instant, String)>,
    pub(super) scripts: HashMap<String, VecDeque<Answer>>,
    pub(super) next_msgid: u64,
    pub(super) records: VecDeque<SendRecord>,
    pub(super) requests: u64,
    pub(super) http_faults: u64,
    pub(super) drops: u64,
    pub(super) callbacks: HashMap<String, CallbackTarget>,
    /// Lookup APIs an app may not call, by (appid, path): the errcode they answer instead.
    pub(super) denied: HashMap<(String, String), i64>,
    /// (OpenID, template id) pairs the user refused in a popup or the settings: sends with
    /// that template are answered 43101 until the user accepts it again.
    pub(super) refused_templates: HashSet<(String, String)>,
}

pub(crate) struct Model {
    pub(super) inner: Mutex<Inner>,
    /// The third-party platforms (`platform`). Never locked while `inner` is held by the same
    /// caller, but `inner` may be taken while this is held.
    pub(super) components: Mutex<Components>,
    pub(super) started: Instant,
    pub(super) pushes: mpsc::UnboundedSender<Queued>,
    pub(super) push_counts: Arc<PushCounts>,
}

pub(super) fn error(errcode: i64, errmsg: &str) -> Reply {
    Reply::Json(serde_json::json!({ "errcode": errcode, "errmsg": errmsg }))
}

pub(super) fn errmsg_for(code: i64) -> &'static str {
    match code {
        -1 => "system error",
        40001 => "invalid credential, access_token is invalid or not latest",
        40003 => "invalid openid",
        40014 => "invalid access_token",
        40037 => "invalid template_id",
        41006 => "access_token expired",
        42001 => "access_token expired",
        43004 => "require subscribe",
        43101 => "user refuse to accept the msg",
        76021 => "cgi_path not found, please check",
        45009 => "reach max api daily quota limit",
        45011 => "api minute-quota reach limit",
        48001 => "api unauthorized",
        47001 => "data format error",
        47003 => "argument invalid!",
        _ => "error",
    }
}

/// An account as it starts: a full quota on every send endpoint, its templates, no token.
pub(super) fn new_app(options: &SimOptions, appid: &str, secret: &str) -> App {
    let quota = Quota {
        limit: options.daily_quota,
        used: 0,
    };
    App {
        secret: secret.to_owned(),
        classic: None,
        stable: None,
        quota: Kind::ALL
            .into_iter()
            .map(|k| (k.endpoint(), quota))
            .collect(),
        templates: options.templates.get(appid).cloned().unwrap_or_default(),
        dedup: HashMap::new(),
        dedup_order: VecDeque::new(),
        stats: AppStats::default(),
    }
}

impl Model {
    /// The model, plus the queue of delivery reports for [`super::push::run`] to send.
    pub(crate) fn new(
        options: SimOptions,
    ) -> (Self, mpsc::UnboundedReceiver<Queued>, Arc<PushCounts>) {
        let apps = options
            .apps
            .iter()
            .map(|(appid, secret)| (appid.clone(), new_app(&options, appid, secret)))
            .collect();
        let (pushes, queue) = mpsc::unbounded_channel();
        let push_counts = Arc::new(PushCounts::default());
        let callbacks = options.callbacks.clone();
        let components = Components::new(&options.platforms);
        let model = Self {
            inner: Mutex::new(Inner {
                options,
                apps,
                tokens: HashMap::new(),
                retiring: VecDeque::new(),
                scripts: HashMap::new(),
                next_msgid: FIRST_MSGID,
                records: VecDeque::new(),
                requests: 0,
                http_faults: 0,
                drops: 0,
                callbacks,
                denied: HashMap::new(),
                refused_templates: HashSet::new(),
            }),
            components: Mutex::new(components),
            started: Instant::now(),
            pushes,
            push_counts: push_counts.clone(),
        };
        (model, queue, push_counts)
    }

    /// Latency to add before answering, and whether a random transport fault hits.
    pub(crate) fn transport(&self) -> (Duration, Option<Reply>) {
        let mut inner = self.inner.lock();
        inner.requests += 1;
        let f = inner.options.faults.clone();
        let mut rng = rand::rng();
        let fault = if f.drop > 0.0 && rng.random_bool(f.drop.min(1.0)) {
            inner.drops += 1;
            Some(Reply::Drop)
        } else if f.http5xx > 0.0 && rng.random_bool(f.http5xx.min(1.0)) {
            inner.http_faults += 1;
            Some(Reply::Http(503))
        } else {
            None
        };
        (Duration::from_millis(f.latency_ms), fault)
    }

    pub(crate) fn stats(&self) -> SimStats {
        let inner = self.inner.lock();
        SimStats {
            requests: inner.requests,
            http_faults: inner.http_faults,
            drops: inner.drops,
            reports_delivered: self.push_counts.delivered.load(Ordering::Relaxed),
            reports_failed: self.push_counts.failed.load(Ordering::Relaxed),
            apps: inner
                .apps
                .iter()
                .map(|(id, a)| {
                    let mut s = a.stats.clone();
                    s.quota = a
                        .quota
                        .iter()
                        .map(|(path, q)| ((*path).to_owned(), q.count()))
                        .collect();
                    s.quota_left = s.quota.values().map(|q| q.remain).min().unwrap_or(0);
                    (id.clone(), s)
                })
                .collect(),
        }
    }

    pub(crate) fn ticket_interval(&self) -> Duration {
        self.inner.lock().options.ticket_interval
    }

    pub(crate) fn sends(&self) -> Vec<SendRecord> {
        self.inner.lock().records.iter().cloned().collect()
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        self.inner.lock().options.faults = faults;
    }

    pub(crate) fn script(&self, touser: &str, answers: Vec<Answer>) {
        self.inner
            .lock()
            .scripts
            .entry(touser.to_owned())
            .or_default()
            .extend(answers);
    }

    pub(crate) fn reset_stats(&self) {
        let mut inner = self.inner.lock();
        inner.records.clear();
        inner.requests = 0;
        inner.http_faults = 0;
        inner.drops = 0;
        for app in inner.apps.values_mut() {
            app.stats = AppStats::default();
        }
    }
}

#[cfg(test)]
mod tests;
