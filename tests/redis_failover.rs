//! Redis Sentinel and Redis Cluster failing over under load, for real: three `wxcourier run`
//! processes share one app's state in the sets `scripts/redis-ha.sh` runs on local ports, while
//! the Redis under them loses its primary (Sentinel), loses a master (Cluster), or moves the
//! app's slot to another master (Cluster). Ignored unless run alone through
//! `scripts/redis-ha.sh failover-test` (or `scripts/test.sh`), which sets
//! `TEST_REDIS_SENTINEL_URL` and `TEST_REDIS_CLUSTER_URL`.
//!
//! Each run checks what a failover must not break: every job one outcome, no job at WeChat under
//! a second `client_msg_id`, the shared rate within its bound across the fault, a few token
//! calls at most; and prints how long sending stopped. Replication is asynchronous, so a
//! failover may lose the last writes (a sent record, a claim, the rate bucket, a token): the
//! bounds below are the ones that hold even then (see `docs/reliability.md`, "Redis").

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{Binary, OutputWithin, signal, wait_exit};
use common::*;
use wxcourier::sim::{DEFAULT_APPID, Faults, SimOptions, Simulator};

const JOBS: usize = 1500;
/// The app's shared rate, summed over the three instances.
const RATE: u32 = 100;
const BURST: u32 = 10;
/// Outcomes before the fault: the load is well under way.
const BEFORE_FAULT: usize = 300;
/// The longest a run may go without a new outcome before it fails.
const IDLE: Duration = Duration::from_secs(30);
/// The longest the set may take to name a new primary or slot owner.
const TAKEOVER: Duration = Duration::from_secs(20);
/// The window the shared rate is measured over.
const WINDOW: Duration = Duration::from_secs(2);

/// `scripts/redis-ha.sh ARGS`, within a minute and a half (its own waits are bounded at 60 s).
fn redis_ha(args: &[&str]) -> String {
    let out = Command::new("scripts/redis-ha.sh")
        .args(args)
        .output_within(Duration::from_secs(90));
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "redis-ha.sh {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn url(var: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| panic!("{var} unset: run through scripts/redis-ha.sh failover-test"))
}

/// Makes the set whole again when dropped, pass or fail, so the next test (and the next run)
/// finds it as it should be.
struct Restore(&'static str);

impl Drop for Restore {
    /// Never panics: it may run while a failed test unwinds.
    fn drop(&mut self) {
        let started = Command::new("scripts/redis-ha.sh")
            .args(["start", self.0])
            .stdout(Stdio::null())
            .spawn();
        if let Ok(mut child) = started {
            let _ = wait_exit(&mut child, Duration::from_secs(90));
        }
    }
}

/// What is done to the Redis under the workers.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `kill -9` of the Sentinel set's primary; Sentinel promotes the replica.
    KillSentinelPrimary,
    /// `kill -9` of the cluster master serving the app's slot; its replica takes over.
    KillClusterMaster,
    /// The app's slot, with its keys, moves to another master.
    MigrateSlot,
}

impl Fault {
    fn set(self) -> &'static str {
        match self {
            Fault::KillSentinelPrimary => "sentinel",
            Fault::KillClusterMaster | Fault::MigrateSlot => "cluster",
        }
    }

    fn url(self) -> String {
        match self {
            Fault::KillSentinelPrimary => url("TEST_REDIS_SENTINEL_URL"),
            Fault::KillClusterMaster | Fault::MigrateSlot => url("TEST_REDIS_CLUSTER_URL"),
        }
    }

    /// Who serves the app's keys now: the primary's port, or the port of the master serving
    /// the app's slot.
    fn server(self, tag: &str) -> String {
        match self {
            Fault::KillSentinelPrimary => redis_ha(&["primary"]),
            Fault::KillClusterMaster | Fault::MigrateSlot => redis_ha(&["owner", tag]),
        }
    }

    /// Does it, and returns what it said (the port killed, or the slot moved).
    fn inflict(self, tag: &str) -> String {
        match self {
            Fault::KillSentinelPrimary => redis_ha(&["kill-primary"]),
            Fault::KillClusterMaster => redis_ha(&["kill-master", tag]),
            Fault::MigrateSlot => redis_ha(&["migrate-slot", tag]),
        }
    }
}

/// How many sent records (`id` keys holding a msgid) of the app the node serving it now holds.
fn sent_records(fault: Fault, tag: &str) -> usize {
    let port = fault.server(tag);
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port, "--scan"])
        .args(["--pattern", &format!("wxcourier:{tag}:id:*")])
        .output_within(Duration::from_secs(30));
    assert!(out.status.success(), "redis-cli --scan on {port}");
    let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return 0;
    }
    let mut get = Command::new("redis-cli");
    get.args(["-h", "127.0.0.1", "-p", &port, "mget"])
        .args(&keys);
    let values = get.output_within(Duration::from_secs(30));
    String::from_utf8_lossy(&values.stdout)
        .lines()
        .filter(|v| v.parse::<u64>().is_ok())
        .count()
}

/// Three `wxcourier run` processes for one app, killed if the test fails.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Outcomes as the result consumer sees them.
#[derive(Default)]
struct Seen {
    by_id: HashMap<String, Vec<String>>,
    outcomes: usize,
    marked_duplicate: usize,
}

impl Seen {
    /// Reads outcomes until `until` jobs have one, or none came for `idle`.
    async fn read(&mut self, h: &mut Harness, until: usize, idle: Duration) {
        while self.by_id.len() < until {
            let Some(o) = h.tap.next(idle).await else {
                return;
            };
            self.outcomes += 1;
            self.marked_duplicate += usize::from(o["duplicate"] == true);
            self.by_id
                .entry(o["id"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(o["status"].as_str().unwrap_or_default().to_owned());
        }
    }

    /// Runs `work` (a blocking step) on a thread, reading outcomes meanwhile so the tap never
    /// backs up.
    async fn read_while<T: Send + 'static>(
        &mut self,
        h: &mut Harness,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let t = std::thread::spawn(work);
        while !t.is_finished() {
            if self.by_id.len() < JOBS {
                self.read(h, JOBS, Duration::from_millis(100)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        t.join().unwrap()
    }
}

/// The times (ms on the simulator's clock) of the sends WeChat took, in order.
fn accepted_times(sim: &Simulator) -> Vec<f64> {
    let mut times: Vec<f64> = sim
        .sends()
        .iter()
        .filter(|s| s.errcode == 0)
        .map(|s| s.at_ms)
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// The most sends WeChat took within any `WINDOW` (counting repeats it de-duplicated: each
/// one used a slot of the shared rate).
fn most_in_window(times: &[f64]) -> usize {
    let width = WINDOW.as_secs_f64() * 1000.0;
    let mut most = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= width {
            lo += 1;
        }
        most = most.max(hi - lo + 1);
    }
    most
}

/// Sending stopped by the fault: the first gap between accepted sends longer than
/// `NOTICEABLE` that begins within a second of `fault` (ms on the simulator's clock). Returns
/// when it began and when sending picked up again, or `None` when sending never stopped.
fn pause_at(times: &[f64], fault: f64) -> Option<(f64, f64)> {
    const NOTICEABLE: f64 = 300.0;
    let mut last = times.iter().copied().rfind(|t| *t < fault - 1000.0)?;
    for &t in times.iter().filter(|t| **t >= fault - 1000.0) {
        if t - last > NOTICEABLE && last <= fault + 1000.0 {
            return Some((last, t));
        }
        if last > fault + 1000.0 {
            return None;
        }
        last = t;
    }
    None
}

/// The jobs that waited for a claim to lapse: accepted sends after the longest gap following
/// the fault, when that gap is longer than `gap` ms, and when the last of them was.
fn stragglers(times: &[f64], after: f64, gap: f64) -> (usize, f64) {
    let tail: Vec<f64> = times.iter().copied().filter(|t| *t >= after).collect();
    let end = tail.last().copied().unwrap_or(after);
    let cut = tail.windows(2).rfind(|w| w[1] - w[0] > gap);
    let n = cut.map_or(0, |w| tail.iter().filter(|t| **t >= w[1]).count());
    (n, end)
}

/// Waits (bounded) until someone other than `before` serves the app's keys; returns when.
fn await_takeover(fault: Fault, tag: &str, before: &str) -> (Instant, String) {
    let started = Instant::now();
    loop {
        let now = fault.server(tag);
        if !now.is_empty() && now != before {
            return (Instant::now(), now);
        }
        assert!(
            started.elapsed() < TAKEOVER,
            "nobody took over from {before} within {TAKEOVER:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the workers on `fault`'s set, inflicts it under load, restores the set, and checks
/// and prints what happened.
async fn fail_over_under_load(fault: Fault) {
    let set = fault.set();
    redis_ha(&["start", set]);
    let _restore = Restore(set);
    let started = Instant::now();

    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    // The simulator's `at_ms` counts from about here.
    let sim_epoch = Instant::now();
    let sim_ms = |at: Instant| at.duration_since(sim_epoch).as_secs_f64() * 1000.0;
    sim.set_faults(Faults {
        latency_ms: 5,
        ..Faults::default()
    });
    let app = unique_app(&format!("ha_{set}"));
    // Every key of an app carries the app as its hash tag: this names the app's slot.
    let tag = format!("{{{app}}}");
    let bin = Binary::with(
        &app,
        &sim.base_url(),
        &format!("rate_per_second = {RATE}\nburst = {BURST}"),
        &format!("[state]\nurl = \"{}\"\n", fault.url()),
    );
    let mut h = Harness::new(&app, &settings(&app, &sim)).await;
    let logs: Vec<_> = (0..3)
        .map(|n| bin.dir.path().join(format!("worker{n}.log")))
        .collect();
    let worker_logs = || {
        logs.iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    // The backlog first: the workers then send at the full shared rate from their first second.
    let ids = h.publish_numbered(JOBS).await;
    let mut workers = Workers(
        logs.iter()
            .map(|log| {
                bin.command("run")
                    .env("RUST_LOG", "wxcourier=info")
                    .env("NO_COLOR", "1")
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(log).unwrap())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );

    let mut seen = Seen::default();
    seen.read(&mut h, BEFORE_FAULT, IDLE).await;
    assert!(
        seen.by_id.len() >= BEFORE_FAULT,
        "progress before the fault: {} outcomes\n{}",
        seen.by_id.len(),
        worker_logs()
    );
    let done_before = seen.by_id.len();
    let before = fault.server(&tag);
    let fault_at = Instant::now();
    let (did, taken_over) = {
        let tag = tag.clone();
        let before = before.clone();
        seen.read_while(&mut h, move || {
            let did = fault.inflict(&tag);
            (did, await_takeover(fault, &tag, &before))
        })
        .await
    };
    let (taken_at, now_serving) = taken_over;
    let takeover = taken_at.duration_since(fault_at);
    eprintln!(
        "{fault:?}: with {done_before} of {JOBS} jobs done, {did}; {before} -> {now_serving} after {:.2}s",
        takeover.as_secs_f64()
    );
    seen.read(&mut h, JOBS, IDLE).await;
    // The killed node comes back as a replica while the last outcomes are read.
    seen.read_while(&mut h, move || redis_ha(&["start", set]))
        .await;
    // What the failover kept: a sent record written in its last moments may be gone.
    let kept = sent_records(fault, &tag);
    // Every job submitted again: none may reach WeChat as a new message, whether the store
    // still knows it (a `duplicate` outcome) or lost it (sent again under the same id, which
    // WeChat takes as the same message).
    let first_round_end = sim_ms(Instant::now());
    let sends_before_again = sim.sends().len();
    h.publish_numbered(JOBS).await;
    let mut again = Seen::default();
    again.read(&mut h, JOBS, IDLE).await;
    assert_eq!(
        again.by_id.len(),
        JOBS,
        "every resubmitted job has an outcome\n{}",
        worker_logs()
    );
    assert!(
        again.by_id.values().flatten().all(|s| s == "sent"),
        "a resubmitted job is sent (a duplicate)"
    );
    let sent_again = sim.sends().len() - sends_before_again;
    let elapsed = started.elapsed();

    // Every job ended, once: all its outcomes (a redelivery may repeat one) are the same.
    assert_eq!(
        seen.by_id.len(),
        JOBS,
        "every job has an outcome\n{}",
        worker_logs()
    );
    assert!(seen.by_id.keys().all(|id| ids.contains(id)));
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for (id, got) in &seen.by_id {
        assert!(got.iter().all(|s| *s == got[0]), "{id}: {got:?}");
        *statuses.entry(got[0].clone()).or_default() += 1;
    }
    assert_eq!(statuses.get("sent"), Some(&JOBS), "{statuses:?}");
    // WeChat saw each job under its own id only, and took it once.
    let mut ids_per_user: HashMap<String, HashSet<String>> = HashMap::new();
    for s in sim.sends() {
        ids_per_user
            .entry(s.touser.clone())
            .or_default()
            .insert(s.client_msg_id.clone().unwrap_or_default());
    }
    assert_eq!(ids_per_user.len(), JOBS);
    assert!(
        ids_per_user.values().all(|c| c.len() == 1),
        "no job under two client_msg_ids"
    );
    assert_each_job_accepted_once(&sim, &ids);

    // The shared rate held: at most RATE * WINDOW + BURST in any window, plus one more burst
    // for a bucket the failover may have lost or set back, and one for the slots the instances
    // held and the send timing on a loaded machine (232 in 2 s was seen once; 209-223 else).
    let times = accepted_times(&sim);
    let most = most_in_window(&times);
    let bound = (f64::from(RATE) * WINDOW.as_secs_f64()) as usize + 3 * BURST as usize + 3;
    // A token call at start; one more per instance at worst if the stored token was lost.
    let stats = &sim.stats().apps[DEFAULT_APPID];
    let token_calls = stats.stable_token_calls + stats.classic_token_calls;
    assert!(
        (1..=4).contains(&token_calls),
        "{token_calls} token calls for three instances"
    );
    let fault_ms = sim_ms(fault_at);
    let first_round: Vec<f64> = times
        .iter()
        .copied()
        .filter(|t| *t <= first_round_end)
        .collect();
    let (stopped, resumed) = pause_at(&first_round, fault_ms).unwrap_or((fault_ms, fault_ms));
    let (late, last_send) = stragglers(&first_round, resumed, 3000.0);
    let unrecorded = worker_logs()
        .matches("not recorded for de-duplication")
        .count();

    let round = |s: f64| (s * 100.0).round() / 100.0;
    let figures = serde_json::json!({
        "fault": format!("{fault:?}"),
        "did": did,
        "jobs": JOBS,
        "jobs_done_at_fault": done_before,
        "rate_per_s": RATE,
        "burst": BURST,
        "takeover_s": round(takeover.as_secs_f64()),
        "sending_stopped_for_s": round((resumed - stopped) / 1000.0),
        "sending_resumed_after_fault_s": round((resumed - fault_ms).max(0.0) / 1000.0),
        "jobs_sent_after_their_claim_lapsed": late,
        "last_send_after_fault_s": round((last_send - fault_ms) / 1000.0),
        "most_sends_in_2s": most,
        "rate_bound_in_2s": bound,
        "outcomes": seen.outcomes,
        "repeated_outcomes": seen.outcomes - JOBS,
        "outcomes_marked_duplicate": seen.marked_duplicate,
        "statuses": statuses,
        "wechat_send_calls": stats.send_calls,
        "wechat_accepted": stats.accepted,
        "wechat_duplicates_refused": stats.duplicates,
        "token_calls": token_calls,
        "sent_but_not_recorded": unrecorded,
        "sent_records_kept": kept,
        "resubmitted_answered_from_store": again.marked_duplicate,
        "resubmitted_sent_again_under_the_same_id": sent_again,
        "run_s": elapsed.as_secs(),
    });
    eprintln!("redis failover figures: {figures}");
    assert!(
        most <= bound,
        "{most} sends in {WINDOW:?}, over the bound {bound}"
    );
    // One outcome per job: the broker stays up, so a second one could only come from a job
    // delivered twice (as RabbitMQ 3.10 did when a consumer came back under the same tag).
    assert_eq!(seen.outcomes, JOBS, "a job got more than one outcome");

    for w in &workers.0 {
        signal(w, "TERM");
    }
    for w in &mut workers.0 {
        assert!(
            wait_exit(w, Duration::from_secs(30)).is_some_and(|s| s.success()),
            "a worker stops cleanly"
        );
    }
    h.cleanup().await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kills Redis processes: run alone by scripts/redis-ha.sh failover-test"]
async fn sentinel_promoting_the_replica_after_a_kill_9_of_the_primary_loses_nothing() {
    fail_over_under_load(Fault::KillSentinelPrimary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kills Redis processes: run alone by scripts/redis-ha.sh failover-test"]
async fn a_cluster_replica_taking_over_a_killed_master_loses_nothing() {
    fail_over_under_load(Fault::KillClusterMaster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "moves slots of the Redis Cluster: run alone by scripts/redis-ha.sh failover-test"]
async fn moving_the_apps_slot_to_another_master_under_load_loses_nothing() {
    fail_over_under_load(Fault::MigrateSlot).await;
}
