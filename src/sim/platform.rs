//! The simulator as WeChat's third-party platform side: the component endpoints
//! (`/cgi-bin/component/…`) with real tickets, tokens, pre-auth and authorization codes and
//! refresh tokens; pushes of verify tickets (on a timer and on request) and of merchants
//! authorizing, updating and withdrawing, sealed for the component AppID; and fault flags for
//! a stale ticket (`61006`), lost ticket pushes, refused refresh tokens (`61023`), an
//! authorizer list without refresh tokens, and authorizers without the send permission
//! (`61007`). An authorizer's access token sends like an account's own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::model::{Model, Reply, TokenInfo, error, new_app};
use super::platform_state::{Component, PlatformFaults, PlatformStats, SimAuthorizer, SimPlatform};
use super::push::{CallbackPush, CallbackTarget, Queued};

/// WeChat keeps a verify ticket valid for 12 hours.
const TICKET_LIFE: Duration = Duration::from_secs(12 * 3600);
/// Pre-auth and authorization codes live 10 minutes.
const CODE_LIFE: Duration = Duration::from_secs(600);
/// The permission sets a merchant grants by default: 1 (messages) among them.
const DEFAULT_FUNCS: [u64; 3] = [1, 15, 18];

/// Why a control request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformControlError {
    #[error("no platform with component_appid {0}")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
}

fn random(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..64)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}@@@{tail}")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn ok(value: serde_json::Value) -> Reply {
    Reply::Json(value)
}

/// A field of a JSON body as text.
fn text<'a>(body: &'a serde_json::Value, field: &str) -> Option<&'a str> {
    body.get(field).and_then(|v| v.as_str())
}

/// The XML of a push to the authorization event URL.
fn push_xml(component: &str, info: &str, rest: &str) -> String {
    format!(
        "<xml><AppId><![CDATA[{component}]]></AppId><CreateTime>{}</CreateTime>\
         <InfoType><![CDATA[{info}]]></InfoType>{rest}</xml>",
        unix_now()
    )
}

impl Model {
    fn push_to(&self, platform: &SimPlatform, xml: String) {
        let Some(url) = &platform.event_url else {
            return;
        };
        let _ = self.pushes.send(Queued {
            push: CallbackPush {
                target: CallbackTarget {
                    url: url.clone(),
                    token: platform.token.clone(),
                    aes_key: Some(platform.aes_key.clone()),
                },
                appid: platform.component_appid.clone(),
                xml,
            },
            at: tokio::time::Instant::now(),
        });
    }

    /// Issues a new ticket to `c` and pushes it, unless tickets are being lost.
    fn issue_ticket(&self, c: &mut Component) {
        if c.faults.lose_tickets {
            return;
        }
        let ticket = random("ticket");
        let now = Instant::now();
        c.tickets.retain(|_, until| *until > now);
        c.tickets.insert(ticket.clone(), now + TICKET_LIFE);
        c.stats.tickets_pushed += 1;
        let xml = push_xml(
            &c.platform.component_appid,
            "component_verify_ticket",
            &format!("<ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket>"),
        );
        self.push_to(&c.platform, xml);
    }

    /// The AppID `appid`'s pushes are sealed for: a platform's authorizer's go to the platform
    /// sealed with its keys and its component AppID, as WeChat forwards them; an account's own
    /// are sealed for itself.
    pub(crate) fn sealed_for(&self, appid: &str) -> String {
        self.components
            .lock()
            .0
            .values()
            .find(|c| c.authorizers.contains_key(appid))
            .map_or_else(|| appid.to_owned(), |c| c.platform.component_appid.clone())
    }

    /// Pushes a new ticket to every platform with an event URL (the 10-minute timer).
    pub(crate) fn push_tickets(&self) {
        let mut components = self.components.lock();
        for c in components.0.values_mut() {
            self.issue_ticket(c);
        }
    }

    /// `POST /cgi-bin/component/CALL`: every component endpoint.
    pub(crate) fn component_call(
        &self,
        call: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> Reply {
        let Some(appid) = text(body, "component_appid") else {
            return error(41002, "component_appid missing");
        };
        let mut components = self.components.lock();
        let Some(c) = components.0.get_mut(appid) else {
            return error(61004, "invalid component_appid");
        };
        let now = Instant::now();
        match call {
            "api_start_push_ticket" => {
                c.stats.start_push_ticket_calls += 1;
                if text(body, "component_secret") != Some(c.platform.secret.as_str()) {
                    return error(40125, "invalid component_secret");
                }
                self.issue_ticket(c);
                ok(serde_json::json!({ "errcode": 0, "errmsg": "ok" }))
            }
            "api_component_token" => {
                c.stats.component_token_calls += 1;
                if text(body, "component_appsecret") != Some(c.platform.secret.as_str()) {
                    return error(40125, "invalid component_appsecret");
                }
                let live = text(body, "component_verify_ticket")
                    .and_then(|t| c.tickets.get(t))
                    .is_some_and(|until| *until > now);
                if c.faults.stale_ticket || !live {
                    return error(61006, "component ticket is invalid");
                }
                let token = random("component");
                c.component_tokens
                    .insert(token.clone(), now + Duration::from_secs(7200));
                ok(serde_json::json!({ "component_access_token": token, "expires_in": 7200 }))
            }
            _ => {
                let live = token
                    .and_then(|t| c.component_tokens.get(t))
                    .is_some_and(|until| *until > now);
                if !live {
                    return error(40001, "invalid component_access_token");
                }
                drop(components);
                self.with_component_token(call, appid, body, now)
            }
        }
    }

    /// The component endpoints that take the component token.
    fn with_component_token(
        &self,
        call: &str,
        appid: &str,
        body: &serde_json::Value,
        now: Instant,
    ) -> Reply {
        let mut components = self.components.lock();
        let Some(c) = components.0.get_mut(appid) else {
            return error(61004, "invalid component_appid");
        };
        match call {
            "api_create_preauthcode" => {
                c.stats.preauthcode_calls += 1;
                let code = random("preauthcode");
                c.pre_auth_codes.insert(code.clone(), now + CODE_LIFE);
                ok(serde_json::json!({ "pre_auth_code": code, "expires_in": CODE_LIFE.as_secs() }))
            }
            "api_query_auth" => {
                c.stats.query_auth_calls += 1;
                let found = text(body, "authorization_code")
                    .and_then(|code| c.codes.get(code))
                    .filter(|(_, until)| *until > now)
                    .map(|(authorizer, _)| authorizer.clone());
                let Some(authorizer) = found else {
                    return error(61010, "authorization code is invalid or expired");
                };
                let Some(a) = c.authorizers.get(&authorizer) else {
                    return error(61003, "component is not authorized by this account");
                };
                let (refresh, funcs) = (a.refresh_token.clone(), a.funcs.clone());
                drop(components);
                let access = self.authorizer_access_token(&authorizer, now);
                ok(serde_json::json!({ "authorization_info": {
                    "authorizer_appid": authorizer,
                    "authorizer_access_token": access,
                    "expires_in": 7200,
                    "authorizer_refresh_token": refresh,
                    "func_info": funcs.iter()
                        .map(|id| serde_json::json!({ "funcscope_category": { "id": id } }))
                        .collect::<Vec<_>>(),
                }}))
            }
            "api_authorizer_token" => {
                c.stats.authorizer_token_calls += 1;
                let Some(authorizer) = text(body, "authorizer_appid") else {
                    return error(41002, "authorizer_appid missing");
                };
                let refresh_ok = c.authorizers.get(authorizer).is_some_and(|a| {
                    text(body, "authorizer_refresh_token") == Some(a.refresh_token.as_str())
                });
                if c.faults.refuse_refresh || !refresh_ok {
                    return error(61023, "refresh_token is invalid");
                }
                let refresh = c.authorizers[authorizer].refresh_token.clone();
                let authorizer = authorizer.to_owned();
                drop(components);
                let access = self.authorizer_access_token(&authorizer, now);
                ok(serde_json::json!({
                    "authorizer_access_token": access,
                    "expires_in": 7200,
                    "authorizer_refresh_token": refresh,
                }))
            }
            "api_get_authorizer_list" => {
                c.stats.authorizer_list_calls += 1;
                let offset = body.get("offset").and_then(|v| v.as_u64()).unwrap_or(0);
                let count = body.get("count").and_then(|v| v.as_u64()).unwrap_or(0);
                if count == 0 || count > 500 {
                    return error(47003, "count must be 1-500");
                }
                let without = c.faults.list_without_refresh_token;
                let list: Vec<serde_json::Value> = c
                    .authorizers
                    .iter()
                    .skip(offset as usize)
                    .take(count as usize)
                    .map(|(appid, a)| {
                        let mut row = serde_json::json!({
                            "authorizer_appid": appid,
                            "auth_time": a.auth_time,
                        });
                        if !without {
                            row["refresh_token"] = a.refresh_token.clone().into();
                        }
                        row
                    })
                    .collect();
                ok(serde_json::json!({ "total_count": c.authorizers.len(), "list": list }))
            }
            _ => error(-1, "unknown component call"),
        }
    }

    /// A new access token for `authorizer`, which sends as an account of its own.
    fn authorizer_access_token(&self, authorizer: &str, now: Instant) -> String {
        let token = random("authorizer").replace('@', "_");
        let mut inner = self.inner.lock();
        if !inner.apps.contains_key(authorizer) {
            // An AppSecret nobody knows: only its platform gets it tokens.
            let app = new_app(&inner.options, authorizer, &random("unknown"));
            inner.apps.insert(authorizer.to_owned(), app);
        }
        inner.tokens.insert(
            token.clone(),
            TokenInfo {
                appid: authorizer.to_owned(),
                expires: now + Duration::from_secs(7200),
            },
        );
        token
    }

    /// A merchant authorizes the platform `component` (or updates its authorization): a new
    /// refresh token (the old one gives 61023 from now on) and an `authorized` (or
    /// `updateauthorized`) push with a fresh code.
    pub(crate) fn authorize(
        &self,
        component: &str,
        authorizer: &str,
    ) -> Result<String, PlatformControlError> {
        // WeChat's AppIDs: `wx` and 16 hex digits; any letters and digits here.
        if authorizer.is_empty()
            || authorizer.len() > 32
            || !authorizer.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(PlatformControlError::Invalid(format!(
                "{authorizer:?} is not an AppID (letters and digits)"
            )));
        }
        let mut components = self.components.lock();
        let c = components
            .0
            .get_mut(component)
            .ok_or_else(|| PlatformControlError::Unknown(component.to_owned()))?;
        let update = c.authorizers.contains_key(authorizer);
        c.authorizers.insert(
            authorizer.to_owned(),
            SimAuthorizer {
                refresh_token: random("refreshtoken"),
                funcs: DEFAULT_FUNCS.to_vec(),
                auth_time: unix_now(),
            },
        );
        let code = random("queryauthcode");
        c.codes.insert(
            code.clone(),
            (authorizer.to_owned(), Instant::now() + CODE_LIFE),
        );
        let info = if update {
            "updateauthorized"
        } else {
            "authorized"
        };
        let xml = push_xml(
            component,
            info,
            &format!(
                "<AuthorizerAppid><![CDATA[{authorizer}]]></AuthorizerAppid>\
                 <AuthorizationCode><![CDATA[{code}]]></AuthorizationCode>\
                 <AuthorizationCodeExpiredTime>{}</AuthorizationCodeExpiredTime>",
                unix_now() + CODE_LIFE.as_secs()
            ),
        );
        self.push_to(&c.platform, xml);
        Ok(code)
    }

    /// A merchant withdraws the platform's authorization: its refresh token stops working and
    /// an `unauthorized` push goes out.
    pub(crate) fn unauthorize(
        &self,
        component: &str,
        authorizer: &str,
    ) -> Result<(), PlatformControlError> {
        let mut components = self.components.lock();
        let c = components
            .0
            .get_mut(component)
            .ok_or_else(|| PlatformControlError::Unknown(component.to_owned()))?;
        if c.authorizers.remove(authorizer).is_none() {
            return Err(PlatformControlError::Invalid(format!(
                "{authorizer} has not authorized {component}"
            )));
        }
        let xml = push_xml(
            component,
            "unauthorized",
            &format!("<AuthorizerAppid><![CDATA[{authorizer}]]></AuthorizerAppid>"),
        );
        self.push_to(&c.platform, xml);
        Ok(())
    }

    /// Pushes a new ticket to `component` now.
    pub(crate) fn push_ticket(&self, component: &str) -> Result<(), PlatformControlError> {
        let mut components = self.components.lock();
        let c = components
            .0
            .get_mut(component)
            .ok_or_else(|| PlatformControlError::Unknown(component.to_owned()))?;
        self.issue_ticket(c);
        Ok(())
    }

    pub(crate) fn set_platform_faults(
        &self,
        component: &str,
        faults: PlatformFaults,
    ) -> Result<(), PlatformControlError> {
        let mut components = self.components.lock();
        let c = components
            .0
            .get_mut(component)
            .ok_or_else(|| PlatformControlError::Unknown(component.to_owned()))?;
        c.faults = faults;
        Ok(())
    }

    /// Every platform's counts, by component AppID.
    pub(crate) fn platform_stats(&self) -> BTreeMap<String, PlatformStats> {
        self.components
            .lock()
            .0
            .iter()
            .map(|(id, c)| (id.clone(), c.stats.clone()))
            .collect()
    }
}
