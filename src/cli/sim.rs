//! `wxcourier sim`: the WeChat API simulator as a process.

use std::process::ExitCode;
use std::time::Duration;

use crate::sim::{CallbackTarget, Faults, SimOptions, SimPlatform, SimTemplate, Simulator};

#[derive(clap::Args)]
pub(crate) struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9780")]
    listen: String,
    /// An account it knows, as APPID:SECRET (repeatable). Default: wx0000000000000000:secret.
    #[arg(long = "app", value_name = "APPID:SECRET")]
    apps: Vec<String>,
    /// Token lifetime.
    #[arg(long, default_value = "7200s", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
    /// How long an old classic token keeps working after a new one is issued.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    token_grace: Duration,
    /// Sends per app before 45009.
    #[arg(long, default_value_t = 1_000_000)]
    daily_quota: u64,
    /// Share of sends answered -1 (system busy).
    #[arg(long, default_value_t = 0.0)]
    busy: f64,
    /// Share of sends answered 45009.
    #[arg(long, default_value_t = 0.0)]
    quota_share: f64,
    /// Share of requests answered HTTP 503.
    #[arg(long, default_value_t = 0.0)]
    http5xx: f64,
    /// Share of requests whose connection is dropped.
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Share of sends answered with a body that is not JSON.
    #[arg(long, default_value_t = 0.0)]
    bad_json: f64,
    /// Share of delivery reports that say `failed:user block` (sent events: ErrorCode 43101).
    #[arg(long, default_value_t = 0.0)]
    report_blocked: f64,
    /// Share of delivery reports that say `failed: system failed` (sent events: ErrorCode -1).
    #[arg(long, default_value_t = 0.0)]
    report_failed: f64,
    /// Push delivery reports for APPID's sends, and the user events asked for on /sim/event:
    /// APPID=URL,TOKEN[,ENCODING_AES_KEY] (repeatable; with the key, in safe mode).
    #[arg(long = "callback", value_name = "APPID=URL,TOKEN[,AESKEY]")]
    callbacks: Vec<String>,
    /// How long after an accepted send its delivery report is pushed.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    report_delay: Duration,
    /// Share of sends answered only after 60 s.
    #[arg(long, default_value_t = 0.0)]
    hang: f64,
    /// Latency added to every request.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// An OpenID that refuses every message: its sends are answered 43101 (repeatable).
    #[arg(long = "refuse", value_name = "OPENID")]
    refuse: Vec<String>,
    /// APPID's template list, from FILE: WeChat's get_all_private_template answer
    /// (`{"template_list": [...]}`). Template messages with another template_id get 40037.
    /// Repeatable.
    #[arg(long = "templates", value_name = "APPID=FILE")]
    templates: Vec<String>,
    /// A third-party platform it knows (repeatable): its component AppID and secret, the Token
    /// and EncodingAESKey its pushes are signed and sealed with, and its authorization event
    /// URL, where verify tickets and authorizations are pushed.
    #[arg(
        long = "platform",
        value_name = "APPID=SECRET,TOKEN,AESKEY[,EVENT_URL]"
    )]
    platforms: Vec<String>,
    /// How often each platform gets a new verify ticket pushed.
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    ticket_interval: Duration,
}

pub(crate) async fn run(args: SimArgs) -> ExitCode {
    let _ = crate::telemetry::init_logging(&Default::default());
    let mut apps = Vec::new();
    for a in &args.apps {
        match a.split_once(':') {
            Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
                apps.push((id.to_owned(), secret.to_owned()))
            }
            _ => {
                eprintln!("wxcourier sim: --app must be APPID:SECRET, got {a:?}");
                return ExitCode::from(super::shared::EXIT_USAGE);
            }
        }
    }
    let mut options = SimOptions {
        token_ttl: args.token_ttl,
        token_grace: args.token_grace,
        daily_quota: args.daily_quota,
        report_delay: args.report_delay,
        faults: Faults {
            busy: args.busy,
            quota: args.quota_share,
            http5xx: args.http5xx,
            drop: args.drop,
            bad_json: args.bad_json,
            hang: args.hang,
            latency_ms: args.latency.as_millis() as u64,
            report_blocked: args.report_blocked,
            report_failed: args.report_failed,
        },
        refusing: args.refuse.iter().cloned().collect(),
        ticket_interval: args.ticket_interval,
        ..SimOptions::default()
    };
    for p in &args.platforms {
        match parse_platform(p) {
            Some(platform) => options.platforms.push(platform),
            None => {
                eprintln!(
                    "wxcourier sim: --platform must be APPID=SECRET,TOKEN,AESKEY[,EVENT_URL], got {p:?}"
                );
                return ExitCode::from(super::shared::EXIT_USAGE);
            }
        }
    }
    if !apps.is_empty() {
        options.apps = apps;
    }
    for c in &args.callbacks {
        match parse_callback(c) {
            Some((appid, target)) => {
                options.callbacks.insert(appid, target);
            }
            None => {
                eprintln!("wxcourier sim: --callback must be APPID=URL,TOKEN[,AESKEY], got {c:?}");
                return ExitCode::from(super::shared::EXIT_USAGE);
            }
        }
    }
    for t in &args.templates {
        match read_templates(t) {
            Ok((appid, list)) => {
                options.templates.insert(appid, list);
            }
            Err(e) => {
                eprintln!("wxcourier sim: --templates {t:?}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let sim = match Simulator::start(&args.listen, options).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("wxcourier sim: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "wxcourier sim: WeChat API simulator on {} (stats at {}/sim/stats)",
        sim.base_url(),
        sim.base_url()
    );
    super::shared::termination().await;
    sim.stop();
    ExitCode::SUCCESS
}

/// Why a `--templates` value gives no template list.
#[derive(Debug, thiserror::Error)]
enum TemplatesError {
    #[error("must be APPID=FILE")]
    Form,
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not {{\"template_list\": [...]}}: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
}

/// `APPID=FILE`, FILE holding `{"template_list": [...]}`.
fn read_templates(text: &str) -> Result<(String, Vec<SimTemplate>), TemplatesError> {
    #[derive(serde::Deserialize)]
    struct List {
        template_list: Vec<SimTemplate>,
    }
    let (appid, path) = text
        .split_once('=')
        .filter(|(a, p)| !a.is_empty() && !p.is_empty())
        .ok_or(TemplatesError::Form)?;
    let json = std::fs::read_to_string(path).map_err(|source| TemplatesError::Read {
        path: path.to_owned(),
        source,
    })?;
    let list: List = serde_json::from_str(&json).map_err(|source| TemplatesError::Json {
        path: path.to_owned(),
        source,
    })?;
    Ok((appid.to_owned(), list.template_list))
}

fn parse_callback(text: &str) -> Option<(String, CallbackTarget)> {
    let (appid, rest) = text.split_once('=')?;
    let mut parts = rest.split(',');
    let url = parts.next().filter(|u| !u.is_empty())?.to_owned();
    let token = parts.next().filter(|t| !t.is_empty())?.to_owned();
    let aes_key = parts.next().map(str::to_owned);
    if parts.next().is_some() || appid.is_empty() {
        return None;
    }
    Some((
        appid.to_owned(),
        CallbackTarget {
            url,
            token,
            aes_key,
        },
    ))
}

fn parse_platform(text: &str) -> Option<SimPlatform> {
    let (appid, rest) = text.split_once('=')?;
    let mut parts = rest.splitn(4, ',');
    let mut next = || parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
    let (secret, token, aes_key) = (next()?, next()?, next()?);
    let event_url = next();
    if appid.is_empty() || crate::types::decode_aes_key(&aes_key).is_none() {
        return None;
    }
    Some(SimPlatform {
        component_appid: appid.to_owned(),
        secret,
        token,
        aes_key,
        event_url,
    })
}
