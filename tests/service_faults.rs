//! The broker or Redis goes away mid-load: nothing is lost. These tests stop and restart
//! RabbitMQ's app and Redis, so they run alone, after every other test (see
//! `scripts/test.sh`), and always leave both running.
//!
//! The broker is the one `TEST_AMQP_URL` names; `TEST_RABBITMQCTL` is the command that
//! controls that same broker (e.g. `scripts/rabbitmq4.sh ctl` for the 4.x one), and must be
//! set whenever `TEST_AMQP_URL` is, so a test never stops one broker while loading another.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use wxcourier::sim::{DEFAULT_APPID, Faults};

const JOBS: usize = 400;

/// `rabbitmqctl`, or the command in `TEST_RABBITMQCTL`, for the broker under test.
fn rabbitmqctl(args: &[&str]) -> String {
    let ctl = std::env::var("TEST_RABBITMQCTL").unwrap_or_default();
    assert!(
        !ctl.trim().is_empty()
            || std::env::var("TEST_AMQP_URL")
                .unwrap_or_default()
                .is_empty(),
        "TEST_AMQP_URL is set: set TEST_RABBITMQCTL to the command that controls that broker"
    );
    let mut words = ctl.split_whitespace();
    let program = words.next().unwrap_or("rabbitmqctl");
    let out = Command::new(program)
        .args(words)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The broker's memory watermark now, so the alarm test can put it back (3.x and 4.x differ).
fn memory_watermark() -> String {
    let out = rabbitmqctl(&["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."]);
    let value = out.trim();
    if value.parse::<f64>().is_ok_and(|v| v > 0.0 && v < 1.0) {
        value.to_owned()
    } else {
        "0.4".to_owned()
    }
}

/// Starts the broker's app again when dropped, pass or fail.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    }
}

/// Starts a worker on a fresh app, publishes the load and waits until it is under way.
async fn loaded(prefix: &str) -> (TestApp, HashSet<String>, HashSet<String>) {
    let mut t = spawn_app(prefix, |s| {
        s.apps
            .values_mut()
            .for_each(|a| a.rate_per_second = common::rate(200.0));
    })
    .await;
    t.sim.set_faults(Faults {
        latency_ms: 5,
        ..Faults::default()
    });
    let ids = t.publish_numbered(JOBS).await;
    let mut seen = HashSet::new();
    t.read_until(&mut seen, 80, Duration::from_secs(20)).await;
    (t, ids, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the broker: run alone by scripts/test.sh"]
async fn closed_connections_mid_load_lose_nothing() {
    let (mut t, ids, mut seen) = loaded("closeconn").await;
    let listing = rabbitmqctl(&["list_connections", "pid", "client_properties", "-q"]);
    let worker_conns: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("wxcourier worker"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        !worker_conns.is_empty(),
        "found the worker's connection: {listing}"
    );
    for pid in worker_conns {
        rabbitmqctl(&[
            "close_connection",
            pid,
            "test: closing the worker's connection",
        ]);
    }
    t.read_until(&mut seen, JOBS, Duration::from_secs(30)).await;
    assert_eq!(seen, ids, "every job ended with an outcome");
    assert_each_job_accepted_once(&t.sim, &ids);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the broker: run alone by scripts/test.sh"]
async fn a_broker_stop_and_start_mid_load_loses_nothing() {
    let (mut t, ids, mut seen) = loaded("stopapp").await;
    {
        let _guard = RestartGuard;
        rabbitmqctl(&["stop_app"]);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The test's own connection died with the broker: open a new tap and count what is
    // left in the queue at the end instead of relying on outcomes published meanwhile.
    let conn = connect().await;
    let mut tap = wxcourier::broker::tap::ResultsTap::open(&conn, &format!("*.{}", t.app))
        .await
        .unwrap();
    loop {
        let done = t.sim.stats().apps[DEFAULT_APPID].accepted as usize;
        let queued = queue_len(&conn, &wxcourier::broker::job_queue(&t.app)).await;
        if done == JOBS && queued == 0 {
            break;
        }
        match tap.next(Duration::from_secs(30)).await {
            Some(o) => {
                seen.insert(o["id"].as_str().unwrap().to_owned());
            }
            None => panic!("stalled: accepted {done}, queued {queued}"),
        }
    }
    assert_each_job_accepted_once(&t.sim, &ids);
    assert!(seen.is_subset(&ids));
    t.harness.conn = conn;
    t.stop().await;
}

/// Starts Redis again when dropped, pass or fail (the machine's own start command).
struct RedisGuard;

fn redis_answers() -> bool {
    Command::new("redis-cli")
        .arg("ping")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        if !redis_answers() {
            let _ = Command::new("redis-server")
                .args([
                    "--daemonize",
                    "yes",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    "6379",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .status();
        }
        for _ in 0..50 {
            if redis_answers() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops Redis: run alone by scripts/test.sh"]
async fn a_redis_outage_mid_load_pauses_three_instances_and_loses_nothing() {
    use common::process::{Binary, signal, wait_exit};
    let sim = wxcourier::sim::Simulator::start("127.0.0.1:0", Default::default())
        .await
        .unwrap();
    sim.set_faults(Faults {
        latency_ms: 5,
        ..Faults::default()
    });
    let app = unique_app("redisdown");
    let bin = Binary::with(
        &app,
        &sim.base_url(),
        "rate_per_second = 100",
        "[state]\nurl = \"redis://127.0.0.1:6379/\"\n",
    );
    let mut h = Harness::new(&app, &settings(&app, &sim)).await;
    let mut workers: Vec<_> = (0..3).map(|_| bin.spawn_worker()).collect();
    let ids = h.publish_numbered(JOBS).await;
    let mut seen = HashSet::new();
    h.read_until(&mut seen, 80, Duration::from_secs(20)).await;
    {
        let _guard = RedisGuard;
        let _ = Command::new("redis-cli")
            .args(["shutdown", "nosave"])
            .status();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let during = sim.stats().apps[DEFAULT_APPID].send_calls;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            sim.stats().apps[DEFAULT_APPID].send_calls,
            during,
            "no sends while Redis is down"
        );
    }
    h.read_until(&mut seen, JOBS, Duration::from_secs(30)).await;
    assert_eq!(
        seen, ids,
        "every job ended with an outcome after Redis came back"
    );
    assert_each_job_accepted_once(&sim, &ids);
    for w in &workers {
        signal(w, "TERM");
    }
    for w in &mut workers {
        assert!(wait_exit(w, Duration::from_secs(30)).is_some_and(|s| s.success()));
    }
    h.cleanup().await;
    sim.stop();
}

/// Lifts RabbitMQ's memory alarm when dropped, pass or fail, restoring the watermark it had.
struct WatermarkGuard(String);

impl Drop for WatermarkGuard {
    fn drop(&mut self) {
        rabbitmqctl(&["set_vm_memory_high_watermark", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "blocks RabbitMQ publishers: run alone by scripts/test.sh"]
async fn a_memory_alarm_blocks_publishes_which_time_out_and_recover() {
    let mut t = spawn_app("alarm", |s| {
        s.amqp.publish_timeout = common::nz_ms(1000);
        s.apps.values_mut().for_each(|a| {
            a.rate_per_second = common::rate(40.0);
            a.burst = common::count(1);
        });
    })
    .await;
    let ids = t.publish_numbered(JOBS).await;
    let mut seen = HashSet::new();
    t.read_until(&mut seen, 50, Duration::from_secs(20)).await;
    {
        let _guard = WatermarkGuard(memory_watermark());
        // Any use is over this watermark: the broker blocks every publishing connection.
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.0000001"]);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            t.ctx.metrics.publish_failures.get() > 0,
            "blocked publishes timed out instead of hanging"
        );
    }
    t.read_until(&mut seen, JOBS, Duration::from_secs(30)).await;
    assert_eq!(
        seen, ids,
        "every job ended with an outcome once the alarm cleared"
    );
    assert_each_job_accepted_once(&t.sim, &ids);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kills workers repeatedly under load: run alone by scripts/test.sh"]
async fn kill_9_every_2_seconds_five_times_while_10000_jobs_flow_loses_nothing() {
    use common::process::{Binary, signal, wait_exit};
    const MANY: usize = 10_000;
    let sim = wxcourier::sim::Simulator::start("127.0.0.1:0", Default::default())
        .await
        .unwrap();
    let app = unique_app("killloop");
    let bin = Binary::with(
        &app,
        &sim.base_url(),
        "rate_per_second = 700\nburst = 50",
        "",
    );
    let mut h = Harness::new(&app, &settings(&app, &sim)).await;
    let ids = h.publish_numbered(MANY).await;
    let mut seen = HashSet::new();
    for _ in 0..5 {
        let mut worker = bin.spawn_worker();
        tokio::time::sleep(Duration::from_secs(2)).await;
        signal(&worker, "KILL");
        let _ = worker.wait();
    }
    let mut last = bin.spawn_worker();
    h.read_until(&mut seen, MANY, Duration::from_secs(30)).await;
    signal(&last, "TERM");
    assert!(wait_exit(&mut last, Duration::from_secs(30)).is_some_and(|s| s.success()));
    assert_eq!(seen.len(), MANY, "every job ended with an outcome");
    assert_eq!(seen, ids);
    // After each kill, redelivered jobs are sent again under the same id, and WeChat's
    // client_msg_id de-duplication makes each a single message.
    let sends = sim.sends();
    let mut per_user: std::collections::HashMap<&str, HashSet<&str>> = Default::default();
    for s in &sends {
        per_user
            .entry(&s.touser)
            .or_default()
            .insert(s.client_msg_id.as_deref().unwrap_or(""));
    }
    assert!(
        per_user.values().all(|c| c.len() == 1),
        "no job under two client_msg_ids"
    );
    let stats = sim.stats().apps[DEFAULT_APPID].clone();
    eprintln!(
        "kill loop: {} sends, {} accepted, {} de-duplicated by client_msg_id",
        stats.send_calls, stats.accepted, stats.duplicates
    );
    assert_eq!(stats.accepted as usize, MANY);
    h.cleanup().await;
    sim.stop();
}
