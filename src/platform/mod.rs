//! WeChat's third-party platform (Open Platform, 第三方平台): a SaaS sends for the merchant
//! accounts that authorized it, with tokens it gets through its own component token, never
//! seeing a merchant's AppSecret. Here: the platform's calls (`component`), its token
//! (`component_token`), its pushes (`push`, read; `receiver`, served on
//! `POST /wechat/platform/NAME`), and [`Platform`], which turns a push or an operator's verb
//! into what the state keeps (`state::PlatformStore`).
//!
//! An authorizer's account is named `NAME:AUTHORIZER_APPID` ([`account_name`]).

pub mod authorizer_token;
pub mod component;
pub mod component_token;
pub mod push;
pub(crate) mod receiver;
pub mod reconcile;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{PlatformSettings, Settings, is_authorizer_appid};
use crate::state::{Authorizer, CodeClaim, PlatformStore, Standing, State, StateError};
use crate::types::Secret;
use crate::wechat::client::{TokenError, WechatClient};
use crate::wechat::shared_token::SharedTokenSource;
use crate::wechat::token::{TokenKeeper, TokenSource};
use component::{ComponentClient, ComponentError, LIST_PAGE, ListedAuthorizer};
use component_token::ComponentTokenSource;

/// WeChat's console page a merchant authorizes a platform on.
const AUTHORIZE_PAGE: &str = "https://mp.weixin.qq.com/cgi-bin/componentloginpage";

/// How long an exchanged code is remembered: WeChat's codes live 10 minutes.
const CODE_REMEMBERED: Duration = Duration::from_secs(30 * 60);

/// How long one read of the authorizer list serves recoveries.
const LIST_FRESH: Duration = Duration::from_secs(60);

/// Most pages `import` reads: 500 per page, so 100,000 authorizers.
const MAX_LIST_PAGES: u64 = 200;

/// The account name of `platform`'s authorizer `appid`: `NAME:APPID`.
pub fn account_name(platform: &str, appid: &str) -> String {
    format!("{platform}:{appid}")
}

/// Why a platform operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Component(#[from] ComponentError),
    #[error("no component token: {0}")]
    Token(#[from] TokenError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "the authorization code of {pushed} was exchanged for {answered}'s tokens: nothing kept"
    )]
    OtherAuthorizer { pushed: String, answered: String },
    #[error("the authorization code of {0} is being exchanged by another instance")]
    InProgress(String),
}

/// What an `import` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Authorizers written with the refresh token the list gave.
    pub kept: usize,
    /// Listed without a refresh token (WeChat leaves it out at times): not written.
    pub without_token: Vec<String>,
    /// Listed, but what the state holds changed later (a newer authorization or a withdrawal).
    pub newer_kept: usize,
}

/// One configured platform: its calls, its token and its state.
pub struct Platform {
    pub name: String,
    pub settings: PlatformSettings,
    pub component: ComponentClient,
    token: TokenKeeper,
    pub store: Arc<dyn PlatformStore>,
    /// How long one instance holds the exchange of an authorization code.
    code_claim: Duration,
    /// Told whenever this process keeps a change of an authorizer, so what follows the
    /// authorizers here (the queue's bindings) need not wait for its next look.
    pub changed: Arc<tokio::sync::Notify>,
    /// WeChat's authorizer list as last read for a recovery (AppID → refresh token), and when.
    listed: tokio::sync::Mutex<Option<(tokio::time::Instant, HashMap<String, Secret>)>>,
}

impl Platform {
    /// The platform `name` of `settings`, calling WeChat through `wechat` and keeping its state
    /// in `store`; its token is shared through `state` when that shares tokens.
    pub fn new(
        name: &str,
        settings: &Settings,
        wechat: WechatClient,
        state: &State,
        store: Arc<dyn PlatformStore>,
    ) -> Option<Self> {
        let platform = settings.platforms.get(name)?.clone();
        let component = ComponentClient::new(
            wechat,
            platform.component_appid.clone(),
            platform.component_secret.clone(),
        );
        let source = ComponentTokenSource {
            client: component.clone(),
            store: store.clone(),
        };
        let source: Box<dyn TokenSource> = match state.token_share() {
            Some(shared) => Box::new(SharedTokenSource {
                app: format!("platform:{}", platform.component_appid),
                shared,
                wechat: source,
            }),
            None => Box::new(source),
        };
        Some(Self {
            name: name.to_owned(),
            settings: platform,
            component,
            token: TokenKeeper::new(source),
            store,
            code_claim: settings.wechat.timeout.get() * 2 + Duration::from_secs(5),
            changed: Arc::new(tokio::sync::Notify::new()),
            listed: tokio::sync::Mutex::new(None),
        })
    }

    pub fn component_appid(&self) -> &str {
        &self.settings.component_appid
    }

    /// The platform's own token: cached, refreshed ahead, single-flight (shared through the
    /// state when it shares tokens).
    pub(crate) async fn component_token(&self) -> Result<Secret, TokenError> {
        Ok(self.token.get().await?.value.clone())
    }

    /// Exchanges an authorization `code` of `appid` (pushed at `created_at`) for its tokens and
    /// keeps the refresh token, once across instances. `Ok(None)`: the exchange was done before
    /// and what it kept stands.
    pub async fn authorize(
        &self,
        appid: &str,
        code: &Secret,
        created_at: i64,
    ) -> Result<Option<Authorizer>, PlatformError> {
        let component = self.component_appid();
        // Older than what is kept (a late push, a replay): nothing to exchange.
        let kept = self.store.authorizer(component, appid).await?;
        if kept.is_some_and(|a| a.changed_at > created_at) {
            return Ok(None);
        }
        match self
            .store
            .claim_code(component, code.expose(), self.code_claim)
            .await?
        {
            CodeClaim::Claimed => {}
            CodeClaim::Exchanged => return Ok(None),
            CodeClaim::Held => return Err(PlatformError::InProgress(appid.to_owned())),
        }
        let result = self.exchange(appid, code, created_at).await;
        match &result {
            Ok(_) => {
                // Kept past the code's own life, so no repeat of its push exchanges it again.
                self.store
                    .finish_code(component, code.expose(), CODE_REMEMBERED)
                    .await?;
            }
            Err(_) => {
                // WeChat pushes again when it is not told `success`: let that try.
                let _ = self.store.release_code(component, code.expose()).await;
            }
        }
        result.map(Some)
    }

    async fn exchange(
        &self,
        appid: &str,
        code: &Secret,
        created_at: i64,
    ) -> Result<Authorizer, PlatformError> {
        let token = self.component_token().await?;
        let auth = self.component.query_auth(&token, code).await?;
        if auth.authorizer_appid != appid {
            return Err(PlatformError::OtherAuthorizer {
                pushed: appid.to_owned(),
                answered: auth.authorizer_appid,
            });
        }
        let authorizer = Authorizer {
            appid: appid.to_owned(),
            standing: Standing::Active,
            refresh_token: Some(auth.refresh_token),
            changed_at: created_at,
        };
        self.store
            .put_authorizer(self.component_appid(), &authorizer)
            .await?;
        Ok(authorizer)
    }

    /// Retires `appid` as of `at` (an `unauthorized` push, or `platform remove`): its refresh
    /// token goes. `false` when the state holds a later change (a newer authorization).
    pub async fn revoke(&self, appid: &str, at: i64) -> Result<bool, PlatformError> {
        let revoked = Authorizer {
            appid: appid.to_owned(),
            standing: Standing::Revoked,
            refresh_token: None,
            changed_at: at,
        };
        Ok(self
            .store
            .put_authorizer(self.component_appid(), &revoked)
            .await?)
    }

    /// Keeps every authorizer WeChat lists, with its refresh token, as of `at`: onboarding a
    /// platform that has merchants already, or recovering refresh tokens a state lost.
    pub async fn import(&self, at: i64) -> Result<Imported, PlatformError> {
        let mut imported = Imported::default();
        for row in self.list_all().await? {
            let Some(refresh_token) = row.refresh_token.filter(|t| !t.is_empty()) else {
                imported.without_token.push(row.authorizer_appid);
                continue;
            };
            let authorizer = Authorizer {
                appid: row.authorizer_appid,
                standing: Standing::Active,
                refresh_token: Some(refresh_token),
                changed_at: at,
            };
            if self
                .store
                .put_authorizer(self.component_appid(), &authorizer)
                .await?
            {
                imported.kept += 1;
            } else {
                imported.newer_kept += 1;
            }
        }
        Ok(imported)
    }

    /// Every authorizer WeChat lists whose AppID can name an account, page by page.
    async fn list_all(&self) -> Result<Vec<ListedAuthorizer>, PlatformError> {
        let token = self.component_token().await?;
        let mut all = Vec::new();
        let mut offset = 0u64;
        for _ in 0..MAX_LIST_PAGES {
            let page = self.component.authorizer_page(&token, offset).await?;
            let listed = page.list.len() as u64;
            for row in page.list {
                if is_authorizer_appid(&row.authorizer_appid) {
                    all.push(row);
                } else {
                    tracing::warn!(
                        platform = self.name,
                        "the authorizer list named an AppID that is not letters and digits: skipped"
                    );
                }
            }
            offset += listed;
            if listed < u64::from(LIST_PAGE) || offset >= page.total_count {
                break;
            }
        }
        Ok(all)
    }

    /// The refresh token WeChat lists for `appid`, for a recovery. One read of the whole list
    /// serves every recovery of this process for [`LIST_FRESH`]: after a Redis that lost every
    /// refresh token, each authorizer's next fetch recovers from that one read, not from a
    /// list read of its own.
    pub(crate) async fn listed_refresh_token(
        &self,
        appid: &str,
    ) -> Result<Option<Secret>, PlatformError> {
        let mut listed = self.listed.lock().await;
        if listed
            .as_ref()
            .is_none_or(|(read, _)| read.elapsed() >= LIST_FRESH)
        {
            let tokens = self
                .list_all()
                .await?
                .into_iter()
                .filter_map(|row| {
                    let token = row.refresh_token.filter(|t| !t.is_empty())?;
                    Some((row.authorizer_appid, token))
                })
                .collect();
            *listed = Some((tokio::time::Instant::now(), tokens));
        }
        Ok(listed
            .as_ref()
            .and_then(|(_, tokens)| tokens.get(appid).cloned()))
    }
    /// The console link a merchant opens to authorize the platform, with a fresh pre-auth
    /// code, coming back to `redirect`.
    pub async fn authorize_url(&self, redirect: &str) -> Result<String, PlatformError> {
        let token = self.component_token().await?;
        let code = self.component.pre_auth_code(&token).await?;
        let mut url = reqwest::Url::parse(AUTHORIZE_PAGE).expect("a valid URL");
        url.query_pairs_mut()
            .append_pair("component_appid", self.component_appid())
            .append_pair("pre_auth_code", code.expose())
            .append_pair("redirect_uri", redirect)
            .append_pair("auth_type", "3");
        Ok(url.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authorizer_account_is_the_platform_and_its_appid() {
        assert_eq!(
            account_name("shopsaas", "wx1234567890abcdef"),
            "shopsaas:wx1234567890abcdef"
        );
        assert!(is_authorizer_appid("wx1234567890abcdef"));
        for bad in ["", "wx 1", "wx:1", "wx.1", "../x", &"a".repeat(33)] {
            assert!(!is_authorizer_appid(bad), "{bad}");
        }
    }
}
