//! The send endpoints, one per message kind: the checks every endpoint makes (token, OpenID,
//! scripted and random faults, refusing users, the kind's own rules, the template list),
//! de-duplication on `touser` + `client_msg_id`, the daily quota, and the record of each send.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::model::{Answer, App, Model, Reply, SendRecord, errmsg_for, error};
use super::reports::delivery_xml;
use super::rules;
use crate::kinds::Kind;

/// How long WeChat remembers `touser` + `client_msg_id`.
const DEDUP_WINDOW: Duration = Duration::from_secs(600);

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

impl Model {
    /// A message send on `kind`'s endpoint: the checks every endpoint makes, then the kind's.
    pub(crate) fn send(&self, kind: Kind, access_token: Option<&str>, body: &[u8]) -> Reply {
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
        if self.components.lock().not_permitted(&appid) {
            count(app, 61007);
            return error(61007, "api is unauthorized to component");
        }
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
                kind,
                touser: touser.clone(),
                client_msg_id: cmid.clone(),
                data: raw.as_ref().and_then(|v| v.get("data")).cloned(),
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
                if !rules::is_openid(&touser) {
                    Some((40003, errmsg_for(40003).to_owned()))
                } else {
                    rules::refusal(kind, &raw)
                }
            })
            .or_else(|| {
                // An account with a template list knows no other template.
                let id = raw["template_id"].as_str().unwrap_or("");
                (kind == Kind::Template
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

    pub(crate) fn set_refusing(&self, touser: &str, refusing: bool) {
        let mut inner = self.inner.lock();
        if refusing {
            inner.options.refusing.insert(touser.to_owned());
        } else {
            inner.options.refusing.remove(touser);
        }
    }
}
