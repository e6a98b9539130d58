//! The test's own side of a cluster whose every node is restarted in turn: a producer and an
//! outcome reader that move to another node when theirs goes, as a real producer and result
//! consumer would, so `tests/cluster.rs` keeps jobs and outcomes flowing through a rolling
//! restart.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::Connection;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wxcourier::broker::publish::{Publication, Unroutable, job_properties};
use wxcourier::broker::{self, JOBS_EXCHANGE, Publisher};
use wxcourier::config::AmqpSettings;
use wxcourier::types::Secret;

/// Where every outcome goes out (`STATUS.APP`).
const RESULTS_EXCHANGE: &str = "wxcourier.results";

/// Some of the cluster's nodes, in the order this side tries them.
#[derive(Clone)]
pub struct Nodes(pub Vec<String>);

impl Nodes {
    /// A connection to the first of these nodes that answers, tried again for up to a minute
    /// while none does.
    pub async fn connect(&self, name: &str) -> Connection {
        let settings = AmqpSettings {
            url: Secret::new(self.0.join(",")),
            ..AmqpSettings::default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match broker::connect(&settings, name).await {
                Ok(conn) => return conn,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no node answered for 60 s: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Closes a connection this side is leaving, without waiting on a node that is gone.
async fn leave(conn: Connection) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "moving on".into())).await;
}

/// Publishes jobs for `app` at `rate` per second (`make(i)` gives the i-th job's id and body)
/// with confirms, through the first node that answers, until `stop` is set. A job whose confirm
/// does not come is published again under the same id, on a new connection: at worst one more
/// outcome for it. Returns the ids and how many publishes were repeated.
pub fn produce(
    nodes: Nodes,
    app: String,
    rate: f64,
    make: impl Fn(usize) -> (String, Vec<u8>) + Send + 'static,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(HashSet<String>, u32)> {
    tokio::spawn(async move {
        let mut link: Option<(Connection, Publisher)> = None;
        let start = Instant::now();
        let mut ids = HashSet::new();
        let mut again = 0u32;
        for i in 0.. {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            let (id, body) = make(i);
            loop {
                let (conn, publisher) = match link.take() {
                    Some(open) => open,
                    None => {
                        let conn = nodes.connect("wxcourier cluster test producer").await;
                        match Publisher::open(&conn, Duration::from_secs(5)).await {
                            Ok(p) => (conn, p),
                            Err(_) => {
                                leave(conn).await;
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                        }
                    }
                };
                let msg = Publication {
                    exchange: JOBS_EXCHANGE,
                    routing_key: &app,
                    body: &body,
                    properties: job_properties(&id, FieldTable::default()),
                    unroutable: Unroutable::Refused,
                };
                match publisher.publish(msg).await {
                    Ok(_) => {
                        link = Some((conn, publisher));
                        break;
                    }
                    Err(e) => {
                        again += 1;
                        assert!(again < 1000, "the producer keeps failing: {e}");
                        leave(conn).await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            ids.insert(id);
        }
        if let Some((conn, _)) = link {
            leave(conn).await;
        }
        (ids, again)
    })
}

/// One outcome as the reader got it.
pub struct Outcome {
    pub body: serde_json::Value,
    /// The broker delivered it before, to a reader whose node went before its ack arrived.
    pub redelivered: bool,
}

/// Reads `app`'s outcomes from a durable quorum queue of the test's own, bound to the results
/// exchange: outcomes published while the reader moves to another node wait there for it.
pub struct OutcomeReader {
    rx: mpsc::UnboundedReceiver<Outcome>,
    task: JoinHandle<()>,
    pub queue: String,
}

impl OutcomeReader {
    /// Declares the queue on `setup` (so no outcome comes before it exists) and starts reading.
    pub async fn open(setup: &Connection, nodes: Nodes, app: &str) -> Self {
        let queue = format!("wxcourier.test.outcomes.{app}");
        let pattern = format!("*.{app}");
        let ch = setup.create_channel().await.unwrap();
        declare(&ch, &queue, &pattern).await.unwrap();
        let _ = ch.close(200, "declared".into()).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let name = queue.clone();
        let task = tokio::spawn(async move {
            while !tx.is_closed() {
                let conn = nodes.connect("wxcourier cluster test outcomes").await;
                if let Err(e) = consume(&conn, &name, &pattern, &tx).await {
                    eprintln!("cluster: the outcome reader moves on: {e}");
                }
                leave(conn).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self { rx, task, queue }
    }

    /// The next outcome, or `None` if none comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Outcome> {
        tokio::time::timeout(wait, self.rx.recv()).await.ok()?
    }
}

impl Drop for OutcomeReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn declare(ch: &lapin::Channel, queue: &str, pattern: &str) -> lapin::Result<()> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(queue.into(), durable, args).await?;
    ch.queue_bind(
        queue.into(),
        RESULTS_EXCHANGE.into(),
        pattern.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// Passes on every outcome until the connection or its node goes; each is acked once it is
/// passed on, so one lost with the node comes again (marked redelivered).
async fn consume(
    conn: &Connection,
    queue: &str,
    pattern: &str,
    tx: &mpsc::UnboundedSender<Outcome>,
) -> lapin::Result<()> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(200, BasicQosOptions::default()).await?;
    declare(&ch, queue, pattern).await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "cluster-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let body = serde_json::from_slice(&delivery.data).expect("an outcome is JSON");
        let outcome = Outcome {
            body,
            redelivered: delivery.redelivered,
        };
        if tx.send(outcome).is_err() {
            return Ok(());
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
