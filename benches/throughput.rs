//! The throughput and latency benchmark: `cargo bench --bench throughput [-- --jobs N --runs R]`.
//!
//! Each run starts the simulator and the worker as separate processes on this machine,
//! preloads N jobs and measures throughput (first outcome to last), the worker's CPU time per
//! job and its peak RSS. In the same run it measures the floor: a minimal loop of consume →
//! HTTP POST → confirmed publish → ack against the same broker, queue type and simulator, with
//! no validation, limiter or token logic. It prints medians and the ratios to the floor, then
//! latency at 50% and 90% of the measured maximum rate, and how throughput changes with 10 apps
//! and with Redis state. `-- --soak --jobs 1000000` instead runs the soak: that many jobs through
//! one worker with 5% injected faults, checking outcomes against jobs and sampling RSS.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use wxcourier::broker::publish::{Message, job_properties};
use wxcourier::broker::tap::ResultsTap;
use wxcourier::broker::{self, JOBS_EXCHANGE, Publisher, job_queue, topology};
use wxcourier::config::Settings;

/// The broker: `TEST_AMQP_URL` (as for the integration tests), else 3.x on 127.0.0.1:5672.
fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Default settings pointed at [`amqp_url`].
fn bench_settings() -> Settings {
    let mut s = Settings::default();
    s.amqp.url = wxcourier::types::Secret::new(amqp_url());
    s
}
const BIN: &str = env!("CARGO_BIN_EXE_wxcourier");
const PREFETCH: u16 = 256;

struct Options {
    jobs: usize,
    runs: usize,
    /// Seconds of load for each latency measurement.
    latency_seconds: f64,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and then a short
    // smoke run checks that the benchmark still works without spending CI minutes on it.
    if args.iter().any(|a| a == "--bench") {
        Options {
            jobs: value("--jobs", 20_000),
            runs: value("--runs", 3),
            latency_seconds: 5.0,
        }
    } else {
        Options {
            jobs: 300,
            runs: 1,
            latency_seconds: 0.5,
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn openid(n: usize) -> String {
    format!("o{:0>27}", format!("b{n}"))
}

fn job(id: &str, n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "touser": openid(n),
        "template_id": "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY",
        "data": {"first": {"value": "Your order has shipped"}, "keyword1": {"value": id}},
        // As large as the enqueue timestamp it once carried, so figures stay comparable.
        "meta": {"seq": format!("{n:016}")}
    }))
    .unwrap()
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Peak resident memory of a process in MiB, from /proc.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

struct Sim {
    child: Child,
    base: String,
}

impl Sim {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(BIN)
            .args([
                "sim",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--daily-quota",
                "100000000",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, base }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one measured run produced.
#[derive(Clone, Copy, Default)]
struct Figures {
    jobs_per_s: f64,
    cpu_us_per_job: f64,
    peak_rss_mib: f64,
}

/// Which consumer processes the jobs.
#[derive(Clone, Copy, PartialEq)]
enum Subject {
    Worker { redis: bool },
    Floor,
}

async fn declare(conn: &lapin::Connection, apps: &[String]) {
    let settings = Settings::default();
    let schedule = wxcourier::retry::Schedule::new(&settings.retry);
    topology::declare_all(conn, apps, schedule.tiers())
        .await
        .unwrap();
}

async fn preload(publisher: &Publisher, apps: &[String], n: usize) {
    futures_util::stream::iter(0..n)
        .map(|i| {
            let app = &apps[i % apps.len()];
            let id = format!("{app}-{i}");
            let body = job(&id, i);
            async move {
                publisher
                    .publish(Message {
                        exchange: JOBS_EXCHANGE,
                        routing_key: app,
                        body: &body,
                        properties: job_properties(&id, FieldTable::default()),
                        must_route: false,
                    })
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(1000)
        .collect::<Vec<_>>()
        .await;
}

fn write_config(
    dir: &std::path::Path,
    apps: &[String],
    base: &str,
    rate: f64,
    redis: bool,
) -> std::path::PathBuf {
    let amqp = amqp_url();
    let mut text = format!(
        "[amqp]\nurl = \"{amqp}\"\nprefetch = {PREFETCH}\n[wechat]\nbase_url = \"{base}\"\n[log]\nlevel = \"warn\"\n"
    );
    if redis {
        text.push_str("[state]\nurl = \"redis://127.0.0.1:6379/\"\n");
    }
    for app in apps {
        text.push_str(&format!(
            "[apps.{app}]\nappid = \"wx0000000000000000\"\nsecret = \"secret\"\nrate_per_second = {rate}\nburst = {}\n",
            (rate / 10.0).max(1.0) as u64
        ));
    }
    let path = dir.join(format!("{}.toml", apps[0]));
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn_subject(
    subject: Subject,
    apps: &[String],
    base: &str,
    rate: f64,
) -> (Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let child = match subject {
        Subject::Worker { redis } => {
            let config = write_config(dir.path(), apps, base, rate, redis);
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(config)
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        }
        Subject::Floor => Command::new(std::env::current_exe().unwrap())
            .args(["floor-worker", &apps[0], base])
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    };
    (child, dir)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    for _ in 0..300 {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn delete_queues(conn: &lapin::Connection, apps: &[String]) {
    let ch = conn.create_channel().await.unwrap();
    for app in apps {
        let _ = ch
            .queue_delete(
                job_queue(app).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
    }
}

fn fresh_apps(n: usize) -> Vec<String> {
    let tag = rand::random::<u32>();
    (0..n).map(|i| format!("bench_{tag:08x}_{i}")).collect()
}

/// Preloads `n` jobs, starts the subject, and times first outcome to last.
async fn throughput(
    conn: &lapin::Connection,
    subject: Subject,
    apps_n: usize,
    n: usize,
) -> Figures {
    let sim = Sim::start();
    let apps = fresh_apps(apps_n);
    declare(conn, &apps).await;
    let mut tap = ResultsTap::open(conn, "#").await.unwrap();
    let publisher = Publisher::open(conn, Duration::from_secs(30))
        .await
        .unwrap();
    preload(&publisher, &apps, n).await;
    let (child, _dir) = spawn_subject(subject, &apps, &sim.base, 1_000_000.0);
    let pid = child.id();
    let mut first = None;
    let mut count = 0;
    let mut last = Instant::now();
    while count < n {
        let Some(v) = tap.next(Duration::from_secs(30)).await else {
            break;
        };
        if !v["app"]
            .as_str()
            .is_some_and(|a| apps.iter().any(|x| x == a))
        {
            continue;
        }
        last = Instant::now();
        first.get_or_insert(last);
        count += 1;
    }
    let cpu = cpu_seconds(pid);
    let rss = peak_rss_mib(pid);
    stop(child);
    delete_queues(conn, &apps).await;
    assert_eq!(count, n, "every job got an outcome");
    let span = last.duration_since(first.unwrap()).as_secs_f64().max(1e-6);
    Figures {
        jobs_per_s: (n - 1) as f64 / span,
        cpu_us_per_job: cpu * 1e6 / n as f64,
        peak_rss_mib: rss,
    }
}

/// Publishes at `rate` jobs/s for `seconds` to `subject` and returns p50 and p99 enqueue →
/// outcome in ms, matching outcomes to jobs by id.
async fn latency(
    conn: &lapin::Connection,
    subject: Subject,
    rate: f64,
    seconds: f64,
) -> (f64, f64) {
    let sim = Sim::start();
    let apps = fresh_apps(1);
    declare(conn, &apps).await;
    let mut tap = ResultsTap::open(conn, &format!("*.{}", apps[0]))
        .await
        .unwrap();
    let publisher = Arc::new(
        Publisher::open(conn, Duration::from_secs(30))
            .await
            .unwrap(),
    );
    let (child, _dir) = spawn_subject(subject, &apps, &sim.base, 1_000_000.0);
    // Load starts once the subject consumes, so its start-up is not counted as latency.
    wait_for_consumer(conn, &job_queue(&apps[0])).await;
    let n = (rate * seconds) as usize;
    let app = apps[0].clone();
    let sent_at = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        Instant,
    >::with_capacity(n)));
    let stamps = sent_at.clone();
    let producer = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut pending = Vec::new();
        for i in 0..n {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            let (publisher, app, stamps) = (publisher.clone(), app.clone(), stamps.clone());
            pending.push(tokio::spawn(async move {
                let id = format!("{app}-l{i}");
                let body = job(&id, i);
                stamps.lock().unwrap().insert(id.clone(), Instant::now());
                publisher
                    .publish(Message {
                        exchange: JOBS_EXCHANGE,
                        routing_key: &app,
                        body: &body,
                        properties: job_properties(&id, FieldTable::default()),
                        must_route: false,
                    })
                    .await
                    .unwrap();
            }));
        }
        for p in pending {
            p.await.unwrap();
        }
    });
    let mut samples = Vec::with_capacity(n);
    while samples.len() < n {
        let Some(v) = tap.next(Duration::from_secs(30)).await else {
            break;
        };
        let done = Instant::now();
        let id = v["id"].as_str().unwrap_or_default();
        if let Some(at) = sent_at.lock().unwrap().get(id) {
            samples.push(done.duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    producer.await.unwrap();
    stop(child);
    delete_queues(conn, &apps).await;
    assert_eq!(samples.len(), n, "every job got an outcome");
    samples.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (pick(0.50), pick(0.99))
}

/// Waits until `queue` has a consumer (a passive declare reports the count).
async fn wait_for_consumer(conn: &lapin::Connection, queue: &str) {
    let ch = conn.create_channel().await.unwrap();
    let opts = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for _ in 0..500 {
        let q = ch
            .queue_declare(queue.into(), opts, FieldTable::default())
            .await
            .unwrap();
        if q.consumer_count() > 0 {
            let _ = ch.close(200, "ready".into()).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing consumed {queue} within 10 s");
}

/// The floor: consume → POST → confirmed publish → ack, nothing else.
async fn floor_worker(app: &str, base: &str) {
    let settings = bench_settings();
    let conn = broker::connect(&settings.amqp, "bench floor")
        .await
        .unwrap();
    let token = reqwest::Client::new()
        .post(format!("{base}/cgi-bin/stable_token"))
        .json(&json!({"grant_type": "client_credential", "appid": "wx0000000000000000", "secret": "secret"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{base}/cgi-bin/message/template/send?access_token={token}");
    let http = reqwest::Client::new();
    let publisher = Publisher::open(&conn, Duration::from_secs(30))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            job_queue(app).as_str().into(),
            "floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let key = format!("sent.{app}");
    let app = app.to_owned();
    while let Some(Ok(d)) = consumer.next().await {
        let (http, url, publisher, key, app) = (
            http.clone(),
            url.clone(),
            publisher.clone(),
            key.clone(),
            app.clone(),
        );
        tokio::spawn(async move {
            let reply = http
                .post(&url)
                .body(d.data.clone())
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let id = d.properties.message_id().as_ref().map(|m| m.to_string());
            let outcome = json!({"kind": "send", "app": app, "id": id, "reply": serde_json::from_slice::<Value>(&reply).ok()});
            publisher
                .publish_result(&key, &outcome, None)
                .await
                .unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
        });
    }
}

/// The soak: `jobs` jobs through one worker while the simulator injects 5% faults; checks that
/// outcomes equal jobs and samples the worker's RSS as it goes.
async fn soak(conn: &lapin::Connection, jobs: usize) {
    let sim = Sim::start();
    let faults = json!({"busy": 0.02, "http5xx": 0.01, "drop": 0.01, "bad_json": 0.01});
    reqwest::Client::new()
        .post(format!("{}/sim/faults", sim.base))
        .json(&faults)
        .send()
        .await
        .unwrap();
    let apps = fresh_apps(1);
    declare(conn, &apps).await;
    let mut tap = ResultsTap::open(conn, &format!("*.{}", apps[0]))
        .await
        .unwrap();
    let publisher = Publisher::open(conn, Duration::from_secs(30))
        .await
        .unwrap();
    let started = Instant::now();
    preload(&publisher, &apps, jobs).await;
    println!(
        "soak: preloaded {jobs} jobs in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let (child, _dir) = spawn_subject(
        Subject::Worker { redis: false },
        &apps,
        &sim.base,
        1_000_000.0,
    );
    let pid = child.id();
    let mut statuses: std::collections::BTreeMap<String, usize> = Default::default();
    let mut count = 0;
    let mut rss_samples = Vec::new();
    let drain = Instant::now();
    while count < jobs {
        let Some(v) = tap.next(Duration::from_secs(60)).await else {
            break;
        };
        *statuses
            .entry(v["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
        count += 1;
        if count % (jobs / 10).max(1) == 0 {
            let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0;
            rss_samples.push(rss);
            println!(
                "soak: {count} outcomes, RSS {rss:.1} MiB, {:.0} jobs/s",
                count as f64 / drain.elapsed().as_secs_f64()
            );
        }
    }
    let peak = peak_rss_mib(pid);
    stop(child);
    delete_queues(conn, &apps).await;
    println!(
        "soak: {count} outcomes for {jobs} jobs in {:.0} s; statuses {statuses:?}; RSS samples {rss_samples:.1?} MiB; peak {peak:.1} MiB",
        drain.elapsed().as_secs_f64()
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "floor-worker") {
        floor_worker(&args[i + 1], &args[i + 2]).await;
        return;
    }
    let o = options();
    let settings = bench_settings();
    let conn = broker::connect(&settings.amqp, "bench")
        .await
        .expect("RabbitMQ at TEST_AMQP_URL or 127.0.0.1:5672");
    if args.iter().any(|a| a == "--soak") {
        soak(&conn, o.jobs).await;
        return;
    }
    println!(
        "wxcourier benchmark: {} jobs per run, {} runs, prefetch {PREFETCH}, memory state",
        o.jobs, o.runs
    );

    // `-- --only ratio|latency|apps|redis` runs one section (latency still needs the maximum
    // rate, so it measures one worker run for it).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let wants = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let wt = if wants("ratio") {
        ratio(&conn, &o).await
    } else {
        throughput(&conn, Subject::Worker { redis: false }, 1, o.jobs)
            .await
            .jobs_per_s
    };
    if wants("latency") {
        for share in [0.5, 0.9] {
            let rate = wt * share;
            let (w50, w99) = latency(
                &conn,
                Subject::Worker { redis: false },
                rate,
                o.latency_seconds,
            )
            .await;
            let (f50, f99) = latency(&conn, Subject::Floor, rate, o.latency_seconds).await;
            println!(
                "latency at {:.0}% of max ({rate:.0} jobs/s): worker p50 {w50:.1} ms, p99 {w99:.1} ms | floor p50 {f50:.1} ms, p99 {f99:.1} ms",
                share * 100.0,
            );
        }
    }
    if wants("apps") {
        // Jobs are spread evenly over the apps; every app's consumer has prefetch 256. 100
        // apps run once: creating and deleting hundreds of quorum queues strains the broker.
        for (apps, runs) in [(10, o.runs), (100, 1)] {
            let mut figures = Vec::new();
            for _ in 0..runs {
                figures
                    .push(throughput(&conn, Subject::Worker { redis: false }, apps, o.jobs).await);
            }
            let jobs_per_s = median(figures.iter().map(|f| f.jobs_per_s).collect());
            let rss: Vec<String> = figures
                .iter()
                .map(|f| format!("{:.1}", f.peak_rss_mib))
                .collect();
            println!(
                "{apps} apps: {jobs_per_s:.0} jobs/s ({:.3} of 1 app), peak RSS median {:.1} MiB (runs: {})",
                jobs_per_s / wt,
                median(figures.iter().map(|f| f.peak_rss_mib).collect()),
                rss.join(", ")
            );
        }
    }
    if wants("redis") {
        let redis = throughput(&conn, Subject::Worker { redis: true }, 1, o.jobs).await;
        println!(
            "Redis state: {:.0} jobs/s ({:.3} of memory state), {:.1} µs CPU/job",
            redis.jobs_per_s,
            redis.jobs_per_s / wt,
            redis.cpu_us_per_job
        );
    }
}

/// Worker against floor, alternating which goes first; prints each run and the medians and
/// returns the worker's median throughput.
async fn ratio(conn: &lapin::Connection, o: &Options) -> f64 {
    let mut worker = Vec::new();
    let mut floor = Vec::new();
    for run in 1..=o.runs {
        // Alternate the order so neither side always runs on a warmer broker.
        let (w, f) = if run % 2 == 1 {
            let w = throughput(conn, Subject::Worker { redis: false }, 1, o.jobs).await;
            (w, throughput(conn, Subject::Floor, 1, o.jobs).await)
        } else {
            let f = throughput(conn, Subject::Floor, 1, o.jobs).await;
            (
                throughput(conn, Subject::Worker { redis: false }, 1, o.jobs).await,
                f,
            )
        };
        println!(
            "run {run}: worker {:.0} jobs/s, {:.1} µs CPU/job, {:.1} MiB peak | floor {:.0} jobs/s, {:.1} µs CPU/job, {:.1} MiB peak",
            w.jobs_per_s,
            w.cpu_us_per_job,
            w.peak_rss_mib,
            f.jobs_per_s,
            f.cpu_us_per_job,
            f.peak_rss_mib
        );
        worker.push(w);
        floor.push(f);
    }
    let med = |v: &[Figures], f: fn(&Figures) -> f64| median(v.iter().map(f).collect());
    let (wt, ft) = (
        med(&worker, |f| f.jobs_per_s),
        med(&floor, |f| f.jobs_per_s),
    );
    let (wc, fc) = (
        med(&worker, |f| f.cpu_us_per_job),
        med(&floor, |f| f.cpu_us_per_job),
    );
    let wr = med(&worker, |f| f.peak_rss_mib);
    println!("\nmedians          worker      floor      ratio   target");
    println!(
        "throughput/s  {wt:>9.0}  {ft:>9.0}  {:>7.3}   >= 0.85",
        wt / ft
    );
    println!(
        "CPU µs/job    {wc:>9.1}  {fc:>9.1}  {:>7.3}   <= 1.30",
        wc / fc
    );
    println!("peak RSS MiB  {wr:>9.1}");

    wt
}
