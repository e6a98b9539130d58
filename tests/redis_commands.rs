//! A regression guard that does not time anything: the Redis commands the worker makes per job
//! on the hot path, watched with `MONITOR` on a Redis server of the test's own (no other test's
//! traffic reaches it), against the budgets `docs/performance.md` writes down: the commands the
//! worker sends (its round trips) and the commands Redis runs for them, the scripts' own
//! included. The timed work (the rate lease's script, shared by the jobs of one lease, and the
//! kill switch's poll) is counted apart, since its share per job depends on the machine's speed.
//! A change that adds a round trip or a script's lookup per job fails here on any machine; so
//! does one that gives the send limits or the preference gates a round trip of their own.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use wxcourier::types::Secret;

/// Commands the worker sends per job, every delivery policy off (docs/performance.md, "Redis
/// commands per job"): the claim script, the sent record and its msgid lookup (sent together),
/// and the story script.
const SENT_PER_JOB: f64 = 4.0;
/// Commands Redis runs per job, the scripts' own included: the claim's two reads (the key and
/// its pre-upgrade name) and its write, the two records, and the story's push, trim and expiry.
const RUN_PER_JOB: f64 = 10.0;
/// Commands Redis runs per job with a recipient cap, content de-duplication and the preference
/// gates on: those of [`RUN_PER_JOB`], and in the claim's script the gates' read, the clock,
/// the content mark's read and write, and the window's trim, lookup, count, insert and expiry.
const RUN_WITH_LIMITS_PER_JOB: f64 = 19.0;
/// What the budgets allow beyond their count: a token check or a retry that lands in the window
/// (eight commands in 400 jobs), never one more command per job.
const SLACK: f64 = 0.02;
/// Rate lease scripts per job at most: a lease serves many jobs, or it is no lease.
const LEASES_PER_JOB: f64 = 0.25;
/// Jobs counted: enough that the worker's timed work (the kill switch's poll, the token's
/// check) weighs little beside them.
const JOBS: usize = 400;

/// `redis-server` on a free port, without persistence; stopped when dropped.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-cli MONITOR` on the test's Redis, into a file, until finished.
struct Monitor {
    child: Child,
    file: tempfile::NamedTempFile,
}

impl Monitor {
    fn start(port: u16) -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "monitor"])
            .stdout(file.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli is installed beside redis-server");
        // MONITOR answers OK once it watches.
        let started = Instant::now();
        while std::fs::read_to_string(file.path()).unwrap().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "MONITOR did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, file }
    }

    /// What the worker made Redis do while watched.
    fn finish(mut self) -> Counts {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut counts = Counts::default();
        // A script's own commands follow the command that ran it: they count where it counts.
        let mut timed = false;
        for line in std::fs::read_to_string(self.file.path()).unwrap().lines() {
            // `1796661837.878896 [0 127.0.0.1:56898] "EVALSHA" …`; a script's show `[0 lua]`.
            let Some((client, command)) = line.split_once("] \"") else {
                continue;
            };
            let name = command.split('"').next().unwrap_or("").to_ascii_lowercase();
            if client.ends_with(" lua") {
                let run = if timed {
                    &mut counts.timed_run
                } else {
                    &mut counts.run
                };
                *run.entry(name).or_insert(0) += 1;
                continue;
            }
            timed = name == "smembers" || line.contains(":rate:gcra\"");
            if name == "evalsha" && line.contains(":rate:gcra\"") {
                counts.leases += 1;
            }
            let (sent, run) = match timed {
                true => (&mut counts.timed_sent, &mut counts.timed_run),
                false => (&mut counts.sent, &mut counts.run),
            };
            *sent.entry(name.clone()).or_insert(0) += 1;
            *run.entry(name).or_insert(0) += 1;
        }
        counts
    }
}

/// Commands by name: sent by the worker, and run by Redis (a script's own included), for jobs
/// and for the timed work apart.
#[derive(Debug, Default)]
struct Counts {
    sent: BTreeMap<String, u64>,
    run: BTreeMap<String, u64>,
    timed_sent: BTreeMap<String, u64>,
    timed_run: BTreeMap<String, u64>,
    leases: u64,
}

/// What 400 sent jobs of an app set up by `tweak` make Redis do, per job: commands sent,
/// commands run, rate lease scripts; and the counts behind them.
async fn per_job(tweak: impl FnOnce(&mut wxcourier::config::Settings)) -> (f64, f64, f64, Counts) {
    let redis = OwnRedis::start();
    let url = redis.url();
    let mut app = spawn_app("rcmd", |s| {
        s.state.url = Secret::new(url);
        tweak(s);
    })
    .await;
    // Warm: the token is fetched and shared, the scripts loaded, the lease running.
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        let id = format!("{}-warm-{i}", app.app);
        app.publish(&job(&id, &openid(i))).await;
    }
    app.read_until(&mut seen, 20, Duration::from_secs(15)).await;
    assert_eq!(seen.len(), 20);

    let monitor = Monitor::start(redis.port);
    let ids = app.publish_numbered(JOBS).await;
    let mut done = std::collections::HashSet::new();
    app.read_until(&mut done, JOBS, Duration::from_secs(30))
        .await;
    assert_eq!(done, ids, "every job ended");
    // A job's story is written beside its outcome, and may land a moment after it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = monitor.finish();
    app.stop().await;
    let per_job = |calls: &BTreeMap<String, u64>| calls.values().sum::<u64>() as f64 / JOBS as f64;
    let (sent, run) = (per_job(&counts.sent), per_job(&counts.run));
    let leases = counts.leases as f64 / JOBS as f64;
    println!("per job: {sent:.2} sent, {run:.2} run, {leases:.3} leases; {counts:?}");
    (sent, run, leases, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_job_costs_no_more_redis_commands_than_the_budget() {
    let (sent, run, leases, counts) = per_job(|_| {}).await;
    assert!(
        sent <= SENT_PER_JOB + SLACK,
        "{sent:.2} Redis commands sent per job, over the budget of {SENT_PER_JOB} \
         (docs/performance.md): {counts:?}"
    );
    assert!(
        run <= RUN_PER_JOB + SLACK,
        "{run:.2} Redis commands run per job, over the budget of {RUN_PER_JOB} \
         (docs/performance.md): {counts:?}"
    );
    assert!(
        leases <= LEASES_PER_JOB,
        "{leases:.3} rate lease scripts per job: the lease no longer serves many jobs: {counts:?}"
    );
}

/// With a recipient cap, content de-duplication and the preference gates on, a sent job still
/// sends Redis no more commands than one without them: the reservation and the gates are read
/// in the claim's own script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_limits_and_the_gates_cost_no_round_trip_of_their_own() {
    let (sent, run, _, counts) = per_job(|s| {
        let app = s.apps.values_mut().next().expect("the test's app");
        app.recipient_limit = Some(wxcourier::config::RecipientLimit {
            count: std::num::NonZeroU32::new(1000).unwrap(),
            per: wxcourier::config::NonZeroSpan::new(Duration::from_secs(3600)).unwrap(),
        });
        app.content_dedup = wxcourier::config::NonZeroSpan::new(Duration::from_secs(300));
        app.honor_preferences = true;
    })
    .await;
    assert!(
        sent <= SENT_PER_JOB + SLACK,
        "{sent:.2} Redis commands sent per job with the limits and gates on, over the \
         budget of {SENT_PER_JOB} a job without them has: {counts:?}"
    );
    assert!(
        run <= RUN_WITH_LIMITS_PER_JOB + SLACK,
        "{run:.2} Redis commands run per job, over the budget of {RUN_WITH_LIMITS_PER_JOB} \
         (docs/performance.md): {counts:?}"
    );
}
