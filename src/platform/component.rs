//! The third-party platform's own calls to WeChat (`/cgi-bin/component/…`): the component
//! token from the verify ticket, a push of a ticket on request, pre-auth codes, the exchange of
//! an authorization code, an authorizer's token refresh, and the list of authorizers. Tokens,
//! secrets and codes never reach an error from here.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::types::Secret;
use crate::wechat::client::{CallError, TokenError, TokenGrant, WechatClient};

/// Largest answer read: the authorizer list's page of 500 is about 100 KiB.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The most authorizers one `api_get_authorizer_list` page may hold (WeChat's limit).
pub(crate) const LIST_PAGE: u32 = 500;

/// Why a component call gave no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ComponentError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("WeChat refused {call}: errcode {errcode} ({errmsg})")]
    Refused {
        call: &'static str,
        errcode: i64,
        errmsg: String,
    },
    #[error("{call}: the answer lacks {field}")]
    Missing {
        call: &'static str,
        field: &'static str,
    },
}

impl ComponentError {
    /// WeChat's errcode, when it refused.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            ComponentError::Refused { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }
}

impl From<ComponentError> for TokenError {
    fn from(e: ComponentError) -> Self {
        match e {
            ComponentError::Call(call) => TokenError::Call(call),
            ComponentError::Refused {
                errcode, errmsg, ..
            } => TokenError::Refused { errcode, errmsg },
            missing @ ComponentError::Missing { .. } => {
                TokenError::Call(CallError::Body(missing.to_string()))
            }
        }
    }
}

/// What an exchanged authorization code gives.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub authorizer_appid: String,
    pub access: TokenGrant,
    pub refresh_token: Secret,
    /// The permission sets (`funcscope_category.id`) the merchant granted.
    pub func_ids: Vec<u64>,
}

/// One row of the authorizer list.
#[derive(Debug, Clone, Deserialize)]
pub struct ListedAuthorizer {
    pub authorizer_appid: String,
    /// Sometimes missing in WeChat's answers: a recovery path, not the source of truth.
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub auth_time: i64,
}

/// One page of the authorizer list.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthorizerPage {
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub list: Vec<ListedAuthorizer>,
}

/// A platform's calls, with its AppID and secret.
#[derive(Clone)]
pub struct ComponentClient {
    client: WechatClient,
    appid: String,
    secret: Secret,
}

/// WeChat's error fields, present on every answer that failed.
#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

#[derive(Deserialize)]
struct ComponentTokenReply {
    component_access_token: Option<Secret>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct PreAuthReply {
    pre_auth_code: Option<Secret>,
}

#[derive(Deserialize)]
struct QueryAuthReply {
    authorization_info: Option<AuthorizationInfo>,
}

#[derive(Deserialize)]
struct AuthorizationInfo {
    authorizer_appid: Option<String>,
    authorizer_access_token: Option<Secret>,
    expires_in: Option<u64>,
    authorizer_refresh_token: Option<Secret>,
    #[serde(default)]
    func_info: Vec<FuncInfo>,
}

#[derive(Deserialize)]
struct FuncInfo {
    funcscope_category: Option<FuncScope>,
}

#[derive(Deserialize)]
struct FuncScope {
    id: u64,
}

#[derive(Deserialize)]
struct AuthorizerTokenReply {
    authorizer_access_token: Option<Secret>,
    expires_in: Option<u64>,
    authorizer_refresh_token: Option<Secret>,
}

/// WeChat's tokens live two hours unless it says otherwise.
fn lifetime(expires_in: Option<u64>) -> Duration {
    Duration::from_secs(expires_in.unwrap_or(7200))
}

fn present<T>(
    value: Option<T>,
    call: &'static str,
    field: &'static str,
) -> Result<T, ComponentError> {
    value.ok_or(ComponentError::Missing { call, field })
}

impl ComponentClient {
    pub fn new(client: WechatClient, appid: impl Into<String>, secret: Secret) -> Self {
        Self {
            client,
            appid: appid.into(),
            secret,
        }
    }

    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// One call: `path` with the component token (when given) and `body`; WeChat's refusal
    /// (an errcode other than 0) is an error, and the answer is read as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        call: &'static str,
        token: Option<&Secret>,
        body: serde_json::Value,
    ) -> Result<T, ComponentError> {
        let path = format!("/cgi-bin/component/{call}");
        let query: Vec<(&str, &str)> = token
            .map(|t| vec![("component_access_token", t.expose())])
            .unwrap_or_default();
        let bytes = self
            .client
            .post_with_query(&path, &query, &body, MAX_ANSWER_BYTES)
            .await?;
        let status: Status =
            serde_json::from_slice(&bytes).map_err(|e| CallError::Body(e.to_string()))?;
        if status.errcode != 0 {
            return Err(ComponentError::Refused {
                call,
                errcode: status.errcode,
                errmsg: status.errmsg,
            });
        }
        Ok(serde_json::from_slice(&bytes).map_err(|e| CallError::Body(e.to_string()))?)
    }

    /// `api_component_token`: the platform's own token, from the newest verify ticket. A stale
    /// ticket gives `61006`.
    pub async fn component_token(&self, ticket: &Secret) -> Result<TokenGrant, ComponentError> {
        const CALL: &str = "api_component_token";
        let body = json!({
            "component_appid": self.appid,
            "component_appsecret": self.secret.expose(),
            "component_verify_ticket": ticket.expose(),
        });
        let reply: ComponentTokenReply = self.call(CALL, None, body).await?;
        Ok(TokenGrant {
            token: present(reply.component_access_token, CALL, "component_access_token")?,
            expires_in: lifetime(reply.expires_in),
        })
    }

    /// `api_start_push_ticket`: asks WeChat to push a verify ticket now.
    pub async fn start_push_ticket(&self) -> Result<(), ComponentError> {
        let body = json!({
            "component_appid": self.appid,
            "component_secret": self.secret.expose(),
        });
        let _: Status = self.call("api_start_push_ticket", None, body).await?;
        Ok(())
    }

    /// `api_create_preauthcode`: a code for the console's authorization link (about 10
    /// minutes).
    pub async fn pre_auth_code(&self, token: &Secret) -> Result<Secret, ComponentError> {
        const CALL: &str = "api_create_preauthcode";
        let body = json!({ "component_appid": self.appid });
        let reply: PreAuthReply = self.call(CALL, Some(token), body).await?;
        present(reply.pre_auth_code, CALL, "pre_auth_code")
    }

    /// `api_query_auth`: exchanges an authorization code for the authorizer's tokens.
    pub async fn query_auth(
        &self,
        token: &Secret,
        code: &Secret,
    ) -> Result<Authorization, ComponentError> {
        const CALL: &str = "api_query_auth";
        let body = json!({
            "component_appid": self.appid,
            "authorization_code": code.expose(),
        });
        let reply: QueryAuthReply = self.call(CALL, Some(token), body).await?;
        let info = present(reply.authorization_info, CALL, "authorization_info")?;
        Ok(Authorization {
            authorizer_appid: present(info.authorizer_appid, CALL, "authorizer_appid")?,
            access: TokenGrant {
                token: present(
                    info.authorizer_access_token,
                    CALL,
                    "authorizer_access_token",
                )?,
                expires_in: lifetime(info.expires_in),
            },
            refresh_token: present(
                info.authorizer_refresh_token,
                CALL,
                "authorizer_refresh_token",
            )?,
            func_ids: info
                .func_info
                .iter()
                .filter_map(|f| f.funcscope_category.as_ref().map(|c| c.id))
                .collect(),
        })
    }

    /// `api_authorizer_token`: a new access token for an authorizer, and the refresh token to
    /// keep from now on (always the one that comes back).
    pub async fn authorizer_token(
        &self,
        token: &Secret,
        authorizer_appid: &str,
        refresh_token: &Secret,
    ) -> Result<(TokenGrant, Secret), ComponentError> {
        const CALL: &str = "api_authorizer_token";
        let body = json!({
            "component_appid": self.appid,
            "authorizer_appid": authorizer_appid,
            "authorizer_refresh_token": refresh_token.expose(),
        });
        let reply: AuthorizerTokenReply = self.call(CALL, Some(token), body).await?;
        let grant = TokenGrant {
            token: present(
                reply.authorizer_access_token,
                CALL,
                "authorizer_access_token",
            )?,
            expires_in: lifetime(reply.expires_in),
        };
        let refresh = reply
            .authorizer_refresh_token
            .unwrap_or_else(|| refresh_token.clone());
        Ok((grant, refresh))
    }

    /// `api_get_authorizer_list`: one page of every authorizer, from `offset`.
    pub async fn authorizer_page(
        &self,
        token: &Secret,
        offset: u64,
    ) -> Result<AuthorizerPage, ComponentError> {
        let body = json!({
            "component_appid": self.appid,
            "offset": offset,
            "count": LIST_PAGE,
        });
        self.call("api_get_authorizer_list", Some(token), body)
            .await
    }
}
