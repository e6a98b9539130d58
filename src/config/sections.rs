//! The sections of the config file, one type each, with the contract's defaults.

use std::num::{NonZeroU16, NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::send_limits::{AppLimits, CapMode, RecipientLimit};
use super::values::{NonZeroSpan, Rate, count};
use crate::kinds::{Kind, ReadOptions};
use crate::quiet_hours::{QuietMode, QuietWindow, Zone};
use crate::types::{Secret, Span, scalar_string};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    /// One broker URL, or several cluster nodes: a TOML list, or one string with the URLs
    /// separated by commas (the form an environment variable takes). Kept as that one string.
    #[serde(deserialize_with = "node_list")]
    pub url: Secret,
    #[serde(deserialize_with = "count")]
    pub prefetch: NonZeroU16,
    /// How long a publish may wait for its confirm before the delivery is handed back.
    pub publish_timeout: NonZeroSpan,
    /// Custom CA bundle (PEM) for `amqps://` brokers with a private CA.
    pub ca_file: Option<String>,
    /// RabbitMQ's management API, used to find job queues of apps no longer configured;
    /// unset: port 15672 (15671 for `amqps://`) of `amqp.url`'s host, with its credentials.
    pub management_url: Option<Secret>,
    /// Most app consumers (one channel each) on one connection; more apps open further
    /// connections. Also kept under the broker's `channel_max`.
    #[serde(deserialize_with = "count")]
    pub consumers_per_connection: NonZeroU16,
}

impl AmqpSettings {
    /// The broker nodes of `amqp.url`, in the order they are tried.
    pub(crate) fn nodes(&self) -> Vec<&str> {
        split_nodes(self.url.expose())
    }
}

/// Splits `amqp://a,amqp://b` at each comma followed by another URL (`scheme://`) or by nothing,
/// so a comma inside one URL (a password may hold one) stays where it is, while a stray
/// `,http://…` or a trailing comma becomes a node of its own that validation refuses.
fn split_nodes(urls: &str) -> Vec<&str> {
    let starts_url = |s: &str| {
        let s = s.trim_start();
        s.is_empty()
            || s.split_once("://").is_some_and(|(scheme, _)| {
                !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
            })
    };
    let mut nodes = Vec::new();
    let mut start = 0;
    for (at, _) in urls.match_indices(',') {
        if starts_url(&urls[at + 1..]) {
            nodes.push(urls[start..at].trim());
            start = at + 1;
        }
    }
    nodes.push(urls[start..].trim());
    nodes
}

/// `amqp.url` as a string or a list of strings; a list is joined with commas.
fn node_list<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    match Urls::deserialize(d).map_err(|_| {
        serde::de::Error::custom("must be a broker URL or a list of them (one per cluster node)")
    })? {
        Urls::One(url) => Ok(Secret::new(url)),
        Urls::Many(urls) => Ok(Secret::new(urls.join(","))),
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefetch: NonZeroU16::new(256).expect("above 0"),
            publish_timeout: seconds(30),
            ca_file: None,
            management_url: None,
            consumers_per_connection: NonZeroU16::new(1000).expect("above 0"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WechatSettings {
    pub base_url: String,
    pub timeout: NonZeroSpan,
    /// WeChat calls in flight at once across all apps, so a slow WeChat cannot exhaust sockets.
    #[serde(deserialize_with = "count")]
    pub(crate) max_in_flight: NonZeroUsize,
    pub(crate) transient_codes: Vec<i64>,
    pub(crate) quota_codes: Vec<i64>,
    pub(crate) token_codes: Vec<i64>,
    /// errcodes behind each `reason` of a failed outcome.
    pub(crate) reason_codes: ReasonCodes,
    /// How often each app's daily quota is read (`openapi/quota/get`) into gauges; `0s` off.
    pub daily_quota_refresh: Span,
}

/// `-1` system busy, `45011` per-minute limit.
pub(crate) const DEFAULT_TRANSIENT: [i64; 2] = [-1, 45011];
/// `45009` call limit / daily quota reached.
pub(crate) const DEFAULT_QUOTA: [i64; 1] = [45009];
/// `40001`, `41006` from the seed page; `40014` (invalid token) and `42001` (expired) today.
pub(crate) const DEFAULT_TOKEN: [i64; 4] = [40001, 41006, 40014, 42001];

/// errcodes behind each reason that WeChat's own answer decides.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ReasonCodes {
    /// The user refused this template (since 2023).
    pub(crate) recipient_refused: Vec<i64>,
    /// The user does not follow the account.
    pub(crate) not_following: Vec<i64>,
    /// The OpenID is not one of this account's users.
    pub(crate) invalid_recipient: Vec<i64>,
    /// The template is unknown or withdrawn.
    pub(crate) template_invalid: Vec<i64>,
    /// WeChat refused the content: a field breaks its type or review rules.
    pub(crate) content_rejected: Vec<i64>,
    /// The account may not call this API: not authorised, banned, or not granted to the
    /// platform.
    pub(crate) not_permitted: Vec<i64>,
    /// The account withdrew the platform's authorisation.
    pub(crate) authorization_revoked: Vec<i64>,
    /// The account's setup is wrong: AppSecret, IP whitelist, AppID.
    pub(crate) config_error: Vec<i64>,
}

impl Default for ReasonCodes {
    fn default() -> Self {
        Self {
            recipient_refused: vec![43101, 43019],
            not_following: vec![43004],
            invalid_recipient: vec![40003, 50002],
            template_invalid: vec![40037, 40036],
            content_rejected: vec![45168, 47003],
            not_permitted: vec![48001, 48004, 61007],
            authorization_revoked: vec![61023],
            config_error: vec![40125, 40164, 40013],
        }
    }
}

impl Default for WechatSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.weixin.qq.com".into(),
            timeout: seconds(10),
            max_in_flight: NonZeroUsize::new(128).expect("above 0"),
            transient_codes: DEFAULT_TRANSIENT.to_vec(),
            quota_codes: DEFAULT_QUOTA.to_vec(),
            token_codes: DEFAULT_TOKEN.to_vec(),
            reason_codes: Default::default(),
            daily_quota_refresh: Span(Duration::from_secs(300)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    #[serde(deserialize_with = "count")]
    pub max_attempts: NonZeroU32,
    pub initial_delay: NonZeroSpan,
    /// At least `initial_delay` (checked in `validate`).
    pub max_delay: Span,
    pub max_age: NonZeroSpan,
    /// The first pause of an app after 45009 (formerly `quota_pause`).
    pub pause: NonZeroSpan,
    /// The longest such pause, at least `pause` (formerly `max_quota_pause`).
    pub max_pause: Span,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: NonZeroU32::new(10).expect("above 0"),
            initial_delay: seconds(1),
            max_delay: Span(Duration::from_secs(600)),
            max_age: seconds(24 * 3600),
            pause: seconds(60),
            max_pause: Span(Duration::from_secs(3600)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSettings {
    /// `memory` or a `redis://` URL.
    pub url: Secret,
    /// How long a sent id is remembered (and a msgid mapped back to its job); 0s would
    /// remember nothing (and Redis refuses an expiry of 0).
    pub idempotency_ttl: NonZeroSpan,
    /// Most ids remembered in memory state; the oldest are forgotten first.
    #[serde(deserialize_with = "count")]
    pub memory_capacity: NonZeroUsize,
    /// How long a job's story (`wxcourier status`, the admin endpoint) is kept after its
    /// latest step.
    pub trail_ttl: NonZeroSpan,
    /// CA bundle (PEM) a `rediss://` server's certificate must chain to, instead of the
    /// system's roots (a private CA).
    pub ca_file: Option<String>,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("memory"),
            idempotency_ttl: seconds(7 * 24 * 3600),
            memory_capacity: NonZeroUsize::new(200_000).expect("above 0"),
            trail_ttl: seconds(7 * 24 * 3600),
            ca_file: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub listen: Option<String>,
    /// Refuse callbacks whose signed timestamp is further than this from our clock, so an
    /// old signed push cannot be replayed once its MsgID has left the idempotency store.
    /// WeChat retries within seconds; `0s` turns the window off.
    pub callback_max_age: Span,
    /// How long a client may take to send a request's line and headers, counted from the
    /// connection's start or the end of its previous response (a slowloris trickles them).
    pub header_read_timeout: NonZeroSpan,
    /// How long one request may take once its headers are in: reading the body and
    /// answering. A request over it gets 408 and its connection is closed.
    pub request_timeout: NonZeroSpan,
    /// A connection with no request being handled and no byte moving either way for this
    /// long is closed (a client that stops reading its answer, a kept-alive connection).
    pub idle_timeout: NonZeroSpan,
    /// Connections served at once; further ones wait in the listen backlog until one ends.
    #[serde(deserialize_with = "count")]
    pub max_connections: NonZeroUsize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: None,
            callback_max_age: Span(Duration::from_secs(300)),
            header_read_timeout: seconds(10),
            request_timeout: seconds(10),
            idle_timeout: seconds(60),
            max_connections: NonZeroUsize::new(512).expect("above 0"),
        }
    }
}

impl HttpSettings {
    /// The replay window for signed callbacks; `None` when turned off with `0s`.
    pub(crate) fn callback_window(&self) -> Option<Duration> {
        (!self.callback_max_age.0.is_zero()).then_some(self.callback_max_age.0)
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSettings {
    pub(crate) format: LogFormat,
    /// A `tracing` filter such as `info` or `wxcourier=debug`; `RUST_LOG` wins when set.
    pub(crate) level: String,
    /// Spans to an OpenTelemetry collector over OTLP/HTTP, set up by the standard
    /// `OTEL_EXPORTER_OTLP_*` environment.
    pub(crate) otlp: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
            otlp: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// How long SIGTERM waits for in-flight jobs before closing anyway (they stay in the broker).
    pub drain_timeout: Span,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            drain_timeout: Span(Duration::from_secs(25)),
        }
    }
}

/// What becomes of outcomes and reports on `wxcourier.results` that no queue takes.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResultsSettings {
    /// Keep them in the bounded queue `wxcourier.results.unrouted` (an alternate exchange set
    /// by a policy), instead of counting and dropping them.
    pub keep_unrouted: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    #[default]
    Stable,
    Classic,
}

/// `apps.NAME.pause_mode`: what a job of a paused template (or app) does.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PauseMode {
    /// It waits in the delay tiers and is sent once resumed.
    #[default]
    Defer,
    /// It ends `suppressed` with reason `paused`.
    Drop,
}

/// How an app's callback messages arrive, as chosen in the WeChat console ("消息加解密方式").
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CallbackMode {
    /// Plaintext XML, signed by `signature` over the token, timestamp and nonce only.
    Plain,
    /// Both forms: WeChat's compatible mode, meant for the switch from plain to safe.
    Compat,
    /// Only encrypted XML whose `msg_signature` covers the ciphertext.
    Safe,
}

impl CallbackMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CallbackMode::Plain => "plain",
            CallbackMode::Compat => "compat",
            CallbackMode::Safe => "safe",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    #[serde(default, deserialize_with = "scalar_string")]
    pub appid: String,
    #[serde(default)]
    pub secret: Secret,
    #[serde(default)]
    pub token_mode: TokenMode,
    #[serde(default = "default_rate")]
    pub rate_per_second: Rate,
    #[serde(default = "default_burst", deserialize_with = "count")]
    pub burst: NonZeroU32,
    #[serde(default)]
    pub callback_token: Option<Secret>,
    #[serde(default)]
    pub encoding_aes_key: Option<Secret>,
    /// Unset: `safe` with an `encoding_aes_key`, else `plain` (see
    /// `AppSettings::resolved_callback_mode`).
    #[serde(default)]
    pub callback_mode: Option<CallbackMode>,
    /// The message kinds this app sends; a job of another kind is rejected.
    #[serde(default)]
    pub kinds: AppKinds,
    /// Check template jobs against the account's template list before sending.
    #[serde(default)]
    pub catalog: bool,
    /// How often that list is fetched again.
    #[serde(default = "default_catalog_refresh")]
    pub catalog_refresh: Span,
    /// Shorten an over-long `thing` or `character_string` value (and warn) instead of
    /// rejecting the job.
    #[serde(default)]
    pub truncate: bool,
    /// At most this many sends to one user in a sliding window; unset: no cap.
    #[serde(default)]
    pub recipient_limit: Option<RecipientLimit>,
    /// What a job over that cap becomes; unset: `suppress`.
    #[serde(default)]
    pub cap_mode: Option<CapMode>,
    /// How long a job equal to an earlier one (kind, template, recipient, data) is refused;
    /// unset: never.
    #[serde(default)]
    pub content_dedup: Option<NonZeroSpan>,
    /// Local times of day when jobs are held or dropped (`quiet_mode`), read in `timezone`.
    #[serde(default)]
    pub quiet_hours: Option<QuietWindow>,
    #[serde(default)]
    pub timezone: Zone,
    #[serde(default)]
    pub quiet_mode: QuietMode,
    /// Jobs held through quiet hours leave over this long after they end.
    #[serde(default = "default_quiet_spread")]
    pub quiet_spread: Span,
    /// Templates whose jobs are not sent (the kill switch's part in the file; `wxcourier
    /// pause` adds to it at run time).
    #[serde(default)]
    pub paused_templates: Vec<String>,
    /// What a paused job does: waits until resumed (`defer`) or ends `suppressed` (`drop`).
    #[serde(default)]
    pub pause_mode: PauseMode,
    /// Hold back sends to users who unfollowed or refused the template (preference gates).
    #[serde(default)]
    pub honor_preferences: bool,
    /// How long a preference gate lasts unless a follow or an accept lifts it first.
    #[serde(default = "default_gate_ttl")]
    pub gate_ttl: Span,
}

impl AppSettings {
    /// An app with the contract's defaults for everything but its credentials.
    pub fn new(appid: impl Into<String>, secret: Secret) -> Self {
        Self {
            appid: appid.into(),
            secret,
            token_mode: TokenMode::default(),
            rate_per_second: default_rate(),
            burst: default_burst(),
            callback_token: None,
            encoding_aes_key: None,
            callback_mode: None,
            kinds: AppKinds::default(),
            catalog: false,
            catalog_refresh: default_catalog_refresh(),
            truncate: false,
            recipient_limit: None,
            cap_mode: None,
            content_dedup: None,
            quiet_hours: None,
            timezone: Zone::default(),
            quiet_mode: QuietMode::default(),
            quiet_spread: default_quiet_spread(),
            paused_templates: Vec::new(),
            pause_mode: PauseMode::default(),
            honor_preferences: false,
            gate_ttl: default_gate_ttl(),
        }
    }

    /// Whether a policy of this app can end a job `suppressed`: one set to drop or suppress
    /// (quiet hours, the kill switch, caps), preference gates, or content de-duplication.
    pub(crate) fn may_suppress(&self) -> bool {
        (self.quiet_hours.is_some() && self.quiet_mode == QuietMode::Drop)
            || self.pause_mode == PauseMode::Drop
            || self.honor_preferences
            || (self.recipient_limit.is_some() && self.limits().cap_mode == CapMode::Suppress)
            || self.content_dedup.is_some()
    }

    /// The app's send limits, as the pipeline reads them.
    pub(crate) fn limits(&self) -> AppLimits {
        AppLimits {
            recipient_limit: self.recipient_limit,
            cap_mode: self.cap_mode.unwrap_or_default(),
            content_dedup: self.content_dedup.map(NonZeroSpan::get),
        }
    }

    /// How the app's jobs are read: the pipeline's copy of the keys that change it.
    pub(crate) fn reading(&self) -> ReadOptions {
        ReadOptions {
            truncate: self.truncate,
        }
    }

    /// The callback mode in force: as configured, or `safe` when an EncodingAESKey is set
    /// (a key means the console is in safe mode, whose plaintext signature does not cover
    /// the body), else `plain`.
    pub(crate) fn resolved_callback_mode(&self) -> CallbackMode {
        self.callback_mode.unwrap_or(match self.encoding_aes_key {
            Some(_) => CallbackMode::Safe,
            None => CallbackMode::Plain,
        })
    }
}

/// `apps.NAME.kinds`: the message kinds an app sends, at least one. The one place that
/// answers whether a job's kind is one of them; the pipeline holds a copy.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AppKinds(Vec<Kind>);

impl AppKinds {
    /// Whether the app may send jobs of `kind`.
    pub(crate) fn sends(&self, kind: Kind) -> bool {
        self.0.contains(&kind)
    }
}

/// A name that is no kind's is refused by [`Kind`]'s own reading; an empty list here.
impl<'de> Deserialize<'de> for AppKinds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let kinds = Vec::<Kind>::deserialize(d)?;
        if kinds.is_empty() {
            return Err(serde::de::Error::custom("must name at least one kind"));
        }
        Ok(Self(kinds))
    }
}

impl Default for AppKinds {
    /// The default kind alone (`template`).
    fn default() -> Self {
        Self(vec![Kind::default()])
    }
}

impl std::ops::Deref for AppKinds {
    type Target = [Kind];

    fn deref(&self) -> &[Kind] {
        &self.0
    }
}

impl FromIterator<Kind> for AppKinds {
    fn from_iter<I: IntoIterator<Item = Kind>>(kinds: I) -> Self {
        Self(kinds.into_iter().collect())
    }
}

/// Shown as the list of names it is: rejections quote it as `apps.NAME.kinds = [...]`.
impl std::fmt::Debug for AppKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|k| k.name()))
            .finish()
    }
}

fn default_gate_ttl() -> Span {
    Span(Duration::from_secs(180 * 86_400))
}

fn default_catalog_refresh() -> Span {
    Span(Duration::from_secs(600))
}

fn default_quiet_spread() -> Span {
    Span(Duration::from_secs(600))
}

pub(super) fn default_rate() -> Rate {
    Rate::new(50.0).expect("a rate a limiter can keep")
}

pub(super) fn default_burst() -> NonZeroU32 {
    NonZeroU32::new(50).expect("above 0")
}

/// A default duration of whole seconds, above 0.
fn seconds(n: u64) -> NonZeroSpan {
    NonZeroSpan::new(Duration::from_secs(n)).expect("above 0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_inside_one_url_does_not_split_it() {
        assert_eq!(
            split_nodes("amqp://u:pa,ss@mq1/%2f?heartbeat=10,amqps://u:x,y@mq2/%2f"),
            [
                "amqp://u:pa,ss@mq1/%2f?heartbeat=10",
                "amqps://u:x,y@mq2/%2f"
            ]
        );
    }
}
