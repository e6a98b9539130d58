//! `check`'s lines for each third-party platform: the age of its newest verify ticket, its
//! component token, and its authorizers by standing, naming those the merchant must authorize
//! again. A missing or stale ticket and a refused token fail the check; authorizers needing
//! the merchant are a warning.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::Settings;
use crate::platform::{Platform, account_name};
use crate::state::{Standing, State};
use crate::wechat::client::WechatClient;

/// WeChat takes a ticket for 12 hours; an older one gives `61006`.
const TICKET_LIFE: Duration = Duration::from_secs(12 * 3600);

/// Prints each platform's lines; whether all is well.
pub(super) async fn report(settings: &Settings, client: &WechatClient) -> bool {
    if settings.platforms.is_empty() {
        return true;
    }
    let state = match State::from_settings(&settings.state, Duration::from_secs(60)) {
        Ok(s) => s,
        Err(e) => {
            println!("platforms: FAILED: {e}");
            return false;
        }
    };
    if let State::Memory(..) = state {
        println!(
            "platforms: WARNING: state.url is memory: tickets and refresh tokens live in one \
             worker and are lost with it; use redis:// (with appendonly) for a platform"
        );
    }
    let store = state.platform_store();
    let mut ok = true;
    for name in settings.platforms.keys() {
        let Some(platform) = Platform::new(name, settings, client.clone(), &state, store.clone())
        else {
            continue;
        };
        ok &= report_one(&Arc::new(platform)).await;
    }
    ok
}

async fn report_one(platform: &Platform) -> bool {
    let name = &platform.name;
    let component = platform.component_appid();
    let mut ok = true;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    match platform.store.ticket(component).await {
        Ok(Some(ticket)) => {
            let age = Duration::from_secs(now.saturating_sub(ticket.created_at).max(0) as u64);
            if age > TICKET_LIFE {
                ok = false;
                println!(
                    "platform {name}: ticket: FAILED: the newest is {}h old (WeChat takes 12h); \
                     check that its authorization event URL reaches http.listen",
                    age.as_secs() / 3600
                );
            } else {
                println!("platform {name}: ticket: ok ({}m old)", age.as_secs() / 60);
            }
        }
        Ok(None) => println!(
            "platform {name}: ticket: none yet: WeChat pushes one every 10 minutes to \
             /wechat/platform/{name} (the token check below asks for one)"
        ),
        Err(e) => {
            ok = false;
            println!("platform {name}: ticket: FAILED: {e}; check state.url");
        }
    }
    match platform.component_token().await {
        Ok(_) => println!("platform {name}: component token ok"),
        Err(e) => {
            ok = false;
            println!(
                "platform {name}: component token: FAILED: {e}; check component_appid, \
                 {} and the platform's IP whitelist",
                crate::config::platform_secret_env(name)
            );
        }
    }
    match platform.store.authorizers(component).await {
        Ok(all) => {
            let count = |s: Standing| all.iter().filter(|a| a.standing == s).count();
            println!(
                "platform {name}: authorizers: {} active, {} revoked, {} needing re-authorization",
                count(Standing::Active),
                count(Standing::Revoked),
                count(Standing::NeedsReauthorization)
            );
            for a in all
                .iter()
                .filter(|a| a.standing == Standing::NeedsReauthorization)
            {
                println!(
                    "platform {name}: WARNING: {} needs the merchant to authorize again \
                     (`wxcourier platform authorize-url --platform {name} --redirect URL`)",
                    account_name(name, &a.appid)
                );
            }
        }
        Err(e) => {
            ok = false;
            println!("platform {name}: authorizers: FAILED: {e}");
        }
    }
    ok
}
