//! The measurements: a drain's throughput and CPU, latency under a steady load, start-up time,
//! and the /proc readings (process CPU and memory, the broker's CPU) behind them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::Connection;
use lapin::types::FieldTable;
use wxcourier::broker::tap::ResultsTap;
use wxcourier::broker::{Publisher, job_queue};

use crate::kit;
use crate::subjects::{Running, Sim, Subject, declare, delete_queues, fresh_apps};

/// How long a drain or a latency run waits for the next outcome before it gives up.
const OUTCOME_WAIT: Duration = Duration::from_secs(30);
/// Publishes awaiting their confirm at once while preloading.
const PRELOAD_IN_FLIGHT: usize = 1000;

/// What one drain produced.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    pub jobs_per_s: f64,
    /// The subject's CPU time (user + system) over the jobs.
    pub cpu_us_per_job: f64,
    pub peak_rss_mib: f64,
    /// The broker's CPU time from the subject's start to the last outcome, over the jobs;
    /// `None` when the broker's process cannot be read.
    pub broker_cpu_us_per_job: Option<f64>,
}

/// A job as the benchmark publishes it: a template job whose `meta` is as large as the enqueue
/// timestamp it once carried, so figures stay comparable.
pub fn job_body(id: &str, n: usize) -> Vec<u8> {
    let mut job = kit::job(id, &kit::openid(n));
    job["meta"] = serde_json::json!({"seq": format!("{n:016}")});
    serde_json::to_vec(&job).expect("a job serializes")
}

/// Publishes `n` jobs spread evenly over the routing keys `apps` (apps, or a platform's
/// accounts), all confirmed, with ids `PREFIX-N`.
pub async fn preload(publisher: &Publisher, apps: &[String], n: usize, prefix: &str) {
    futures_util::stream::iter(0..n)
        .map(|i| {
            let app = &apps[i % apps.len()];
            async move {
                let id = format!("{prefix}-{i}");
                publisher
                    .publish_job(app, &id, &job_body(&id, i), FieldTable::default())
                    .await
                    .expect("the broker confirms the preload");
            }
        })
        .buffer_unordered(PRELOAD_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
}

/// Preloads `n` jobs over `apps_n` fresh apps, starts the subject, and times the first
/// outcome to the last.
pub async fn throughput(
    conn: &Connection,
    subject: Subject,
    apps_n: usize,
    n: usize,
) -> Result<Figures, Shortfall> {
    let sim = Sim::start();
    let apps = fresh_apps(apps_n);
    declare(conn, &apps).await;
    let mut tap = ResultsTap::open(conn, "#").await.unwrap();
    let publisher = Publisher::open(conn, OUTCOME_WAIT).await.unwrap();
    preload(&publisher, &apps, n, &apps[0]).await;
    let broker = BrokerCpu::start();
    let running = Running::spawn(subject, &apps, &sim.base);
    let ours: HashSet<&str> = apps.iter().map(String::as_str).collect();
    let drained = drain(&mut tap, &ours, n, running, broker, subject.label()).await;
    let _ = publisher.close().await;
    delete_queues(conn, &apps).await;
    drained
}

/// Waits for the outcomes of `n` jobs of the apps (or accounts) in `ours` on `tap`, then
/// stops the subject: its figures from the first outcome to the last, its CPU and the
/// broker's over the whole drain.
pub async fn drain(
    tap: &mut ResultsTap,
    ours: &HashSet<&str>,
    n: usize,
    running: Running,
    broker: BrokerCpu,
    subject: &'static str,
) -> Result<Figures, Shortfall> {
    let mut first = None;
    let mut count = 0;
    let mut last = Instant::now();
    while count < n {
        let Some(v) = tap.next(OUTCOME_WAIT).await else {
            break;
        };
        // Other tests may share the broker: count only this run's apps.
        if !v["app"].as_str().is_some_and(|a| ours.contains(a)) {
            continue;
        }
        last = Instant::now();
        first.get_or_insert(last);
        count += 1;
    }
    let broker_cpu = broker.seconds();
    let cpu = cpu_seconds(running.pid());
    let rss = status_mib(running.pid(), "VmHWM:");
    running.stop();
    let Some(first) = first.filter(|_| count == n) else {
        return Err(Shortfall {
            subject,
            outcomes: count,
            jobs: n,
        });
    };
    let span = last.duration_since(first).as_secs_f64().max(1e-6);
    Ok(Figures {
        jobs_per_s: (n - 1) as f64 / span,
        cpu_us_per_job: cpu * 1e6 / n as f64,
        peak_rss_mib: rss,
        broker_cpu_us_per_job: broker_cpu.map(|s| s * 1e6 / n as f64),
    })
}

/// A run that ended with jobs missing their outcome: none came for [`OUTCOME_WAIT`]. The
/// benchmark reports it, goes on with the other figures, and fails at the end.
#[derive(Debug)]
pub struct Shortfall {
    /// The subject's label.
    pub subject: &'static str,
    pub outcomes: usize,
    pub jobs: usize,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} outcomes for {} jobs, then none for {OUTCOME_WAIT:?}",
            self.subject, self.outcomes, self.jobs
        )
    }
}

/// Enqueue → outcome latency, in ms.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
}

/// Publishes at `rate` jobs/s for `seconds` to `subject` on one app and measures enqueue →
/// outcome for each job, matched by id.
pub async fn latency(
    conn: &Connection,
    subject: Subject,
    rate: f64,
    seconds: f64,
) -> Result<Latency, Shortfall> {
    let sim = Sim::start();
    let apps = fresh_apps(1);
    declare(conn, &apps).await;
    let mut tap = ResultsTap::open(conn, &format!("*.{}", apps[0]))
        .await
        .unwrap();
    let publisher = Publisher::open(conn, OUTCOME_WAIT).await.unwrap();
    let running = Running::spawn(subject, &apps, &sim.base);
    // Load starts once the subject consumes, so its start-up is not counted as latency.
    kit::wait_for_consumer(conn, &job_queue(&apps[0]), Duration::from_secs(30)).await;
    let n = ((rate * seconds) as usize).max(1);
    let sent_at = Arc::new(Mutex::new(HashMap::<String, Instant>::with_capacity(n)));
    let producer = tokio::spawn(produce(
        publisher.clone(),
        apps[0].clone(),
        rate,
        n,
        sent_at.clone(),
    ));
    let mut samples = Vec::with_capacity(n);
    while samples.len() < n {
        let Some(v) = tap.next(OUTCOME_WAIT).await else {
            break;
        };
        let done = Instant::now();
        let id = v["id"].as_str().unwrap_or_default();
        if let Some(at) = sent_at.lock().unwrap().get(id) {
            samples.push(done.duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    producer.await.unwrap();
    running.stop();
    let _ = publisher.close().await;
    delete_queues(conn, &apps).await;
    if samples.len() < n {
        return Err(Shortfall {
            subject: subject.label(),
            outcomes: samples.len(),
            jobs: n,
        });
    }
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Ok(Latency {
        p50: pick(0.50),
        p99: pick(0.99),
    })
}

/// Publishes `n` jobs to `app` at `rate` per second on a fixed schedule (a late publish does
/// not delay the next), noting when each went out.
async fn produce(
    publisher: Publisher,
    app: String,
    rate: f64,
    n: usize,
    sent_at: Arc<Mutex<HashMap<String, Instant>>>,
) {
    let start = tokio::time::Instant::now();
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let (publisher, app, sent_at) = (publisher.clone(), app.clone(), sent_at.clone());
        pending.push(tokio::spawn(async move {
            let id = format!("{app}-l{i}");
            let body = job_body(&id, i);
            sent_at.lock().unwrap().insert(id.clone(), Instant::now());
            publisher
                .publish_job(&app, &id, &body, FieldTable::default())
                .await
                .expect("the broker confirms the job");
        }));
    }
    for p in pending {
        p.await.unwrap();
    }
}

/// How long `wxcourier run` took to become ready.
#[derive(Clone, Copy, Debug)]
pub struct Startup {
    /// Spawn to the first 200 from `/readyz`; `None` if it never came within the limit.
    pub seconds: Option<f64>,
    /// Resident memory once ready (or at the limit).
    pub rss_mib: f64,
}

/// Starts the worker with `apps_n` fresh apps (memory state) twice: first when their queues
/// do not exist yet (it creates them), then again as a restart finds them (what a deploy
/// does). Each time polls `/readyz` until it answers 200 or `limit` passes, then stops the
/// worker; the queues are deleted at the end.
pub async fn startup(conn: &Connection, apps_n: usize, limit: Duration) -> [Startup; 2] {
    let sim = Sim::start();
    let apps = fresh_apps(apps_n);
    let first = start_once(&apps, &sim, limit).await;
    let restart = start_once(&apps, &sim, limit).await;
    delete_queues(conn, &apps).await;
    [first, restart]
}

/// One start of the worker for `apps`, timed to its first 200 from `/readyz`.
async fn start_once(apps: &[String], sim: &Sim, limit: Duration) -> Startup {
    let started = Instant::now();
    let running = Running::spawn(
        Subject::Worker {
            redis: false,
            policies: false,
        },
        apps,
        &sim.base,
    );
    let url = format!(
        "http://{}/readyz",
        running.http.as_deref().expect("the worker serves HTTP")
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut seconds = None;
    while started.elapsed() < limit {
        let ready = http.get(&url).send().await.is_ok_and(|r| r.status() == 200);
        if ready {
            seconds = Some(started.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_mib = status_mib(running.pid(), "VmRSS:");
    running.stop();
    Startup { seconds, rss_mib }
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), 100 if it cannot be asked.
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU ticks (user + system) a process has used, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds a process has used (0 if it cannot be read).
pub fn cpu_seconds(pid: u32) -> f64 {
    cpu_ticks(pid).unwrap_or(0) as f64 / ticks_per_second()
}

/// A line of /proc/PID/status in kB (`VmHWM:` peak, `VmRSS:` now), as MiB.
pub fn status_mib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The broker's CPU time over a stretch of a run.
pub struct BrokerCpu {
    /// The broker's pid and its ticks at the start.
    start: Option<(u32, u64)>,
}

impl BrokerCpu {
    pub fn start() -> Self {
        let start = broker_pid().and_then(|pid| Some((pid, cpu_ticks(pid)?)));
        Self { start }
    }

    /// CPU seconds the broker used since [`BrokerCpu::start`].
    pub fn seconds(&self) -> Option<f64> {
        let (pid, before) = self.start?;
        let after = cpu_ticks(pid)?;
        Some(after.saturating_sub(before) as f64 / ticks_per_second())
    }
}

/// The pid of the process listening on the broker's AMQP port, from `ss -ltnp`; found once.
/// `None` when the broker is not local, `ss` is missing, or it may not show other users'
/// processes.
fn broker_pid() -> Option<u32> {
    static PID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *PID.get_or_init(|| {
        let port = kit::amqp_addr().rsplit_once(':')?.1.to_owned();
        let out = std::process::Command::new("ss")
            .args(["-ltnp", &format!("sport = :{port}")])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let at = text.find("pid=")? + "pid=".len();
        text[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}
