//! The processes a measurement runs: the simulator, and the subject that drains the jobs
//! (the release worker, the floor, or the broker-only floor), plus the apps and queues they use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::Connection;
use lapin::options::QueueDeleteOptions;
use wxcourier::broker::{job_queue, topology};
use wxcourier::config::Settings;

use crate::kit;

/// The worker, as built for this target's profile.
const WORKER: &str = env!("CARGO_BIN_EXE_wxcourier");
/// The floor (benches/throughput/floor.rs).
const FLOOR: &str = env!("CARGO_BIN_EXE_wxcourier-floor");
/// Unacknowledged deliveries per app consumer, worker and floor alike.
pub const PREFETCH: u16 = 256;
/// How long a subject gets to stop on SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(15);
/// Where `--perf` keeps a CPU profile of every subject it starts, if it was given.
static PROFILE_DIR: OnceLock<PathBuf> = OnceLock::new();
/// Numbers the profiles of one invocation in the order their subjects started.
static PROFILES: AtomicUsize = AtomicUsize::new(0);
/// Samples per second of `perf record`: prime, so it does not beat with a periodic timer.
const PROFILE_HZ: &str = "499";

/// Profiles every subject started from now on with `perf record` into `dir`.
pub fn profile_into(dir: PathBuf) {
    std::fs::create_dir_all(&dir).expect("the profile directory is created");
    let _ = PROFILE_DIR.set(dir);
}

/// `perf record` attached to `pid` (with DWARF call graphs: the release build keeps no frame
/// pointers), writing `N-LABEL.perf.data`; it ends by itself when `pid` exits.
fn attach_profiler(pid: u32, label: &str) -> Option<Child> {
    let dir = PROFILE_DIR.get()?;
    let n = PROFILES.fetch_add(1, Ordering::Relaxed);
    let slug: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let out = dir.join(format!("{n:02}-{slug}.perf.data"));
    Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            PROFILE_HZ,
            "--call-graph",
            "dwarf,16384",
        ])
        .arg("-p")
        .arg(pid.to_string())
        .arg("-o")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .inspect_err(|e| eprintln!("perf record cannot start, no profile: {e}"))
        .ok()
}

/// The minimal WeChat stand-in's address, once `--wechat minimal` started it: one endpoint
/// serves every run of the invocation.
static MINIMAL: OnceLock<String> = OnceLock::new();

/// Answers WeChat's calls in every later run with the minimal endpoint instead of the
/// simulator.
pub fn use_minimal_wechat() {
    MINIMAL.get_or_init(|| crate::minimal::Minimal::start().base);
}

/// What answers as WeChat in a run: `wxcourier sim` in its own process, with a quota no run
/// uses up, or the minimal endpoint under `--wechat minimal`.
pub struct Sim {
    child: Option<Child>,
    pub base: String,
}

impl Sim {
    /// The stand-in this invocation chose.
    pub fn start() -> Self {
        match MINIMAL.get() {
            Some(base) => Self {
                child: None,
                base: base.clone(),
            },
            None => Self::simulator(),
        }
    }

    /// The simulator, whatever was chosen: for runs that use its faults or platform calls.
    pub fn simulator() -> Self {
        Self::simulator_with(&[])
    }

    /// The simulator knowing the third-party platform `component` (its secret, token and key
    /// those [`Running::spawn_platform`] gives the worker), which pushes its events to
    /// `events`; no timed ticket comes during a run.
    pub fn with_platform(component: &str, events: &str) -> Self {
        let platform = format!("{component}=secret,{PLATFORM_TOKEN},{PLATFORM_AES_KEY},{events}");
        Self::simulator_with(&["--platform", &platform, "--ticket-interval", "3600s"])
    }

    fn simulator_with(args: &[&str]) -> Self {
        let port = kit::free_port();
        let child = Command::new(WORKER)
            .args(["sim", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--daily-quota", "100000000"])
            .args(args)
            .stderr(Stdio::null())
            .spawn()
            .expect("wxcourier sim starts");
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The Token and EncodingAESKey a benchmark platform's pushes are signed and sealed with.
const PLATFORM_TOKEN: &str = "t";
const PLATFORM_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// Which consumer drains the jobs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Subject {
    /// `wxcourier run`, with Redis or memory state, and with every delivery policy of #28 on
    /// or none.
    Worker { redis: bool, policies: bool },
    /// `wxcourier run` with memory state and `log.otlp` on, its collector a port that takes
    /// connections and never answers.
    TracedWorker,
    /// Consume → POST → confirmed publish → ack.
    Floor,
    /// Consume → confirmed publish → ack.
    BrokerOnly,
    /// `wxcourier run` serving a third-party platform whose jobs are spread over its
    /// authorizers (started by `platform_spread`, not [`Running::spawn`]).
    Platform,
}

impl Subject {
    pub fn label(self) -> &'static str {
        match self {
            Subject::Worker {
                redis: false,
                policies: false,
            } => "worker",
            Subject::Worker {
                redis: true,
                policies: false,
            } => "worker (Redis)",
            Subject::Worker {
                redis: false,
                policies: true,
            } => "worker (policies)",
            Subject::Worker {
                redis: true,
                policies: true,
            } => "worker (Redis, policies)",
            Subject::TracedWorker => "worker (OTLP, dead collector)",
            Subject::Floor => "floor",
            Subject::BrokerOnly => "broker-only",
            Subject::Platform => "worker (platform)",
        }
    }
}

/// A subject's process and the directory of its config.
pub struct Running {
    child: Child,
    _dir: tempfile::TempDir,
    /// Where the worker serves `/readyz`.
    pub http: Option<String>,
    /// The traced worker's collector: bound, never accepting, so every export hangs.
    _collector: Option<std::net::TcpListener>,
    /// `perf record` on this subject, under `--perf`.
    profiler: Option<Child>,
}

impl Running {
    /// Starts `subject` on `apps`, sending to the simulator at `base`.
    pub fn spawn(subject: Subject, apps: &[String], base: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut collector = None;
        let (mut command, http) = match subject {
            Subject::Worker { redis, policies } => {
                let http = format!("127.0.0.1:{}", kit::free_port());
                let config = worker_config(dir.path(), apps, base, (redis, policies), &http);
                let mut c = Command::new(WORKER);
                c.arg("run").arg("--config").arg(config);
                (c, Some(http))
            }
            Subject::TracedWorker => {
                let http = format!("127.0.0.1:{}", kit::free_port());
                let config = worker_config(dir.path(), apps, base, (false, false), &http);
                let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
                let endpoint = format!("http://{}", hole.local_addr().unwrap());
                collector = Some(hole);
                let mut c = Command::new(WORKER);
                c.arg("run").arg("--config").arg(config);
                c.env("WXCOURIER_LOG__OTLP", "true")
                    .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
                (c, Some(http))
            }
            Subject::Platform => panic!("a platform's worker starts through spawn_platform"),
            Subject::Floor | Subject::BrokerOnly => {
                let mut c = Command::new(FLOOR);
                c.args(["--amqp-url", &kit::amqp_url()])
                    .args(["--prefetch", &PREFETCH.to_string()]);
                match subject {
                    Subject::BrokerOnly => c.arg("--broker-only"),
                    _ => c.args(["--base-url", base]),
                };
                c.args(apps);
                (c, None)
            }
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the subject starts");
        let profiler = attach_profiler(child.id(), subject.label());
        Self {
            child,
            _dir: dir,
            http,
            _collector: collector,
            profiler,
        }
    }

    /// Starts the worker serving one third-party platform, `name` with `component`, on Redis
    /// state, and no app, its HTTP server on `http`; `platform_keys` are added to the
    /// platform's table. Without `management`, its management API is a port nobody answers at
    /// (it cannot read what is bound).
    pub fn spawn_platform(
        name: &str,
        component: &str,
        base: &str,
        http: &str,
        management: bool,
        platform_keys: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tables = format!(
            "[http]\nlisten = \"{http}\"\n[log]\nlevel = \"warn\"\n\
             [state]\nurl = \"redis://127.0.0.1:6379/\"\n\
             [platforms.{name}]\ncomponent_appid = \"{component}\"\ntoken = \"{PLATFORM_TOKEN}\"\n\
             encoding_aes_key = \"{PLATFORM_AES_KEY}\"\n{platform_keys}"
        );
        let mut prefetch = format!("prefetch = {PREFETCH}");
        if !management {
            prefetch.push_str("\nmanagement_url = \"http://127.0.0.1:9/\"");
        }
        let config = kit::WorkerConfig {
            base_url: base,
            amqp: &prefetch,
            tables: &tables,
            ..Default::default()
        }
        .write(dir.path(), "wxcourier.toml");
        let child = Command::new(WORKER)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env(
                format!(
                    "WXCOURIER_PLATFORMS__{}__COMPONENT_SECRET",
                    name.to_ascii_uppercase()
                ),
                "secret",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker starts");
        Self {
            child,
            _dir: dir,
            http: Some(http.to_owned()),
            _collector: None,
            profiler: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL if it has not exited within [`STOP_LIMIT`].
    pub fn stop(mut self) {
        if let Ok(None) = self.child.try_wait() {
            kit::signal(&self.child, "TERM");
            let _ = kit::wait_exit(&mut self.child, STOP_LIMIT);
        }
        if let Some(mut perf) = self.profiler.take() {
            // perf writes its file once its target is gone; SIGINT (never SIGKILL, which
            // would lose the file) if it has not ended by then.
            let start = std::time::Instant::now();
            while matches!(perf.try_wait(), Ok(None)) && start.elapsed() < STOP_LIMIT {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(perf.try_wait(), Ok(None)) {
                kit::signal(&perf, "INT");
            }
            let _ = perf.wait();
        }
    }
}

impl Drop for Running {
    /// A run that panics midway must not leave its subject consuming.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A worker config for `apps`, with no rate limit worth the name, logging only warnings, and
/// its HTTP server on `http`.
fn worker_config(
    dir: &Path,
    apps: &[String],
    base: &str,
    (redis, policies): (bool, bool),
    http: &str,
) -> std::path::PathBuf {
    let rate = 1_000_000.0_f64;
    let mut tables = format!("[http]\nlisten = \"{http}\"\n[log]\nlevel = \"warn\"\n");
    if redis {
        tables.push_str("[state]\nurl = \"redis://127.0.0.1:6379/\"\n");
    }
    let prefetch = format!("prefetch = {PREFETCH}");
    let mut app_keys = format!(
        "secret = \"{}\"\nrate_per_second = {rate}\nburst = {}",
        wxcourier::sim::DEFAULT_SECRET,
        (rate / 10.0) as u64
    );
    if policies {
        app_keys.push_str(&policy_keys(time::OffsetDateTime::now_utc()));
    }
    kit::WorkerConfig {
        base_url: base,
        amqp: &prefetch,
        tables: &tables,
        apps,
        app_keys: &app_keys,
        ..Default::default()
    }
    .write(dir, "wxcourier.toml")
}

/// Every delivery policy on, each doing its work on every job (the cap and the content mark
/// are reserved, the gates and the pause looked up, the quiet window read) without holding a
/// benchmark job back: every recipient differs, the window starts two hours from `now`, and
/// the paused template is one no job uses.
fn policy_keys(now: time::OffsetDateTime) -> String {
    let minute = |t: time::OffsetDateTime| format!("{:02}:{:02}", t.hour(), t.minute());
    let quiet = format!(
        "{}-{}",
        minute(now + time::Duration::hours(2)),
        minute(now + time::Duration::hours(3))
    );
    format!(
        "\nhonor_preferences = true\nrecipient_limit = {{ count = 1000, per = \"1h\" }}\n\
         content_dedup = \"5m\"\nquiet_hours = \"{quiet}\"\ntimezone = \"UTC\"\n\
         paused_templates = [\"bench-paused-template\"]"
    )
}

/// `n` app names no earlier run used.
pub fn fresh_apps(n: usize) -> Vec<String> {
    let base = kit::unique_app("bench");
    (0..n).map(|i| format!("{base}_{i}")).collect()
}

/// Declares the exchanges and the apps' job queues, as the worker would.
pub async fn declare(conn: &Connection, apps: &[String]) {
    let schedule = wxcourier::retry::Schedule::new(&Settings::default().retry);
    topology::declare_all(conn, apps, schedule.tiers())
        .await
        .expect("the topology declares");
}

/// Deletes the apps' job queues (quorum queues: each costs the broker until it is gone).
pub async fn delete_queues(conn: &Connection, apps: &[String]) {
    let ch = conn.create_channel().await.unwrap();
    for app in apps {
        let _ = ch
            .queue_delete(
                job_queue(app).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
    }
    let _ = ch.close(200, "deleted".into()).await;
}
