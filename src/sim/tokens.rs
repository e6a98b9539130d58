//! The token endpoints: `GET /cgi-bin/token` (classic, where each new token retires the last
//! after a grace period) and `POST /cgi-bin/stable_token` (one token for every caller), with
//! real expiry and invalidation.

use std::time::Instant;

use rand::RngExt;

use super::model::{Inner, Model, Reply, TokenInfo, error};

impl Inner {
    /// Forgets the classic tokens whose grace period is over.
    pub(super) fn drop_retired(&mut self, now: Instant) {
        while let Some((t, _)) = self.retiring.front() {
            if *t > now {
                break;
            }
            let (_, old) = self.retiring.pop_front().expect("front exists");
            self.tokens.remove(&old);
        }
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

    pub(crate) fn invalidate(&self, appid: &str) {
        let mut inner = self.inner.lock();
        inner.tokens.retain(|_, info| info.appid != appid);
        if let Some(app) = inner.apps.get_mut(appid) {
            app.classic = None;
            app.stable = None;
        }
    }
}
