//! `wxcourier check`: is this configuration ready to run?

use std::process::ExitCode;
use std::time::Duration;

use super::{ConfigArg, bad_config};
use crate::broker;
use crate::broker::orphans::{self, ManagementApi};
use crate::broker::topology;
use crate::config::Settings;
use crate::config::TokenMode;
use crate::state::{State, StateError};
use crate::wechat::client::WechatClient;

pub async fn run(args: ConfigArg) -> ExitCode {
    let settings = match args.load().and_then(|s| s.require_apps().map(|_| s)) {
        Ok(s) => s,
        Err(e) => return bad_config(&e),
    };
    println!("config: ok ({} app(s))", settings.apps.len());
    let mut ok = true;
    match tokio::time::timeout(
        Duration::from_secs(10),
        broker::connect(&settings.amqp, "wxcourier check"),
    )
    .await
    {
        Ok(Ok(conn)) => {
            println!("broker: ok");
            report_legacy(&settings, &conn).await;
            report_orphans(&settings, &conn).await;
            let _ = conn.close(200, "check done".into()).await;
        }
        Ok(Err(e)) => {
            ok = false;
            println!("broker: FAILED: {e}; check amqp.url and that RabbitMQ is running");
        }
        Err(_) => {
            ok = false;
            println!("broker: FAILED: no answer within 10s; check amqp.url");
        }
    }
    if settings.state.url.expose() != "memory" {
        match check_state(&settings.state).await {
            Ok(()) => println!("state: ok"),
            Err(e) => {
                ok = false;
                println!("state: FAILED: {e}; check state.url (and state.ca_file for rediss://)");
            }
        }
    }
    let client = match WechatClient::new(&settings.wechat.base_url, settings.wechat.timeout.0) {
        Ok(c) => c,
        Err(e) => {
            println!("wechat: FAILED: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (name, app) in &settings.apps {
        let grant = match app.token_mode {
            TokenMode::Stable => client.stable_token(&app.appid, &app.secret).await,
            TokenMode::Classic => client.classic_token(&app.appid, &app.secret).await,
        };
        match grant {
            Ok(_) => println!("app {name}: token ok"),
            Err(e) => {
                ok = false;
                println!(
                    "app {name}: FAILED: {e}; check apps.{name}.appid, its secret and the IP whitelist"
                );
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Queues an older version declared without delivery limits: a warning each, not a failure
/// (they work; the migration is in docs/operations.md).
async fn report_legacy(settings: &Settings, conn: &lapin::Connection) {
    let apps: Vec<String> = settings.apps.keys().cloned().collect();
    match topology::legacy_queues(conn, &apps).await {
        Ok(found) if found.is_empty() => println!("queue limits: ok"),
        Ok(found) => {
            for queue in found {
                println!("queue limits: WARNING: {queue}");
            }
        }
        Err(e) => println!("queue limits: not checked: {e}"),
    }
}

/// Job queues of apps no longer configured: a warning each, not a failure (removing an app on
/// purpose is fine; its waiting jobs are what a person must decide about).
async fn report_orphans(settings: &Settings, conn: &lapin::Connection) {
    let api = match ManagementApi::from_settings(&settings.amqp) {
        Ok(api) => api,
        Err(e) => {
            println!("job queues: not checked: {e}");
            return;
        }
    };
    match orphans::find(settings, &api, conn).await {
        Ok(found) if found.is_empty() => println!("job queues: ok (none without an app)"),
        Ok(found) => {
            for o in found {
                let depth = o
                    .messages
                    .map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string());
                println!(
                    "job queues: WARNING: {} holds {depth} message(s) but no app is configured for it; they are not sent",
                    o.queue
                );
            }
        }
        Err(e) => println!(
            "job queues: not checked: the RabbitMQ management API at {}: {e}",
            api.describe()
        ),
    }
}

/// Reaches the shared state (Redis), over TLS for `rediss://`.
async fn check_state(settings: &crate::config::StateSettings) -> Result<(), StateError> {
    let state = State::from_settings(settings, Duration::from_secs(60))?;
    state.ping().await
}
