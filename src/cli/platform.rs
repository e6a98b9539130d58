//! `wxcourier platform list|import|authorize-url|remove --platform NAME`: a third-party
//! platform's authorizers as the shared state holds them; onboarding the ones WeChat lists;
//! the console link a merchant authorizes on; and retiring one authorizer.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use super::shared::{ConfigArg, EXIT_BAD_CONFIG, EXIT_USAGE, bad_config, when};
use crate::config::Settings;
use crate::config::is_authorizer_appid;
use crate::platform::{Platform, account_name};
use crate::state::{Authorizer, State};
use crate::wechat::client::WechatClient;

#[derive(clap::Args)]
pub(crate) struct PlatformArgs {
    #[command(subcommand)]
    command: PlatformCommand,
}

#[derive(clap::Subcommand)]
enum PlatformCommand {
    /// Shows the platform's authorizers: account name, standing, when it last changed.
    List {
        #[command(flatten)]
        which: Which,
        /// One JSON array instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Keeps every authorizer WeChat lists (`api_get_authorizer_list`) with its refresh
    /// token: onboarding a platform that has merchants already.
    Import {
        #[command(flatten)]
        which: Which,
    },
    /// Prints the console link a merchant opens to authorize the platform.
    AuthorizeUrl {
        #[command(flatten)]
        which: Which,
        /// Where WeChat sends the merchant back after authorizing.
        #[arg(long)]
        redirect: String,
    },
    /// Retires one authorizer: its refresh token goes and nothing more is sent for it.
    Remove {
        #[command(flatten)]
        which: Which,
        /// The authorizer's AppID.
        #[arg(long)]
        authorizer: String,
    },
}

#[derive(clap::Args)]
struct Which {
    #[command(flatten)]
    config: ConfigArg,
    /// The platform, as named in `[platforms.NAME]`.
    #[arg(long)]
    platform: String,
}

/// The claim lifetime a state backend is opened with; these verbs take no claim.
const NO_CLAIMS: Duration = Duration::from_secs(60);

pub(crate) async fn run(args: PlatformArgs) -> ExitCode {
    let which = match &args.command {
        PlatformCommand::List { which, .. }
        | PlatformCommand::Import { which }
        | PlatformCommand::AuthorizeUrl { which, .. }
        | PlatformCommand::Remove { which, .. } => which,
    };
    let settings = match which.config.load_for_broker() {
        Ok(s) => s,
        Err(e) => return bad_config(&e),
    };
    let Some(configured) = settings.platforms.get(&which.platform) else {
        eprintln!(
            "wxcourier platform: {:?} is not a configured platform ([platforms.NAME])",
            which.platform
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let calls_wechat = matches!(
        args.command,
        PlatformCommand::Import { .. } | PlatformCommand::AuthorizeUrl { .. }
    );
    if calls_wechat && configured.component_secret.expose().is_empty() {
        eprintln!(
            "wxcourier: bad config: platforms.{}.component_secret is missing: set {}",
            which.platform,
            crate::config::platform_secret_env(&which.platform)
        );
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let state = match State::from_settings(&settings.state, NO_CLAIMS) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wxcourier platform: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let State::Memory(..) = state {
        eprintln!(
            "wxcourier platform: state.url is memory, where a platform's authorizers live inside \
             the running worker alone; with a redis:// state every instance and this command \
             share them"
        );
        return ExitCode::FAILURE;
    }
    let Some(platform) = open(&which.platform, &settings, &state) else {
        return ExitCode::FAILURE;
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let done = match &args.command {
        PlatformCommand::List { json, .. } => platform
            .store
            .authorizers(platform.component_appid())
            .await
            .map(|all| print!("{}", listing(&platform.name, &all, *json)))
            .map_err(|e| e.to_string()),
        PlatformCommand::Import { .. } => platform
            .import(now)
            .await
            .map(|got| {
                println!(
                    "kept {} authorizer{}; {} already held a later change",
                    got.kept,
                    if got.kept == 1 { "" } else { "s" },
                    got.newer_kept
                );
                if !got.without_token.is_empty() {
                    println!(
                        "listed without a refresh token (not kept; they must authorize again \
                         unless a later import lists the token): {}",
                        got.without_token.join(", ")
                    );
                }
            })
            .map_err(|e| e.to_string()),
        PlatformCommand::AuthorizeUrl { redirect, .. } => {
            if reqwest::Url::parse(redirect).is_err() {
                eprintln!("wxcourier platform: --redirect must be an absolute URL");
                return ExitCode::from(EXIT_USAGE);
            }
            platform
                .authorize_url(redirect)
                .await
                .map(|url| println!("{url}"))
                .map_err(|e| e.to_string())
        }
        PlatformCommand::Remove { authorizer, .. } => {
            if !is_authorizer_appid(authorizer) {
                eprintln!("wxcourier platform: --authorizer must be an AppID (letters and digits)");
                return ExitCode::from(EXIT_USAGE);
            }
            platform
                .revoke(authorizer, now)
                .await
                .map(|retired| {
                    let account = account_name(&platform.name, authorizer);
                    if retired {
                        println!("{account} is retired");
                    } else {
                        println!("{account} changed after now: nothing done");
                    }
                })
                .map_err(|e| e.to_string())
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxcourier platform: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open(name: &str, settings: &Settings, state: &State) -> Option<Platform> {
    let wechat = match WechatClient::new(&settings.wechat.base_url, settings.wechat.timeout.get()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("wxcourier platform: {e}");
            return None;
        }
    };
    Platform::new(name, settings, wechat, state, state.platform_store())
}

/// The authorizers as the command prints them: tab-separated lines (account, standing, changed
/// at), or a JSON array. Refresh tokens are never shown.
fn listing(platform: &str, all: &[Authorizer], as_json: bool) -> String {
    if as_json {
        let rows: Vec<_> = all
            .iter()
            .map(|a| {
                json!({
                    "account": account_name(platform, &a.appid),
                    "authorizer_appid": a.appid,
                    "standing": a.standing.as_str(),
                    "changed_at": when(a.changed_at),
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::from(rows));
    }
    all.iter()
        .map(|a| {
            format!(
                "{}\t{}\t{}\n",
                account_name(platform, &a.appid),
                a.standing.as_str(),
                when(a.changed_at)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Standing;
    use crate::types::Secret;

    #[test]
    fn a_listing_names_accounts_and_standings_and_never_a_refresh_token() {
        let all = [
            Authorizer {
                appid: "wxa".into(),
                standing: Standing::Active,
                refresh_token: Some(Secret::new("refreshtoken@@@secret")),
                changed_at: 0,
            },
            Authorizer {
                appid: "wxb".into(),
                standing: Standing::Revoked,
                refresh_token: None,
                changed_at: 0,
            },
        ];
        let lines = listing("saas", &all, false);
        assert_eq!(
            lines,
            "saas:wxa\tactive\t1970-01-01T00:00:00Z\nsaas:wxb\trevoked\t1970-01-01T00:00:00Z\n"
        );
        let json = listing("saas", &all, true);
        assert!(json.contains("\"standing\":\"revoked\""), "{json}");
        assert!(!json.contains("refreshtoken") && !lines.contains("refreshtoken"));
    }
}
