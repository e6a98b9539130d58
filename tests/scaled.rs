//! Three worker processes on one app, sharing state in the real Redis: one token refresh for
//! all, one rate for all, and no second send of a resubmitted id.

mod common;

use std::collections::HashSet;
use std::process::Child;
use std::time::Duration;

use common::process::{Binary, signal, wait_exit};
use common::*;
use wxcourier::sim::{DEFAULT_APPID, SimOptions, Simulator};

const REDIS: &str = "redis://127.0.0.1:6379/";

/// Three `wxcourier run` processes for one fresh app, plus a harness to feed and watch it.
struct Cluster {
    sim: Simulator,
    workers: Vec<Child>,
    h: Harness,
}

impl Drop for Cluster {
    /// A failed test must not leave workers running.
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Cluster {
    /// `app_keys` go into the app's table (e.g. `rate_per_second = 50`).
    async fn start(prefix: &str, app_keys: &str) -> Self {
        let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
            .await
            .unwrap();
        let app = unique_app(prefix);
        let state = format!("[state]\nurl = \"{REDIS}\"\n");
        let bin = Binary::with(&app, &sim.base_url(), app_keys, &state);
        let h = Harness::new(&app, &settings(&app, &sim)).await;
        let workers = (0..3).map(|_| bin.spawn_worker()).collect();
        // The binary's config lives in the temporary directory: keep it until the end.
        std::mem::forget(bin);
        Self { sim, workers, h }
    }

    async fn stop(mut self) {
        for w in &self.workers {
            signal(w, "TERM");
        }
        for w in &mut self.workers {
            let status = wait_exit(w, Duration::from_secs(30));
            assert!(
                status.is_some_and(|s| s.success()),
                "a worker exits 0 on SIGTERM"
            );
        }
        self.h.cleanup().await;
        self.sim.stop();
    }

    /// Waits for the outcomes of `n` jobs.
    async fn read_all(&mut self, n: usize) -> HashSet<String> {
        let mut seen = HashSet::new();
        self.h
            .read_until(&mut seen, n, Duration::from_secs(20))
            .await;
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invalidated_token_causes_one_refresh_across_three_classic_instances() {
    let mut c = Cluster::start(
        "shared_token",
        "token_mode = \"classic\"\nrate_per_second = 100",
    )
    .await;
    let ids = c.h.publish_numbered(200).await;
    let mut seen = HashSet::new();
    c.h.read_until(&mut seen, 80, Duration::from_secs(20)).await;
    c.sim.invalidate_tokens(DEFAULT_APPID);
    c.h.read_until(&mut seen, 200, Duration::from_secs(20))
        .await;
    assert_eq!(seen, ids);
    let stats = c.sim.stats().apps[DEFAULT_APPID].clone();
    eprintln!(
        "token test: {} classic token calls, {} send calls",
        stats.classic_token_calls, stats.send_calls
    );
    assert!(
        stats.classic_token_calls <= 2,
        "the first fetch and at most one refresh: {}",
        stats.classic_token_calls
    );
    assert_eq!(stats.accepted, 200);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_together_keep_the_configured_rate() {
    let mut c = Cluster::start("shared_rate", "rate_per_second = 50\nburst = 10").await;
    let ids = c.h.publish_numbered(150).await;
    assert_eq!(c.read_all(150).await, ids);
    let (span, _) = accepted_span(&c.sim);
    // 10 at once, then 140 at 50/s = 2.8 s.
    let achieved = 140.0 / span;
    eprintln!(
        "shared rate test: 150 sends by 3 instances over {span:.3} s, {achieved:.2}/s for 50/s (accuracy {:.3})",
        achieved / 50.0
    );
    assert!(
        (achieved / 50.0 - 1.0).abs() <= 0.1,
        "achieved {achieved:.2}/s"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitted_ids_are_duplicates_on_every_instance() {
    let mut c = Cluster::start("shared_ids", "rate_per_second = 150").await;
    let ids = c.h.publish_numbered(20).await;
    assert_eq!(c.read_all(20).await, ids);
    let calls = c.sim.stats().apps[DEFAULT_APPID].send_calls;
    // The same 20 again, spread over the three instances.
    c.h.publish_numbered(20).await;
    let mut outcomes = Vec::new();
    while outcomes.len() < 20 {
        outcomes.push(
            c.h.tap
                .next(Duration::from_secs(20))
                .await
                .expect("an outcome for each resubmission"),
        );
    }
    assert!(
        outcomes
            .iter()
            .all(|o| o["status"] == "sent" && o["duplicate"] == true),
        "{outcomes:?}"
    );
    assert_eq!(
        c.sim.stats().apps[DEFAULT_APPID].send_calls,
        calls,
        "no new sends"
    );
    c.stop().await;
}
