//! Test harness: a simulator, a worker on a fresh app name, and a tap on its results, all
//! against a real RabbitMQ: the one `TEST_AMQP_URL` names, else 3.x on 127.0.0.1:5672.

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
use wxcourier::config::{AppSettings, Settings};
use wxcourier::sim::{DEFAULT_APPID, DEFAULT_SECRET, SimOptions, Simulator};
use wxcourier::startup::Application;
use wxcourier::types::{Secret, Span};
use wxcourier::worker::Context;

/// The broker when `TEST_AMQP_URL` is unset.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker every test uses: `TEST_AMQP_URL` (e.g. the 4.x broker on 5673), else the 3.x one.
/// Not a `WXCOURIER_…` name: the worker a test spawns inherits the environment and would
/// refuse that as an unknown config key.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned())
}

/// The management API of the test broker: `TEST_MANAGEMENT_URL`, else the 3.x one on 15672.
pub fn management_url() -> String {
    std::env::var("TEST_MANAGEMENT_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "http://guest:guest@127.0.0.1:15672".to_owned())
}

/// When `TEST_RABBITMQ_VERSION` is set (e.g. `4.`), the broker at [`amqp_url`] must announce a
/// version starting with it, so a matrix leg cannot silently run against the wrong broker.
/// Checked once per test binary.
async fn expect_broker_version() {
    static CHECKED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let Ok(want) = std::env::var("TEST_RABBITMQ_VERSION") else {
        return;
    };
    CHECKED
        .get_or_init(|| async move {
            let got = broker_version().await;
            assert!(
                got.starts_with(&want),
                "TEST_RABBITMQ_VERSION={want} but the broker at TEST_AMQP_URL is RabbitMQ {got}"
            );
        })
        .await;
}

/// The `version` the broker announces in its Connection.Start (read without logging in).
pub async fn broker_version() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let read = async {
        let mut tcp = tokio::net::TcpStream::connect(amqp_addr()).await.ok()?;
        tcp.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
        // Frame header: type, channel, payload size; the payload is Connection.Start, whose
        // server-properties table holds `version` as a long string.
        let mut header = [0u8; 7];
        tcp.read_exact(&mut header).await.ok()?;
        let size = u32::from_be_bytes(header[3..7].try_into().ok()?) as usize;
        let mut payload = vec![0u8; size.min(64 * 1024)];
        tcp.read_exact(&mut payload).await.ok()?;
        let key = b"\x07versionS";
        let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
        let len = u32::from_be_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
        let value = payload.get(at + 4..at + 4 + len)?;
        Some(String::from_utf8_lossy(value).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no AMQP Connection.Start from {}", amqp_addr()))
}

/// `host:port` of [`amqp_url`], for tests that put a proxy in front of the broker.
pub fn amqp_addr() -> String {
    let uri: lapin::uri::AMQPUri = amqp_url().parse().expect("TEST_AMQP_URL is an AMQP URL");
    format!("{}:{}", uri.authority.host, uri.authority.port)
}
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
    s.amqp.url = Secret::new(amqp_url());
    s.amqp.management_url = Some(Secret::new(management_url()));
    s.amqp.publish_timeout = Span(Duration::from_secs(5));
    s.wechat.base_url = sim.base_url();
    s.wechat.timeout = Span(Duration::from_secs(2));
    // No quota polling: a test counts the token and WeChat calls its jobs make (the quota
    // tests turn it on).
    s.wechat.quota_refresh = Span(Duration::ZERO);
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

    /// Takes this app's `expected` messages out of `wxcourier.dead`, leaving other tests'
    /// ones there. Tests running at once each hold the others' messages for a moment while
    /// they look, so it looks again until `expected` were found or 10 s passed, then once
    /// more for any extra copy.
    pub async fn take_dead(&self, expected: usize) -> Vec<(Vec<u8>, String)> {
        let started = std::time::Instant::now();
        let mut found = Vec::new();
        while found.len() < expected && started.elapsed() < Duration::from_secs(10) {
            found.extend(take_matching(&self.conn, broker::DEAD_QUEUE, &self.app).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        found.extend(take_matching(&self.conn, broker::DEAD_QUEUE, &self.app).await);
        found
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
    expect_broker_version().await;
    let mut s = Settings::default();
    s.amqp.url = Secret::new(amqp_url());
    broker::connect(&s.amqp, "wxcourier test")
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ at TEST_AMQP_URL or 127.0.0.1:5672: {e}"))
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
    let app = Application::build(s).unwrap();
    let ctx = app.pipeline.clone();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(app.run(stop.clone()));
    TestApp {
        harness,
        sim,
        ctx,
        stop,
        worker: Some(worker),
    }
}

impl TestApp {
    pub async fn stop(self) {
        let harness = self.stop_keeping_queue().await;
        harness.cleanup().await;
    }

    /// Stops the worker and the simulator, leaving the app's queue for the test to look at.
    pub async fn stop_keeping_queue(mut self) -> Harness {
        self.stop.cancel();
        if let Some(w) = self.worker.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
        }
        self.sim.stop();
        self.harness
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
    take_where(conn, queue, |p| {
        (header_str(p, "x-wxcourier-app").as_deref() == Some(app))
            .then(|| header_str(p, broker::HEADER_ERROR).unwrap_or_default())
    })
    .await
}

/// Takes the messages the broker dead-lettered from `app`'s job queue out of
/// `wxcourier.dead`, with the broker's reason (`x-first-death-reason`).
pub async fn take_dead_lettered(h: &Harness, app: &str) -> Vec<(Vec<u8>, String)> {
    let queue = job_queue(app);
    let mut found = Vec::new();
    for _ in 0..50 {
        found.extend(
            take_where(&h.conn, broker::DEAD_QUEUE, |p| {
                (header_str(p, "x-first-death-queue").as_deref() == Some(queue.as_str()))
                    .then(|| header_str(p, "x-first-death-reason").unwrap_or_default())
            })
            .await,
        );
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found
}

/// Gets every message of `queue`, acks those `pick` returns a note for and returns them with
/// it; the rest go back when the channel closes.
pub async fn take_where(
    conn: &Connection,
    queue: &str,
    pick: impl Fn(&BasicProperties) -> Option<String>,
) -> Vec<(Vec<u8>, String)> {
    let ch = conn.create_channel().await.unwrap();
    let mut found = Vec::new();
    while let Ok(Some(msg)) = ch.basic_get(queue.into(), BasicGetOptions::default()).await {
        let d = msg.delivery;
        if let Some(note) = pick(&d.properties) {
            found.push((d.data.clone(), note));
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
