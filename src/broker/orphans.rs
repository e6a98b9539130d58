//! Job queues no configured app consumes (an app removed from the config while its jobs still
//! wait): found at start and by `check`, so they never disappear silently.
//!
//! AMQP cannot list queues, so the names come from RabbitMQ's management HTTP API; the depths
//! come from AMQP (a passive declare), which is exact where the API's figures lag by seconds.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection};
use percent_encoding::percent_decode_str;
use reqwest::Url;

use super::names::JOBS_EXCHANGE;
use crate::config::{AmqpSettings, Settings};
use crate::metrics::Metrics;
use crate::types::Secret;

/// One call to the management API; it answers in milliseconds when it is there at all.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest queue listing read (names only: about 100,000 queues); a bigger or endless body
/// is refused rather than buffered.
const MAX_LISTING: usize = 8 * 1024 * 1024;

/// A `wxcourier.jobs.*` queue without a configured app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub queue: String,
    /// Messages waiting in it; `None` when the queue could not be inspected (it was deleted
    /// meanwhile, or another connection holds it exclusively).
    pub messages: Option<u32>,
}

impl Orphan {
    /// The queue and its depth, as the orphan gauges take them.
    pub fn gauge(&self) -> (&str, Option<u32>) {
        (&self.queue, self.messages)
    }
}

/// Why the management API gave no queue listing, in words without its credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagementError {
    #[error("amqp.url is not a valid amqp:// or amqps:// URL")]
    BadAmqpUrl,
    #[error("amqp.management_url is not an http:// or https:// URL")]
    BadUrl,
    #[error("cannot build the management API client: {0}")]
    Client(String),
    #[error("the management URL cannot take the queue listing's path")]
    NoPath,
    #[error("no answer ({0})")]
    NoAnswer(String),
    #[error("it refused the credentials (HTTP {0}); the user needs the monitoring tag")]
    Refused(u16),
    #[error("it answered HTTP {0}")]
    Status(u16),
    #[error("its answer broke off ({0})")]
    BrokeOff(String),
    #[error("its queue listing is over {} MiB", .0 >> 20)]
    TooBig(usize),
    #[error("its answer is not a queue listing")]
    NotAListing,
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

    /// Where the API is, without credentials (safe to log).
    pub(crate) fn describe(&self) -> String {
        self.base.to_string()
    }

    /// Every queue name in the vhost.
    pub(crate) async fn queue_names(&self) -> Result<Vec<String>, ManagementError> {
        let mut url = self
            .base
            .join("api/queues")
            .map_err(|_| ManagementError::NoPath)?;
        url.path_segments_mut()
            .map_err(|_| ManagementError::NoPath)?
            .push(&self.vhost);
        url.query_pairs_mut().append_pair("columns", "name");
        let mut response = self
            .http
            .get(url)
            .basic_auth(&self.user, Some(self.password.expose()))
            .send()
            .await
            .map_err(|e| ManagementError::NoAnswer(e.without_url().to_string()))?;
        match response.status().as_u16() {
            200 => {}
            code @ (401 | 403) => return Err(ManagementError::Refused(code)),
            code => return Err(ManagementError::Status(code)),
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ManagementError::BrokeOff(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_LISTING {
                return Err(ManagementError::TooBig(MAX_LISTING));
            }
            body.extend_from_slice(&chunk);
        }
        parse_names(&body)
    }
}

fn parse_names(body: &[u8]) -> Result<Vec<String>, ManagementError> {
    #[derive(serde::Deserialize)]
    struct Queue {
        name: String,
    }
    serde_json::from_slice::<Vec<Queue>>(body)
        .map(|qs| qs.into_iter().map(|q| q.name).collect())
        .map_err(|_| ManagementError::NotAListing)
}

/// The names among `names` that are job queues of no app in `apps`, sorted.
pub(crate) fn orphan_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
    apps: &std::collections::BTreeMap<String, crate::config::AppSettings>,
) -> Vec<String> {
    let prefix = format!("{JOBS_EXCHANGE}.");
    let mut found: Vec<String> = names
        .into_iter()
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|app| !apps.contains_key(app))
        })
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The job queues without a configured app, with their depths, read over `conn`.
pub async fn find(
    settings: &Settings,
    api: &ManagementApi,
    conn: &Connection,
) -> Result<Vec<Orphan>, ManagementError> {
    let names = api.queue_names().await?;
    let mut orphans = Vec::new();
    let mut channel: Option<Channel> = None;
    for queue in orphan_names(names.iter().map(String::as_str), &settings.apps) {
        let messages = depth(conn, &mut channel, &queue).await;
        orphans.push(Orphan { queue, messages });
    }
    // Closed before the connection is: closing a connection under a channel still open makes
    // lapin log an error about the channel's state.
    if let Some(ch) = channel {
        let _ = ch.close(200, "checked".into()).await;
    }
    Ok(orphans)
}

/// A passive declare; a failure (404, 405) closes the channel, so the next queue gets a new one.
async fn depth(conn: &Connection, channel: &mut Option<Channel>, queue: &str) -> Option<u32> {
    if channel.as_ref().is_none_or(|c| !c.status().connected()) {
        *channel = conn.create_channel().await.ok();
    }
    let ch = channel.as_ref()?;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match ch
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
    {
        Ok(q) => Some(q.message_count()),
        Err(_) => {
            *channel = None;
            None
        }
    }
}

/// Once at start: warns about every job queue without an app, naming it and its depth, and
/// sets the `orphan_*` gauges. A broker without a reachable management API is said once at
/// info level; the worker goes on either way.
pub(crate) async fn report_at_start(settings: &Settings, metrics: &Metrics) {
    let api = match ManagementApi::from_settings(&settings.amqp) {
        Ok(api) => api,
        Err(e) => {
            tracing::info!(error = %e, "not checking for job queues without an app");
            return;
        }
    };
    let conn = match super::connect(&settings.amqp, "wxcourier orphan check").await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::info!(error = %e, "not checking for job queues without an app");
            return;
        }
    };
    match find(settings, &api, &conn).await {
        Ok(orphans) => {
            metrics.set_orphans(orphans.iter().map(Orphan::gauge));
            for o in &orphans {
                match o.messages {
                    Some(n) => tracing::warn!(
                        queue = %o.queue,
                        messages = n,
                        "job queue with no configured app: its jobs are not sent; configure the app again, or move its jobs and delete the queue"
                    ),
                    None => tracing::warn!(
                        queue = %o.queue,
                        "job queue with no configured app (its depth could not be read): its jobs are not sent"
                    ),
                }
            }
        }
        Err(e) => tracing::info!(
            management = %api.describe(),
            error = %e,
            "cannot list queues through the RabbitMQ management API; not checking for job queues without an app"
        ),
    }
    let _ = conn.close(200, "orphan check done".into()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppSettings;

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
    fn only_job_queues_of_unconfigured_apps_are_orphans() {
        let mut apps = std::collections::BTreeMap::new();
        apps.insert("shop".to_owned(), AppSettings::new("wx1", Secret::new("s")));
        let names = [
            "wxcourier.jobs.shop",
            "wxcourier.jobs.old_shop",
            "wxcourier.jobs.",
            "wxcourier.jobsx",
            "wxcourier.dead",
            "wxcourier.retry.1000ms",
            "other.jobs.gone",
            "wxcourier.jobs.old_shop",
        ];
        assert_eq!(
            orphan_names(names, &apps),
            vec!["wxcourier.jobs.", "wxcourier.jobs.old_shop"]
        );
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
}
