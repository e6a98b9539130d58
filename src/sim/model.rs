//! The simulator's state and rules, free of HTTP: tokens, quotas, de-duplication, faults.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use parking_lot::Mutex;
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::SimOptions;
use super::push::{
    CallbackTarget, Push, PushCounts, Queued, UserEvent, event_xml, sent_event_xml, user_event_xml,
};
use crate::kinds::{DeliveryEvent, Kind};
use crate::outcome::PreferenceStatus;

/// How long WeChat remembers `touser` + `client_msg_id`.
const DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// The lookups the simulator serves.
pub const TEMPLATE_LIST: &str = "/cgi-bin/template/get_all_private_template";
pub const QUOTA_GET: &str = "/cgi-bin/openapi/quota/get";
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
    pub kind: String,
    pub touser: String,
    pub client_msg_id: Option<String>,
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

struct TokenInfo {
    appid: String,
    expires: Instant,
}

/// The sends one endpoint may still take today: every accepted send counts.
#[derive(Clone, Copy)]
struct Quota {
    limit: u64,
    used: u64,
}

impl Quota {
    fn count(self) -> QuotaCount {
        QuotaCount {
            daily_limit: self.limit,
            used: self.used,
            remain: self.limit.saturating_sub(self.used),
        }
    }
}

struct App {
    secret: String,
    classic: Option<String>,
    stable: Option<String>,
    /// By send endpoint (one per kind).
    quota: BTreeMap<&'static str, Quota>,
    /// Its template messages' templates; when empty, any template_id is taken.
    templates: Vec<SimTemplate>,
    dedup: HashMap<(String, String), (u64, Instant)>,
    dedup_order: VecDeque<(Instant, (String, String))>,
    stats: AppStats,
}

struct Inner {
    options: SimOptions,
    apps: HashMap<String, App>,
    tokens: HashMap<String, TokenInfo>,
    /// Old classic tokens and when they stop working.
    retiring: VecDeque<(Instant, String)>,
    scripts: HashMap<String, VecDeque<Answer>>,
    next_msgid: u64,
    records: VecDeque<SendRecord>,
    requests: u64,
    http_faults: u64,
    drops: u64,
    callbacks: HashMap<String, CallbackTarget>,
    /// Lookup APIs an app may not call, by (appid, path): the errcode they answer instead.
    denied: HashMap<(String, String), i64>,
    /// (OpenID, template id) pairs the user refused in a popup or the settings: sends with
    /// that template are answered 43101 until the user accepts it again.
    refused_templates: HashSet<(String, String)>,
}

impl Inner {
    /// Forgets the classic tokens whose grace period is over.
    fn drop_retired(&mut self, now: Instant) {
        while let Some((t, _)) = self.retiring.front() {
            if *t > now {
                break;
            }
            let (_, old) = self.retiring.pop_front().expect("front exists");
            self.tokens.remove(&old);
        }
    }
}

/// Why a user event was not pushed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserEventError {
    #[error("no callback is set for appid {0}: set one with POST /sim/callback or --callback")]
    NoCallback(String),
    #[error("{0}")]
    Invalid(String),
}

pub(crate) struct Model {
    inner: Mutex<Inner>,
    started: Instant,
    pushes: mpsc::UnboundedSender<Queued>,
    push_counts: Arc<PushCounts>,
}

fn error(errcode: i64, errmsg: &str) -> Reply {
    Reply::Json(serde_json::json!({ "errcode": errcode, "errmsg": errmsg }))
}

/// A send being answered: every answer WeChat gives to a message is counted against its app
/// and recorded with the send.
struct Answering<'a> {
    records: &'a mut VecDeque<SendRecord>,
    /// Most sends kept; the oldest go first.
    limit: usize,
    /// The send as received; each answer fills in its errcode, msgid and whether it repeats
    /// an earlier send.
    received: SendRecord,
}

impl Answering<'_> {
    /// WeChat refuses the send with `code`.
    fn refuse(&mut self, app: &mut App, code: i64, errmsg: &str) -> Reply {
        self.keep(app, code, None, false);
        error(code, errmsg)
    }

    /// WeChat takes the send as `msgid` (again, for a `duplicate`).
    fn accept(&mut self, app: &mut App, msgid: u64, duplicate: bool) -> Reply {
        self.keep(app, 0, Some(msgid), duplicate);
        Reply::Json(serde_json::json!({ "errcode": 0, "errmsg": "ok", "msgid": msgid }))
    }

    fn keep(&mut self, app: &mut App, errcode: i64, msgid: Option<u64>, duplicate: bool) {
        count(app, errcode);
        if self.records.len() >= self.limit {
            self.records.pop_front();
        }
        self.records.push_back(SendRecord {
            errcode,
            msgid,
            duplicate,
            ..self.received.clone()
        });
    }
}

/// Counts an errcode answered to one of the app's sends.
fn count(app: &mut App, errcode: i64) {
    *app.stats.errcodes.entry(errcode.to_string()).or_default() += 1;
}

fn errmsg_for(code: i64) -> &'static str {
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

fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = rand::rng();
    (0..136)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Model {
    /// The model, plus the queue of delivery reports for [`super::push::run`] to send.
    pub(crate) fn new(
        options: SimOptions,
    ) -> (Self, mpsc::UnboundedReceiver<Queued>, Arc<PushCounts>) {
        let apps = options
            .apps
            .iter()
            .map(|(appid, secret)| {
                let quota = Quota {
                    limit: options.daily_quota,
                    used: 0,
                };
                let app = App {
                    secret: secret.clone(),
                    classic: None,
                    stable: None,
                    quota: crate::kinds::KINDS
                        .iter()
                        .map(|k| (k.endpoint(), quota))
                        .collect(),
                    templates: options.templates.get(appid).cloned().unwrap_or_default(),
                    dedup: HashMap::new(),
                    dedup_order: VecDeque::new(),
                    stats: AppStats::default(),
                };
                (appid.clone(), app)
            })
            .collect();
        let (pushes, queue) = mpsc::unbounded_channel();
        let push_counts = Arc::new(PushCounts::default());
        let callbacks = options.callbacks.clone();
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

    /// `GET /cgi-bin/token` and `POST /cgi-bin/stable_token`.
    pub(crate) fn token(
        &self,
        grant_type: Option<&str>,
        appid: Option<&str>,
        secret: Option<&str>,
        stable: bool,
        force: bool,
    ) -> Reply {
        if grant_type != Some("client_credential") {
            return error(40002, "invalid grant_type");
        }
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let Some(appid) = appid else {
            return error(41002, "appid missing");
        };
        let Some(app) = inner.apps.get_mut(appid) else {
            return error(40013, "invalid appid");
        };
        if stable {
            app.stats.stable_token_calls += 1;
        } else {
            app.stats.classic_token_calls += 1;
        }
        if secret != Some(app.secret.as_str()) {
            return error(40125, "invalid appsecret");
        }
        let now = Instant::now();
        let ttl = inner.options.token_ttl;
        if stable {
            // The same token for every caller until it expires or a refresh is forced.
            if let Some(t) = &app.stable
                && !force
                && let Some(info) = inner.tokens.get(t)
                && info.expires > now
            {
                let left = info.expires.duration_since(now).as_secs().max(1);
                return Reply::Json(serde_json::json!({ "access_token": t, "expires_in": left }));
            }
            if let Some(old) = app.stable.take() {
                inner.tokens.remove(&old);
            }
        } else if let Some(old) = app.classic.take() {
            // A new classic token retires the previous one after a grace period.
            if let Some(info) = inner.tokens.get_mut(&old) {
                info.expires = info.expires.min(now + inner.options.token_grace);
            }
            inner
                .retiring
                .push_back((now + inner.options.token_grace, old));
        }
        let token = random_token();
        inner.tokens.insert(
            token.clone(),
            TokenInfo {
                appid: appid.to_owned(),
                expires: now + ttl,
            },
        );
        if stable {
            app.stable = Some(token.clone());
        } else {
            app.classic = Some(token.clone());
        }
        Reply::Json(serde_json::json!({ "access_token": token, "expires_in": ttl.as_secs() }))
    }

    /// A message send on `kind`'s endpoint: the checks every endpoint makes, then the kind's.
    pub(crate) fn send(&self, kind: &dyn Kind, access_token: Option<&str>, body: &[u8]) -> Reply {
        let now = Instant::now();
        let at_ms = now.duration_since(self.started).as_secs_f64() * 1000.0;
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        inner.drop_retired(now);
        let Some(token) = access_token.filter(|t| !t.is_empty()) else {
            return error(41001, "access_token missing");
        };
        let (appid, expired) = match inner.tokens.get(token) {
            Some(info) => (info.appid.clone(), info.expires <= now),
            None => return error(40001, errmsg_for(40001)),
        };
        let app = inner
            .apps
            .get_mut(&appid)
            .expect("tokens belong to known apps");
        app.stats.send_calls += 1;
        // Only a JSON object is a body; its strings are read where they are.
        let raw: Option<serde_json::Value> = serde_json::from_slice(body)
            .ok()
            .filter(serde_json::Value::is_object);
        let text = |key: &str| {
            raw.as_ref()
                .and_then(|v| v.get(key))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let touser = text("touser").unwrap_or_default();
        let template_id = text("template_id").unwrap_or_default();
        let cmid = text("client_msg_id");
        let mut answering = Answering {
            records: &mut inner.records,
            limit: inner.options.record_limit,
            received: SendRecord {
                appid: appid.clone(),
                kind: kind.name().to_owned(),
                touser: touser.clone(),
                client_msg_id: cmid.clone(),
                errcode: 0,
                msgid: None,
                duplicate: false,
                at_ms,
            },
        };
        if expired {
            return answering.refuse(app, 42001, errmsg_for(42001));
        }
        // A scripted answer for this user comes first.
        if let Some(script) = inner.scripts.get_mut(&touser)
            && let Some(next) = script.pop_front()
        {
            match next {
                Answer::Code(0) => {}
                Answer::Code(code) => return answering.refuse(app, code, errmsg_for(code)),
                Answer::Named(n) => {
                    return match n.as_str() {
                        "http500" => Reply::Http(500),
                        "drop" => Reply::Drop,
                        "bad_json" => Reply::BadJson,
                        _ => Reply::Hang,
                    };
                }
            }
        }
        let Some(raw) = raw else {
            // Counted but not recorded: there is no message to record.
            count(app, 47001);
            return error(47001, errmsg_for(47001));
        };
        let faults = &inner.options.faults;
        let mut rng = rand::rng();
        if faults.bad_json > 0.0 && rng.random_bool(faults.bad_json.min(1.0)) {
            return Reply::BadJson;
        }
        if faults.hang > 0.0 && rng.random_bool(faults.hang.min(1.0)) {
            return Reply::Hang;
        }
        let random_code = if faults.busy > 0.0 && rng.random_bool(faults.busy.min(1.0)) {
            Some(-1)
        } else if faults.quota > 0.0 && rng.random_bool(faults.quota.min(1.0)) {
            Some(45009)
        } else {
            None
        };
        let refusal = random_code
            .map(|c| (c, errmsg_for(c).to_owned()))
            .or_else(|| {
                if !is_openid(&touser) {
                    Some((40003, errmsg_for(40003).to_owned()))
                } else {
                    kind.sim_check(&raw)
                }
            })
            .or_else(|| {
                // An account with a template list knows no other template.
                let id = raw["template_id"].as_str().unwrap_or("");
                (kind.name() == "template"
                    && !app.templates.is_empty()
                    && !app.templates.iter().any(|t| t.template_id == id))
                .then(|| (40037, errmsg_for(40037).to_owned()))
            })
            .or_else(|| {
                let refused = inner.options.refusing.contains(&touser)
                    || inner
                        .refused_templates
                        .contains(&(touser.clone(), template_id.clone()));
                refused.then(|| (43101, errmsg_for(43101).to_owned()))
            });
        if let Some((code, errmsg)) = refusal {
            return answering.refuse(app, code, &errmsg);
        }
        // De-duplication on touser + client_msg_id within the window: the first msgid again.
        while let Some((t, _)) = app.dedup_order.front() {
            if now.duration_since(*t) < DEDUP_WINDOW {
                break;
            }
            let (_, k) = app.dedup_order.pop_front().expect("front exists");
            app.dedup.remove(&k);
        }
        if let Some(c) = &cmid
            && let Some(&(msgid, _)) = app.dedup.get(&(touser.clone(), c.clone()))
        {
            app.stats.duplicates += 1;
            return answering.accept(app, msgid, true);
        }
        let quota = app
            .quota
            .get_mut(kind.endpoint())
            .expect("every kind's endpoint has a quota");
        if quota.used >= quota.limit {
            return answering.refuse(app, 45009, errmsg_for(45009));
        }
        quota.used += 1;
        let msgid = inner.next_msgid;
        inner.next_msgid += 1;
        if let Some(c) = &cmid {
            app.dedup.insert((touser.clone(), c.clone()), (msgid, now));
            app.dedup_order
                .push_back((now, (touser.clone(), c.clone())));
        }
        app.stats.accepted += 1;
        if let Some(target) = inner.callbacks.get(&appid) {
            let xml = delivery_xml(
                &inner.options.faults,
                kind,
                &appid,
                &touser,
                &template_id,
                msgid,
            );
            self.queue_report(&inner.options, target, &appid, xml);
        }
        answering.accept(app, msgid, false)
    }

    /// Queues the delivery report WeChat would push for an accepted send, `report_delay` on.
    fn queue_report(
        &self,
        options: &SimOptions,
        target: &CallbackTarget,
        appid: &str,
        xml: String,
    ) {
        let _ = self.pushes.send(Queued {
            push: Push {
                target: target.clone(),
                appid: appid.to_owned(),
                xml,
            },
            at: tokio::time::Instant::now() + options.report_delay,
        });
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

    pub(crate) fn invalidate(&self, appid: &str) {
        let mut inner = self.inner.lock();
        inner.tokens.retain(|_, info| info.appid != appid);
        if let Some(app) = inner.apps.get_mut(appid) {
            app.classic = None;
            app.stable = None;
        }
    }

    /// Pushes delivery reports for `appid`'s accepted sends to `target` (or stops, with `None`).
    pub(crate) fn set_callback(&self, appid: &str, target: Option<CallbackTarget>) {
        let mut inner = self.inner.lock();
        match target {
            Some(t) => inner.callbacks.insert(appid.to_owned(), t),
            None => inner.callbacks.remove(appid),
        };
    }

    /// Pushes `event` from `touser` to `appid`'s callback at once. A template refused in it is
    /// refused from then on (sends with it answer 43101), and one accepted is sent again.
    pub(crate) fn user_event(
        &self,
        appid: &str,
        touser: &str,
        event: UserEvent,
    ) -> Result<(), UserEventError> {
        if !is_openid(touser) {
            return Err(UserEventError::Invalid(format!(
                "touser {touser:?} is not an OpenID (28 characters of A-Z a-z 0-9 _ - starting with o)"
            )));
        }
        if let Some(bad) = event
            .decisions()
            .iter()
            .find(|d| !is_template_id(&d.template_id))
        {
            return Err(UserEventError::Invalid(format!(
                "template_id {:?} is not 1-128 of A-Z a-z 0-9 _ -",
                bad.template_id
            )));
        }
        let mut inner = self.inner.lock();
        let Some(target) = inner.callbacks.get(appid).cloned() else {
            return Err(UserEventError::NoCallback(appid.to_owned()));
        };
        for d in event.decisions() {
            let pair = (touser.to_owned(), d.template_id.clone());
            match d.status {
                PreferenceStatus::Reject => inner.refused_templates.insert(pair),
                PreferenceStatus::Accept => inner.refused_templates.remove(&pair),
            };
        }
        let _ = self.pushes.send(Queued {
            push: Push {
                target,
                appid: appid.to_owned(),
                xml: user_event_xml(appid, touser, &event, unix_now()),
            },
            at: tokio::time::Instant::now(),
        });
        Ok(())
    }

    pub(crate) fn set_refusing(&self, touser: &str, refusing: bool) {
        let mut inner = self.inner.lock();
        if refusing {
            inner.options.refusing.insert(touser.to_owned());
        } else {
            inner.options.refusing.remove(touser);
        }
    }

    /// Leaves `left` sends on each of `appid`'s endpoints today (the sends made still count
    /// as used: the daily limit moves).
    pub(crate) fn set_quota_left(&self, appid: &str, left: u64) {
        if let Some(app) = self.inner.lock().apps.get_mut(appid) {
            for q in app.quota.values_mut() {
                q.limit = q.used.saturating_add(left);
            }
        }
    }

    /// Replaces `appid`'s template list.
    pub(crate) fn set_templates(&self, appid: &str, templates: Vec<SimTemplate>) {
        if let Some(app) = self.inner.lock().apps.get_mut(appid) {
            app.templates = templates;
        }
    }

    /// The app a lookup's token belongs to, or the answer to a missing, unknown or expired one.
    /// Makes `path` (a lookup: the template list, `openapi/quota/get`) answer `errcode` to
    /// `appid` (48001: not authorized), or serve it again with 0.
    pub(crate) fn deny(&self, appid: &str, path: &str, errcode: i64) {
        let mut inner = self.inner.lock();
        let key = (appid.to_owned(), path.to_owned());
        if errcode == 0 {
            inner.denied.remove(&key);
        } else {
            inner.denied.insert(key, errcode);
        }
    }

    fn lookup_app<'a>(
        inner: &'a mut Inner,
        access_token: Option<&str>,
        path: &str,
    ) -> Result<&'a mut App, Reply> {
        let Some(token) = access_token.filter(|t| !t.is_empty()) else {
            return Err(error(41001, "access_token missing"));
        };
        let now = Instant::now();
        inner.drop_retired(now);
        let appid = match inner.tokens.get(token) {
            Some(info) if info.expires <= now => return Err(error(42001, errmsg_for(42001))),
            Some(info) => info.appid.clone(),
            None => return Err(error(40001, errmsg_for(40001))),
        };
        if let Some(&code) = inner.denied.get(&(appid.clone(), path.to_owned())) {
            return Err(error(code, errmsg_for(code)));
        }
        Ok(inner
            .apps
            .get_mut(&appid)
            .expect("tokens belong to known apps"))
    }

    /// `GET /cgi-bin/template/get_all_private_template`.
    pub(crate) fn template_list(&self, access_token: Option<&str>) -> Reply {
        let mut inner = self.inner.lock();
        match Self::lookup_app(&mut inner, access_token, TEMPLATE_LIST) {
            Ok(app) => {
                app.stats.template_list_calls += 1;
                Reply::Json(serde_json::json!({ "template_list": app.templates }))
            }
            Err(reply) => reply,
        }
    }

    /// `POST /cgi-bin/openapi/quota/get` with `{"cgi_path": …}`: a send endpoint's quota today.
    pub(crate) fn quota_get(&self, access_token: Option<&str>, body: &[u8]) -> Reply {
        let mut inner = self.inner.lock();
        let app = match Self::lookup_app(&mut inner, access_token, QUOTA_GET) {
            Ok(app) => app,
            Err(reply) => return reply,
        };
        let path = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|b| b.get("cgi_path")?.as_str().map(str::to_owned));
        let Some(path) = path else {
            return error(47001, errmsg_for(47001));
        };
        let Some(quota) = app.quota.get(path.as_str()) else {
            return error(76021, errmsg_for(76021));
        };
        let count = quota.count();
        app.stats.quota_get_calls += 1;
        Reply::Json(serde_json::json!({ "errcode": 0, "errmsg": "ok", "quota": count }))
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

/// What the delivery report of an accepted send says, by the configured shares: the code a
/// `subscribe_msg_sent_event` carries and the status text both events carry. WeChat documents
/// only `ErrorCode` 0 (success); the failure codes are the simulator's own.
fn delivery_result(faults: &Faults, rng: &mut impl RngExt) -> (i64, &'static str) {
    let roll: f64 = rng.random();
    if roll < faults.report_blocked {
        (43101, "failed:user block")
    } else if roll < faults.report_blocked + faults.report_failed {
        (-1, "failed: system failed")
    } else {
        (0, "success")
    }
}

/// The event WeChat pushes for an accepted send of `kind`, its result drawn by the configured
/// shares.
fn delivery_xml(
    faults: &Faults,
    kind: &dyn Kind,
    appid: &str,
    touser: &str,
    template_id: &str,
    msgid: u64,
) -> String {
    let (errcode, status) = delivery_result(faults, &mut rand::rng());
    let created = unix_now();
    match kind.delivery_event() {
        DeliveryEvent::TemplateSendJobFinish => event_xml(appid, touser, msgid, status, created),
        DeliveryEvent::SubscribeMsgSent => {
            sent_event_xml(appid, touser, template_id, msgid, errcode, status, created)
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A template id as CONTRACT §1 has it: 1-128 of `[A-Za-z0-9_-]`.
fn is_template_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The simulator's idea of a real OpenID: 28 characters of `[A-Za-z0-9_-]` starting with `o`.
fn is_openid(s: &str) -> bool {
    s.len() == 28
        && s.starts_with('o')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "oia2TjuEGTNoeX76QEjQNrcURxG8";

    fn model() -> Model {
        Model::new(SimOptions::default()).0
    }

    fn token(m: &Model, stable: bool) -> String {
        match m.token(
            Some("client_credential"),
            Some("wx0000000000000000"),
            Some("secret"),
            stable,
            false,
        ) {
            Reply::Json(v) => v["access_token"].as_str().unwrap().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    fn send(m: &Model, token: &str, cmid: &str) -> serde_json::Value {
        let body = serde_json::json!({"touser": USER, "template_id": "t", "data": {"k": {"value": "v"}}, "client_msg_id": cmid});
        match m.send(
            crate::kinds::default_kind(),
            Some(token),
            &serde_json::to_vec(&body).unwrap(),
        ) {
            Reply::Json(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_credentials_get_40013_and_40125() {
        let m = model();
        assert_eq!(
            m.token(
                Some("client_credential"),
                Some("wxnope"),
                Some("x"),
                false,
                false
            ),
            error(40013, "invalid appid")
        );
        assert_eq!(
            m.token(
                Some("client_credential"),
                Some("wx0000000000000000"),
                Some("x"),
                false,
                false
            ),
            error(40125, "invalid appsecret")
        );
    }

    #[test]
    fn a_stable_token_is_the_same_for_every_caller() {
        let m = model();
        assert_eq!(token(&m, true), token(&m, true));
    }

    #[test]
    fn a_new_classic_token_retires_the_old_one_after_the_grace_period() {
        let m = Model::new(SimOptions {
            token_grace: Duration::from_millis(20),
            ..SimOptions::default()
        })
        .0;
        let old = token(&m, false);
        let new = token(&m, false);
        assert_ne!(old, new);
        assert_eq!(send(&m, &old, "a")["errcode"], 0);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(send(&m, &old, "b")["errcode"], 40001);
        assert_eq!(send(&m, &new, "c")["errcode"], 0);
    }

    #[test]
    fn client_msg_id_is_deduplicated() {
        let m = model();
        let t = token(&m, true);
        let a = send(&m, &t, "same");
        let b = send(&m, &t, "same");
        assert_eq!(a["msgid"], b["msgid"]);
        assert!(a["msgid"].as_u64().unwrap() > (1u64 << 53));
        let s = m.stats();
        assert_eq!(
            (
                s.apps["wx0000000000000000"].accepted,
                s.apps["wx0000000000000000"].duplicates
            ),
            (1, 1)
        );
    }

    #[test]
    fn a_refusing_user_gets_43101_until_they_accept_again() {
        let m = model();
        let t = token(&m, true);
        m.set_refusing(USER, true);
        assert_eq!(send(&m, &t, "r1")["errcode"], 43101);
        m.set_refusing(USER, false);
        assert_eq!(send(&m, &t, "r2")["errcode"], 0);
        assert_eq!(m.stats().apps["wx0000000000000000"].errcodes["43101"], 1);
    }

    #[test]
    fn each_subscribe_route_answers_47003_naming_the_field_that_breaks_its_type() {
        let m = model();
        let t = token(&m, true);
        for name in ["subscribe", "miniprogram_subscribe"] {
            let kind = crate::kinds::by_name(name).unwrap();
            let send = |data: serde_json::Value| {
                let body = serde_json::json!({"touser": USER, "template_id": "t", "data": data});
                match m.send(kind, Some(&t), &serde_json::to_vec(&body).unwrap()) {
                    Reply::Json(v) => v,
                    other => panic!("{other:?}"),
                }
            };
            let ok =
                send(serde_json::json!({"thing1": {"value": "ok"}, "number2": {"value": "12"}}));
            assert_eq!(ok["errcode"], 0, "{name}: {ok}");
            assert!(ok["msgid"].as_u64().is_some());
            let bad = send(
                serde_json::json!({"thing1": {"value": "ok"}, "number2": {"value": "twelve"}}),
            );
            assert_eq!(bad["errcode"], 47003, "{name}");
            assert!(
                bad["errmsg"]
                    .as_str()
                    .unwrap()
                    .contains("data.number2.value"),
                "{bad}"
            );
        }
        assert!(m.sends().iter().any(|r| r.kind == "miniprogram_subscribe"));
    }

    fn answer(reply: Reply) -> serde_json::Value {
        match reply {
            Reply::Json(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_template_list_is_the_apps_and_limits_which_templates_are_taken() {
        let m = model();
        let t = token(&m, true);
        assert_eq!(
            answer(m.template_list(Some(&t))),
            serde_json::json!({"template_list": []})
        );
        assert_eq!(answer(m.template_list(None))["errcode"], 41001);
        assert_eq!(answer(m.template_list(Some("nope")))["errcode"], 40001);
        // Without a list any template_id is taken; with one, only those listed.
        assert_eq!(send(&m, &t, "before")["errcode"], 0);
        let listed = SimTemplate {
            template_id: "other".into(),
            title: "订单".into(),
            content: "{{thing1.DATA}}".into(),
            ..SimTemplate::default()
        };
        m.set_templates("wx0000000000000000", vec![listed.clone()]);
        let list = answer(m.template_list(Some(&t)));
        assert_eq!(list["template_list"][0]["template_id"], "other");
        assert_eq!(list["template_list"][0]["content"], "{{thing1.DATA}}");
        assert_eq!(
            send(&m, &t, "after")["errcode"],
            40037,
            "template t is not listed"
        );
        assert_eq!(m.stats().apps["wx0000000000000000"].template_list_calls, 2);
    }

    #[test]
    fn quota_get_counts_accepted_sends_per_endpoint() {
        let m = Model::new(SimOptions {
            daily_quota: 5,
            ..SimOptions::default()
        })
        .0;
        let t = token(&m, true);
        let quota = |path: &str| {
            answer(m.quota_get(
                Some(&t),
                &serde_json::to_vec(&serde_json::json!({ "cgi_path": path })).unwrap(),
            ))
        };
        let template = "/cgi-bin/message/template/send";
        assert_eq!(
            quota(template)["quota"],
            serde_json::json!({"daily_limit": 5, "used": 0, "remain": 5})
        );
        send(&m, &t, "1");
        send(&m, &t, "1"); // a de-duplicated repeat is not a second send
        send(&m, &t, "2");
        let q = quota(template);
        assert_eq!(
            (q["errcode"].as_i64(), q["errmsg"].as_str()),
            (Some(0), Some("ok"))
        );
        assert_eq!(
            q["quota"],
            serde_json::json!({"daily_limit": 5, "used": 2, "remain": 3})
        );
        assert_eq!(
            quota("/cgi-bin/message/subscribe/bizsend")["quota"]["used"],
            0,
            "each endpoint counts its own sends"
        );
        assert_eq!(quota("/cgi-bin/nope")["errcode"], 76021);
        assert_eq!(answer(m.quota_get(Some(&t), b"not json"))["errcode"], 47001);
        assert_eq!(answer(m.quota_get(None, b"{}"))["errcode"], 41001);
        m.set_quota_left("wx0000000000000000", 0);
        assert_eq!(
            quota(template)["quota"],
            serde_json::json!({"daily_limit": 2, "used": 2, "remain": 0})
        );
        assert_eq!(m.stats().apps["wx0000000000000000"].quota_left, 0);
    }

    #[test]
    fn a_spent_quota_answers_45009() {
        let m = model();
        m.set_quota_left("wx0000000000000000", 1);
        let t = token(&m, true);
        assert_eq!(send(&m, &t, "1")["errcode"], 0);
        assert_eq!(send(&m, &t, "2")["errcode"], 45009);
    }

    #[test]
    fn expired_tokens_get_42001_and_unknown_ones_40001() {
        let m = Model::new(SimOptions {
            token_ttl: Duration::from_millis(10),
            ..SimOptions::default()
        })
        .0;
        let t = token(&m, false);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(send(&m, &t, "x")["errcode"], 42001);
        assert_eq!(send(&m, "nope", "x")["errcode"], 40001);
    }

    fn target() -> CallbackTarget {
        CallbackTarget {
            url: "http://127.0.0.1:9/cb".into(),
            token: "t".into(),
            aes_key: None,
        }
    }

    fn reject(template_id: &str, status: PreferenceStatus) -> UserEvent {
        UserEvent::SubscribeMsgChangeEvent {
            templates: vec![super::super::push::Decision {
                template_id: template_id.into(),
                status,
                scene: None,
            }],
        }
    }

    #[test]
    fn each_kind_pushes_its_own_result_event_after_an_accepted_send() {
        let (m, mut queue, _) = Model::new(SimOptions::default());
        m.set_callback("wx0000000000000000", Some(target()));
        let t = token(&m, true);
        let msgid = send(&m, &t, "a")["msgid"].as_u64().unwrap();
        let template = queue.try_recv().unwrap().push.xml;
        assert!(template.contains("TEMPLATESENDJOBFINISH"), "{template}");
        assert!(template.contains(&format!("<MsgID>{msgid}</MsgID>")));
        let body = serde_json::json!({"touser": USER, "template_id": "tplA", "data": {"thing1": {"value": "ok"}}});
        let kind = crate::kinds::by_name("subscribe").unwrap();
        let Reply::Json(v) = m.send(kind, Some(&t), &serde_json::to_vec(&body).unwrap()) else {
            panic!()
        };
        let sent = queue.try_recv().unwrap().push.xml;
        let item = crate::callback::xml::message(&sent).unwrap();
        assert_eq!(item.fields["Event"], "subscribe_msg_sent_event");
        assert_eq!(item.items.len(), 1);
        assert_eq!(item.items[0]["MsgID"], v["msgid"].to_string());
        assert_eq!(
            (
                item.items[0]["TemplateId"].as_str(),
                item.items[0]["ErrorCode"].as_str()
            ),
            ("tplA", "0")
        );
    }

    #[test]
    fn a_template_refused_in_a_user_event_is_answered_43101_until_accepted() {
        let (m, mut queue, _) = Model::new(SimOptions::default());
        let t = token(&m, true);
        assert_eq!(
            m.user_event(
                "wx0000000000000000",
                USER,
                reject("t", PreferenceStatus::Reject)
            ),
            Err(UserEventError::NoCallback("wx0000000000000000".into()))
        );
        m.set_callback("wx0000000000000000", Some(target()));
        m.user_event(
            "wx0000000000000000",
            USER,
            reject("t", PreferenceStatus::Reject),
        )
        .unwrap();
        let pushed = queue.try_recv().unwrap().push.xml;
        assert!(pushed.contains("subscribe_msg_change_event") && pushed.contains("reject"));
        assert_eq!(send(&m, &t, "r1")["errcode"], 43101);
        // Another template, and the same template to another user, are sent.
        let other =
            serde_json::json!({"touser": USER, "template_id": "u", "data": {"k": {"value": "v"}}});
        let Reply::Json(v) = m.send(
            crate::kinds::default_kind(),
            Some(&t),
            &serde_json::to_vec(&other).unwrap(),
        ) else {
            panic!()
        };
        assert_eq!(v["errcode"], 0);
        m.user_event(
            "wx0000000000000000",
            USER,
            reject("t", PreferenceStatus::Accept),
        )
        .unwrap();
        assert_eq!(send(&m, &t, "r2")["errcode"], 0);
        // Follows push, and change no answer.
        m.user_event("wx0000000000000000", USER, UserEvent::Unsubscribe)
            .unwrap();
        assert_eq!(send(&m, &t, "r3")["errcode"], 0);
        for bad_user in ["oShort", "", "x"] {
            assert!(matches!(
                m.user_event("wx0000000000000000", bad_user, UserEvent::Subscribe),
                Err(UserEventError::Invalid(_))
            ));
        }
        for bad_template in ["", "a]]>b", &"t".repeat(129)] {
            assert!(matches!(
                m.user_event(
                    "wx0000000000000000",
                    USER,
                    reject(bad_template, PreferenceStatus::Reject)
                ),
                Err(UserEventError::Invalid(_))
            ));
        }
    }
}
