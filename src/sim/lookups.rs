//! The read-only lookups beside the sends, and what tests set for them: an account's template
//! list (`get_all_private_template`), each send endpoint's daily quota (`openapi/quota/get`),
//! and lookups an account is denied.

use std::time::Instant;

use super::model::{App, Inner, Model, Reply, SimTemplate, errmsg_for, error};

/// The lookups the simulator serves.
pub const TEMPLATE_LIST: &str = "/cgi-bin/template/get_all_private_template";
pub const QUOTA_GET: &str = "/cgi-bin/openapi/quota/get";

impl Model {
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

    /// The app a lookup's token belongs to, or the answer to a missing, unknown or expired
    /// token, or to a lookup the app is denied.
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
}
