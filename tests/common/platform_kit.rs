//! A third-party platform under test: a simulator that is the platform's WeChat and pushes to
//! a worker serving `[platforms.NAME]` (a name of its own) on Redis state, with a fresh component AppID per test;
//! what the tests of the platform's authorization side and of its authorizers' sending share.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use wxcourier::config::PlatformSettings;
use wxcourier::platform::authorizer_token::AuthorizerTokenSource;
use wxcourier::platform::component::ComponentClient;
use wxcourier::sim::push::{CallbackPush, CallbackTarget, signed_request, signed_request_at};
use wxcourier::sim::{SimOptions, SimPlatform, Simulator};
use wxcourier::state::{PlatformStore, Standing, State};
use wxcourier::types::Secret;
use wxcourier::wechat::client::WechatClient;

pub const TOKEN: &str = "platform-token";
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const SECRET: &str = "component-secret";
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// A component AppID no other test uses, so their state never meets in Redis.
pub fn component_appid() -> String {
    format!("wxc{:016x}", rand::random::<u64>())
}

pub fn store() -> Arc<dyn PlatformStore> {
    State::from_url(REDIS, Duration::from_secs(60), 100, Duration::from_secs(5))
        .unwrap()
        .platform_store()
}

pub struct Platform {
    pub t: TestApp,
    /// The platform's name, `[platforms.NAME]`: one per test, so tests never share its queue.
    pub name: String,
    pub component: String,
    /// The authorization event URL.
    pub url: String,
    pub store: Arc<dyn PlatformStore>,
    /// The settings the worker runs with, for a test that starts another instance beside it
    /// (with `http.listen` cleared: the port is the first one's).
    pub settings: wxcourier::config::Settings,
}

/// A worker with a platform of its own on Redis state, and a simulator that pushes to it.
pub async fn spawn_platform(prefix: &str) -> Platform {
    spawn_platform_with(prefix, |_| {}).await
}

/// [`spawn_platform`], with `tweak` applied to the worker's settings last.
pub async fn spawn_platform_with(
    prefix: &str,
    tweak: impl FnOnce(&mut wxcourier::config::Settings),
) -> Platform {
    let port = free_port();
    let component = component_appid();
    let name = format!("pf{:08x}", rand::random::<u32>());
    let url = format!("http://127.0.0.1:{port}/wechat/platform/{name}");
    let sim = Simulator::start(
        "127.0.0.1:0",
        SimOptions {
            platforms: vec![SimPlatform {
                component_appid: component.clone(),
                secret: SECRET.into(),
                token: TOKEN.into(),
                aes_key: AES_KEY.into(),
                event_url: Some(url.clone()),
            }],
            // No timer push during a test: each pushes its own.
            ticket_interval: Duration::from_secs(3600),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    // Reconciled a moment ago, as far as the worker can tell: the scheduled reconciliation
    // would read the authorizer list at a time of its own, and these tests count those reads.
    // The test of the reconciliation gives the round back.
    store()
        .claim_round(
            &component,
            wxcourier::platform::reconcile::RECONCILE_ROUND,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let mut settings = None;
    let t = spawn_app_on(prefix, sim, |s| {
        s.http.listen = Some(format!("127.0.0.1:{port}"));
        s.state.url = Secret::new(REDIS);
        let platform = PlatformSettings::new(
            component.clone(),
            Secret::new(SECRET),
            Secret::new(TOKEN),
            Secret::new(AES_KEY),
        );
        s.platforms.insert(name.clone(), platform);
        tweak(s);
        let mut kept = s.clone();
        kept.http.listen = None;
        settings = Some(kept);
    })
    .await;
    // Up to 20 s: on a CI machine running several brokers at once, a start can take seconds.
    for _ in 0..800 {
        if t.ctx.health.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        t.ctx.health.is_ready(),
        "the worker was not ready within 20s"
    );
    Platform {
        t,
        name,
        component,
        url,
        store: store(),
        settings: settings.expect("the worker's settings were made"),
    }
}

impl Platform {
    /// Drops every authorizer the state keeps, as a Redis restarted without persistence would.
    pub async fn lose_authorizers(&self) {
        let mut redis = redis::Client::open(REDIS)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: i64 = redis::cmd("DEL")
            .arg(format!(
                "wxcourier:{{platform:{}}}:authorizers:all",
                self.component
            ))
            .query_async(&mut redis)
            .await
            .unwrap();
    }

    /// Sets the simulator's faults of this platform.
    pub fn set_faults(&self, faults: wxcourier::sim::PlatformFaults) {
        self.t
            .sim
            .set_platform_faults(&self.component, faults)
            .unwrap();
    }

    /// Ends the test's worker and deletes its queues: the app's and the platform's.
    pub async fn stop(self) {
        let name = self.name.clone();
        let harness = self.t.stop_keeping_queue().await;
        let ch = harness.conn.create_channel().await.unwrap();
        let _ = ch
            .queue_delete(
                wxcourier::broker::job_queue(&name).as_str().into(),
                Default::default(),
            )
            .await;
        harness.cleanup().await;
    }

    pub async fn wait_for_ticket(&self) -> Secret {
        for _ in 0..200 {
            if let Some(t) = self.store.ticket(&self.component).await.unwrap() {
                return t.value;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no ticket was kept");
    }

    pub async fn wait_for_standing(
        &self,
        appid: &str,
        standing: Standing,
    ) -> wxcourier::state::Authorizer {
        for _ in 0..200 {
            if let Some(a) = self.store.authorizer(&self.component, appid).await.unwrap()
                && a.standing == standing
            {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{appid} never became {standing:?}");
    }

    pub fn stats(&self) -> wxcourier::sim::PlatformStats {
        self.t.sim.platform_stats()[&self.component].clone()
    }

    /// A push to the event URL, sealed for `appid`, signed at `at` (now when None).
    pub async fn push(&self, appid: &str, xml: String, at: Option<u64>) -> (u16, String) {
        let push = CallbackPush {
            target: CallbackTarget {
                url: self.url.clone(),
                token: TOKEN.into(),
                aes_key: Some(AES_KEY.into()),
            },
            appid: appid.into(),
            xml,
        };
        let (url, body) = match at {
            Some(at) => signed_request_at(&push, at),
            None => signed_request(&push),
        };
        post(&url, body).await
    }

    /// The component client the sim answers, as the worker's.
    pub fn client(&self) -> ComponentClient {
        let wechat = WechatClient::new(&self.t.sim.base_url(), Duration::from_secs(2)).unwrap();
        ComponentClient::new(wechat, self.component.clone(), Secret::new(SECRET))
    }
}

pub async fn post(url: &str, body: String) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn authorized_xml(component: &str, authorizer: &str, code: &str, created: u64) -> String {
    format!(
        "<xml><AppId>{component}</AppId><CreateTime>{created}</CreateTime>\
         <InfoType>authorized</InfoType><AuthorizerAppid>{authorizer}</AuthorizerAppid>\
         <AuthorizationCode>{code}</AuthorizationCode></xml>"
    )
}

pub fn platform_of(p: &Platform) -> Arc<wxcourier::platform::Platform> {
    let mut settings = wxcourier::config::Settings::default();
    settings.wechat.base_url = p.t.sim.base_url();
    settings.platforms.insert(
        p.name.clone(),
        PlatformSettings::new(
            p.component.clone(),
            Secret::new(SECRET),
            Secret::new(TOKEN),
            Secret::new(AES_KEY),
        ),
    );
    let state =
        State::from_url(REDIS, Duration::from_secs(60), 100, Duration::from_secs(5)).unwrap();
    let wechat = WechatClient::new(&p.t.sim.base_url(), Duration::from_secs(2)).unwrap();
    Arc::new(
        wxcourier::platform::Platform::new(&p.name, &settings, wechat, &state, p.store.clone())
            .unwrap(),
    )
}

pub fn token_source(p: &Platform, appid: &str) -> AuthorizerTokenSource {
    AuthorizerTokenSource {
        platform: platform_of(p),
        appid: appid.into(),
    }
}

/// A platform with a ticket and `appid` authorized through the pushes.
pub async fn authorized(prefix: &str, appid: &str) -> Platform {
    let p = spawn_platform(prefix).await;
    p.t.sim.push_ticket(&p.component).unwrap();
    p.wait_for_ticket().await;
    p.t.sim.authorize(&p.component, appid).unwrap();
    p.wait_for_standing(appid, Standing::Active).await;
    p
}

/// Whether WeChat (the simulator) takes `token` for a template message.
pub async fn sends_with(p: &Platform, token: &Secret) -> bool {
    let url = format!(
        "{}/cgi-bin/message/template/send?access_token={}",
        p.t.sim.base_url(),
        token.expose()
    );
    let body = serde_json::json!({
        "touser": openid(1),
        "template_id": "tpl",
        "data": {"k": {"value": "v"}},
    });
    let r: serde_json::Value = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["errcode"] == 0
}
