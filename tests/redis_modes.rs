//! Redis state behind Sentinel and in a Cluster, on Redis processes this test starts, kills and
//! stops itself (in a temporary directory, on ports of its own): the same `State`, with its
//! long-lived connections, reaches the new primary after a Sentinel failover (a manual one, where
//! the old primary answers `READONLY`, then a `kill -9` of the primary), finds a Cluster key
//! whose slot is being moved (`ASK`) and has moved (`MOVED`), reaches the replica a Cluster
//! promotes when a master is killed, and reaches a Cluster that was down when it opened.
//!
//! Needs `redis-server` and `redis-cli`; ignored by default because it kills processes:
//! `cargo test --test redis_modes -- --ignored --test-threads=1`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wxcourier::state::{Claim, Idempotency, Reports, State};

const SENTINEL_PRIMARY: u16 = 6591;
const SENTINEL_REPLICA: u16 = 6592;
const SENTINELS: [u16; 3] = [26591, 26592, 26593];
const CLUSTER: [u16; 3] = [7301, 7302, 7303];
const MASTER: &str = "wxt";

/// The Redis processes of one test, each killed (by its own pid) when dropped.
struct Redises {
    dir: tempfile::TempDir,
    running: Vec<(u16, Child)>,
}

impl Redises {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            running: Vec::new(),
        }
    }

    /// Starts `redis-server` on `port` in a directory of its own, with `args` after the port.
    fn start(&mut self, port: u16, args: &[&str]) {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        self.start_in(
            &dir,
            port,
            &[
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            args,
        );
    }

    fn start_sentinel(&mut self, port: u16) {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        // Sentinels rewrite their config file: each gets one of its own.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor {MASTER} 127.0.0.1 {SENTINEL_PRIMARY} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 5000\n"
            ),
        )
        .unwrap();
        self.start_in(&dir, port, &[conf.to_str().unwrap(), "--sentinel"], &[]);
    }

    fn start_in(&mut self, dir: &Path, port: u16, first: &[&str], rest: &[&str]) {
        let child = Command::new("redis-server")
            .args(first)
            .args(rest)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.running.push((port, child));
        wait_until(
            Duration::from_secs(10),
            &format!("redis on {port} answers"),
            || cli(port, &["PING"]).is_some_and(|o| o == "PONG"),
        );
    }

    /// `kill -9` of the process on `port`.
    fn kill(&mut self, port: u16) {
        let at = self.running.iter().position(|(p, _)| *p == port).unwrap();
        let (_, mut child) = self.running.remove(at);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Redises {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `redis-cli -p PORT ARGS…`, its output trimmed, or None when it failed.
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `GET key` on a Cluster replica (which answers reads only after `READONLY`, on the same
/// connection).
fn replica_get(port: u16, key: &str) -> Option<String> {
    use std::io::Write;
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    writeln!(stdin, "READONLY\nGET {key}").ok()?;
    drop(stdin);
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).map(|l| l.trim().to_owned())
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn app() -> String {
    format!("t_modes_{:08x}", rand::random::<u32>())
}

fn state(url: &str) -> State {
    State::from_url(url, Duration::from_secs(600), 10, Duration::from_secs(30)).unwrap()
}

/// Calls `record_sent` for a new id every 50 ms until one succeeds; how long that took.
async fn until_a_write_succeeds(s: &State, app: &str, id: &str, msgid: u64) -> Duration {
    let start = Instant::now();
    loop {
        if s.record_sent(app, id, Some(msgid), None, None)
            .await
            .is_ok()
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no write succeeded within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The replication state of `port` has `field:value`.
fn replication_says(port: u16, field: &str, value: &str) -> bool {
    cli(port, &["INFO", "replication"])
        .is_some_and(|info| info.lines().any(|l| l.trim() == format!("{field}:{value}")))
}

/// Every sentinel knows the replica and the other sentinels, so a failover can be agreed.
fn sentinels_ready() -> bool {
    SENTINELS.iter().all(|&p| {
        cli(p, &["SENTINEL", "CKQUORUM", MASTER]).is_some_and(|o| o.starts_with("OK"))
            && cli(p, &["SENTINEL", "REPLICAS", MASTER]).is_some_and(|o| !o.is_empty())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts and kills Redis processes: cargo test --test redis_modes -- --ignored"]
async fn the_same_state_follows_the_primary_through_sentinel_failovers() {
    let mut redis = Redises::new();
    redis.start(SENTINEL_PRIMARY, &[]);
    redis.start(
        SENTINEL_REPLICA,
        &["--replicaof", "127.0.0.1", &SENTINEL_PRIMARY.to_string()],
    );
    for p in SENTINELS {
        redis.start_sentinel(p);
    }
    wait_until(
        Duration::from_secs(30),
        "sentinels agree on the set",
        sentinels_ready,
    );

    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/{MASTER}",
        SENTINELS[0], SENTINELS[1], SENTINELS[2]
    );
    let s = state(&url);
    let mode = s.describe().await.unwrap();
    assert_eq!(
        mode,
        format!("sentinel, primary 127.0.0.1:{SENTINEL_PRIMARY} of master {MASTER}")
    );
    let app = app();
    let Claim::Fresh(_) = s.claim(&app, "before").await.unwrap() else {
        panic!("a fresh id")
    };
    s.record_sent(&app, "before", Some(1), None, None)
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), "the replica has the record", || {
        cli(
            SENTINEL_REPLICA,
            &["GET", &format!("wxcourier:{{{app}}}:id:before")],
        )
        .is_some_and(|v| v == "1")
    });

    // A manual failover: the old primary lives on as a replica and refuses writes (READONLY).
    cli(SENTINELS[0], &["SENTINEL", "FAILOVER", MASTER]).unwrap();
    // Until Sentinel demotes the old primary both answer as primaries (what a write then lands
    // on is lost with the demotion: see docs/operations.md, "Persistence"); the test writes
    // once the switch is complete, on the connection it had to the old one.
    wait_until(Duration::from_secs(20), "the replica is promoted", || {
        replication_says(SENTINEL_REPLICA, "role", "master")
            && replication_says(SENTINEL_PRIMARY, "role", "slave")
    });
    let took = until_a_write_succeeds(&s, &app, "after-switch", 2).await;
    eprintln!("manual failover: a write reaches the new primary {took:?} after the switch");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        s.describe().await.unwrap(),
        format!("sentinel, primary 127.0.0.1:{SENTINEL_REPLICA} of master {MASTER}")
    );
    assert_eq!(
        s.claim(&app, "before").await.unwrap(),
        Claim::AlreadySent(Some(1)),
        "what the old primary replicated is on the new one"
    );

    // Now kill -9 the primary (the former replica); Sentinel promotes the former primary.
    wait_until(
        Duration::from_secs(20),
        "the old primary follows the new one",
        || replication_says(SENTINEL_PRIMARY, "master_link_status", "up") && sentinels_ready(),
    );
    wait_until(
        Duration::from_secs(5),
        "the record of the switch is replicated",
        || {
            cli(
                SENTINEL_PRIMARY,
                &["GET", &format!("wxcourier:{{{app}}}:id:after-switch")],
            )
            .is_some_and(|v| v == "2")
        },
    );
    redis.kill(SENTINEL_REPLICA);
    let killed = Instant::now();
    let took = until_a_write_succeeds(&s, &app, "after-kill", 3).await;
    eprintln!(
        "kill -9 of the primary: writes resume {took:?} after it (detection and election included)"
    );
    assert!(killed.elapsed() < Duration::from_secs(15), "{took:?}");
    assert_eq!(
        s.describe().await.unwrap(),
        format!("sentinel, primary 127.0.0.1:{SENTINEL_PRIMARY} of master {MASTER}")
    );
    assert_eq!(
        s.claim(&app, "after-switch").await.unwrap(),
        Claim::AlreadySent(Some(2))
    );
    assert_eq!(
        s.job_for_msgid(&app, 3)
            .await
            .unwrap()
            .map(|j| j.id)
            .as_deref(),
        Some("after-kill")
    );
    assert!(s.health().is_up() || s.ping().await.is_ok());
}

/// A master of the cluster: its id, its port and the slot ranges it serves.
type Master = (String, u16, Vec<(u16, u16)>);

/// Every master, from `CLUSTER NODES`.
fn masters(port: u16) -> Vec<Master> {
    cli(port, &["CLUSTER", "NODES"])
        .unwrap()
        .lines()
        .filter(|l| l.contains("master"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port: u16 = f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            let ranges = f[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (r.parse().unwrap(), r.parse().unwrap()),
                })
                .collect();
            (f[0].to_owned(), port, ranges)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts and kills Redis processes: cargo test --test redis_modes -- --ignored"]
async fn the_same_state_finds_a_key_while_and_after_its_slot_moves() {
    let mut redis = Redises::new();
    for p in CLUSTER {
        let conf = format!("nodes-{p}.conf");
        redis.start(
            p,
            &["--cluster-enabled", "yes", "--cluster-config-file", &conf],
        );
    }
    let nodes: Vec<String> = CLUSTER.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(nodes.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    cli(CLUSTER[0], &create).expect("redis-cli --cluster create");
    wait_until(
        Duration::from_secs(20),
        "the cluster serves every slot",
        || {
            CLUSTER.iter().all(|&p| {
                cli(p, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"))
            })
        },
    );

    let s = state(&format!("redis+cluster://127.0.0.1:{}", CLUSTER[0]));
    assert_eq!(s.describe().await.unwrap(), "cluster with 3 masters");
    let app = app();
    let Claim::Fresh(_) = s.claim(&app, "j1").await.unwrap() else {
        panic!("a fresh id")
    };
    s.record_sent(&app, "j1", Some(11), None, None)
        .await
        .unwrap();

    let id_key = format!("wxcourier:{{{app}}}:id:j1");
    let slot: u16 = cli(CLUSTER[0], &["CLUSTER", "KEYSLOT", &id_key])
        .unwrap()
        .parse()
        .unwrap();
    let all = masters(CLUSTER[0]);
    let (from_id, from_port, _) = all
        .iter()
        .find(|(_, _, r)| r.iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .cloned()
        .unwrap();
    let (to_id, to_port, _) = all.iter().find(|(id, ..)| *id != from_id).cloned().unwrap();
    let slot_arg = slot.to_string();
    cli(
        to_port,
        &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id],
    )
    .unwrap();
    cli(
        from_port,
        &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id],
    )
    .unwrap();
    // Half-way: the id's key moves, its msgid's key stays. The source answers ASK for the id.
    let to_port_arg = to_port.to_string();
    let moved = cli(
        from_port,
        &[
            "MIGRATE",
            "127.0.0.1",
            &to_port_arg,
            "",
            "0",
            "5000",
            "KEYS",
            &id_key,
        ],
    )
    .unwrap();
    assert_eq!(moved, "OK");
    assert_eq!(
        s.claim(&app, "j1").await.unwrap(),
        Claim::AlreadySent(Some(11)),
        "an ASK redirection is followed"
    );
    assert_eq!(
        s.job_for_msgid(&app, 11)
            .await
            .unwrap()
            .map(|j| j.id)
            .as_deref(),
        Some("j1")
    );
    // The rest of the slot moves, and every master learns the new owner.
    let rest = cli(from_port, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, "100"]).unwrap();
    let mut migrate = vec![
        "MIGRATE",
        "127.0.0.1",
        &to_port_arg,
        "",
        "0",
        "5000",
        "KEYS",
    ];
    migrate.extend(rest.lines().filter(|l| !l.is_empty()));
    if migrate.len() > 7 {
        assert_eq!(cli(from_port, &migrate).unwrap(), "OK");
    }
    for p in CLUSTER {
        cli(p, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]).unwrap();
    }
    assert_eq!(
        s.claim(&app, "j1").await.unwrap(),
        Claim::AlreadySent(Some(11)),
        "a MOVED redirection is followed"
    );
    assert_eq!(
        s.job_for_msgid(&app, 11)
            .await
            .unwrap()
            .map(|j| j.id)
            .as_deref(),
        Some("j1")
    );
    let Claim::Fresh(holder) = s.claim(&app, "j2").await.unwrap() else {
        panic!("a fresh id")
    };
    s.release(&app, "j2", holder).await.unwrap();
    s.record_sent(&app, "j3", Some(13), None, None)
        .await
        .unwrap();
    let owner_has: Option<String> = cli(to_port, &["GET", &format!("wxcourier:{{{app}}}:id:j3")]);
    assert_eq!(
        owner_has.as_deref(),
        Some("13"),
        "written on the slot's new owner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts and kills Redis processes: cargo test --test redis_modes -- --ignored"]
async fn the_same_state_reaches_the_promoted_replica_when_a_cluster_master_dies() {
    const PORTS: [u16; 6] = [7311, 7312, 7313, 7314, 7315, 7316];
    let mut redis = Redises::new();
    for p in PORTS {
        let conf = format!("nodes-{p}.conf");
        redis.start(
            p,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "1000",
            ],
        );
    }
    let nodes: Vec<String> = PORTS.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(nodes.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "1", "--cluster-yes"]);
    cli(PORTS[0], &create).expect("redis-cli --cluster create");
    let serving = |ports: &[u16]| {
        ports
            .iter()
            .all(|&p| cli(p, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok")))
    };
    wait_until(
        Duration::from_secs(20),
        "the cluster serves every slot",
        || serving(&PORTS),
    );

    let s = state(&format!(
        "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
        PORTS[0], PORTS[1]
    ));
    let app = app();
    s.record_sent(&app, "before", Some(21), None, None)
        .await
        .unwrap();
    let slot: u16 = cli(
        PORTS[0],
        &[
            "CLUSTER",
            "KEYSLOT",
            &format!("wxcourier:{{{app}}}:id:before"),
        ],
    )
    .unwrap()
    .parse()
    .unwrap();
    let (owner_id, owner_port, _) = masters(PORTS[0])
        .into_iter()
        .find(|(_, _, r)| r.iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .unwrap();
    // Its replica has the record before the master dies.
    let replica_port = PORTS
        .iter()
        .copied()
        .find(|&p| {
            cli(p, &["CLUSTER", "MYID"]).is_some_and(|id| id != owner_id)
                && cli(p, &["INFO", "replication"])
                    .is_some_and(|i| i.contains(&format!("master_port:{owner_port}")))
        })
        .unwrap();
    let key = format!("wxcourier:{{{app}}}:id:before");
    wait_until(Duration::from_secs(5), "the replica has the record", || {
        replica_get(replica_port, &key).is_some_and(|v| v == "21")
    });
    redis.kill(owner_port);
    let killed = Instant::now();
    let took = until_a_write_succeeds(&s, &app, "after", 22).await;
    eprintln!("kill -9 of a cluster master: writes to its slots resume {took:?} after it");
    assert!(killed.elapsed() < Duration::from_secs(15), "{took:?}");
    assert!(replication_says(replica_port, "role", "master"));
    assert_eq!(
        s.claim(&app, "before").await.unwrap(),
        Claim::AlreadySent(Some(21)),
        "the promoted replica has what its master had"
    );
    let live: Vec<u16> = PORTS.iter().copied().filter(|&p| p != owner_port).collect();
    wait_until(
        Duration::from_secs(10),
        "the others see the cluster whole",
        || serving(&live),
    );
    assert_eq!(s.describe().await.unwrap(), "cluster with 3 masters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts and kills Redis processes: cargo test --test redis_modes -- --ignored"]
async fn a_cluster_down_when_the_state_opens_is_reached_once_it_is_up() {
    const PORTS: [u16; 3] = [7321, 7322, 7323];
    let s = state(&format!(
        "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
        PORTS[0], PORTS[1]
    ));
    let app = app();
    assert!(
        s.record_sent(&app, "early", Some(31), None, None)
            .await
            .is_err()
    );
    assert!(!s.health().is_up());

    let mut redis = Redises::new();
    for p in PORTS {
        let conf = format!("nodes-{p}.conf");
        redis.start(
            p,
            &["--cluster-enabled", "yes", "--cluster-config-file", &conf],
        );
    }
    let nodes: Vec<String> = PORTS.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(nodes.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    cli(PORTS[0], &create).expect("redis-cli --cluster create");
    wait_until(
        Duration::from_secs(20),
        "the cluster serves every slot",
        || {
            PORTS.iter().all(|&p| {
                cli(p, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"))
            })
        },
    );
    let took = until_a_write_succeeds(&s, &app, "late", 32).await;
    eprintln!(
        "a cluster that came up after the state opened: first write {took:?} after it served"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(s.describe().await.unwrap(), "cluster with 3 masters");
}
