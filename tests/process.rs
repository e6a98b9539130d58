//! The `wxcourier run` process under SIGTERM and kill -9 while jobs flow: every job ends with
//! an outcome or is still queued, and a re-send always carries the same client_msg_id.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::process::{Binary, signal, wait_exit};
use common::*;
use wxcourier::broker::job_queue;
use wxcourier::sim::{Faults, SimOptions, Simulator};

const JOBS: usize = 300;

async fn setup(prefix: &str) -> (Simulator, Binary, Harness) {
    setup_with(prefix, "").await
}

async fn setup_with(prefix: &str, extra_toml: &str) -> (Simulator, Binary, Harness) {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    sim.set_faults(Faults {
        latency_ms: 5,
        ..Faults::default()
    });
    let app = unique_app(prefix);
    let bin = Binary::new(&app, &sim.base_url(), extra_toml);
    let h = Harness::new(&app, &settings(&app, &sim)).await;
    (sim, bin, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_drains_and_loses_nothing() {
    let port = free_port();
    let (sim, bin, mut h) = setup_with(
        "sigterm",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .await;
    let ids = h.publish_numbered(JOBS).await;
    let mut worker = bin.spawn_worker();
    let health = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("{health}/readyz")).await {
            ready = r.status() == 200;
            if ready {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "/readyz turns 200 once consuming");
    assert_eq!(
        reqwest::get(format!("{health}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let mut seen = HashSet::new();
    h.read_until(&mut seen, 60, Duration::from_secs(20)).await;
    assert!(seen.len() >= 60, "the worker made progress");
    signal(&worker, "TERM");
    let status = wait_exit(&mut worker, Duration::from_secs(30)).expect("exits after draining");
    assert_eq!(status.code(), Some(0));
    h.read_until(&mut seen, JOBS, Duration::from_secs(2)).await;
    let queued = queue_len(&h.conn, &job_queue(&h.app)).await as usize;
    assert!(seen.is_subset(&ids));
    assert_eq!(
        seen.len() + queued,
        JOBS,
        "outcomes {} + queued {queued} = published",
        seen.len()
    );
    assert!(queued > 0, "the stop came mid-load");
    h.cleanup().await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_then_restart_ends_every_job_with_the_same_client_msg_id() {
    let (sim, bin, mut h) = setup("kill9").await;
    let ids = h.publish_numbered(JOBS).await;
    let mut worker = bin.spawn_worker();
    let mut seen = HashSet::new();
    h.read_until(&mut seen, 80, Duration::from_secs(20)).await;
    signal(&worker, "KILL");
    let _ = worker.wait();
    let mut again = bin.spawn_worker();
    h.read_until(&mut seen, JOBS, Duration::from_secs(20)).await;
    signal(&again, "TERM");
    assert_eq!(
        wait_exit(&mut again, Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert_eq!(seen, ids, "every job ended with an outcome");

    assert_each_job_accepted_once(&sim, &ids);
    h.cleanup().await;
    sim.stop();
}
