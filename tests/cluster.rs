//! Failover on a real three-node RabbitMQ cluster (started by `scripts/cluster.sh`, which runs
//! this test with `failover-test`, on the host's 3.x or on 4.0 or 4.3; ignored otherwise). A
//! `wxcourier run` process is given the three nodes; under load, the node it is connected to is
//! stopped (`rabbitmqctl stop`), and after it is back the next one is killed with SIGKILL; then
//! the whole cluster is restarted one node at a time (a rolling restart), the producer still
//! publishing. A job parked in an hour-long delay tier and a rejected job in `wxcourier.dead`
//! must be there after each node loss and each return, and jobs keep going through the short
//! delay tiers throughout. Every job must end with one final outcome, no job may reach WeChat
//! under a second client_msg_id, and the worker must be on another node within seconds of
//! losing its own. Prints the figures `docs/reliability.md` records.

mod cluster_kit;
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use cluster_kit::{Nodes, OutcomeReader, produce};
use common::process::{Binary, OutputWithin, signal, wait_exit};
use common::*;
use lapin::Connection;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use parking_lot::Mutex;
use wxcourier::broker::publish::{Publication, Unroutable, job_properties};
use wxcourier::broker::{DEAD_QUEUE, Publisher, UNROUTED, job_queue, topology};
use wxcourier::retry::Schedule;
use wxcourier::sim::{Answer, DEFAULT_APPID, Faults, SimOptions, Simulator};

/// Jobs per second the producer publishes, from the start until after the last step.
const RATE: f64 = 80.0;
/// Jobs done before the first step.
const WARM_UP: usize = 1200;
/// How long the producer goes on after the last step, so the cluster is seen under load once
/// every node is back.
const COOL_DOWN: Duration = Duration::from_secs(10);
/// The most jobs a run may publish (WeChat is told in advance which to answer busy).
const MAX_JOBS: usize = 60_000;
/// The worker's send rate: a little above the producer's, so a backlog after a failover drains.
const WORKER_RATE: u32 = 110;
/// Every this many jobs, WeChat answers the first send `-1` (busy): the job waits in a short
/// delay tier and is sent on its second try, so retries flow through the tiers at every step.
const BUSY_EVERY: usize = 100;
/// The tier the parked job waits in: `retry.max_pause`'s default, where a job waits out an
/// hour-long quota pause. It outlasts the run, so the job must still be there at the end.
const PARKED_TIER: Duration = Duration::from_secs(3600);
/// Retry copies are published here and routed to their tier by the `wxcourier-delay` header.
const RETRY_EXCHANGE: &str = "wxcourier.retry";

/// The three nodes' AMQP URLs, as `scripts/cluster.sh urls` gives them.
fn cluster_urls() -> Vec<String> {
    let urls = std::env::var("CLUSTER_AMQP_URLS")
        .expect("run through scripts/cluster.sh failover-test (CLUSTER_AMQP_URLS unset)");
    urls.split(',').map(str::to_owned).collect()
}

/// The AMQP port in a node's URL (`amqp://guest:guest@127.0.0.1:5681/%2f`).
fn port_of(url: &str) -> String {
    let authority = url.split('/').nth(2).expect("amqp://HOST:PORT/…");
    authority.rsplit_once(':').expect("a port").1.to_owned()
}

/// `scripts/cluster.sh ARGS` on the cluster this run was started for (the script passes its
/// series down in `RABBITMQ_CLUSTER_SERIES`).
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
fn connected_node(pid: u32, ports: &[String]) -> Option<usize> {
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
            let port = peer.rsplit_once(':')?.1;
            ports.iter().position(|p| p == port).map(|i| i + 1)
        })
}

/// Members of the quorum queue `queue`, and how many of them are online, as node `via` sees
/// it; `None` while that node does not list it yet.
fn quorum_members(queue: &str, via: usize) -> Option<(usize, usize)> {
    let json = cluster(&[
        "ctl",
        &via.to_string(),
        "list_queues",
        "name",
        "type",
        "members",
        "online",
        "--formatter",
        "json",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(json.trim()).unwrap();
    let row = rows.iter().find(|r| r["name"] == queue)?;
    assert_eq!(row["type"], "quorum");
    let count = |k: &str| row[k].as_array().map_or(0, Vec::len);
    Some((count("members"), count("online")))
}

/// Waits until all three members of each of `queues` are online.
fn all_members_online(queues: &[String], via: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for queue in queues {
        loop {
            let got = quorum_members(queue, via);
            if let Some((members, online)) = got {
                assert_eq!(members, 3, "{queue} keeps three members");
                if online == 3 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{queue}: (members, online) {got:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
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
    fn start(pid: u32, ports: Vec<String>) -> Self {
        let first = connected_node(pid, &ports);
        let changes = Arc::new(Mutex::new(vec![(SystemTime::now(), first)]));
        let done = Arc::new(AtomicBool::new(false));
        let (log, stop) = (changes.clone(), done.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let now = connected_node(pid, &ports);
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
    /// The most send attempts any outcome of a job reported.
    attempts: HashMap<String, u64>,
    /// Every outcome's `finished_at`: when the worker decided it.
    finished: Vec<SystemTime>,
    /// Outcomes marked `duplicate: true` (a redelivered job already sent).
    marked_duplicate: usize,
    /// Outcomes the test's own reader got twice because its node went before its ack: the
    /// same message, not a second outcome from the worker.
    reader_redeliveries: usize,
    bodies: HashSet<String>,
}

impl Seen {
    /// Reads outcomes until `until` jobs have one or none came for `idle`.
    async fn read(&mut self, r: &mut OutcomeReader, until: usize, idle: Duration) {
        self.read_by(r, until, idle, None).await;
    }

    /// Reads the outcomes that come within `span` (outcomes may flow without a pause for
    /// minutes, so waiting for a quiet moment could wait that long).
    async fn read_for(&mut self, r: &mut OutcomeReader, span: Duration) {
        self.read_by(r, usize::MAX, span, Some(Instant::now() + span))
            .await;
    }

    /// As [`Seen::read`], stopping at `by` too.
    async fn read_by(
        &mut self,
        r: &mut OutcomeReader,
        until: usize,
        idle: Duration,
        by: Option<Instant>,
    ) {
        while self.by_id.len() < until {
            let wait = by.map_or(idle, |by| {
                idle.min(by.saturating_duration_since(Instant::now()))
            });
            if wait.is_zero() {
                return;
            }
            let Some(o) = r.next(wait).await else {
                return;
            };
            let text = o.body.to_string();
            if !self.bodies.insert(text) && o.redelivered {
                self.reader_redeliveries += 1;
                continue;
            }
            let o = o.body;
            let at = o["finished_at"].as_str().expect("finished_at");
            let at =
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .expect("finished_at is RFC 3339");
            self.finished.push(at.into());
            self.marked_duplicate += usize::from(o["duplicate"] == true);
            let id = o["id"].as_str().unwrap().to_owned();
            let tries = self.attempts.entry(id.clone()).or_default();
            *tries = (*tries).max(o["attempts"].as_u64().unwrap_or(0));
            self.by_id
                .entry(id)
                .or_default()
                .push(o["status"].as_str().unwrap().to_owned());
        }
    }

    /// Runs `work` (a blocking step such as starting a node) on a thread, reading outcomes
    /// meanwhile so the reader never backs up.
    async fn read_while<T: Send + 'static>(
        &mut self,
        r: &mut OutcomeReader,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let t = std::thread::spawn(work);
        while !t.is_finished() {
            self.read_for(r, Duration::from_millis(100)).await;
        }
        t.join().unwrap()
    }

    /// The longest time between two outcomes the worker decided in `[from - 1 s, from + span]`:
    /// how long the worker stopped finishing jobs around a node loss (a step's own span, so
    /// the next step's gap is not counted twice).
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

/// Messages in `queue`, asked of node `via` alone (a quorum queue answers from its leader,
/// wherever that is).
async fn queue_len_via(urls: &[String], via: usize, queue: &str) -> u32 {
    let conn = Nodes(vec![urls[via - 1].clone()])
        .connect("wxcourier cluster test check")
        .await;
    let n = queue_len(&conn, queue).await;
    let _ = conn.close(200, "checked".into()).await;
    n
}

/// The job and outcome queues of earlier runs that failed before their cleanup: they would
/// load the cluster for nothing.
fn leftover_queues() -> Vec<String> {
    let json = cluster(&["ctl", "1", "list_queues", "name", "--formatter", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(json.trim()).unwrap();
    rows.iter()
        .filter_map(|r| r["name"].as_str())
        .filter(|n| {
            n.starts_with("wxcourier.test.outcomes.t_cluster_")
                || n.starts_with(&job_queue("t_cluster_"))
        })
        .map(str::to_owned)
        .collect()
}

/// What must outlive every step: the parked job in its hour-long tier and the rejected job in
/// `wxcourier.dead`; both queues are the test's alone on this cluster.
async fn assert_kept(urls: &[String], via: usize, parked_queue: &str, when: &str) {
    let parked = queue_len_via(urls, via, parked_queue).await;
    let dead = queue_len_via(urls, via, DEAD_QUEUE).await;
    assert_eq!(
        (parked, dead),
        (1, 1),
        "{when}: the parked job ({parked_queue}) and the dead-lettered one ({DEAD_QUEUE})"
    );
}

/// Publishes the job `id` into the delay tier of `tier`, as the worker publishes a retry copy.
async fn park(publisher: &Publisher, app: &str, id: &str, body: &[u8], tier: Duration) {
    let mut headers = FieldTable::default();
    headers.insert(
        "wxcourier-delay".into(),
        AMQPValue::LongString(LongString::from(format!("{}ms", tier.as_millis()))),
    );
    publisher
        .publish(Publication {
            exchange: RETRY_EXCHANGE,
            routing_key: app,
            body,
            properties: job_properties(id, headers),
            unroutable: Unroutable::Refused,
        })
        .await
        .expect("the parked job lands in its tier");
}

/// Takes the one message out of `queue` and returns its body.
async fn take_one(conn: &Connection, queue: &str) -> Option<Vec<u8>> {
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()?;
    let body = got.delivery.data.clone();
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    let _ = ch.close(200, "taken".into()).await;
    Some(body)
}

/// One node lost: how, which, and what the worker did.
struct Round {
    how: &'static str,
    node: usize,
    /// The worker's node when this one went.
    worker_on: usize,
    /// Where the worker went, when it left, and how long it took, if it was on `node`.
    moved: Option<(usize, SystemTime, Duration)>,
    done_before: usize,
    /// When the step began.
    since: SystemTime,
    /// How long it took, until the node was back with every member online.
    took: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: scripts/cluster.sh failover-test"]
async fn losing_and_restarting_every_node_under_load_loses_nothing_and_sends_nothing_twice() {
    let urls = cluster_urls();
    assert_eq!(urls.len(), 3);
    let ports: Vec<String> = urls.iter().map(|u| port_of(u)).collect();
    let series = std::env::var("RABBITMQ_CLUSTER_SERIES").unwrap_or_else(|_| "3".into());
    let version = cluster(&["ctl", "1", "version"]).trim().to_owned();
    eprintln!("cluster: series {series}, RabbitMQ {version}");
    let started = Instant::now();
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    sim.set_faults(Faults {
        latency_ms: 5,
        ..Faults::default()
    });
    let app = unique_app("cluster");
    for i in (0..MAX_JOBS).step_by(BUSY_EVERY) {
        sim.script(&openid(i), vec![Answer::Code(-1)]);
    }
    // The test's side prefers node 3: rounds 1 and 2 take the worker's node (1, then 2), and
    // the rolling restart takes node 3 too, when this side must move like the worker.
    let ours = Nodes(vec![urls[2].clone(), urls[0].clone(), urls[1].clone()]);
    let setup = ours.connect("wxcourier cluster test setup").await;

    let ch = setup.create_channel().await.unwrap();
    for q in leftover_queues() {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    // The worker's tiers and the parked job's, declared as the worker declares them.
    let settings = settings(&app, &sim);
    let mut tiers = Schedule::new(&settings.retry).tiers().to_vec();
    tiers.push(PARKED_TIER);
    topology::declare_all(&setup, std::slice::from_ref(&app), &tiers)
        .await
        .unwrap();
    let tier_queues: Vec<String> = tiers
        .iter()
        .map(|t| format!("{RETRY_EXCHANGE}.{}ms", t.as_millis()))
        .collect();
    let parked_queue = tier_queues.last().unwrap().clone();
    for q in [parked_queue.as_str(), DEAD_QUEUE] {
        // Left by an earlier run that failed before its cleanup.
        ch.queue_purge(q.into(), QueuePurgeOptions::default())
            .await
            .unwrap();
    }
    let mut watched = vec![job_queue(&app), parked_queue.clone(), DEAD_QUEUE.to_owned()];
    let mut reader = OutcomeReader::open(&setup, ours.clone(), &app).await;
    watched.push(reader.queue.clone());
    all_members_online(&watched, 3);

    // The parked job, and a job the worker rejects (no template) into wxcourier.dead.
    let publisher = Publisher::open(&setup, Duration::from_secs(5))
        .await
        .unwrap();
    let parked_id = format!("{app}-parked");
    let parked_body = serde_json::to_vec(&job(&parked_id, &openid(MAX_JOBS + 1))).unwrap();
    park(&publisher, &app, &parked_id, &parked_body, PARKED_TIER).await;
    let bad_id = format!("{app}-bad");
    let mut bad = job(&bad_id, &openid(MAX_JOBS + 2));
    bad.as_object_mut().unwrap().remove("template_id");
    publisher
        .publish_job(
            &app,
            &bad_id,
            &serde_json::to_vec(&bad).unwrap(),
            FieldTable::default(),
        )
        .await
        .unwrap();

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
    let watch = NodeWatch::start(worker.0.id(), ports.clone());
    let stop_producing = Arc::new(AtomicBool::new(false));
    let producer = produce(
        ours.clone(),
        app.clone(),
        RATE,
        {
            let app = app.clone();
            move |i| {
                assert!(i < MAX_JOBS, "the run is slower than it was made for");
                let id = format!("{app}-{i}");
                let body = serde_json::to_vec(&job(&id, &openid(i))).unwrap();
                (id, body)
            }
        },
        stop_producing.clone(),
    );

    let mut seen = Seen::default();
    seen.read(&mut reader, 1, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.by_id.contains_key(&bad_id) {
        assert!(Instant::now() < deadline, "the bad job has its outcome");
        seen.read(&mut reader, seen.by_id.len() + 1, Duration::from_secs(1))
            .await;
    }
    assert_eq!(seen.by_id[&bad_id], ["rejected"]);
    assert_kept(&urls, 3, &parked_queue, "before the first step").await;

    // None: the worker's node. The first two lose it; the last three restart every node in
    // turn, the worker's among them.
    let steps: [(&'static str, Option<usize>, usize); 5] = [
        ("stop-node", None, WARM_UP),
        ("kill-node", None, 0),
        ("stop-node", Some(1), 0),
        ("stop-node", Some(2), 0),
        ("stop-node", Some(3), 0),
    ];
    let mut rounds = Vec::new();
    for (how, which, after) in steps {
        seen.read(&mut reader, after, Duration::from_secs(60)).await;
        assert!(
            seen.by_id.len() >= after,
            "progress before {how}: {}; worker log:\n{}",
            seen.by_id.len(),
            worker_log()
        );
        assert!(
            !producer.is_finished(),
            "the producer still publishes when {how} comes"
        );
        let done_before = seen.by_id.len();
        let worker_on = watch.current().expect("the worker is connected");
        let node = which.unwrap_or(worker_on);
        if which.is_none() {
            assert_ne!(node, 3, "the worker is not on the test's preferred node");
        }
        let since = SystemTime::now();
        let target = node.to_string();
        let step_started = Instant::now();
        seen.read_while(&mut reader, move || cluster(&[how, &target]))
            .await;
        let down_after = step_started.elapsed();
        let moved = if node == worker_on {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(m) = watch.moved_from(node, since) {
                    break Some(m);
                }
                assert!(
                    Instant::now() < deadline,
                    "the worker never left node {node}"
                );
                seen.read_for(&mut reader, Duration::from_millis(100)).await;
            }
        } else {
            None
        };
        let other = node % 3 + 1;
        assert_kept(&urls, other, &parked_queue, &format!("{how} {node}, down")).await;
        match moved {
            Some((to, _, took)) => eprintln!(
                "cluster: {how} {node} with {done_before} jobs done (down in {:.1}s); the worker \
                 was on node {to} {:.2}s after losing node {node}",
                down_after.as_secs_f64(),
                took.as_secs_f64()
            ),
            None => eprintln!(
                "cluster: {how} {node} with {done_before} jobs done (down in {:.1}s); the worker \
                 stayed on node {worker_on}",
                down_after.as_secs_f64()
            ),
        }
        if let Some((_, _, took)) = moved {
            assert!(
                took < Duration::from_secs(10),
                "moved within seconds: {took:?}\n{}",
                worker_log()
            );
        }
        let (target, queues) = (node.to_string(), watched.clone());
        let back_started = Instant::now();
        let (started_in, online_in) = seen
            .read_while(&mut reader, move || {
                let t = Instant::now();
                cluster(&["start-node", &target]);
                let started_in = t.elapsed();
                all_members_online(&queues, other);
                (started_in, t.elapsed() - started_in)
            })
            .await;
        assert_kept(&urls, node, &parked_queue, &format!("{how} {node}, back")).await;
        eprintln!(
            "cluster: node {node} back in {:.1}s (booted {:.1}s, every member online {:.1}s \
             later), checks {:.1}s",
            back_started.elapsed().as_secs_f64(),
            started_in.as_secs_f64(),
            online_in.as_secs_f64(),
            (step_started.elapsed() - down_after - back_started.elapsed()).as_secs_f64()
        );
        rounds.push(Round {
            how,
            node,
            worker_on,
            moved,
            done_before,
            since,
            took: step_started.elapsed(),
        });
    }
    tokio::time::sleep(COOL_DOWN).await;
    stop_producing.store(true, Ordering::SeqCst);
    let (ids, published_again) = producer.await.unwrap();
    let jobs = ids.len();
    // The setup connection went with node 3 in the rolling restart.
    drop(publisher);
    let setup = ours.connect("wxcourier cluster test checks").await;
    seen.read(&mut reader, jobs + 1, Duration::from_secs(60))
        .await;
    let elapsed = started.elapsed();

    // Every job ended, once: all its outcomes (a redelivery may repeat one) are the same.
    assert_eq!(
        seen.by_id.len(),
        jobs + 1,
        "every job has an outcome\n{}",
        worker_log()
    );
    assert!(
        seen.by_id
            .keys()
            .all(|id| ids.contains(id) || *id == bad_id)
    );
    assert!(!seen.by_id.contains_key(&parked_id), "the parked job waits");
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for (id, got) in &seen.by_id {
        assert!(got.iter().all(|s| *s == got[0]), "{id}: {got:?}");
        *statuses.entry(got[0].clone()).or_default() += 1;
    }
    assert_eq!(statuses.get("sent"), Some(&jobs), "{statuses:?}");
    assert_eq!(statuses.get("rejected"), Some(&1), "{statuses:?}");
    // Each job WeChat first answered busy went round a delay tier and was sent on a later try.
    let retried: Vec<String> = (0..jobs)
        .step_by(BUSY_EVERY)
        .map(|i| format!("{app}-{i}"))
        .collect();
    for id in &retried {
        assert!(
            seen.attempts[id] >= 2,
            "{id}: {} attempts",
            seen.attempts[id]
        );
    }
    // WeChat saw each job under its own id only, and accepted it once.
    let mut ids_per_user: HashMap<String, HashSet<String>> = HashMap::new();
    for s in sim.sends() {
        ids_per_user.entry(s.touser.clone()).or_default().insert(
            s.client_msg_id
                .clone()
                .expect("every send has a client_msg_id"),
        );
    }
    assert_eq!(ids_per_user.len(), jobs);
    assert!(
        ids_per_user.values().all(|c| c.len() == 1),
        "no job under two client_msg_ids"
    );
    assert_each_job_accepted_once(&sim, &ids);
    let stats = &sim.stats().apps[DEFAULT_APPID];
    assert_eq!(
        queue_len(&setup, &job_queue(&app)).await,
        0,
        "nothing left in the job queue"
    );

    // The parked job and the rejected one, unchanged, after every step.
    assert_eq!(
        take_one(&setup, &parked_queue).await.as_deref(),
        Some(parked_body.as_slice()),
        "the parked job is still in its tier"
    );
    let dead = take_matching(&setup, DEAD_QUEUE, &app).await;
    assert_eq!(dead.len(), 1, "one job in {DEAD_QUEUE}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&dead[0].0).unwrap(),
        bad,
        "the rejected job is kept unchanged"
    );

    let outcomes = seen.finished.len();
    let figures = serde_json::json!({
        "series": series,
        "rabbitmq": version,
        "jobs": jobs,
        "producer_rate_per_s": RATE,
        "published_again": published_again,
        "outcomes": outcomes,
        "repeated_outcomes": outcomes - jobs - 1,
        "outcomes_marked_duplicate": seen.marked_duplicate,
        "reader_redeliveries": seen.reader_redeliveries,
        "statuses": statuses,
        "retried_through_tiers": retried.len(),
        "wechat_send_calls": stats.send_calls,
        "wechat_accepted": stats.accepted,
        "wechat_duplicates_refused": stats.duplicates,
        "rounds": rounds.iter().map(|r| serde_json::json!({
            "how": r.how, "node": r.node, "worker_on": r.worker_on, "done_before": r.done_before,
            "moved_to": r.moved.map(|m| m.0),
            "moved_after_s": r.moved.map(|m| (m.2.as_secs_f64() * 100.0).round() / 100.0),
            "step_s": (r.took.as_secs_f64() * 10.0).round() / 10.0,
            "longest_outcome_gap_s":
                (seen.longest_gap(r.since, r.took).as_secs_f64() * 100.0).round() / 100.0,
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
    drop(reader);
    // Every queue this test declared; the cluster is the test's alone.
    let ch = setup.create_channel().await.unwrap();
    let mut created = tier_queues;
    created.extend(watched);
    created.extend([UNROUTED.to_owned()]);
    created.sort();
    created.dedup();
    for q in created {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    sim.stop();
}
