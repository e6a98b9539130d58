//! `amqp.url` as a list of nodes: two relays in front of the local RabbitMQ stand in for two
//! cluster nodes. The worker uses the first that answers, and when its node goes away it moves
//! to the other within seconds and every job still ends with an outcome. (The real three-node
//! cluster run is `scripts/cluster.sh failover-test`.)

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use wxcourier::types::Secret;

/// Pipes connections on a free port to the test broker (`TEST_AMQP_URL`), until lost.
struct Relay {
    port: u16,
    accepted: Arc<Mutex<Vec<Instant>>>,
    /// Once set, new connections are held open and never answered, like a node that hangs.
    hanging: Arc<AtomicBool>,
    listener: tokio::task::JoinHandle<()>,
    pipes: Arc<Mutex<JoinSet<()>>>,
}

impl Relay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let hanging = Arc::new(AtomicBool::new(false));
        let pipes = Arc::new(Mutex::new(JoinSet::new()));
        let (seen, hang, tasks) = (accepted.clone(), hanging.clone(), pipes.clone());
        let broker_addr = common::amqp_addr();
        let listener = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if hang.load(Ordering::SeqCst) {
                    tasks.lock().spawn(async move {
                        let _held = client;
                        std::future::pending::<()>().await;
                    });
                    continue;
                }
                seen.lock().push(Instant::now());
                let broker_addr = broker_addr.clone();
                tasks.lock().spawn(async move {
                    let Ok(mut broker) = TcpStream::connect(broker_addr).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                });
            }
        });
        Self {
            port,
            accepted,
            hanging,
            listener,
            pipes,
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn connections(&self) -> usize {
        self.accepted.lock().len()
    }

    fn first_connection(&self) -> Option<Instant> {
        self.accepted.lock().first().copied()
    }

    /// The node is lost: every connection through it closes at once, and it goes on accepting
    /// TCP without ever answering AMQP (the worst case: a client that came back to it would
    /// wait for its handshake deadline).
    fn hang(&self) {
        self.hanging.store(true, Ordering::SeqCst);
        self.pipes.lock().abort_all();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.listener.abort();
        self.pipes.lock().abort_all();
    }
}

/// Reads outcomes until every id of `ids` has one; returns each id's statuses.
async fn outcomes_for(t: &mut TestApp, ids: &HashSet<String>) -> HashMap<String, Vec<String>> {
    let mut by_id: HashMap<String, Vec<String>> = HashMap::new();
    while by_id.len() < ids.len() {
        let Some(o) = t.tap.next(Duration::from_secs(30)).await else {
            break;
        };
        let id = o["id"].as_str().unwrap().to_owned();
        by_id
            .entry(id)
            .or_default()
            .push(o["status"].as_str().unwrap().to_owned());
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_is_skipped() {
    let unused = free_port();
    let relay = Relay::start().await;
    let url = format!("amqp://guest:guest@127.0.0.1:{unused}/%2f,{}", relay.url());
    let mut t = spawn_app("skip", |s| s.amqp.url = Secret::new(url)).await;
    let ids = t.publish_numbered(20).await;
    let by_id = outcomes_for(&mut t, &ids).await;
    assert_eq!(by_id.len(), 20);
    assert!(relay.connections() >= 1, "the second node was used");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_connected_node_moves_the_worker_to_the_next_and_every_job_ends() {
    let (a, b) = (Relay::start().await, Relay::start().await);
    let url = format!("{},{}", a.url(), b.url());
    let mut t = spawn_app("failover", |s| {
        s.amqp.url = Secret::new(url);
        s.amqp.prefetch = common::count(20);
    })
    .await;
    // Slow sends keep jobs in flight when the node goes.
    t.sim.set_faults(wxcourier::sim::Faults {
        latency_ms: 20,
        ..Default::default()
    });
    let mut ids = t.publish_numbered(300).await;
    eventually(Duration::from_secs(15), "sends under way", || {
        t.sim.stats().apps[wxcourier::sim::DEFAULT_APPID].accepted >= 50
    })
    .await;
    assert_eq!(
        b.connections(),
        0,
        "the first node answered, so the second is unused"
    );
    let cut = Instant::now();
    a.hang();
    for i in 300..400 {
        let id = format!("{}-{i}", t.app);
        t.publish(&job(&id, &openid(i))).await;
        ids.insert(id);
    }
    let by_id = outcomes_for(&mut t, &ids).await;
    let moved = b.first_connection().expect("the worker moved to node 2") - cut;
    // Back to the hanging node first would wait out the 30 s handshake deadline.
    assert!(moved < Duration::from_secs(5), "moved after {moved:?}");
    eprintln!("moved to node 2 after {moved:?}");
    assert_eq!(by_id.len(), ids.len(), "every job has an outcome");
    for (id, statuses) in &by_id {
        assert!(statuses.iter().all(|s| s == "sent"), "{id}: {statuses:?}");
    }
    // A redelivered job that was already sent is not sent again.
    assert_each_job_accepted_once(&t.sim, &ids);
    assert_eq!(t.ctx.metrics.broker_reconnects.get(), 1);
    t.stop().await;
}
