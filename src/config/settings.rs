//! The whole of the settings, one field per section of the file; loading them is `config/mod.rs`,
//! checking them `validate`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::admin::AdminSettings;
use super::platforms::PlatformSettings;
use super::renamed::RenamedKey;
use super::sections::{
    AmqpSettings, AppSettings, HttpSettings, LogSettings, ResultsSettings, RetrySettings,
    StateSettings, WechatSettings, WorkerSettings,
};

/// Every field not in the file or the environment takes its section's `Default`: the one place
/// defaults are written (`config/default.toml` repeats them for reading, and a test holds the
/// two equal).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub wechat: WechatSettings,
    pub retry: RetrySettings,
    pub state: StateSettings,
    pub http: HttpSettings,
    pub(crate) log: LogSettings,
    pub worker: WorkerSettings,
    pub results: ResultsSettings,
    pub admin: AdminSettings,
    pub apps: BTreeMap<String, AppSettings>,
    /// Third-party platforms, whose authorizers' accounts are learnt at run time.
    pub platforms: BTreeMap<String, PlatformSettings>,
    /// `WXCOURIER_…` variables left out because they are Kubernetes service links (names
    /// only), for `run` to log once logging is set up.
    #[serde(skip)]
    pub(crate) ignored_env: Vec<String>,
    /// Keys written under a former name, for `run` to warn about once logging is set up.
    #[serde(skip)]
    pub(crate) renamed_keys: Vec<RenamedKey>,
}

/// How much of the settings a verb uses, and so validates: a verb that never calls WeChat
/// (`send`, `dead`) runs without the apps' secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Uses {
    /// The worker and `check`: every rule.
    Everything,
    /// Broker-only verbs: every rule but the apps' WeChat credentials.
    BrokerOnly,
}
