//! The HTTP calls to WeChat: the two token endpoints, one JSON POST for every message kind, and
//! a bounded read-only call for lookups (template list, quota). No URL, token or secret ever
//! reaches an error from here.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::config::TokenMode;
use crate::state::StateError;
use crate::types::Secret;

/// WeChat's API as the worker calls it: one JSON POST per message kind, and a token fetch.
/// [`WechatClient`] speaks HTTP; the pipeline's tests answer from a script.
pub(crate) trait WechatApi: Send + Sync + 'static {
    /// POSTs a prepared JSON `body` to `path` (`/cgi-bin/…`, the kind's endpoint) with the
    /// access token, and reads WeChat's `{errcode, errmsg[, msgid]}` answer.
    fn send(
        &self,
        path: &str,
        token: &Secret,
        body: Bytes,
    ) -> impl Future<Output = Result<SendReply, CallError>> + Send;
    /// Fetches an access token in `mode`.
    fn token(
        &self,
        appid: &str,
        secret: &Secret,
        mode: TokenMode,
    ) -> impl Future<Output = Result<TokenGrant, TokenError>> + Send;
}

/// A failure to get a usable answer at all: always worth retrying later.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("WeChat call timed out")]
    Timeout,
    #[error("cannot reach WeChat: {0}")]
    Connect(String),
    #[error("WeChat answered HTTP {0}")]
    Status(u16),
    #[error("WeChat's answer was not the expected JSON: {0}")]
    Body(String),
}

impl CallError {
    /// A short label for metrics: `timeout`, `connect`, `http_503`, `body`.
    pub(crate) fn kind(&self) -> String {
        match self {
            CallError::Timeout => "timeout".into(),
            CallError::Connect(_) => "connect".into(),
            CallError::Status(code) => format!("http_{code}"),
            CallError::Body(_) => "body".into(),
        }
    }

    /// reqwest errors name the URL, which holds the access token: keep only the kind and the
    /// cause's words, never the URL.
    fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            return CallError::Timeout;
        }
        if let Some(status) = err.status() {
            return CallError::Status(status.as_u16());
        }
        let err = err.without_url();
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        if err.is_decode() {
            CallError::Body(text)
        } else {
            CallError::Connect(text)
        }
    }
}

/// Why a token could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("WeChat refused the token request: errcode {errcode} ({errmsg})")]
    Refused { errcode: i64, errmsg: String },
    /// The token is kept in shared state, and that state failed: not WeChat's doing.
    #[error(transparent)]
    State(#[from] StateError),
    /// A third-party platform's token needs the verify ticket WeChat pushes every 10 minutes,
    /// and none has come yet.
    #[error("no component_verify_ticket has been pushed for this platform yet")]
    NoTicket,
}

/// An access token with how long WeChat says it lives.
#[derive(Clone, Debug)]
pub struct TokenGrant {
    pub token: Secret,
    pub(crate) expires_in: Duration,
}

/// WeChat's answer to a template send.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SendReply {
    pub errcode: i64,
    #[serde(default)]
    pub(crate) errmsg: String,
    #[serde(default)]
    pub msgid: Option<u64>,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: Option<String>,
    expires_in: Option<u64>,
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// One pooled HTTP client for every app.
#[derive(Clone)]
pub struct WechatClient {
    http: reqwest::Client,
    base: String,
}

impl WechatClient {
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, CallError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .user_agent(concat!("wxcourier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(CallError::from_reqwest)?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// `GET /cgi-bin/token`: each new token retires the previous one.
    pub async fn classic_token(
        &self,
        appid: &str,
        secret: &Secret,
    ) -> Result<TokenGrant, TokenError> {
        let resp = self
            .http
            .get(format!("{}/cgi-bin/token", self.base))
            .query(&[
                ("grant_type", "client_credential"),
                ("appid", appid),
                ("secret", secret.expose()),
            ])
            .send()
            .await
            .map_err(CallError::from_reqwest)?;
        token_from(resp).await
    }

    /// `POST /cgi-bin/stable_token` without `force_refresh`: every caller gets the same token
    /// and none invalidates another's.
    pub async fn stable_token(
        &self,
        appid: &str,
        secret: &Secret,
    ) -> Result<TokenGrant, TokenError> {
        let body = serde_json::json!({
            "grant_type": "client_credential",
            "appid": appid,
            "secret": secret.expose(),
            "force_refresh": false,
        });
        let resp = self
            .http
            .post(format!("{}/cgi-bin/stable_token", self.base))
            .json(&body)
            .send()
            .await
            .map_err(CallError::from_reqwest)?;
        token_from(resp).await
    }

    /// `POST /cgi-bin/message/template/send` with a prepared body (a job's `wechat_body`).
    pub async fn send_template(
        &self,
        token: &Secret,
        body: Vec<u8>,
    ) -> Result<SendReply, CallError> {
        self.post_json("/cgi-bin/message/template/send", token, body.into())
            .await
    }

    /// The one JSON POST every message kind uses: `path` (`/cgi-bin/…`) with the access token,
    /// a prepared JSON body, and WeChat's `{errcode, errmsg[, msgid]}` answer.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        token: &Secret,
        body: Bytes,
    ) -> Result<SendReply, CallError> {
        let json = reqwest::header::HeaderValue::from_static("application/json");
        let resp = self
            .http
            .post(send_url(&self.base, path, token))
            .header(reqwest::header::CONTENT_TYPE, json)
            .body(body)
            .send()
            .await
            .map_err(CallError::from_reqwest)?;
        let bytes = read_ok_body(resp).await?;
        serde_json::from_slice::<SendReply>(&bytes).map_err(|e| CallError::Body(e.to_string()))
    }
}

/// What a query value keeps as it is: the unreserved characters of RFC 3986.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `BASE` `PATH` `?access_token=TOKEN`, written at once: the send's one query parameter needs
/// no serializer, and every send builds this URL.
fn send_url(base: &str, path: &str, token: &Secret) -> String {
    let token = percent_encoding::utf8_percent_encode(token.expose(), QUERY_VALUE);
    format!("{base}{path}?access_token={token}")
}

impl WechatApi for WechatClient {
    // The call's own future, not one wrapped around it: every job waiting for a WeChat slot
    // carries this state.
    fn send(
        &self,
        path: &str,
        token: &Secret,
        body: Bytes,
    ) -> impl Future<Output = Result<SendReply, CallError>> + Send {
        self.post_json(path, token, body)
    }

    async fn token(
        &self,
        appid: &str,
        secret: &Secret,
        mode: TokenMode,
    ) -> Result<TokenGrant, TokenError> {
        match mode {
            TokenMode::Stable => self.stable_token(appid, secret).await,
            TokenMode::Classic => self.classic_token(appid, secret).await,
        }
    }
}

/// A shared API (the pipeline and the token source of one app use the same one).
impl<W: WechatApi> WechatApi for std::sync::Arc<W> {
    fn send(
        &self,
        path: &str,
        token: &Secret,
        body: Bytes,
    ) -> impl Future<Output = Result<SendReply, CallError>> + Send {
        (**self).send(path, token, body)
    }

    fn token(
        &self,
        appid: &str,
        secret: &Secret,
        mode: TokenMode,
    ) -> impl Future<Output = Result<TokenGrant, TokenError>> + Send {
        (**self).token(appid, secret, mode)
    }
}

impl WechatClient {
    /// A lookup beside the sends: `GET path` (no `body`) or `POST path` with a JSON body, with
    /// the access token. The answer is read up to `max_bytes` and refused past that, so a
    /// runaway answer is never buffered whole.
    pub async fn lookup(
        &self,
        path: &str,
        token: &Secret,
        body: Option<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<bytes::Bytes, CallError> {
        let url = format!("{}{path}", self.base);
        let request = match body {
            None => self.http.get(url),
            Some(body) => self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        };
        let resp = request
            .query(&[("access_token", token.expose())])
            .send()
            .await
            .map_err(CallError::from_reqwest)?;
        read_bounded(resp, max_bytes).await
    }

    /// `POST path` with `query` (which may hold a token: it never reaches an error) and a JSON
    /// `body`, the answer read up to `max_bytes`: the third-party platform's component calls,
    /// which take their token, if any, as `component_access_token`.
    pub(crate) async fn post_with_query(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: &serde_json::Value,
        max_bytes: usize,
    ) -> Result<bytes::Bytes, CallError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .query(query)
            .json(body)
            .send()
            .await
            .map_err(CallError::from_reqwest)?;
        read_bounded(resp, max_bytes).await
    }
}

/// A successful answer's body, refused past `max_bytes` so a runaway answer is never buffered
/// whole.
async fn read_bounded(
    mut resp: reqwest::Response,
    max_bytes: usize,
) -> Result<bytes::Bytes, CallError> {
    let status = resp.status();
    if !status.is_success() {
        return Err(CallError::Status(status.as_u16()));
    }
    let too_big = || CallError::Body(format!("the answer is over {max_bytes} bytes"));
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(too_big());
    }
    let mut read = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(CallError::from_reqwest)? {
        if read.len() + chunk.len() > max_bytes {
            return Err(too_big());
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read.freeze())
}

async fn read_ok_body(resp: reqwest::Response) -> Result<bytes::Bytes, CallError> {
    let status = resp.status();
    if !status.is_success() {
        return Err(CallError::Status(status.as_u16()));
    }
    resp.bytes().await.map_err(CallError::from_reqwest)
}

async fn token_from(resp: reqwest::Response) -> Result<TokenGrant, TokenError> {
    let bytes = read_ok_body(resp).await?;
    let reply: TokenReply =
        serde_json::from_slice(&bytes).map_err(|e| CallError::Body(e.to_string()))?;
    match (reply.access_token, reply.errcode) {
        (Some(token), 0) if !token.is_empty() => Ok(TokenGrant {
            token: Secret::new(token),
            expires_in: Duration::from_secs(reply.expires_in.unwrap_or(7200)),
        }),
        (_, 0) => Err(CallError::Body("no access_token in the answer".into()).into()),
        (_, errcode) => Err(TokenError::Refused {
            errcode,
            errmsg: reply.errmsg,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_url_carries_the_token_as_one_encoded_query_value() {
        let url = send_url(
            "http://127.0.0.1:9",
            "/cgi-bin/message/template/send",
            &Secret::new("AbC_-9.~"),
        );
        assert_eq!(
            url,
            "http://127.0.0.1:9/cgi-bin/message/template/send?access_token=AbC_-9.~"
        );
        // A token is WeChat's to choose: whatever it holds stays one query value.
        let odd = send_url("http://h", "/p", &Secret::new("a b&c=d+/é"));
        let parsed = reqwest::Url::parse(&odd).unwrap();
        let pairs: Vec<_> = parsed.query_pairs().collect();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].0, "access_token");
        assert_eq!(pairs[0].1, "a b&c=d+/é");
    }
}
