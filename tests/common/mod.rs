//! Test harness: a simulator, a worker on a fresh app name, and a tap on its results, all
//! against a real RabbitMQ: the one `TEST_AMQP_URL` names, else 3.x on 127.0.0.1:5672.

#![allow(dead_code)]

pub mod kit;
pub mod platform_kit;
pub mod process;
pub mod proxy;
pub mod redis_sets;
pub mod schemas;

pub use kit::*;

use std::collections::HashSet;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wxcourier::broker::publish::{Publication, Unroutable};
use wxcourier::broker::{self, JOBS_EXCHANGE, Publisher, job_queue, topology};
use wxcourier::config::{AppSettings, NonZeroSpan, Rate, Settings};
use wxcourier::sim::{DEFAULT_APPID, DEFAULT_SECRET, SendRecord, SimOptions, Simulator};
use wxcourier::startup::Application;
use wxcourier::types::{Secret, Span};
use wxcourier::worker::Context;

pub fn ms(n: u64) -> Span {
    Span(Duration::from_millis(n))
}

/// `n` ms for the settings that refuse 0s.
pub fn nz_ms(n: u64) -> NonZeroSpan {
    NonZeroSpan::new(Duration::from_millis(n)).expect("above 0")
}

/// `n` for the counts that refuse 0 (`NonZeroU16`, `NonZeroU32`, `NonZeroUsize`).
pub fn count<T: TryFrom<NonZeroU64>>(n: u64) -> T {
    let n = NonZeroU64::new(n).expect("above 0");
    T::try_from(n).unwrap_or_else(|_| panic!("{n} fits"))
}

/// `per_second` as an app's `rate_per_second`.
pub fn rate(per_second: f64) -> Rate {
    Rate::new(per_second).expect("a rate a limiter can keep")
}

/// Settings for a test: fast retries, one app pointing at the simulator.
pub fn settings(app: &str, sim: &Simulator) -> Settings {
    let mut s = Settings::default();
    s.amqp.url = Secret::new(amqp_url());
    s.amqp.management_url = Some(Secret::new(management_url()));
    s.amqp.publish_timeout = nz_ms(5000);
    s.wechat.base_url = sim.base_url();
    s.wechat.timeout = nz_ms(2000);
    // No quota polling: a test counts the token and WeChat calls its jobs make (the quota
    // tests turn it on).
    s.wechat.daily_quota_refresh = Span(Duration::ZERO);
    s.retry.initial_delay = nz_ms(200);
    s.retry.max_delay = ms(800);
    s.retry.pause = nz_ms(300);
    s.retry.max_pause = ms(600);
    s.retry.max_attempts = count(4);
    s.worker.drain_timeout = Span(Duration::from_secs(10));
    s.apps.insert(
        app.into(),
        AppSettings {
            rate_per_second: rate(1000.0),
            burst: count(1000),
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
    /// Every result it hands out has been held to its schema.
    pub tap: schemas::CheckedTap,
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
        let tap = schemas::CheckedTap::open(&conn, &format!("*.{app}"))
            .await
            .unwrap();
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

    /// Publishes `body` as a job; without `message_id` it carries no properties but
    /// persistence, as from a careless producer.
    pub async fn publish_raw(&self, body: &[u8], message_id: Option<&str>) {
        schemas::check_published(body, message_id);
        let confirmed = match message_id {
            Some(id) => {
                self.publisher
                    .publish_job(&self.app, id, body, FieldTable::default())
                    .await
            }
            None => self
                .publisher
                .publish(Publication {
                    exchange: JOBS_EXCHANGE,
                    routing_key: &self.app,
                    body,
                    properties: BasicProperties::default().with_delivery_mode(2),
                    unroutable: Unroutable::Unasked,
                })
                .await
                .map(|_| ()),
        };
        confirmed.expect("the broker confirms the job");
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

/// Starts a simulator and a worker for a fresh app; `tweak` adjusts the settings first.
pub async fn spawn_app(prefix: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_queued(prefix, &[], tweak).await
}

/// As [`spawn_app`], against a simulator the test set up itself.
pub async fn spawn_app_on(
    prefix: &str,
    sim: Simulator,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_after(prefix, sim, &[], tweak).await
}

/// As [`spawn_app`], with the `queued` jobs published and confirmed before the worker starts:
/// they are all in its queue when it first consumes, however long the broker takes to confirm
/// each.
pub async fn spawn_app_with_queued(
    prefix: &str,
    queued: &[Value],
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    spawn_app_after(prefix, sim, queued, tweak).await
}

async fn spawn_app_after(
    prefix: &str,
    sim: Simulator,
    queued: &[Value],
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let app = unique_app(prefix);
    let mut s = settings(&app, &sim);
    tweak(&mut s);
    let harness = Harness::new(&app, &s).await;
    for job in queued {
        harness.publish(job).await;
    }
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
    /// Tells the worker to stop (it drains and ends) without waiting for it.
    pub fn ask_to_stop(&self) {
        self.stop.cancel();
    }

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

/// Gets every message of `queue`, acks those whose `x-wxcourier-app` header is `app` and
/// returns them with their `x-wxcourier-error`; the rest go back when the channel closes.
pub async fn take_matching(conn: &Connection, queue: &str, app: &str) -> Vec<(Vec<u8>, String)> {
    take_where(conn, queue, |p| {
        let mine = broker::headers::text(p, "x-wxcourier-app").as_deref() == Some(app);
        mine.then(|| {
            // Only wxcourier.dead holds rejections; an unrouted copy carries no reason.
            if queue == broker::DEAD_QUEUE {
                schemas::check_dead_headers(p);
            }
            broker::headers::text(p, broker::HEADER_ERROR).unwrap_or_default()
        })
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
                let mine = broker::headers::text(p, "x-first-death-queue").as_deref()
                    == Some(queue.as_str());
                mine.then(|| {
                    schemas::check_dead_headers(p);
                    broker::headers::text(p, "x-first-death-reason").unwrap_or_default()
                })
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

/// Every send the simulator saw for a user carried that user's one job id: no job went to
/// WeChat under a second `client_msg_id`.
pub fn assert_one_client_msg_id_per_job(sends: &[SendRecord]) {
    let mut ids: std::collections::HashMap<&str, HashSet<&str>> = Default::default();
    for s in sends {
        ids.entry(&s.touser)
            .or_default()
            .insert(s.client_msg_id.as_deref().unwrap_or(""));
    }
    for (user, cmids) in ids {
        assert_eq!(cmids.len(), 1, "{user} was sent under {cmids:?}");
    }
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
