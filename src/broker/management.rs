//! RabbitMQ's management HTTP API, for what AMQP cannot do: list queues, list an exchange's
//! bindings, read and set policies. Its credentials never reach a log or an error.

use std::time::Duration;

use lapin::uri::AMQPUri;
use percent_encoding::percent_decode_str;
use reqwest::Url;

use crate::config::AmqpSettings;
use crate::types::Secret;

/// One call to the management API; it answers in milliseconds when it is there at all.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (a queue listing of names only: about 100,000 queues); a bigger or
/// endless body is refused rather than buffered.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// Why the management API gave no answer to use, in words without its credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagementError {
    #[error("amqp.url is not a valid amqp:// or amqps:// URL")]
    BadAmqpUrl,
    #[error("amqp.management_url is not an http:// or https:// URL")]
    BadUrl,
    #[error("cannot build the management API client: {0}")]
    Client(String),
    #[error("the management URL cannot take an API path")]
    NoPath,
    #[error("no answer ({0})")]
    NoAnswer(String),
    #[error("it refused the credentials (HTTP {0}); the user needs the monitoring tag")]
    Refused(u16),
    #[error("it answered HTTP {0}")]
    Status(u16),
    #[error("its answer broke off ({0})")]
    BrokeOff(String),
    #[error("its answer is over {} MiB", .0 >> 20)]
    TooBig(usize),
    #[error("its answer is not {0}")]
    NotA(&'static str),
}

/// RabbitMQ's management API for the broker and vhost of `amqp.url`.
pub struct ManagementApi {
    /// Without credentials, so it can be printed.
    base: Url,
    user: String,
    password: Secret,
    vhost: String,
    http: reqwest::Client,
}

impl ManagementApi {
    /// `amqp.management_url` when set, else `http://HOST:15672` (`https://HOST:15671` for
    /// `amqps://`) of `amqp.url`'s host; the credentials are the URL's own, else `amqp.url`'s.
    pub fn from_settings(amqp: &AmqpSettings) -> Result<Self, ManagementError> {
        let bad_amqp = || ManagementError::BadAmqpUrl;
        let amqp_url = amqp.url.expose();
        let uri: AMQPUri = amqp_url.parse().map_err(|_| bad_amqp())?;
        let (mut base, user, password) = match &amqp.management_url {
            Some(url) => {
                let url = Url::parse(url.expose())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                    .ok_or(ManagementError::BadUrl)?;
                let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
                let (user, password) = if url.username().is_empty() {
                    (
                        uri.authority.userinfo.username.clone(),
                        uri.authority.userinfo.password.clone(),
                    )
                } else {
                    (decode(url.username()), decode(url.password().unwrap_or("")))
                };
                (url, user, password)
            }
            None => {
                // The host as written: AMQPUri turns an IPv6 literal into "localhost".
                let host = Url::parse(amqp_url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .ok_or_else(bad_amqp)?;
                let tls = amqp_url.starts_with("amqps://");
                let (scheme, port) = if tls {
                    ("https", 15671)
                } else {
                    ("http", 15672)
                };
                let url =
                    Url::parse(&format!("{scheme}://{host}:{port}/")).map_err(|_| bad_amqp())?;
                (
                    url,
                    uri.authority.userinfo.username.clone(),
                    uri.authority.userinfo.password.clone(),
                )
            }
        };
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(API_TIMEOUT)
            .build()
            .map_err(|e| ManagementError::Client(e.to_string()))?;
        Ok(Self {
            base,
            user,
            password: Secret::new(password),
            vhost: uri.vhost,
            http,
        })
    }

    /// The vhost of `amqp.url`, which every call is about.
    pub(crate) fn vhost(&self) -> &str {
        &self.vhost
    }

    /// Where the API is, without credentials (safe to log).
    pub(crate) fn describe(&self) -> String {
        self.base.to_string()
    }

    /// Every queue name in the vhost.
    pub(crate) async fn queue_names(&self) -> Result<Vec<String>, ManagementError> {
        let body = self.get(&["queues"], &[("columns", "name")]).await?;
        parse_names(&body.ok_or(ManagementError::Status(404))?)
    }

    /// The bindings whose source is `exchange` in the vhost; `None` when the exchange does
    /// not exist.
    pub(crate) async fn bindings_from(
        &self,
        exchange: &str,
    ) -> Result<Option<Vec<Binding>>, ManagementError> {
        self.bindings_at(&["exchanges", exchange, "bindings", "source"])
            .await
    }

    /// The bindings from `exchange` to `queue` in the vhost; `None` when either does not
    /// exist.
    pub(crate) async fn bindings_between(
        &self,
        exchange: &str,
        queue: &str,
    ) -> Result<Option<Vec<Binding>>, ManagementError> {
        self.bindings_at(&["bindings", "e", exchange, "q", queue])
            .await
    }

    /// The binding listing at `path`; `None` on 404.
    async fn bindings_at(&self, path: &[&str]) -> Result<Option<Vec<Binding>>, ManagementError> {
        let Some(body) = self.get(path, &[]).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|_| ManagementError::NotA("a binding listing"))
    }

    /// `exchange` as the API shows it; `None` when it does not exist.
    pub(crate) async fn exchange(
        &self,
        exchange: &str,
    ) -> Result<Option<Exchange>, ManagementError> {
        let Some(body) = self.get(&["exchanges", exchange], &[]).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|_| ManagementError::NotA("an exchange"))
    }

    /// The vhost's policy `name`; `None` when there is none.
    pub(crate) async fn policy(&self, name: &str) -> Result<Option<Policy>, ManagementError> {
        let Some(body) = self.get(&["policies", name], &[]).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|_| ManagementError::NotA("a policy"))
    }

    /// Sets the vhost's policy `name` (creating or replacing it).
    pub(crate) async fn put_policy(
        &self,
        name: &str,
        policy: &Policy,
    ) -> Result<(), ManagementError> {
        let url = self.url(&["policies", name], &[])?;
        let request = self.http.put(url).json(policy);
        self.send(request).await.map(|_| ())
    }

    /// Removes the vhost's policy `name`; one already gone is not an error.
    pub(crate) async fn delete_policy(&self, name: &str) -> Result<(), ManagementError> {
        let url = self.url(&["policies", name], &[])?;
        self.send(self.http.delete(url)).await.map(|_| ())
    }

    /// `api/KIND/VHOST/…` with `query`.
    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> Result<Url, ManagementError> {
        let (kind, rest) = path.split_first().ok_or(ManagementError::NoPath)?;
        let mut url = self
            .base
            .join("api/")
            .map_err(|_| ManagementError::NoPath)?;
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| ManagementError::NoPath)?;
            segments.pop_if_empty().push(kind).push(&self.vhost);
            segments.extend(rest);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// A GET's body; `None` on 404.
    async fn get(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Option<Vec<u8>>, ManagementError> {
        let url = self.url(path, query)?;
        self.send(self.http.get(url)).await
    }

    /// Sends `request` with the credentials and reads its body, at most [`MAX_ANSWER`];
    /// `None` on 404.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<Vec<u8>>, ManagementError> {
        let mut response = request
            .basic_auth(&self.user, Some(self.password.expose()))
            .send()
            .await
            .map_err(|e| ManagementError::NoAnswer(e.without_url().to_string()))?;
        match response.status().as_u16() {
            200..=299 => {}
            404 => return Ok(None),
            code @ (401 | 403) => return Err(ManagementError::Refused(code)),
            code => return Err(ManagementError::Status(code)),
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ManagementError::BrokeOff(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(ManagementError::TooBig(MAX_ANSWER));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }
}

/// One binding as the API lists it: what `check` needs of it, its routing key (the API's other
/// fields are left unread).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct Binding {
    pub(crate) routing_key: String,
}

/// An exchange as the API shows it: the policy in force and its own arguments.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub(crate) struct Exchange {
    #[serde(default)]
    pub(crate) policy: Option<String>,
    #[serde(default)]
    pub(crate) arguments: serde_json::Map<String, serde_json::Value>,
}

/// A policy, as read and as written.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub(crate) struct Policy {
    pub(crate) pattern: String,
    #[serde(rename = "apply-to")]
    pub(crate) apply_to: String,
    pub(crate) definition: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub(crate) priority: i64,
}

fn parse_names(body: &[u8]) -> Result<Vec<String>, ManagementError> {
    #[derive(serde::Deserialize)]
    struct Queue {
        name: String,
    }
    serde_json::from_slice::<Vec<Queue>>(body)
        .map(|qs| qs.into_iter().map(|q| q.name).collect())
        .map_err(|_| ManagementError::NotA("a queue listing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amqp(url: &str, management: Option<&str>) -> AmqpSettings {
        AmqpSettings {
            url: Secret::new(url),
            management_url: management.map(Secret::new),
            ..AmqpSettings::default()
        }
    }

    #[test]
    fn the_api_defaults_to_port_15672_of_the_brokers_host_with_its_credentials() {
        let api =
            ManagementApi::from_settings(&amqp("amqp://u%40x:p%3Aw@10.1.2.3:5673/prod", None))
                .unwrap();
        assert_eq!(api.describe(), "http://10.1.2.3:15672/");
        assert_eq!((api.user.as_str(), api.password.expose()), ("u@x", "p:w"));
        assert_eq!(api.vhost, "prod");
        let tls =
            ManagementApi::from_settings(&amqp("amqps://u:p@mq.example.com/%2f", None)).unwrap();
        assert_eq!(tls.describe(), "https://mq.example.com:15671/");
        assert_eq!(tls.vhost, "/");
        let v6 =
            ManagementApi::from_settings(&amqp("amqp://u:p@[fd00::5]:5672/%2f", None)).unwrap();
        assert_eq!(v6.describe(), "http://[fd00::5]:15672/");
    }

    #[test]
    fn an_explicit_url_wins_and_its_credentials_never_print() {
        let api = ManagementApi::from_settings(&amqp(
            "amqp://u:amqp-secret@127.0.0.1:5672/%2f",
            Some("https://admin:hunter%232@mgmt.example.com:8443/rabbit?x=1"),
        ))
        .unwrap();
        assert_eq!(api.describe(), "https://mgmt.example.com:8443/rabbit/");
        assert_eq!(
            (api.user.as_str(), api.password.expose()),
            ("admin", "hunter#2")
        );
        let borrowed = ManagementApi::from_settings(&amqp(
            "amqp://u:amqp-secret@127.0.0.1:5672/%2f",
            Some("http://127.0.0.1:15673"),
        ))
        .unwrap();
        assert_eq!(borrowed.password.expose(), "amqp-secret");
        assert!(!borrowed.describe().contains("secret"));
    }

    #[test]
    fn a_management_url_that_is_not_http_is_refused_without_echoing_it() {
        for bad in ["ftp://u:hunter2@h/", "not a url hunter2", "http://"] {
            let err = ManagementApi::from_settings(&amqp("amqp://g:g@h/%2f", Some(bad)))
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains("amqp.management_url") && !err.contains("hunter2"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_listing_that_is_not_one_is_an_error_not_a_panic() {
        assert_eq!(
            parse_names(br#"[{"name":"a"},{"name":"b","x":1}]"#).unwrap(),
            vec!["a", "b"]
        );
        for bad in [&b"<html>"[..], b"{\"error\":\"x\"}", b"[{\"nom\":1}]", b""] {
            assert!(parse_names(bad).is_err());
        }
    }

    #[test]
    fn api_paths_carry_the_vhost_as_one_segment() {
        let api = ManagementApi::from_settings(&amqp(
            "amqp://u:p@127.0.0.1:5672/%2f",
            Some("http://127.0.0.1:15672/rabbit"),
        ))
        .unwrap();
        let url = api
            .url(
                &["exchanges", "wxcourier.results", "bindings", "source"],
                &[],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:15672/rabbit/api/exchanges/%2F/wxcourier.results/bindings/source"
        );
        let url = api.url(&["queues"], &[("columns", "name")]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:15672/rabbit/api/queues/%2F?columns=name"
        );
    }
}
