//! A fault-injecting TCP proxy, placed between the worker and one dependency (WeChat, Redis,
//! the broker): switched at runtime, it passes bytes through, delays them, caps the link's
//! bandwidth, holds them (a black hole), or resets a connection part-way through a reply.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What the proxy does to what it carries. The faults combine: a slow link is latency and a
/// bandwidth cap together. The default passes everything through untouched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Each chunk is delivered this long after it arrived, either way.
    pub latency: Duration,
    /// Bytes per second each way, shared by every connection, as on one slow link.
    pub bandwidth: Option<u64>,
    /// A partition: nothing is delivered either way, and a new connection is accepted but does
    /// not reach the target. Once healed, what was held is delivered, as TCP would retransmit
    /// it, to whichever side is still there.
    pub black_hole: bool,
    /// A reply that reaches this many bytes is cut there: the client's connection is reset
    /// (RST). A reply counts from the last request bytes delivered on its connection.
    pub reset_after: Option<u64>,
}

impl LinkFaults {
    pub fn black_hole() -> Self {
        Self {
            black_hole: true,
            ..Self::default()
        }
    }

    pub fn reset_after(bytes: u64) -> Self {
        Self {
            reset_after: Some(bytes),
            ..Self::default()
        }
    }

    pub fn slow(latency: Duration, bytes_per_second: u64) -> Self {
        Self {
            latency,
            bandwidth: Some(bytes_per_second),
            ..Self::default()
        }
    }
}

/// What the proxy has done so far, for a test to check that its fault was hit.
#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    resets: AtomicU64,
}

/// Listens on 127.0.0.1 (a free port) and carries each connection to `target`.
pub struct FaultProxy {
    addr: SocketAddr,
    faults: watch::Sender<LinkFaults>,
    counts: Arc<Counts>,
    /// The accept loop and every connection: all end when the proxy is dropped.
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl FaultProxy {
    /// Starts passing everything to `target` (`host:port`).
    pub async fn start(target: impl Into<String>) -> Self {
        let target = target.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = watch::Sender::new(LinkFaults::default());
        let counts = Arc::new(Counts::default());
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let link = Arc::new(Link {
            target,
            faults: faults.clone(),
            upstream: Bucket::default(),
            downstream: Bucket::default(),
            counts: counts.clone(),
        });
        let connections = tasks.clone();
        tasks.lock().unwrap().spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                link.counts.accepted.fetch_add(1, Ordering::Relaxed);
                let mut set = connections.lock().unwrap();
                // Reap the connections that ended, so a long test does not pile them up.
                while set.try_join_next().is_some() {}
                set.spawn(link.clone().carry(client));
            }
        });
        Self {
            addr,
            faults,
            counts,
            tasks,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Applies `faults` from now on, to live connections and new ones.
    pub fn set(&self, faults: LinkFaults) {
        self.faults.send_replace(faults);
    }

    /// Back to passing everything through; anything held is delivered now.
    pub fn heal(&self) {
        self.set(LinkFaults::default());
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    /// Connections reset mid-reply so far.
    pub fn resets(&self) -> u64 {
        self.counts.resets.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

/// What every connection of one proxy shares.
struct Link {
    target: String,
    faults: watch::Sender<LinkFaults>,
    /// The bandwidth cap towards the target, and back.
    upstream: Bucket,
    downstream: Bucket,
    counts: Arc<Counts>,
}

/// Which way a pump carries bytes.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    Request,
    Reply,
}

/// Why a connection ended early.
enum Cut {
    /// A side went away or failed.
    Gone,
    /// The reply reached `reset_after`.
    Reset,
}

/// Most bytes read at once.
const CHUNK: usize = 16 * 1024;

/// Chunks read but not yet delivered, each way; beyond it the pump stops reading and TCP's
/// own flow control holds the sender.
const QUEUED_CHUNKS: usize = 64;

impl Link {
    async fn carry(self: Arc<Self>, mut client: TcpStream) {
        let mut faults = self.faults.subscribe();
        // In a black hole the target must not learn of the connection either.
        if faults.wait_for(|f| !f.black_hole).await.is_err() {
            return;
        }
        let Ok(mut upstream) = TcpStream::connect(&self.target).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        // Reply bytes since the last request bytes went up: where `reset_after` cuts.
        let reply_bytes = AtomicU64::new(0);
        let cut = {
            let (client_in, client_out) = client.split();
            let (up_in, up_out) = upstream.split();
            let request = self.pump(Way::Request, client_in, up_out, &reply_bytes);
            let reply = self.pump(Way::Reply, up_in, client_out, &reply_bytes);
            tokio::try_join!(request, reply).err()
        };
        if let Some(Cut::Reset) = cut {
            self.counts.resets.fetch_add(1, Ordering::Relaxed);
            // SO_LINGER 0: closing sends RST and no FIN, as a middlebox or a crashed peer would.
            let _ = client.set_zero_linger();
        }
    }

    /// Carries one way until the sender closes (then closes that way on), or a cut.
    async fn pump(
        &self,
        way: Way,
        mut from: ReadHalf<'_>,
        mut to: WriteHalf<'_>,
        reply_bytes: &AtomicU64,
    ) -> Result<(), Cut> {
        let (queue, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUED_CHUNKS);
        // Reading stamps each chunk with its arrival, so latency delays every chunk by the same
        // amount instead of adding up.
        let read = async move {
            loop {
                let mut buf = vec![0; CHUNK];
                let n = from.read(&mut buf).await.map_err(|_| Cut::Gone)?;
                buf.truncate(n);
                // An empty chunk is the end of this way.
                if queue.send((Instant::now(), buf)).await.is_err() || n == 0 {
                    return Ok::<(), Cut>(());
                }
            }
        };
        let deliver = async {
            let mut faults = self.faults.subscribe();
            while let Some((arrived, chunk)) = queued.recv().await {
                let latency = faults.borrow().latency;
                tokio::time::sleep_until(arrived + latency).await;
                // Held here, in order, for as long as the black hole lasts.
                if faults.wait_for(|f| !f.black_hole).await.is_err() {
                    return Err(Cut::Gone);
                }
                if chunk.is_empty() {
                    let _ = to.shutdown().await;
                    return Ok(());
                }
                let reset_after = faults.borrow().reset_after;
                let mut chunk = &chunk[..];
                let mut reset = false;
                match way {
                    Way::Request => reply_bytes.store(0, Ordering::Relaxed),
                    Way::Reply => {
                        if let Some(limit) = reset_after {
                            let so_far = reply_bytes.load(Ordering::Relaxed);
                            let room = limit.saturating_sub(so_far) as usize;
                            if chunk.len() >= room {
                                chunk = &chunk[..room];
                                reset = true;
                            }
                        }
                        reply_bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                }
                self.write(way, &mut to, chunk).await?;
                if reset {
                    // The bytes before the cut must leave before the RST, which discards
                    // whatever is still unsent.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return Err(Cut::Reset);
                }
            }
            Ok(())
        };
        tokio::try_join!(read, deliver).map(|_| ())
    }

    /// Writes `chunk` within the bandwidth cap of its way, in slices small enough that the cap
    /// is smooth.
    async fn write(&self, way: Way, to: &mut WriteHalf<'_>, chunk: &[u8]) -> Result<(), Cut> {
        let bucket = match way {
            Way::Request => &self.upstream,
            Way::Reply => &self.downstream,
        };
        let cap = self.faults.borrow().bandwidth;
        let Some(per_second) = cap.filter(|&b| b > 0) else {
            return to.write_all(chunk).await.map_err(|_| Cut::Gone);
        };
        // A slice takes at most 20 ms of the link.
        let slice = (per_second / 50).max(1) as usize;
        for piece in chunk.chunks(slice) {
            bucket.take(piece.len(), per_second).await;
            to.write_all(piece).await.map_err(|_| Cut::Gone)?;
        }
        Ok(())
    }
}

/// One way of the link under a bandwidth cap: each write waits for the time its bytes take
/// on the wire after the writes before it, whichever connection made them.
#[derive(Default)]
struct Bucket {
    free_at: Mutex<Option<Instant>>,
}

impl Bucket {
    async fn take(&self, bytes: usize, per_second: u64) {
        let on_wire = Duration::from_secs_f64(bytes as f64 / per_second as f64);
        let done = {
            let mut free_at = self.free_at.lock().unwrap();
            let start = free_at.map_or(Instant::now(), |t| t.max(Instant::now()));
            let done = start + on_wire;
            *free_at = Some(done);
            done
        };
        tokio::time::sleep_until(done).await;
    }
}
