//! The platform start-up section: `wxcourier run` serving one third-party platform whose state
//! (Redis) holds N active authorizers, started twice: first when the platform's queue does not
//! exist (the worker declares it and binds every authorizer), then as a restart finds queue and
//! bindings in place (what a deploy does). Each start is timed to `/readyz` answering 200 and
//! to every authorizer being routed (the queue's bindings from the wxcourier.jobs exchange,
//! counted through the management API), with the worker's RSS at both and the CPU it used
//! until 10 s after ready. The queue and the
//! platform's Redis keys are deleted at the end.

use std::time::{Duration, Instant};

use lapin::Connection;
use lapin::options::QueueDeleteOptions;
use wxcourier::broker::job_queue;
use wxcourier::state::{Authorizer, Standing, State};
use wxcourier::types::Secret;

use crate::kit;
use crate::measure::{cpu_seconds, status_mib};
use crate::subjects::{Running, Sim};

/// One start's figures.
#[derive(Clone, Copy, Debug)]
pub struct PlatformStart {
    /// Spawn to the first 200 from `/readyz`.
    pub ready: Option<f64>,
    /// Spawn to every authorizer bound.
    pub routed: Option<f64>,
    pub rss_ready_mib: f64,
    pub rss_routed_mib: f64,
    /// CPU seconds the worker used from spawn until [`SETTLE`] after ready: the start's own
    /// work, binds included.
    pub cpu_settled_s: f64,
}

/// How long after ready the start's CPU is counted.
const SETTLE: Duration = Duration::from_secs(10);

/// Starts the worker for a fresh platform with `n` authorizers, then restarts it twice: with
/// the management API (it binds only what is missing), and without (it binds every
/// authorizer again); see the file's header.
pub async fn measure(conn: &Connection, n: usize, limit: Duration) -> [PlatformStart; 3] {
    let sim = Sim::simulator();
    let name = format!("bp{:08x}", rand::random::<u32>());
    let component = format!("wxb{:016x}", rand::random::<u64>());
    seed(&component, n).await;
    let first = start_once(&name, &component, n, &sim, limit, true).await;
    let restart = start_once(&name, &component, n, &sim, limit, true).await;
    let blind = start_once(&name, &component, n, &sim, limit, false).await;
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .queue_delete(
            job_queue(&name).as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = ch.close(200, "done".into()).await;
    forget(&component).await;
    [first, restart, blind]
}

/// `n` active authorizers of `component`, as authorizations would have left them.
async fn seed(component: &str, n: usize) {
    let state = State::from_url(
        "redis://127.0.0.1:6379",
        Duration::from_secs(60),
        100,
        Duration::from_secs(5),
    )
    .unwrap();
    let store = state.platform_store();
    for i in 0..n {
        let authorizer = Authorizer {
            appid: format!("wxa{i:015}"),
            standing: Standing::Active,
            refresh_token: Some(Secret::new(format!("refreshtoken@@@bench{i}"))),
            changed_at: 1,
        };
        store.put_authorizer(component, &authorizer).await.unwrap();
    }
}

/// Deletes the platform's keys (its authorizers and ticket) from Redis.
pub async fn forget(component: &str) {
    let Ok(client) = redis::Client::open("redis://127.0.0.1:6379") else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let tag = format!("wxcourier:{{platform:{component}}}");
    let _: redis::RedisResult<i64> = redis::cmd("DEL")
        .arg(format!("{tag}:authorizers:all"))
        .arg(format!("{tag}:ticket:current"))
        .query_async(&mut conn)
        .await;
}

/// How many routing keys bind the platform's queue to the jobs exchange.
pub async fn bound(http: &reqwest::Client, name: &str) -> usize {
    let url = format!(
        "{}/api/queues/%2F/{}/bindings",
        kit::management_url(),
        job_queue(name)
    );
    let Ok(resp) = http.get(url).send().await else {
        return 0;
    };
    let rows: serde_json::Value = resp.json().await.unwrap_or_default();
    rows.as_array().map_or(0, |rows| {
        rows.iter()
            .filter(|b| b["source"] == wxcourier::broker::JOBS_EXCHANGE)
            .count()
    })
}

async fn start_once(
    name: &str,
    component: &str,
    n: usize,
    sim: &Sim,
    limit: Duration,
    management: bool,
) -> PlatformStart {
    let started = Instant::now();
    let http = format!("127.0.0.1:{}", kit::free_port());
    let running = Running::spawn_platform(name, component, &sim.base, &http, management, "");
    let ready_url = format!(
        "http://{}/readyz",
        running.http.as_deref().expect("the worker serves HTTP")
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut ready, mut routed) = (None, None);
    let (mut rss_ready_mib, mut rss_routed_mib) = (0.0, 0.0);
    while started.elapsed() < limit && (ready.is_none() || routed.is_none()) {
        if ready.is_none()
            && http
                .get(&ready_url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        {
            ready = Some(started.elapsed().as_secs_f64());
            rss_ready_mib = status_mib(running.pid(), "VmRSS:");
        }
        if ready.is_some() && routed.is_none() && bound(&http, name).await >= n {
            routed = Some(started.elapsed().as_secs_f64());
            rss_routed_mib = status_mib(running.pid(), "VmRSS:");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(ready) = ready {
        let settled = Duration::from_secs_f64(ready) + SETTLE;
        tokio::time::sleep(settled.saturating_sub(started.elapsed())).await;
    }
    let cpu_settled_s = cpu_seconds(running.pid());
    running.stop();
    PlatformStart {
        ready,
        routed,
        rss_ready_mib,
        rss_routed_mib,
        cpu_settled_s,
    }
}
