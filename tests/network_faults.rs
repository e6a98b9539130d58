//! Faults in the network between the worker and each of its dependencies, made by a proxy
//! (`common::proxy`) in front of one of them at a time: WeChat (the simulator) black-holed,
//! reset mid-reply and slowed; Redis black-holed; the broker black-holed while outcomes are in
//! flight. No service is stopped, so these run beside the other tests, on every broker series.
//! Every wait is bounded by the timeouts the test itself sets.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::proxy::{FaultProxy, LinkFaults};
use common::*;
use serde_json::Value;
use wxcourier::sim::{DEFAULT_APPID, SimOptions, Simulator};
use wxcourier::types::Secret;

/// The proxy on its own, against small local servers.
mod proxy_itself {
    use std::io::ErrorKind;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A server that sends back what it reads; it counts the connections that reached it.
    async fn echo_server() -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let reached = Arc::new(AtomicU64::new(0));
        let count = reached.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        (addr, reached)
    }

    /// A server that answers each read with `reply_len` bytes, as a request/reply protocol.
    async fn reply_server(reply_len: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0; 1024];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&vec![b'r'; reply_len]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn read_exactly(conn: &mut TcpStream, n: usize, within: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0; n];
        tokio::time::timeout(within, conn.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf)
    }

    #[tokio::test]
    async fn passing_carries_both_ways_and_the_close() {
        let (target, _) = echo_server().await;
        let proxy = FaultProxy::start(target).await;
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        conn.write_all(b"hello").await.unwrap();
        let back = read_exactly(&mut conn, 5, Duration::from_secs(2)).await;
        assert_eq!(back.as_deref(), Some(&b"hello"[..]));
        conn.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "the close went through and back");
    }

    #[tokio::test]
    async fn latency_delays_each_way() {
        let (target, _) = echo_server().await;
        let proxy = FaultProxy::start(target).await;
        proxy.set(LinkFaults {
            latency: Duration::from_millis(150),
            ..LinkFaults::default()
        });
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        let start = Instant::now();
        conn.write_all(b"ping").await.unwrap();
        let back = read_exactly(&mut conn, 4, Duration::from_secs(2)).await;
        let round_trip = start.elapsed();
        assert_eq!(back.as_deref(), Some(&b"ping"[..]));
        assert!(round_trip >= Duration::from_millis(300), "{round_trip:?}");
        proxy.heal();
        let start = Instant::now();
        conn.write_all(b"pong").await.unwrap();
        read_exactly(&mut conn, 4, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(start.elapsed() < Duration::from_millis(150), "healed");
    }

    #[tokio::test]
    async fn a_black_hole_holds_live_and_new_connections_until_healed() {
        let (target, reached) = echo_server().await;
        let proxy = FaultProxy::start(target).await;
        let mut live = TcpStream::connect(proxy.addr()).await.unwrap();
        live.write_all(b"a").await.unwrap();
        read_exactly(&mut live, 1, Duration::from_secs(2))
            .await
            .unwrap();
        proxy.set(LinkFaults::black_hole());
        live.write_all(b"b").await.unwrap();
        assert!(
            read_exactly(&mut live, 1, Duration::from_millis(400))
                .await
                .is_none(),
            "nothing comes back through the hole"
        );
        // Accepted, as a SYN into a hole looks from the client, but the target never hears of it.
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        new.write_all(b"c").await.unwrap();
        assert!(
            read_exactly(&mut new, 1, Duration::from_millis(400))
                .await
                .is_none()
        );
        assert_eq!(reached.load(Ordering::SeqCst), 1);
        assert_eq!(proxy.accepted(), 2);
        proxy.heal();
        let held = read_exactly(&mut live, 1, Duration::from_secs(2)).await;
        assert_eq!(
            held.as_deref(),
            Some(&b"b"[..]),
            "held bytes go on once healed"
        );
        let held = read_exactly(&mut new, 1, Duration::from_secs(2)).await;
        assert_eq!(held.as_deref(), Some(&b"c"[..]));
        assert_eq!(reached.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_reset_cuts_the_reply_after_n_bytes_with_an_rst() {
        let proxy = FaultProxy::start(reply_server(100).await).await;
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        conn.write_all(b"first").await.unwrap();
        read_exactly(&mut conn, 100, Duration::from_secs(2))
            .await
            .expect("a whole reply while passing");
        proxy.set(LinkFaults::reset_after(30));
        conn.write_all(b"second").await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0; 256];
        let error = loop {
            match tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await {
                Ok(Ok(0)) => panic!("a clean close after {} bytes, not a reset", got.len()),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => break e,
                Err(_) => panic!("no reset within 2 s"),
            }
        };
        assert_eq!(error.kind(), ErrorKind::ConnectionReset);
        assert_eq!(got.len(), 30, "the reply was cut after 30 bytes");
        assert_eq!(proxy.resets(), 1);
    }

    #[tokio::test]
    async fn a_bandwidth_cap_slows_the_link() {
        let (target, _) = echo_server().await;
        let proxy = FaultProxy::start(target).await;
        proxy.set(LinkFaults {
            bandwidth: Some(20_000),
            ..LinkFaults::default()
        });
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        let start = Instant::now();
        conn.write_all(&[7; 10_000]).await.unwrap();
        let back = read_exactly(&mut conn, 10_000, Duration::from_secs(5)).await;
        let took = start.elapsed();
        assert_eq!(back.map(|b| b.len()), Some(10_000));
        // 10 kB at 20 kB/s each way, the two ways overlapping.
        assert!(took >= Duration::from_millis(480), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}

/// The outcomes of a run, by job id.
#[derive(Default)]
struct Outcomes(HashMap<String, Vec<Value>>);

impl Outcomes {
    /// Reads outcomes until every id of `ids` has one (or `limit` passed), then for `linger`
    /// more, to catch any second outcome.
    async fn read(&mut self, h: &mut Harness, ids: &HashSet<String>, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !ids.iter().all(|id| self.0.contains_key(id)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match h.tap.next(left).await {
                Some(o) => self.add(o),
                None => break,
            }
        }
        while let Some(o) = h.tap.next(Duration::from_millis(500)).await {
            self.add(o);
        }
    }

    fn add(&mut self, o: Value) {
        let id = o["id"].as_str().expect("an outcome with an id").to_owned();
        self.0.entry(id).or_default().push(o);
    }

    fn ended(&self) -> usize {
        self.0.len()
    }

    /// Every job of `ids` has exactly one outcome, and it is `sent`; returns the most attempts
    /// any job took.
    fn assert_each_sent_once(&self, ids: &HashSet<String>) -> u64 {
        let missing: Vec<_> = ids.iter().filter(|id| !self.0.contains_key(*id)).collect();
        assert!(missing.is_empty(), "no outcome for {missing:?}");
        let mut most = 0;
        for (id, outcomes) in &self.0 {
            assert!(ids.contains(id), "an outcome for {id}, never published");
            assert_eq!(outcomes.len(), 1, "{id}: {outcomes:?}");
            assert_eq!(outcomes[0]["status"], "sent", "{id}: {:?}", outcomes[0]);
            most = most.max(outcomes[0]["attempts"].as_u64().unwrap_or(0));
        }
        most
    }

    /// Every job of `ids` ended `sent` with one msgid: one first outcome, and any other a
    /// copy marked `duplicate` (a delivery that came back after its job was sent, answered
    /// from the idempotency store; the contract lets a consumer see an outcome twice). Returns
    /// how many such copies there were.
    fn assert_each_sent_with_one_msgid(&self, ids: &HashSet<String>) -> usize {
        let missing: Vec<_> = ids.iter().filter(|id| !self.0.contains_key(*id)).collect();
        assert!(missing.is_empty(), "no outcome for {missing:?}");
        let mut copies = 0;
        for (id, outcomes) in &self.0 {
            assert!(ids.contains(id), "an outcome for {id}, never published");
            let first = outcomes.iter().filter(|o| o["duplicate"] == false).count();
            assert!(first <= 1, "{id}: {outcomes:?}");
            assert!(
                outcomes.iter().all(|o| o["status"] == "sent"),
                "{id}: {outcomes:?}"
            );
            assert!(
                outcomes.iter().all(|o| o["msgid"] == outcomes[0]["msgid"]),
                "{id}: {outcomes:?}"
            );
            copies += outcomes.len() - 1;
        }
        copies
    }

    /// How many jobs needed more than one send.
    fn retried(&self) -> usize {
        self.0
            .values()
            .filter(|o| o[0]["attempts"].as_u64().unwrap_or(0) > 1)
            .count()
    }
}

/// `host:port` of the simulator, for a proxy to forward to.
fn sim_addr(sim: &Simulator) -> String {
    sim.base_url().trim_start_matches("http://").to_owned()
}

/// A simulator behind a proxy, and a worker that reaches WeChat through the proxy only, with
/// `timeout_ms` per call and sends paced at `per_second`.
async fn behind_proxy(prefix: &str, timeout_ms: u64, per_second: f64) -> (TestApp, FaultProxy) {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let proxy = FaultProxy::start(sim_addr(&sim)).await;
    let through = format!("http://{}", proxy.addr());
    let t = spawn_app_on(prefix, sim, |s| {
        s.wechat.base_url = through;
        s.wechat.timeout = nz_ms(timeout_ms);
        s.retry.max_attempts = count(30);
        for app in s.apps.values_mut() {
            app.rate_per_second = rate(per_second);
            app.burst = count(1);
        }
    })
    .await;
    (t, proxy)
}

/// The number of send calls WeChat has received.
fn send_calls(sim: &Simulator) -> u64 {
    sim.stats().apps[DEFAULT_APPID].send_calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_black_holed_sends_time_out_are_retried_and_none_goes_under_another_id() {
    const TIMEOUT_MS: u64 = 400;
    const HOLE: Duration = Duration::from_secs(3);
    let (mut t, proxy) = behind_proxy("nf_wxhole", TIMEOUT_MS, 20.0).await;
    let ids = t.publish_numbered(60).await;
    let mut seen = HashSet::new();
    t.read_until(&mut seen, 10, Duration::from_secs(10)).await;
    proxy.set(LinkFaults::black_hole());
    // Calls already past the proxy may still land; nothing after that.
    tokio::time::sleep(Duration::from_millis(TIMEOUT_MS)).await;
    let before = send_calls(&t.sim);
    tokio::time::sleep(HOLE - Duration::from_millis(TIMEOUT_MS)).await;
    assert_eq!(
        send_calls(&t.sim),
        before,
        "nothing reached WeChat in the hole"
    );
    let healed = Instant::now();
    proxy.heal();
    let rest: HashSet<String> = ids.difference(&seen).cloned().collect();
    let mut outcomes = Outcomes::default();
    outcomes
        .read(&mut t.harness, &rest, Duration::from_secs(15))
        .await;
    let recovered = healed.elapsed();
    assert!(
        outcomes.0.keys().all(|id| !seen.contains(id)),
        "no second outcome for a job that ended before the hole"
    );
    let most = outcomes.assert_each_sent_once(&rest);
    let stats = t.sim.stats().apps[DEFAULT_APPID].clone();
    eprintln!(
        "WeChat black hole {HOLE:?}: {} jobs retried (at most {most} sends each), {} sends \
         accepted, {} late copies de-duplicated by client_msg_id, all ended {recovered:?} \
         after healing",
        outcomes.retried(),
        stats.accepted,
        stats.duplicates
    );
    assert!(outcomes.retried() > 0, "sends in the hole timed out");
    // Some calls that timed out in the hole reach WeChat once it heals, alongside their
    // retries (how many depends on whether the server reads a request before it sees the
    // client's close): the same client_msg_id makes them one message each.
    assert_each_job_accepted_once(&t.sim, &ids);
    assert_one_client_msg_id_per_job(&t.sim.sends());
    assert!(recovered < Duration::from_secs(10), "{recovered:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_reset_mid_reply_is_retried_and_none_goes_twice() {
    const RESETS_FOR: Duration = Duration::from_secs(2);
    let (mut t, proxy) = behind_proxy("nf_wxreset", 1000, 20.0).await;
    let ids = t.publish_numbered(60).await;
    let mut seen = HashSet::new();
    t.read_until(&mut seen, 10, Duration::from_secs(10)).await;
    // Past the status line, inside the headers: WeChat has taken the send when it is cut.
    proxy.set(LinkFaults::reset_after(40));
    tokio::time::sleep(RESETS_FOR).await;
    proxy.heal();
    let rest: HashSet<String> = ids.difference(&seen).cloned().collect();
    let mut outcomes = Outcomes::default();
    outcomes
        .read(&mut t.harness, &rest, Duration::from_secs(15))
        .await;
    let resets = proxy.resets();
    outcomes.assert_each_sent_once(&rest);
    let stats = t.sim.stats().apps[DEFAULT_APPID].clone();
    eprintln!(
        "WeChat reset mid-reply for {RESETS_FOR:?}: {resets} replies cut, {} jobs retried, {} \
         sends accepted, {} re-sends de-duplicated by client_msg_id",
        outcomes.retried(),
        stats.accepted,
        stats.duplicates
    );
    assert!(resets > 0, "replies were cut");
    assert!(outcomes.retried() > 0);
    // Every cut reply was to a send WeChat had accepted: its retry was a duplicate.
    assert!(stats.duplicates > 0);
    assert_each_job_accepted_once(&t.sim, &ids);
    assert_one_client_msg_id_per_job(&t.sim.sends());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_over_a_slow_link_keeps_one_message_per_job() {
    const LATENCY: Duration = Duration::from_millis(200);
    // About four sends a second fit through; six are asked for, so the queue on the link
    // grows and some calls outlast their timeout.
    const BANDWIDTH: u64 = 3_000;
    let (mut t, proxy) = behind_proxy("nf_wxslow", 1000, 5.0).await;
    proxy.set(LinkFaults::slow(LATENCY, BANDWIDTH));
    let started = Instant::now();
    let ids = t.publish_numbered(30).await;
    let mut outcomes = Outcomes::default();
    outcomes
        .read(&mut t.harness, &ids, Duration::from_secs(20))
        .await;
    let took = started.elapsed();
    let most = outcomes.assert_each_sent_once(&ids);
    let stats = t.sim.stats().apps[DEFAULT_APPID].clone();
    eprintln!(
        "WeChat over a slow link ({LATENCY:?} each way, {BANDWIDTH} B/s): 30 jobs in {took:?}, \
         {} retried (at most {most} sends each), {} sends, {} de-duplicated by client_msg_id",
        outcomes.retried(),
        stats.send_calls,
        stats.duplicates
    );
    assert_each_job_accepted_once(&t.sim, &ids);
    assert_one_client_msg_id_per_job(&t.sim.sends());
    proxy.heal();
    t.stop().await;
}

/// `GET /readyz` on `port`: its status, or `None` when it does not answer in a second.
async fn readyz(port: u16) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let answer = client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await;
    answer.ok().map(|r| r.status().as_u16())
}

/// Each call the worker makes to Redis gives up after this long (`CALL_TIMEOUT` in
/// `src/state/redis.rs`).
const REDIS_CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_black_holed_pauses_sending_turns_readyz_503_and_resumes_by_itself() {
    const JOBS: usize = 200;
    const HOLE: Duration = Duration::from_secs(5);
    const WECHAT_TIMEOUT: Duration = Duration::from_secs(1);
    // A claim on a job id lasts 3 × wechat.timeout + 30 s unless renewed or released
    // (`claim_ttl` in `src/startup.rs`). A claim whose SET reached Redis only after the worker
    // had given up on it holds its job back that long.
    let claim_ttl = WECHAT_TIMEOUT * 3 + Duration::from_secs(30);
    let proxy = FaultProxy::start("127.0.0.1:6379").await;
    let port = free_port();
    let mut t = spawn_app("nf_redishole", |s| {
        s.state.url = Secret::new(format!("redis://127.0.0.1:{}/", proxy.port()));
        s.http.listen = Some(format!("127.0.0.1:{port}"));
        s.wechat.timeout = nz_ms(WECHAT_TIMEOUT.as_millis() as u64);
        for app in s.apps.values_mut() {
            app.rate_per_second = rate(40.0);
            app.burst = count(1);
        }
    })
    .await;
    let ids = t.publish_numbered(JOBS).await;
    let mut seen = HashSet::new();
    t.read_until(&mut seen, 40, Duration::from_secs(10)).await;
    assert_eq!(readyz(port).await, Some(200));

    let cut = Instant::now();
    proxy.set(LinkFaults::black_hole());
    let mut calls = send_calls(&t.sim);
    let mut last_send = Duration::ZERO;
    let mut not_ready: Option<Duration> = None;
    while cut.elapsed() < HOLE {
        let now = send_calls(&t.sim);
        if now != calls {
            calls = now;
            last_send = cut.elapsed();
        }
        if not_ready.is_none() && readyz(port).await == Some(503) {
            not_ready = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(readyz(port).await, Some(503), "still not ready in the hole");
    let not_ready = not_ready.expect("/readyz turned 503 in the hole");
    let slack = Duration::from_millis(500);
    assert!(
        not_ready <= REDIS_CALL_TIMEOUT + slack,
        "/readyz 503 after {not_ready:?}"
    );
    assert!(
        last_send <= REDIS_CALL_TIMEOUT + slack,
        "sending stopped {last_send:?} after the hole opened"
    );

    let healed = Instant::now();
    proxy.heal();
    let mut ready_again = None;
    let mut sending_again = None;
    while (ready_again.is_none() || sending_again.is_none())
        && healed.elapsed() < REDIS_CALL_TIMEOUT * 3
    {
        if ready_again.is_none() && readyz(port).await == Some(200) {
            ready_again = Some(healed.elapsed());
        }
        if sending_again.is_none() && send_calls(&t.sim) != calls {
            sending_again = Some(healed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_again = ready_again.expect("/readyz 200 again by itself");
    let sending_again = sending_again.expect("sending resumed by itself");
    let rest: HashSet<String> = ids.difference(&seen).cloned().collect();
    let mut outcomes = Outcomes::default();
    let most = claim_ttl + Duration::from_secs(5);
    outcomes.read(&mut t.harness, &rest, most).await;
    let copies = outcomes.assert_each_sent_with_one_msgid(&rest);
    eprintln!(
        "Redis black hole {HOLE:?}: /readyz 503 after {not_ready:?}, last send {last_send:?} \
         after the cut; healed: ready after {ready_again:?}, sending after {sending_again:?}, \
         all {JOBS} ended {:?} after healing, {copies} outcomes published twice",
        healed.elapsed()
    );
    assert!(
        outcomes.0.keys().all(|id| !seen.contains(id)),
        "no second outcome for a job that ended before the hole"
    );
    // The broker is healthy here: a second outcome could only come from a second delivery.
    // With one consumer tag for every round, RabbitMQ 3.10 delivered the unacked jobs of the
    // round before the outage again (0-11 a run), each answered `duplicate`.
    assert_eq!(copies, 0, "a job delivered twice across the pause");
    assert_each_job_accepted_once(&t.sim, &ids);
    assert_one_client_msg_id_per_job(&t.sim.sends());
    t.stop().await;
}

/// The test broker's URL with the proxy in place of its host and port, and `heartbeat` (in
/// seconds) asked for.
fn broker_url_through(proxy: &FaultProxy, heartbeat: u16) -> String {
    let url = amqp_url();
    let addr = amqp_addr();
    assert!(url.contains(&addr), "TEST_AMQP_URL names its port");
    let url = url.replacen(&addr, &proxy.addr().to_string(), 1);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}heartbeat={heartbeat}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_black_holed_with_outcomes_in_flight_acks_nothing_unconfirmed_and_reconnects() {
    const JOBS: usize = 300;
    const HEARTBEAT_S: u16 = 1;
    // Both ends give up on a connection after two heartbeats without a byte from the other.
    let detect = Duration::from_secs(2 * u64::from(HEARTBEAT_S));
    let proxy = FaultProxy::start(amqp_addr()).await;
    let url = broker_url_through(&proxy, HEARTBEAT_S);
    let mut t = spawn_app("nf_brokerhole", |s| {
        s.amqp.url = Secret::new(url);
        s.amqp.publish_timeout = nz_ms(1000);
        s.amqp.prefetch = count(50);
        for app in s.apps.values_mut() {
            app.rate_per_second = rate(60.0);
        }
    })
    .await;
    // Slow sends keep jobs, and so their outcomes, in flight when the hole opens.
    t.sim.set_faults(wxcourier::sim::Faults {
        latency_ms: 100,
        ..Default::default()
    });
    let ids = t.publish_numbered(JOBS).await;
    let mut outcomes = Outcomes::default();
    while outcomes.ended() < 60 {
        let o = t
            .tap
            .next(Duration::from_secs(10))
            .await
            .expect("jobs flow");
        outcomes.add(o);
    }
    let cut = Instant::now();
    proxy.set(LinkFaults::black_hole());
    // The broker notices the silent client and takes its deliveries back.
    let queue = wxcourier::broker::job_queue(&t.app);
    let ch = t.conn.create_channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let queued = loop {
        let q = ch
            .queue_declare(queue.as_str().into(), passive, Default::default())
            .await
            .unwrap();
        if q.consumer_count() == 0 {
            break q.message_count() as usize;
        }
        assert!(
            cut.elapsed() < detect * 3,
            "the broker still had the worker's consumer after {:?}",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dropped = cut.elapsed();
    // What the worker published before the hole is all here by now.
    while let Some(o) = t.tap.next(Duration::from_millis(300)).await {
        outcomes.add(o);
    }
    let ended = outcomes.ended();
    assert!(
        ended + queued >= JOBS,
        "{ended} jobs have an outcome and {queued} are queued, of {JOBS}: a job was acked \
         without its outcome"
    );
    // Stay cut off past the worker's own heartbeat deadline, so it gives up the connection too.
    tokio::time::sleep((detect + Duration::from_secs(1)).saturating_sub(cut.elapsed())).await;
    let healed = Instant::now();
    proxy.heal();
    outcomes
        .read(&mut t.harness, &ids, Duration::from_secs(20))
        .await;
    let recovered = healed.elapsed();
    let extra = outcomes.assert_each_sent_with_one_msgid(&ids);
    eprintln!(
        "broker black hole: the broker dropped the worker after {dropped:?} with {ended} \
         jobs ended and {queued} back in the queue; healed: all {JOBS} ended {recovered:?} \
         later, {extra} outcomes published twice, {} reconnects",
        t.ctx.metrics.broker_reconnects.get()
    );
    assert!(
        t.ctx.metrics.broker_reconnects.get() >= 1,
        "the worker reconnected"
    );
    // A job whose outcome was confirmed but whose ack the hole swallowed came back and got a
    // second `sent`, marked duplicate (checked above).
    assert_eq!(t.queued().await, 0);
    assert_each_job_accepted_once(&t.sim, &ids);
    let _ = ch.close(200, "done".into()).await;
    t.stop().await;
}
