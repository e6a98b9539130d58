//! Typed settings: the TOML file, then `WXCOURIER_…` environment variables, then validation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

mod service_links;
pub use service_links::is_service_link;

/// The file `run`, `check` and the other verbs read when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/default.toml";

/// Prefix of every environment variable that overrides a key.
pub const ENV_PREFIX: &str = "WXCOURIER_";

/// Keys that hold secrets or opaque strings: read raw from the environment so that a value
/// such as `0123` is never reinterpreted as the number 123.
const RAW_STRING_APP_KEYS: [&str; 4] = ["secret", "callback_token", "encoding_aes_key", "appid"];

/// A configuration problem, always naming the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Parse(String),
    #[error("{key} {rule}")]
    Invalid { key: String, rule: String },
}

fn invalid(key: impl Into<String>, rule: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        rule: rule.into(),
    }
}

/// A string that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(scalar_string(d)?))
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Accepts any scalar as a string (environment values arrive typed by guesswork).
fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        U(u64),
        I(i64),
        F(f64),
        B(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::S(s) => s,
        Scalar::U(n) => n.to_string(),
        Scalar::I(n) => n.to_string(),
        Scalar::F(n) => n.to_string(),
        Scalar::B(b) => b.to_string(),
    })
}

/// A duration written as a string such as `"500ms"`, `"30s"`, `"2m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "a duration must be a string such as \"500ms\", \"30s\" or \"2m\"",
            )
        })?;
        humantime::parse_duration(&text).map(Span).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration such as \"500ms\", \"30s\" or \"2m\" ({e})"
            ))
        })
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    /// One broker URL, or several cluster nodes: a TOML list, or one string with the URLs
    /// separated by commas (the form an environment variable takes). Kept as that one string.
    #[serde(deserialize_with = "node_list")]
    pub url: Secret,
    pub prefetch: u16,
    /// How long a publish may wait for its confirm before the delivery is handed back.
    pub publish_timeout: Span,
    /// Custom CA bundle (PEM) for `amqps://` brokers with a private CA.
    pub ca_file: Option<String>,
    /// RabbitMQ's management API, used to find job queues of apps no longer configured;
    /// unset: port 15672 (15671 for `amqps://`) of `amqp.url`'s host, with its credentials.
    pub management_url: Option<Secret>,
}

impl AmqpSettings {
    /// The broker nodes of `amqp.url`, in the order they are tried.
    pub fn nodes(&self) -> Vec<&str> {
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
            prefetch: 256,
            publish_timeout: Span(Duration::from_secs(30)),
            ca_file: None,
            management_url: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WechatSettings {
    pub base_url: String,
    pub timeout: Span,
    /// WeChat calls in flight at once across all apps, so a slow WeChat cannot exhaust sockets.
    pub max_in_flight: usize,
    pub transient_codes: Vec<i64>,
    pub quota_codes: Vec<i64>,
    pub token_codes: Vec<i64>,
    /// errcodes behind each `reason` of a failed outcome.
    pub reason_codes: crate::wechat::reason::ReasonCodes,
    /// How often each app's daily quota is read (`openapi/quota/get`) into gauges; `0s` off.
    pub quota_refresh: Span,
}

impl Default for WechatSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.weixin.qq.com".into(),
            timeout: Span(Duration::from_secs(10)),
            max_in_flight: 128,
            transient_codes: crate::wechat::errcode::DEFAULT_TRANSIENT.to_vec(),
            quota_codes: crate::wechat::errcode::DEFAULT_QUOTA.to_vec(),
            token_codes: crate::wechat::errcode::DEFAULT_TOKEN.to_vec(),
            reason_codes: Default::default(),
            quota_refresh: Span(Duration::from_secs(300)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub initial_delay: Span,
    pub max_delay: Span,
    pub max_age: Span,
    pub quota_pause: Span,
    pub max_quota_pause: Span,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_delay: Span(Duration::from_secs(1)),
            max_delay: Span(Duration::from_secs(600)),
            max_age: Span(Duration::from_secs(24 * 3600)),
            quota_pause: Span(Duration::from_secs(60)),
            max_quota_pause: Span(Duration::from_secs(3600)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSettings {
    /// `memory` or a `redis://` URL.
    pub url: Secret,
    /// How long a sent id is remembered (and a msgid mapped back to its job).
    pub idempotency_ttl: Span,
    /// Most ids remembered in memory state; the oldest are forgotten first.
    pub memory_capacity: usize,
    /// CA bundle (PEM) a `rediss://` server's certificate must chain to, instead of the
    /// system's roots (a private CA).
    pub ca_file: Option<String>,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("memory"),
            idempotency_ttl: Span(Duration::from_secs(7 * 24 * 3600)),
            memory_capacity: 200_000,
            ca_file: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub listen: Option<String>,
    /// Refuse callbacks whose signed timestamp is further than this from our clock, so an
    /// old signed push cannot be replayed once its MsgID has left the idempotency store.
    /// WeChat retries within seconds; `0s` turns the window off.
    pub callback_max_age: Span,
    /// How long a client may take to send a request's line and headers, counted from the
    /// connection's start or the end of its previous response (a slowloris trickles them).
    pub header_read_timeout: Span,
    /// How long one request may take once its headers are in: reading the body and
    /// answering. A request over it gets 408 and its connection is closed.
    pub request_timeout: Span,
    /// A connection with no request being handled and no byte moving either way for this
    /// long is closed (a client that stops reading its answer, a kept-alive connection).
    pub idle_timeout: Span,
    /// Connections served at once; further ones wait in the listen backlog until one ends.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: None,
            callback_max_age: Span(Duration::from_secs(300)),
            header_read_timeout: Span(Duration::from_secs(10)),
            request_timeout: Span(Duration::from_secs(10)),
            idle_timeout: Span(Duration::from_secs(60)),
            max_connections: 512,
        }
    }
}

impl HttpSettings {
    /// The replay window for signed callbacks; `None` when turned off with `0s`.
    pub fn callback_window(&self) -> Option<Duration> {
        (!self.callback_max_age.0.is_zero()).then_some(self.callback_max_age.0)
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `wxcourier=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
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

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    #[default]
    Stable,
    Classic,
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
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackMode::Plain => "plain",
            CallbackMode::Compat => "compat",
            CallbackMode::Safe => "safe",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    #[serde(default, deserialize_with = "scalar_string")]
    pub appid: String,
    #[serde(default)]
    pub secret: Secret,
    #[serde(default)]
    pub token_mode: TokenMode,
    #[serde(default = "default_rate")]
    pub rate_per_second: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
    #[serde(default)]
    pub callback_token: Option<Secret>,
    #[serde(default)]
    pub encoding_aes_key: Option<Secret>,
    /// Unset: `safe` with an `encoding_aes_key`, else `plain` (see [`AppSettings::resolved_callback_mode`]).
    #[serde(default)]
    pub callback_mode: Option<CallbackMode>,
    /// The message kinds this app sends; a job of another kind is rejected.
    #[serde(default = "default_kinds")]
    pub kinds: Vec<String>,
    /// Check template jobs against the account's template list before sending.
    #[serde(default)]
    pub catalog: bool,
    /// How often that list is fetched again.
    #[serde(default = "default_catalog_refresh")]
    pub catalog_refresh: Span,
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
            kinds: default_kinds(),
            catalog: false,
            catalog_refresh: default_catalog_refresh(),
        }
    }

    /// The callback mode in force: as configured, or `safe` when an EncodingAESKey is set
    /// (a key means the console is in safe mode, whose plaintext signature does not cover
    /// the body), else `plain`.
    pub fn resolved_callback_mode(&self) -> CallbackMode {
        self.callback_mode.unwrap_or(match self.encoding_aes_key {
            Some(_) => CallbackMode::Safe,
            None => CallbackMode::Plain,
        })
    }

    /// Whether this app may send jobs of `kind`.
    pub fn sends(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }
}

fn default_kinds() -> Vec<String> {
    vec![crate::kinds::default_kind().name().to_owned()]
}

fn default_catalog_refresh() -> Span {
    Span(Duration::from_secs(600))
}

fn default_rate() -> f64 {
    50.0
}

fn default_burst() -> u32 {
    50
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub wechat: WechatSettings,
    pub retry: RetrySettings,
    pub state: StateSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub worker: WorkerSettings,
    pub apps: BTreeMap<String, AppSettings>,
    /// `WXCOURIER_…` variables left out because they are Kubernetes service links (names
    /// only), for `run` to log once logging is set up.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
}

impl Settings {
    /// Loads `path` (a missing file is an error unless it is the default path), layers the
    /// environment on top and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(path, &env)
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests).
    pub fn load_from(path: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        let explicit = path.is_some();
        let path = path.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            figment = figment.merge(Toml::string(&text));
        } else if explicit {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                reason: "no such file".into(),
            });
        }
        let (links, ours): (Vec<_>, Vec<_>) = env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .partition(|(k, v)| is_service_link(k, v));
        if let Some((k, _)) = ours
            .iter()
            .find(|(k, _)| env_path(k).iter().any(|p| p.is_empty()))
        {
            return Err(ConfigError::Parse(format!(
                "{k} is not a configuration key: levels are joined by exactly two underscores, \
                 as in {ENV_PREFIX}AMQP__URL"
            )));
        }
        let typed_env: Vec<(String, String)> = ours
            .into_iter()
            .filter(|(k, _)| raw_app_key(k).is_none())
            .cloned()
            .collect();
        figment = figment.merge(env_provider(&typed_env));
        for (key, value) in env {
            if let Some((app, field)) = raw_app_key(key) {
                figment = figment.merge((format!("apps.{app}.{field}"), value.clone()));
            }
        }
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| describe_figment_error(e, &typed_env))?;
        settings.validate()?;
        settings.ignored_env = links.into_iter().map(|(k, _)| k.clone()).collect();
        Ok(settings)
    }

    /// The verbs that send need at least one app; producers (`send`) do not.
    pub fn require_apps(&self) -> Result<(), ConfigError> {
        if self.apps.is_empty() {
            return Err(invalid(
                "apps",
                "names no app: add an [apps.NAME] table with appid and secret",
            ));
        }
        Ok(())
    }

    /// Checks every rule the types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_nodes(&self.amqp)?;
        if self.amqp.prefetch == 0 {
            return Err(invalid("amqp.prefetch", "must be > 0"));
        }
        positive("amqp.publish_timeout", self.amqp.publish_timeout)?;
        if let Some(url) = &self.amqp.management_url
            && reqwest::Url::parse(url.expose())
                .map(|u| !matches!(u.scheme(), "http" | "https") || !u.has_host())
                .unwrap_or(true)
        {
            return Err(invalid(
                "amqp.management_url",
                "must be an http:// or https:// URL",
            ));
        }
        if reqwest::Url::parse(&self.wechat.base_url)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            return Err(invalid(
                "wechat.base_url",
                "must be an http:// or https:// URL",
            ));
        }
        positive("wechat.timeout", self.wechat.timeout)?;
        if self.wechat.max_in_flight == 0 {
            return Err(invalid("wechat.max_in_flight", "must be > 0"));
        }
        if self.retry.max_attempts == 0 {
            return Err(invalid("retry.max_attempts", "must be > 0"));
        }
        positive("retry.initial_delay", self.retry.initial_delay)?;
        positive("retry.quota_pause", self.retry.quota_pause)?;
        positive("retry.max_age", self.retry.max_age)?;
        if self.retry.max_delay < self.retry.initial_delay {
            return Err(invalid("retry.max_delay", "must be >= retry.initial_delay"));
        }
        if self.retry.max_quota_pause < self.retry.quota_pause {
            return Err(invalid(
                "retry.max_quota_pause",
                "must be >= retry.quota_pause",
            ));
        }
        if let Some(window) = self.http.callback_window()
            && window < Duration::from_secs(1)
        {
            return Err(invalid(
                "http.callback_max_age",
                "must be at least 1s (timestamps are in seconds), or \"0s\" to turn it off",
            ));
        }
        positive("http.header_read_timeout", self.http.header_read_timeout)?;
        positive("http.request_timeout", self.http.request_timeout)?;
        positive("http.idle_timeout", self.http.idle_timeout)?;
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be > 0"));
        }
        validate_state(&self.state)?;
        if self.state.memory_capacity == 0 {
            return Err(invalid("state.memory_capacity", "must be > 0"));
        }
        if let Some(listen) = &self.http.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "http.listen",
                "must be an address such as 0.0.0.0:8080",
            ));
        }
        for (name, app) in &self.apps {
            validate_app(name, app)?;
        }
        validate_lookups(self)?;
        Ok(())
    }
}

/// Every node of `amqp.url` must parse; errors say which node, never what it holds (the URL
/// carries the password).
fn validate_nodes(amqp: &AmqpSettings) -> Result<(), ConfigError> {
    let nodes = amqp.nodes();
    for (i, node) in nodes.iter().enumerate() {
        let which = if nodes.len() == 1 {
            String::new()
        } else {
            format!(" (node {} of {})", i + 1, nodes.len())
        };
        if node.is_empty() {
            return Err(invalid("amqp.url", format!("is empty{which}")));
        }
        if !(node.starts_with("amqp://") || node.starts_with("amqps://")) {
            return Err(invalid(
                "amqp.url",
                format!("must start with amqp:// or amqps://{which}"),
            ));
        }
        if node.parse::<lapin::uri::AMQPUri>().is_err() {
            return Err(invalid(
                "amqp.url",
                format!("is not a valid amqp:// or amqps:// URL{which}"),
            ));
        }
    }
    Ok(())
}

/// `memory`, `redis://` or `rediss://` (TLS, always with the certificate checked).
fn validate_state(state: &StateSettings) -> Result<(), ConfigError> {
    let url = state.url.expose();
    let tls = url.starts_with("rediss://");
    if url != "memory" && !url.starts_with("redis://") && !tls {
        return Err(invalid(
            "state.url",
            "must be \"memory\", a redis:// URL or a rediss:// URL (TLS)",
        ));
    }
    if tls && url.contains('#') {
        return Err(invalid(
            "state.url",
            "must not end in a #fragment: #insecure would skip the server's certificate check; \
             for a private CA set state.ca_file",
        ));
    }
    if state.ca_file.is_some() && !tls {
        return Err(invalid(
            "state.ca_file",
            "is only used with a rediss:// state.url; with this URL the connection would not be \
             encrypted",
        ));
    }
    Ok(())
}

fn validate_app(name: &str, app: &AppSettings) -> Result<(), ConfigError> {
    let key = |field: &str| format!("apps.{name}.{field}");
    if !is_app_name(name) {
        return Err(invalid(
            format!("apps.{name}"),
            "must be named with 1-32 of a-z, 0-9 and _",
        ));
    }
    if app.appid.is_empty() {
        return Err(invalid(key("appid"), "is missing"));
    }
    if app.secret.is_empty() {
        return Err(invalid(
            key("secret"),
            format!(
                "is missing: set it in the file or in {ENV_PREFIX}APPS__{}__SECRET",
                name.to_ascii_uppercase()
            ),
        ));
    }
    if !(app.rate_per_second.is_finite() && app.rate_per_second > 0.0) {
        return Err(invalid(key("rate_per_second"), "must be > 0"));
    }
    if app.burst == 0 {
        return Err(invalid(key("burst"), "must be > 0"));
    }
    if app.kinds.is_empty() {
        return Err(invalid(key("kinds"), "must name at least one kind"));
    }
    if let Some(k) = app
        .kinds
        .iter()
        .find(|k| crate::kinds::by_name(k).is_none())
    {
        return Err(invalid(
            key("kinds"),
            format!(
                "names {k:?}, which is not a kind: use {}",
                crate::kinds::names()
            ),
        ));
    }
    if let Some(aes) = &app.encoding_aes_key {
        if crate::wechat::crypto::decode_aes_key(aes.expose()).is_none() {
            return Err(invalid(
                key("encoding_aes_key"),
                "must be the 43-character EncodingAESKey from the WeChat console",
            ));
        }
        if app.callback_token.is_none() {
            return Err(invalid(
                key("callback_token"),
                "is required when encoding_aes_key is set",
            ));
        }
    }
    if let Some(mode) = app.callback_mode {
        if app.callback_token.is_none() {
            return Err(invalid(
                key("callback_token"),
                format!(
                    "is required when callback_mode is set (it is {})",
                    mode.as_str()
                ),
            ));
        }
        if mode != CallbackMode::Plain && app.encoding_aes_key.is_none() {
            return Err(invalid(
                key("encoding_aes_key"),
                format!(
                    "is required when callback_mode is {}: set the EncodingAESKey from the WeChat console",
                    mode.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// The template catalog and the quota gauges poll WeChat: at most once a second.
fn validate_lookups(s: &Settings) -> Result<(), ConfigError> {
    let second = Duration::from_secs(1);
    let quota = s.wechat.quota_refresh.0;
    if !quota.is_zero() && quota < second {
        return Err(invalid(
            "wechat.quota_refresh",
            "must be at least 1s, or \"0s\" to turn it off",
        ));
    }
    if let Some(name) = s
        .apps
        .iter()
        .find_map(|(name, app)| (app.catalog_refresh.0 < second).then_some(name))
    {
        return Err(invalid(
            format!("apps.{name}.catalog_refresh"),
            "must be at least 1s",
        ));
    }
    Ok(())
}

/// App names become routing keys and queue names: `[a-z0-9_]{1,32}`.
pub fn is_app_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn positive(key: &str, span: Span) -> Result<(), ConfigError> {
    if span.0.is_zero() {
        return Err(invalid(key, "must be longer than 0s"));
    }
    Ok(())
}

/// `WXCOURIER_APPS__SHOP__SECRET` → `("shop", "secret")` for the keys read raw.
fn raw_app_key(env_key: &str) -> Option<(String, &'static str)> {
    let rest = env_key.strip_prefix(ENV_PREFIX)?.strip_prefix("APPS__")?;
    let (app, field) = rest.split_once("__")?;
    let field = field.to_ascii_lowercase();
    let field = RAW_STRING_APP_KEYS.into_iter().find(|k| *k == field)?;
    Some((app.to_ascii_lowercase(), field))
}

/// `WXCOURIER_APPS__SHOP__RATE_PER_SECOND` → `["apps", "shop", "rate_per_second"]`.
fn env_path(key: &str) -> Vec<String> {
    key[ENV_PREFIX.len()..]
        .split("__")
        .map(|p| p.to_ascii_lowercase())
        .collect()
}

fn env_provider(vars: &[(String, String)]) -> figment::providers::Serialized<figment::value::Dict> {
    // The nested dictionary is built here (not by figment's `Env`) so that tests can pass an
    // environment explicitly; values are typed the way figment types environment values.
    let mut dict = figment::value::Dict::new();
    for (key, value) in vars {
        let path = env_path(key);
        let parsed: figment::value::Value = value.parse().expect("parsing a value is infallible");
        insert_path(&mut dict, &path, parsed);
    }
    Serialized::defaults(dict)
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    use figment::value::{Dict, Value};
    let (head, rest) = path.split_first().expect("path is non-empty");
    if rest.is_empty() {
        dict.insert(head.clone(), value);
        return;
    }
    let entry = dict
        .entry(head.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if let Value::Dict(_, inner) = entry {
        insert_path(inner, rest, value);
    } else {
        *entry = Value::from(Dict::new());
        if let Value::Dict(_, inner) = entry {
            insert_path(inner, rest, value);
        }
    }
}

/// Turns figment's error into one sentence that names the key, and the variable when the key
/// came from the environment (`WXCOURIER_AMQP_URL` reads as the top-level key `amqp_url`).
fn describe_figment_error(err: figment::Error, env: &[(String, String)]) -> ConfigError {
    let from_env = |full: &str| {
        env.iter()
            .find(|(k, _)| env_path(k).join(".") == full)
            .map(|(k, _)| format!(" (set by {k})"))
            .unwrap_or_default()
    };
    let mut sentences = Vec::new();
    for e in err {
        let key = e.path.join(".");
        let what = match &e.kind {
            figment::error::Kind::UnknownField(field, _) => {
                // figment's path already ends with the unknown field.
                let full = if e.path.last() == Some(field) || key.is_empty() {
                    key.clone()
                } else {
                    format!("{key}.{field}")
                };
                let full = if full.is_empty() { field.clone() } else { full };
                format!("{full} is not a known key{}", from_env(&full))
            }
            figment::error::Kind::MissingField(field) => {
                let full = if key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                };
                format!("{full} is missing")
            }
            kind if key.is_empty() => kind.to_string(),
            kind => format!("{key}: {kind}"),
        };
        sentences.push(what);
    }
    ConfigError::Parse(one_line(&sentences.join("; ")))
}

/// TOML errors come with a drawn excerpt of the file; keep the words, on one line.
fn one_line(text: &str) -> String {
    let is_excerpt = |l: &str| {
        l.starts_with('|')
            || l.split_once('|')
                .is_some_and(|(n, _)| n.trim().parse::<u32>().is_ok())
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_excerpt(l))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Settings from `toml` as a file plus `env`, as `--config` would load them.
    pub(crate) fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_from(Some(&path), &env)
    }

    const MINIMAL: &str = "[apps.shop]\nappid = \"wx1\"\nsecret = \"s\"\n";

    #[test]
    fn defaults_match_the_contract() {
        let s = load(MINIMAL, &[]).unwrap();
        assert_eq!(s.amqp.prefetch, 256);
        assert_eq!(s.wechat.timeout.0, Duration::from_secs(10));
        assert_eq!(s.retry.max_attempts, 10);
        assert_eq!(s.retry.max_delay.0, Duration::from_secs(600));
        assert_eq!(s.retry.max_age.0, Duration::from_secs(86400));
        assert_eq!(s.retry.quota_pause.0, Duration::from_secs(60));
        assert_eq!(s.retry.max_quota_pause.0, Duration::from_secs(3600));
        assert_eq!(s.state.url.expose(), "memory");
        assert_eq!(s.apps["shop"].token_mode, TokenMode::Stable);
        assert_eq!(s.apps["shop"].rate_per_second, 50.0);
        assert_eq!(s.apps["shop"].burst, 50);
        assert!(s.http.listen.is_none());
        assert!(!s.apps["shop"].catalog);
        assert_eq!(s.apps["shop"].catalog_refresh.0, Duration::from_secs(600));
        assert_eq!(s.wechat.quota_refresh.0, Duration::from_secs(300));
    }

    #[test]
    fn lookup_intervals_below_a_second_are_refused_and_0s_turns_the_quota_off() {
        let s = load(
            &format!("{MINIMAL}catalog = true\ncatalog_refresh = \"30s\"\n"),
            &[],
        )
        .unwrap();
        assert!(s.apps["shop"].catalog);
        assert_eq!(s.apps["shop"].catalog_refresh.0, Duration::from_secs(30));
        let e = load(&format!("{MINIMAL}catalog_refresh = \"0s\"\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("apps.shop.catalog_refresh"), "{e}");
        let off = load(MINIMAL, &[("WXCOURIER_WECHAT__QUOTA_REFRESH", "0s")]).unwrap();
        assert!(off.wechat.quota_refresh.0.is_zero());
        let e = load(MINIMAL, &[("WXCOURIER_WECHAT__QUOTA_REFRESH", "500ms")]).unwrap_err();
        assert!(e.to_string().contains("wechat.quota_refresh"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file_with_double_underscore_nesting() {
        let s = load(
            MINIMAL,
            &[
                ("WXCOURIER_RETRY__MAX_ATTEMPTS", "3"),
                ("WXCOURIER_RETRY__INITIAL_DELAY", "250ms"),
                ("WXCOURIER_APPS__SHOP__RATE_PER_SECOND", "20"),
            ],
        )
        .unwrap();
        assert_eq!(s.retry.max_attempts, 3);
        assert_eq!(s.retry.initial_delay.0, Duration::from_millis(250));
        assert_eq!(s.apps["shop"].rate_per_second, 20.0);
    }

    #[test]
    fn a_secret_can_come_from_the_environment_only_and_keeps_leading_zeros() {
        let s = load(
            "[apps.shop]\nappid = \"wx1\"\n",
            &[("WXCOURIER_APPS__SHOP__SECRET", "0123")],
        )
        .unwrap();
        assert_eq!(s.apps["shop"].secret.expose(), "0123");
    }

    #[test]
    fn a_missing_secret_names_the_key_and_the_variable() {
        let err = load("[apps.shop]\nappid = \"wx1\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("apps.shop.secret is missing"), "{err}");
        assert!(err.contains("WXCOURIER_APPS__SHOP__SECRET"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = load(&format!("{MINIMAL}[retry]\nmax_atempts = 3\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("retry.max_atempts is not a known key"),
            "{err}"
        );
        assert!(err.contains("not a known key"), "{err}");
    }

    /// What Kubernetes injects for the Service `wxcourier` (port 80 named http) and for a
    /// second Service `wxcourier-metrics`.
    const SERVICE_LINKS: [(&str, &str); 16] = [
        ("WXCOURIER_SERVICE_HOST", "10.96.12.7"),
        ("WXCOURIER_SERVICE_PORT", "80"),
        ("WXCOURIER_SERVICE_PORT_HTTP", "80"),
        ("WXCOURIER_PORT", "tcp://10.96.12.7:80"),
        ("WXCOURIER_PORT_80_TCP", "tcp://10.96.12.7:80"),
        ("WXCOURIER_PORT_80_TCP_PROTO", "tcp"),
        ("WXCOURIER_PORT_80_TCP_PORT", "80"),
        ("WXCOURIER_PORT_80_TCP_ADDR", "10.96.12.7"),
        ("WXCOURIER_METRICS_SERVICE_HOST", "10.96.0.9"),
        ("WXCOURIER_METRICS_SERVICE_PORT", "9090"),
        ("WXCOURIER_METRICS_SERVICE_PORT_PROM", "9090"),
        ("WXCOURIER_METRICS_PORT", "tcp://10.96.0.9:9090"),
        ("WXCOURIER_METRICS_PORT_9090_TCP", "tcp://10.96.0.9:9090"),
        ("WXCOURIER_METRICS_PORT_9090_TCP_PROTO", "tcp"),
        ("WXCOURIER_METRICS_PORT_9090_TCP_PORT", "9090"),
        ("WXCOURIER_METRICS_PORT_9090_TCP_ADDR", "10.96.0.9"),
    ];

    #[test]
    fn kubernetes_service_links_are_ignored_and_listed_for_the_debug_log() {
        let mut env = SERVICE_LINKS.to_vec();
        env.push(("WXCOURIER_RETRY__MAX_ATTEMPTS", "3"));
        let s = load(MINIMAL, &env).unwrap();
        assert_eq!(s.retry.max_attempts, 3);
        let mut expected: Vec<&str> = SERVICE_LINKS.iter().map(|(k, _)| *k).collect();
        expected.sort();
        let mut ignored = s.ignored_env.clone();
        ignored.sort();
        assert_eq!(ignored, expected);
    }

    #[test]
    fn an_unknown_variable_beside_the_service_links_is_still_named() {
        for (name, value) in [
            ("WXCOURIER_AMQP_URL", "amqp://u:p@h:5672/%2f"),
            ("WXCOURIER_HTTP_PORT", "8080"),
            ("WXCOURIER_PORT_80_TCP_HOST", "10.96.12.7"),
            ("WXCOURIER_AMQP__URLS", "amqp://h"),
        ] {
            let mut env = SERVICE_LINKS.to_vec();
            env.push((name, value));
            let err = load(MINIMAL, &env).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
            assert!(err.contains("not a known key"), "{name}: {err}");
            assert!(!err.contains("u:p@"), "{err}");
        }
    }

    #[test]
    fn a_variable_with_an_empty_level_is_named_not_skipped() {
        for name in [
            "WXCOURIER__X_SERVICE_HOST",
            "WXCOURIER_RETRY___MAX_ATTEMPTS",
        ] {
            let err = load(MINIMAL, &[(name, "10.0.0.1")])
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn amqp_url_takes_one_node_a_list_or_a_comma_separated_string() {
        let one = load(MINIMAL, &[]).unwrap();
        assert_eq!(one.amqp.nodes(), ["amqp://guest:guest@127.0.0.1:5672/%2f"]);
        let listed = load(
            &format!(
                "[amqp]\nurl = [\"amqp://u:p@mq1:5672/%2f\", \"amqps://u:p@mq2:5671/%2f\"]\n{MINIMAL}"
            ),
            &[],
        )
        .unwrap();
        assert_eq!(
            listed.amqp.nodes(),
            ["amqp://u:p@mq1:5672/%2f", "amqps://u:p@mq2:5671/%2f"]
        );
        let from_env = load(
            MINIMAL,
            &[(
                "WXCOURIER_AMQP__URL",
                "amqp://u:p@mq1:5672/%2f, amqp://u:p@mq2:5672/%2f,amqp://u:p@mq3:5672/%2f",
            )],
        )
        .unwrap();
        assert_eq!(
            from_env.amqp.nodes(),
            [
                "amqp://u:p@mq1:5672/%2f",
                "amqp://u:p@mq2:5672/%2f",
                "amqp://u:p@mq3:5672/%2f"
            ]
        );
    }

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

    #[test]
    fn a_bad_node_is_named_by_position_without_its_password() {
        for (url, rule) in [
            (
                "amqp://u:hunter2@mq1/%2f,http://u:hunter2@mq2/",
                "node 2 of 2",
            ),
            (
                "amqp://u:hunter2@mq1/%2f,amqp://u:hunter2@mq2:port/",
                "node 2 of 2",
            ),
            ("", "amqp.url is empty"),
            ("amqp://u:hunter2@mq1/%2f,", "is empty (node 2 of 2)"),
        ] {
            let err = load(MINIMAL, &[("WXCOURIER_AMQP__URL", url)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(rule), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = load(&format!("[amqp]\nurl = []\n{MINIMAL}"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("amqp.url"), "{err}");
        let err = load(&format!("[amqp]\nurl = 5\n{MINIMAL}"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("amqp.url"), "{err}");
    }

    #[test]
    fn rediss_is_accepted_but_never_without_the_certificate_check() {
        let ok = load(
            MINIMAL,
            &[
                ("WXCOURIER_STATE__URL", "rediss://:pw@redis.internal:6380/0"),
                ("WXCOURIER_STATE__CA_FILE", "/etc/wxcourier/redis-ca.pem"),
            ],
        )
        .unwrap();
        assert_eq!(
            ok.state.ca_file.as_deref(),
            Some("/etc/wxcourier/redis-ca.pem")
        );
        let err = load(
            MINIMAL,
            &[(
                "WXCOURIER_STATE__URL",
                "rediss://:hunter2@redis:6380/#insecure",
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("#insecure"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = load(
            MINIMAL,
            &[
                ("WXCOURIER_STATE__URL", "redis://redis:6379/0"),
                ("WXCOURIER_STATE__CA_FILE", "/etc/ca.pem"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("state.ca_file"), "{err}");
        let err = load(MINIMAL, &[("WXCOURIER_STATE__URL", "memcached://x")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("state.url"), "{err}");
    }

    #[test]
    fn a_bad_duration_is_named() {
        let err = load(&format!("{MINIMAL}[retry]\nmax_delay = \"soon\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("retry.max_delay"), "{err}");
    }

    #[test]
    fn a_number_where_a_duration_belongs_is_named() {
        let err = load(&format!("{MINIMAL}[wechat]\ntimeout = 10\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("wechat.timeout"), "{err}");
    }

    #[test]
    fn a_zero_rate_is_refused_with_the_key() {
        let err = load(&format!("{MINIMAL}rate_per_second = 0\n"), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "apps.shop.rate_per_second must be > 0");
    }

    #[test]
    fn a_management_url_comes_from_the_environment_and_must_be_http_without_echo() {
        let s = load(
            MINIMAL,
            &[(
                "WXCOURIER_AMQP__MANAGEMENT_URL",
                "http://u:p@10.0.0.5:15672",
            )],
        )
        .unwrap();
        assert_eq!(
            s.amqp.management_url.unwrap().expose(),
            "http://u:p@10.0.0.5:15672"
        );
        assert!(load(MINIMAL, &[]).unwrap().amqp.management_url.is_none());
        let err = load(
            MINIMAL,
            &[("WXCOURIER_AMQP__MANAGEMENT_URL", "amqp://u:hunter2@h:5672/")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("amqp.management_url") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn a_callback_window_below_a_second_is_refused() {
        let err = load(
            &format!("[http]\ncallback_max_age = \"500ms\"\n{MINIMAL}"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("http.callback_max_age"), "{err}");
        let ok = load(
            &format!("[http]\ncallback_max_age = \"90s\"\n{MINIMAL}"),
            &[],
        )
        .unwrap();
        assert_eq!(ok.http.callback_window(), Some(Duration::from_secs(90)));
    }

    #[test]
    fn the_callback_window_is_on_by_default_and_0s_turns_it_off() {
        let s = load(MINIMAL, &[]).unwrap();
        assert_eq!(s.http.callback_window(), Some(Duration::from_secs(300)));
        let off = load(MINIMAL, &[("WXCOURIER_HTTP__CALLBACK_MAX_AGE", "0s")]).unwrap();
        assert_eq!(off.http.callback_window(), None);
    }

    #[test]
    fn http_limits_have_defaults_and_refuse_zero() {
        let s = load(MINIMAL, &[]).unwrap();
        assert_eq!(s.http.header_read_timeout.0, Duration::from_secs(10));
        assert_eq!(s.http.request_timeout.0, Duration::from_secs(10));
        assert_eq!(s.http.idle_timeout.0, Duration::from_secs(60));
        assert_eq!(s.http.max_connections, 512);
        for (key, value) in [
            ("header_read_timeout", "\"0s\""),
            ("request_timeout", "\"0s\""),
            ("idle_timeout", "\"0s\""),
            ("max_connections", "0"),
        ] {
            let err = load(&format!("[http]\n{key} = {value}\n{MINIMAL}"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("http.{key} must be")), "{err}");
        }
    }

    const CALLBACK: &str = "callback_token = \"t\"\n";
    const AES: &str = "encoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n";

    #[test]
    fn the_callback_mode_defaults_to_safe_with_a_key_and_plain_without() {
        let with_key = load(&format!("{MINIMAL}{CALLBACK}{AES}"), &[]).unwrap();
        assert_eq!(
            with_key.apps["shop"].resolved_callback_mode(),
            CallbackMode::Safe
        );
        let without = load(&format!("{MINIMAL}{CALLBACK}"), &[]).unwrap();
        assert_eq!(
            without.apps["shop"].resolved_callback_mode(),
            CallbackMode::Plain
        );
        let compat = load(
            &format!("{MINIMAL}{CALLBACK}{AES}"),
            &[("WXCOURIER_APPS__SHOP__CALLBACK_MODE", "compat")],
        )
        .unwrap();
        assert_eq!(
            compat.apps["shop"].resolved_callback_mode(),
            CallbackMode::Compat
        );
    }

    #[test]
    fn safe_and_compat_modes_without_a_key_name_the_missing_key() {
        for mode in ["safe", "compat"] {
            let err = load(
                &format!("{MINIMAL}{CALLBACK}callback_mode = \"{mode}\"\n"),
                &[],
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("apps.shop.encoding_aes_key is required when callback_mode is"),
                "{err}"
            );
            assert!(err.contains(mode), "{err}");
        }
        let err = load(&format!("{MINIMAL}callback_mode = \"plain\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("apps.shop.callback_token is required"),
            "{err}"
        );
        let err = load(
            &format!("{MINIMAL}{CALLBACK}callback_mode = \"secure\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("apps.shop.callback_mode"), "{err}");
    }

    #[test]
    fn an_app_name_outside_the_alphabet_is_refused() {
        let err = load("[apps.Shop]\nappid = \"wx1\"\nsecret = \"s\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("apps.Shop"), "{err}");
    }

    #[test]
    fn malformed_toml_is_an_error_not_a_panic() {
        assert!(load("[apps.shop\nappid=", &[]).is_err());
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let err = Settings::load_from(Some(Path::new("/nonexistent/x.toml")), &[]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.toml"));
    }

    #[test]
    fn the_shipped_default_config_is_valid_with_its_secret_from_the_environment() {
        let s = load(
            include_str!("../config/default.toml"),
            &[("WXCOURIER_APPS__DEFAULT__SECRET", "secret")],
        )
        .unwrap();
        assert_eq!(s.apps["default"].appid, "wx0000000000000000");
        let err = load(include_str!("../config/default.toml"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WXCOURIER_APPS__DEFAULT__SECRET"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let s = load(MINIMAL, &[]).unwrap();
        let shown = format!("{:?}", s);
        assert!(!shown.contains("secret = \"s\""));
        assert!(shown.contains("[redacted]"));
        assert!(!format!("{:?}", s.amqp.url).contains("guest"));
    }
}
