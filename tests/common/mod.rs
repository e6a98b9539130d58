//! Test harness: a simulator, a worker on a fresh app name, and a tap on its results, all
//! against the real RabbitMQ on 127.0.0.1.

#![allow(dead_code)]

pub mod process;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wxcourier::broker::publish::{Message, job_properties};
use wxcourier::broker::tap::ResultsTap;
use wxcourier::broker::{self, JOBS_EXCHANGE, Publisher, job_queue, topology};
use wxcourier::config::{AppSettings, Secret, Settings, Span};
use wxcourier::sim::{DEFAULT_APPID, DEFAULT_SECRET, SimOptions, Simulator};
use wxcourier::worker::{self, Context};

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const TEMPLATE: &str = "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY";

pub fn ms(n: u64) -> Span {
    Span(Duration::from_millis(n))
}

/// A fresh app name, so tests never see each other's queues.
pub fn unique_app(prefix: &str) -> String {
    format!("t_{prefix}_{:08x}", rand::random::<u32>())
}

/// An OpenID the simulator accepts (28 characters starting with `o`).
pub fn openid(n: usize) -> String {
    format!("o{:0>27}", format!("user{n}"))
}

pub fn job(id: &str, touser: &str) -> Value {
    json!({
        "id": id,
        "touser": touser,
        "template_id": TEMPLATE,
        "data": {"first": {"value": "hello"}, "keyword1.DATA": {"value": id}},
        "meta": {"test": id}
    })
}

/// Settings for a test: fast retries, one app pointing at the simulator.
pub fn settings(app: &str, sim: &Simulator) -> Settings {
    let mut s = Settings::default();
    s.amqp.url = Secret::new(AMQP_URL);
    s.amqp.publish_timeout = Span(Duration::from_secs(5));
    s.wechat.base_url = sim.base_url();
    s.wechat.timeout = Span(Duration::from_secs(2));
    s.retry.initial_delay = ms(200);
    s.retry.max_delay = ms(800);
    s.retry.quota_pause = ms(300);
    s.retry.max_quota_pause = ms(600);
    s.retry.max_attempts = 4;
    s.worker.drain_timeout = Span(Duration::from_secs(10));
    s.apps.insert(
        app.into(),
        AppSettings {
            rate_per_second: 1000.0,
            burst: 1000,
            ..AppSettings::new(DEFAULT_APPID, Secret::new(DEFAULT_SECRET))
        },
    );
    s
}

/// Publishes jobs for one app and reads its outcomes, as a producer and a result consumer
/// would; it runs no worker of its own.
pub struct Harness {
    pub app: String,
    pub conn: Connection,
    pub publisher: Publisher,
    pub tap: ResultsTap,
}

impl Harness {
    /// Declares the topology for `settings` and subscribes to `*.APP` results.
    pub async fn new(app: &str, settings: &Settings) -> Self {
        Self::on(connect().await, app, settings).await
    }

    /// As [`Harness::new`], over a connection the test opened (another broker or node).
    pub async fn on(conn: Connection, app: &str, settings: &Settings) -> Self {
        let schedule = wxcourier::retry::Schedule::new(&settings.retry);
        topology::declare_all(&conn, &[app.to_owned()], schedule.tiers())
            .await
            .unwrap();
        let tap = ResultsTap::open(&conn, &format!("*.{app}")).await.unwrap();
        let publisher = Publisher::open(&conn, Duration::from_secs(5))
            .await
            .unwrap();
        Self {
            app: app.into(),
            conn,
            publisher,
            tap,
        }
    }

    pub async fn publish(&self, job: &Value) {
        let id = job["id"].as_str().unwrap_or("");
        self.publish_raw(&serde_json::to_vec(job).unwrap(), Some(id))
            .await;
    }

    pub async fn publish_raw(&self, body: &[u8], message_id: Option<&str>) {
        let props = match message_id {
            Some(id) => job_properties(id, FieldTable::default()),
            None => BasicProperties::default().with_delivery_mode(2),
        };
        self.publisher
            .publish(Message {
                exchange: JOBS_EXCHANGE,
                routing_key: &self.app,
                body,
                properties: props,
                must_route: false,
            })
            .await
            .expect("the broker confirms the job");
    }

    /// Publishes `n` valid jobs with ids `APP-0` … and returns the ids.
    pub async fn publish_numbered(&self, n: usize) -> HashSet<String> {
        let mut ids = HashSet::new();
        for i in 0..n {
            let id = format!("{}-{i}", self.app);
            self.publish(&job(&id, &openid(i))).await;
            ids.insert(id);
        }
        ids
    }

    pub async fn outcomes(&mut self, n: usize) -> Vec<Value> {
        self.tap.collect(n, Duration::from_secs(15)).await
    }

    /// The one outcome of the job `id`, waiting for it.
    pub async fn outcome_of(&mut self, id: &str) -> Value {
        loop {
            let o = self
                .tap
                .next(Duration::from_secs(15))
                .await
                .unwrap_or_else(|| panic!("no outcome for {id}"));
            if o["id"] == id {
                return o;
            }
        }
    }

    /// Adds the ids of arriving outcomes to `seen` until it holds `until`, or none came for
    /// `idle`.
    pub async fn read_until(&mut self, seen: &mut HashSet<String>, until: usize, idle: Duration) {
        while seen.len() < until {
            match self.tap.next(idle).await {
                Some(o) => {
                    seen.insert(o["id"].as_str().unwrap().to_owned());
                }
                None => break,
            }
        }
    }

    /// Messages in this app's job queue.
    pub async fn queued(&self) -> u32 {
        queue_len(&self.conn, &job_queue(&self.app)).await
    }

    /// Takes this app's messages out of `wxcourier.dead`, leaving other tests' ones there.
    pub async fn take_dead(&self) -> Vec<(Vec<u8>, String)> {
        take_matching(&self.conn, broker::DEAD_QUEUE, &self.app).await
    }

    /// Deletes this app's job queue.
    pub async fn cleanup(&self) {
        if let Ok(ch) = self.conn.create_channel().await {
            let _ = ch
                .queue_delete(
                    job_queue(&self.app).as_str().into(),
                    QueueDeleteOptions::default(),
                )
                .await;
        }
    }
}

/// A harness plus an in-process worker and its simulator.
pub struct TestApp {
    pub harness: Harness,
    pub sim: Simulator,
    pub ctx: Arc<Context>,
    stop: CancellationToken,
    worker: Option<JoinHandle<anyhow::Result<()>>>,
}

impl std::ops::Deref for TestApp {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.harness
    }
}

impl std::ops::DerefMut for TestApp {
    fn deref_mut(&mut self) -> &mut Harness {
        &mut self.harness
    }
}

pub async fn connect() -> Connection {
    let s = Settings::default();
    broker::connect(&s.amqp, "wxcourier test")
        .await
        .expect("RabbitMQ on 127.0.0.1:5672")
}

/// Starts a simulator and a worker for a fresh app; `tweak` adjusts the settings first.
pub async fn spawn_app(prefix: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    spawn_app_on(prefix, sim, tweak).await
}

/// As [`spawn_app`], against a simulator the test set up itself.
pub async fn spawn_app_on(
    prefix: &str,
    sim: Simulator,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let app = unique_app(prefix);
    let mut s = settings(&app, &sim);
    tweak(&mut s);
    let harness = Harness::new(&app, &s).await;
    let ctx = Arc::new(Context::new(s).unwrap());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(worker::run(ctx.clone(), stop.clone()));
    TestApp {
        harness,
        sim,
        ctx,
        stop,
        worker: Some(worker),
    }
}

impl TestApp {
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(w) = self.worker.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
        }
        self.harness.cleanup().await;
        self.sim.stop();
    }
}

pub async fn queue_len(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    q.message_count()
}

fn header_str(props: &BasicProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// Gets every message of `queue`, acks those whose `x-wxcourier-app` header is `app` and
/// returns them with their `x-wxcourier-error`; the rest go back when the channel closes.
pub async fn take_matching(conn: &Connection, queue: &str, app: &str) -> Vec<(Vec<u8>, String)> {
    let ch = conn.create_channel().await.unwrap();
    let mut found = Vec::new();
    while let Ok(Some(msg)) = ch.basic_get(queue.into(), BasicGetOptions::default()).await {
        let d = msg.delivery;
        if header_str(&d.properties, "x-wxcourier-app").as_deref() == Some(app) {
            let why = header_str(&d.properties, broker::HEADER_ERROR).unwrap_or_default();
            found.push((d.data.clone(), why));
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    let _ = ch.close(200, "done".into()).await;
    found
}

/// Waits until `check` holds, or panics after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// WeChat (the simulator) accepted every job of `ids` exactly once, and every send it saw
/// carried one of those ids as `client_msg_id`.
pub fn assert_each_job_accepted_once(sim: &Simulator, ids: &HashSet<String>) {
    let sends = sim.sends();
    assert!(
        sends
            .iter()
            .all(|s| s.client_msg_id.as_ref().is_some_and(|c| ids.contains(c)))
    );
    let accepted: Vec<&String> = sends
        .iter()
        .filter(|s| s.errcode == 0 && !s.duplicate)
        .filter_map(|s| s.client_msg_id.as_ref())
        .collect();
    let unique: HashSet<&String> = accepted.iter().copied().collect();
    assert_eq!(accepted.len(), unique.len(), "no job accepted twice");
    assert_eq!(unique.len(), ids.len());
    assert_eq!(sim.stats().apps[DEFAULT_APPID].accepted as usize, ids.len());
}

/// Seconds between the first and the last send WeChat accepted, and how many it accepted.
pub fn accepted_span(sim: &Simulator) -> (f64, usize) {
    let times: Vec<f64> = sim
        .sends()
        .iter()
        .filter(|s| s.errcode == 0)
        .map(|s| s.at_ms)
        .collect();
    let first = times.iter().cloned().fold(f64::MAX, f64::min);
    let last = times.iter().cloned().fold(f64::MIN, f64::max);
    ((last - first) / 1000.0, times.len())
}

/// A free local port for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
