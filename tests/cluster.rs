//! Failover on a real three-node RabbitMQ cluster (started by `scripts/cluster.sh`, which runs
//! this test with `failover-test`; ignored otherwise). A `wxcourier run` process is given the
//! three nodes; under load, the node it is connected to is stopped (round 1, `rabbitmqctl stop`)
//! and, after it is back, the next one is killed with SIGKILL (round 2). Every job must end with
//! one final outcome, no job may reach WeChat under a second client_msg_id, and the worker must
//! be on another node within seconds. Prints the figures `docs/reliability.md` records.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::process::{Binary, OutputWithin, signal, wait_exit};
use common::*;
use lapin::types::FieldTable;
use parking_lot::Mutex;
use wxcourier::broker::publish::{Publication, job_properties};
use wxcourier::broker::{self, JOBS_EXCHANGE, Publisher, job_queue};
use wxcourier::config::AmqpSettings;
use wxcourier::sim::{DEFAULT_APPID, Faults, SimOptions, Simulator};
use wxcourier::types::Secret;

const JOBS: usize = 12000;
/// Jobs per second the producer publishes, for the whole run.
const RATE: f64 = 80.0;
/// The worker's send rate: a little above the producer's, so a backlog after a failover drains.
const WORKER_RATE: u32 = 110;
/// Node 3 carries the test's own connection (jobs in, outcomes out) and is never stopped.
const HARNESS_NODE: usize = 3;

fn cluster_urls() -> Vec<String> {
    let urls = std::env::var("CLUSTER_AMQP_URLS")
        .expect("run through scripts/cluster.sh failover-test (CLUSTER_AMQP_URLS unset)");
    urls.split(',').map(str::to_owned).collect()
}

fn cluster(args: &[&str]) -> String {
    let out = Command::new("scripts/cluster.sh")
        .args(args)
        .output_within(Duration::from_secs(300));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cluster.sh {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The cluster node (1-3) `pid` has an established AMQP connection to, if any.
fn connected_node(pid: u32) -> Option<usize> {
    let out = Command::new("ss")
        .args(["-Htnp", "state", "established"])
        .output()
        .ok()?;
    let owner = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&owner))
        .find_map(|l| {
            let peer = l.split_whitespace().nth(3)?;
            match peer.rsplit_once(':')?.1 {
                "5681" => Some(1),
                "5682" => Some(2),
                "5683" => Some(3),
                _ => None,
            }
        })
}

/// Members of the quorum queue `queue`, and how many of them are online.
fn quorum_members(queue: &str) -> (usize, usize) {
    let json = cluster(&[
        "ctl",
        "3",
        "list_queues",
        "name",
        "type",
        "members",
        "online",
        "--formatter",
        "json",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(json.trim()).unwrap();
    let row = rows
        .iter()
        .find(|r| r["name"] == queue)
        .unwrap_or_else(|| panic!("{queue} is listed"));
    assert_eq!(row["type"], "quorum");
    let count = |k: &str| row[k].as_array().map_or(0, Vec::len);
    (count("members"), count("online"))
}

/// Waits until all three members of `queue` are online.
fn all_members_online(queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (members, online) = quorum_members(queue);
        assert_eq!(members, 3, "{queue} keeps three members");
        if online == 3 {
            return;
        }
        assert!(Instant::now() < deadline, "{queue}: {online} of 3 online");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// When the worker's connection changed, and the node it was on from then (none: no connection).
type NodeChanges = Vec<(SystemTime, Option<usize>)>;

/// Watches which node the worker is on, every 50 ms, with the time of each change.
struct NodeWatch {
    changes: Arc<Mutex<NodeChanges>>,
    done: Arc<AtomicBool>,
}

impl NodeWatch {
    fn start(pid: u32) -> Self {
        let changes = Arc::new(Mutex::new(vec![(SystemTime::now(), connected_node(pid))]));
        let done = Arc::new(AtomicBool::new(false));
        let (log, stop) = (changes.clone(), done.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let now = connected_node(pid);
                let last = log.lock().last().unwrap().1;
                if now != last {
                    log.lock().push((SystemTime::now(), now));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { changes, done }
    }

    fn current(&self) -> Option<usize> {
        self.changes.lock().last().unwrap().1
    }

    /// When the worker left `node` (at or after `since`), where it went, and how long it took
    /// to be there.
    fn moved_from(&self, node: usize, since: SystemTime) -> Option<(usize, SystemTime, Duration)> {
        let log = self.changes.lock();
        let left = log.iter().find(|(t, n)| *t >= since && *n != Some(node))?.0;
        let (arrived, to) = log
            .iter()
            .find_map(|(t, n)| n.filter(|n| *n != node && *t >= left).map(|n| (*t, n)))?;
        Some((to, left, arrived.duration_since(left).unwrap_or_default()))
    }
}

impl Drop for NodeWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Outcomes as the result consumer sees them.
#[derive(Default)]
struct Seen {
    by_id: HashMap<String, Vec<String>>,
    /// Every outcome's `finished_at`: when the worker decided it.
    finished: Vec<SystemTime>,
    /// Outcomes marked `duplicate: true` (a redelivered job already sent).
    marked_duplicate: usize,
}

impl Seen {
    /// Reads outcomes until `until` jobs have one or none came for `idle`.
    async fn read(&mut self, h: &mut Harness, until: usize, idle: Duration) {
        while self.by_id.len() < until {
            let Some(o) = h.tap.next(idle).await else {
                return;
            };
            let at = o["finished_at"].as_str().expect("finished_at");
            let at =
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .expect("finished_at is RFC 3339");
            self.finished.push(at.into());
            self.marked_duplicate += usize::from(o["duplicate"] == true);
            self.by_id
                .entry(o["id"].as_str().unwrap().to_owned())
                .or_default()
                .push(o["status"].as_str().unwrap().to_owned());
        }
    }

    /// Runs `work` (a blocking step such as starting a node) on a thread, reading outcomes
    /// meanwhile so the tap never backs up.
    async fn read_while<T: Send + 'static>(
        &mut self,
        h: &mut Harness,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let t = std::thread::spawn(work);
        while !t.is_finished() {
            self.read(h, JOBS, Duration::from_millis(100)).await;
        }
        t.join().unwrap()
    }

    /// The longest time between two outcomes the worker decided in `[from - 1 s, from + span]`:
    /// how long the worker stopped finishing jobs around a node loss.
    fn longest_gap(&self, from: SystemTime, span: Duration) -> Duration {
        let lo = from - Duration::from_secs(1);
        let mut times: Vec<SystemTime> = self
            .finished
            .iter()
            .copied()
            .filter(|t| *t >= lo && *t <= from + span)
            .collect();
        times.sort();
        times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).unwrap_or_default())
            .max()
            .unwrap_or_default()
    }
}

/// Publishes `JOBS` jobs through node 3 at `RATE` per second, as a producer would, and
/// publishes a job again when its confirm does not come (the same id: at worst one more
/// outcome for it).
fn produce(
    conn: lapin::Connection,
    app: String,
) -> tokio::task::JoinHandle<(HashSet<String>, u32)> {
    tokio::spawn(async move {
        let publisher = Publisher::open(&conn, Duration::from_secs(5))
            .await
            .unwrap();
        let start = Instant::now();
        let mut ids = HashSet::new();
        let mut again = 0;
        for i in 0..JOBS {
            let due = start + Duration::from_secs_f64(i as f64 / RATE);
            tokio::time::sleep_until(due.into()).await;
            let id = format!("{app}-{i}");
            let body = serde_json::to_vec(&job(&id, &openid(i))).unwrap();
            loop {
                let msg = Publication {
                    exchange: JOBS_EXCHANGE,
                    routing_key: &app,
                    body: &body,
                    properties: job_properties(&id, FieldTable::default()),
                    must_route: true,
                };
                match publisher.publish(msg).await {
                    Ok(()) => break,
                    Err(e) => {
                        again += 1;
                        assert!(again < 100, "the producer keeps failing: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            ids.insert(id);
        }
        (ids, again)
    })
}

/// Stops (or kills) the worker's node and waits until the worker is on another one. Returns
/// the node lost, the node it moved to, when the worker lost its node, and how long the move
/// took.
async fn lose_workers_node(
    watch: &NodeWatch,
    how: &str,
    h: &mut Harness,
    seen: &mut Seen,
) -> (usize, usize, SystemTime, Duration) {
    let node = watch.current().expect("the worker is connected");
    assert_ne!(
        node, HARNESS_NODE,
        "the worker is not on the test's own node"
    );
    let since = SystemTime::now();
    let how = how.to_owned();
    seen.read_while(h, move || cluster(&[&how, &node.to_string()]))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((to, left, took)) = watch.moved_from(node, since) {
            return (node, to, left, took);
        }
        assert!(
            Instant::now() < deadline,
            "the worker never left node {node}"
        );
        seen.read(h, JOBS, Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: scripts/cluster.sh failover-test"]
async fn stopping_the_workers_node_under_load_loses_nothing_and_sends_nothing_twice() {
    let urls = cluster_urls();
    assert_eq!(urls.len(), 3);
    let started = Instant::now();
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    sim.set_faults(Faults {
        latency_ms: 5,
        ..Faults::default()
    });
    let app = unique_app("cluster");
    let harness_amqp = AmqpSettings {
        url: Secret::new(urls[HARNESS_NODE - 1].clone()),
        ..AmqpSettings::default()
    };
    let node3 = || broker::connect(&harness_amqp, "wxcourier cluster test");
    let mut h = Harness::on(node3().await.unwrap(), &app, &settings(&app, &sim)).await;
    all_members_online(&job_queue(&app));

    let port = free_port();
    let bin = Binary::with(
        &app,
        &sim.base_url(),
        &format!("rate_per_second = {WORKER_RATE}\nburst = 20"),
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let log = bin.dir.path().join("worker.log");
    let worker_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let worker = Worker(
        bin.command("run")
            .env("WXCOURIER_AMQP__URL", urls.join(","))
            .env("RUST_LOG", "wxcourier=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let watch = NodeWatch::start(worker.0.id());
    let producer = produce(node3().await.unwrap(), app.clone());

    let mut seen = Seen::default();
    let mut rounds = Vec::new();
    for (how, after) in [("stop-node", JOBS / 8), ("kill-node", 0)] {
        seen.read(&mut h, after, Duration::from_secs(60)).await;
        assert!(
            seen.by_id.len() >= after,
            "progress before {how}: {}; worker log:\n{}",
            seen.by_id.len(),
            worker_log()
        );
        assert!(
            !producer.is_finished(),
            "{how} comes while jobs still arrive"
        );
        let done = seen.by_id.len();
        let (node, to, left, took) = lose_workers_node(&watch, how, &mut h, &mut seen).await;
        eprintln!(
            "cluster: {how} {node} with {done} of {JOBS} jobs done; the worker was on node {to} \
             {:.2}s after losing node {node}",
            took.as_secs_f64()
        );
        assert!(
            took < Duration::from_secs(10),
            "moved within seconds: {took:?}\n{}",
            worker_log()
        );
        let queue = job_queue(&app);
        seen.read_while(&mut h, move || {
            cluster(&["start-node", &node.to_string()]);
            all_members_online(&queue);
        })
        .await;
        rounds.push((how, node, to, left, took));
    }
    let (ids, published_again) = producer.await.unwrap();
    seen.read(&mut h, JOBS, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();

    // Every job ended, once: all its outcomes (a redelivery may repeat one) are the same.
    assert_eq!(
        seen.by_id.len(),
        JOBS,
        "every job has an outcome\n{}",
        worker_log()
    );
    assert!(seen.by_id.keys().all(|id| ids.contains(id)));
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for (id, got) in &seen.by_id {
        assert!(got.iter().all(|s| *s == got[0]), "{id}: {got:?}");
        *statuses.entry(got[0].clone()).or_default() += 1;
    }
    assert_eq!(statuses.get("sent"), Some(&JOBS), "{statuses:?}");
    // WeChat saw each job under its own id only, and accepted it once.
    let mut ids_per_user: HashMap<String, HashSet<String>> = HashMap::new();
    for s in sim.sends() {
        ids_per_user.entry(s.touser.clone()).or_default().insert(
            s.client_msg_id
                .clone()
                .expect("every send has a client_msg_id"),
        );
    }
    assert_eq!(ids_per_user.len(), JOBS);
    assert!(
        ids_per_user.values().all(|c| c.len() == 1),
        "no job under two client_msg_ids"
    );
    assert_each_job_accepted_once(&sim, &ids);
    let stats = &sim.stats().apps[DEFAULT_APPID];
    assert_eq!(h.queued().await, 0, "nothing left in the job queue");

    let outcomes = seen.finished.len();
    let figures = serde_json::json!({
        "jobs": JOBS,
        "producer_rate_per_s": RATE,
        "published_again": published_again,
        "outcomes": outcomes,
        "repeated_outcomes": outcomes - JOBS,
        "outcomes_marked_duplicate": seen.marked_duplicate,
        "statuses": statuses,
        "wechat_send_calls": stats.send_calls,
        "wechat_accepted": stats.accepted,
        "wechat_duplicates_refused": stats.duplicates,
        "rounds": rounds.iter().map(|(how, node, to, left, took)| serde_json::json!({
            "how": how, "lost_node": node, "moved_to": to,
            "moved_after_s": (took.as_secs_f64() * 100.0).round() / 100.0,
            "longest_outcome_gap_s":
                (seen.longest_gap(*left, Duration::from_secs(30)).as_secs_f64() * 100.0).round() / 100.0,
        })).collect::<Vec<_>>(),
        "run_s": elapsed.as_secs(),
    });
    eprintln!("cluster figures: {figures}");

    let mut worker = worker;
    signal(&worker.0, "TERM");
    let status = wait_exit(&mut worker.0, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker stops cleanly"
    );
    h.cleanup().await;
    sim.stop();
}
