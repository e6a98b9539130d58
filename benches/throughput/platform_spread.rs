//! The platform-spread section's platform: one third-party platform with N authorizers, each
//! authorized for real through the simulator (a verify ticket pushed, an `authorized` event
//! pushed per merchant, the worker asking `api_query_auth`), so every authorizer has its own
//! refresh token, access token, rate bucket and pipeline state. A drain preloads jobs spread
//! evenly over the authorizers onto the platform's one queue, then times a fresh worker from
//! the first outcome to the last, as the other sections time theirs.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::Connection;
use lapin::options::QueueDeleteOptions;
use wxcourier::broker::tap::ResultsTap;
use wxcourier::broker::{Publisher, job_queue};
use wxcourier::platform::account_name;

use crate::kit;
use crate::measure::{BrokerCpu, Figures, Shortfall, drain, preload};
use crate::platform_startup::{bound, forget};
use crate::subjects::{Running, Sim, Subject};

/// How long a drain waits for the next outcome, and authorizing waits for its bindings.
const WAIT: Duration = Duration::from_secs(60);
/// Authorizations pushed at once.
const AUTHORIZING_IN_FLIGHT: usize = 16;

/// The platform, its simulator and its authorizers, for as many drains as the section runs.
pub struct SpreadPlatform {
    name: String,
    component: String,
    appids: Vec<String>,
    sim: Sim,
    /// Where the worker serves HTTP: the simulator pushes the platform's events there.
    http: String,
}

impl SpreadPlatform {
    /// A fresh platform whose `n` authorizers are all authorized and routed, by a worker that
    /// is stopped again before it returns.
    pub async fn authorize(n: usize) -> Self {
        let name = format!("bs{:08x}", rand::random::<u32>());
        let component = format!("wxs{:016x}", rand::random::<u64>());
        let http = format!("127.0.0.1:{}", kit::free_port());
        let events = format!("http://{http}/wechat/platform/{name}");
        let sim = Sim::with_platform(&component, &events);
        let appids: Vec<String> = (0..n).map(|i| format!("wxs{i:015}")).collect();
        let platform = Self {
            name,
            component,
            appids,
            sim,
            http,
        };
        let running = platform.spawn();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        platform.wait_ready(&client).await;
        platform.control(&client, "ticket", None).await;
        // The component token needs the ticket: authorizations before the worker took it fail.
        tokio::time::sleep(Duration::from_millis(500)).await;
        futures_util::stream::iter(&platform.appids)
            .map(|appid| platform.control(&client, "authorize", Some(appid)))
            .buffer_unordered(AUTHORIZING_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let started = Instant::now();
        while bound(&client, &platform.name).await < n {
            assert!(
                started.elapsed() < WAIT,
                "the platform's {n} authorizers were not all routed within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.stop();
        platform
    }

    /// The worker serving the platform, its authorizers sending at a rate no run reaches.
    fn spawn(&self) -> Running {
        Running::spawn_platform(
            &self.name,
            &self.component,
            &self.sim.base,
            &self.http,
            true,
            "rate_per_second = 1000000\nburst = 100000\n",
        )
    }

    async fn wait_ready(&self, client: &reqwest::Client) {
        let url = format!("http://{}/readyz", self.http);
        let started = Instant::now();
        while !client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(
                started.elapsed() < WAIT,
                "the platform's worker never got ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One of the simulator's platform controls: a ticket pushed now, or a merchant's
    /// authorization.
    async fn control(&self, client: &reqwest::Client, what: &str, authorizer: Option<&String>) {
        let mut body = serde_json::json!({ "component_appid": self.component });
        if let Some(appid) = authorizer {
            body["authorizer_appid"] = appid.as_str().into();
        }
        let url = format!("{}/sim/platform/{what}", self.sim.base);
        let status = client
            .post(url)
            .json(&body)
            .send()
            .await
            .map(|r| r.status());
        assert!(
            status.as_ref().is_ok_and(|s| s.is_success()),
            "the simulator's platform {what}: {status:?}"
        );
    }

    /// Preloads `n` jobs spread evenly over the authorizers, starts a worker, and times the
    /// first outcome to the last.
    pub async fn drain(&self, conn: &Connection, n: usize) -> Result<Figures, Shortfall> {
        let accounts: Vec<String> = self
            .appids
            .iter()
            .map(|appid| account_name(&self.name, appid))
            .collect();
        let mut tap = ResultsTap::open(conn, "#").await.unwrap();
        let publisher = Publisher::open(conn, WAIT).await.unwrap();
        // Ids of this drain only: the accounts are the same in every run.
        let run = format!("s{:08x}", rand::random::<u32>());
        preload(&publisher, &accounts, n, &run).await;
        let broker = BrokerCpu::start();
        let running = self.spawn();
        let ours: HashSet<&str> = accounts.iter().map(String::as_str).collect();
        let label = Subject::Platform.label();
        let drained = drain(&mut tap, &ours, n, running, broker, label).await;
        let _ = publisher.close().await;
        drained
    }

    /// Deletes the platform's queue and its keys in Redis.
    pub async fn remove(self, conn: &Connection) {
        let ch = conn.create_channel().await.unwrap();
        let _ = ch
            .queue_delete(
                job_queue(&self.name).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
        let _ = ch.close(200, "done".into()).await;
        forget(&self.component).await;
    }
}
