//! The send limits across three worker processes sharing the real Redis: a cap of 3 on one
//! user holds exactly against 100 jobs at once, and equal content is sent once whatever the
//! ids. Jobs go through the broker of `common` (RabbitMQ 3.10 unless told otherwise).

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::process::{Binary, signal, wait_exit};
use common::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::Value;
use wxcourier::sim::{DEFAULT_APPID, SimOptions, Simulator};

const REDIS: &str = "redis://127.0.0.1:6379/";

/// Three `wxcourier run` processes for one fresh app, each consuming its queue.
struct Three {
    sim: Simulator,
    workers: Vec<Child>,
    h: Harness,
}

impl Drop for Three {
    /// A failed test must not leave workers running.
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Three {
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
        let three = Self { sim, workers, h };
        three.wait_for_consumers(3).await;
        three
    }

    /// Waits until `n` consumers take the app's queue, so the jobs are spread over all three.
    async fn wait_for_consumers(&self, n: u32) {
        let ch = self.h.conn.create_channel().await.unwrap();
        let queue = format!("wxcourier.jobs.{}", self.h.app);
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let started = Instant::now();
        loop {
            let q = ch
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .unwrap();
            if q.consumer_count() >= n {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{n} consumers on {queue}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
}

fn count(outcomes: &[Value], status: &str, reason: Option<&str>) -> usize {
    outcomes
        .iter()
        .filter(|o| o["status"] == status && reason.is_none_or(|r| o["reason"] == r))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_send_exactly_3_of_100_jobs_for_one_user_with_a_cap_of_3() {
    let mut t = Three::start(
        "cap3",
        "rate_per_second = 1000\nburst = 100\nrecipient_limit = { count = 3, per = \"1d\" }",
    )
    .await;
    let user = openid(7);
    let jobs: Vec<Value> = (0..100)
        .map(|i| job(&format!("{}-{i}", t.h.app), &user))
        .collect();
    futures_util::future::join_all(jobs.iter().map(|j| t.h.publish(j))).await;
    let outcomes = t.h.outcomes(100).await;
    assert_eq!(outcomes.len(), 100, "one outcome per job");
    assert_eq!(count(&outcomes, "sent", None), 3, "{outcomes:?}");
    assert_eq!(count(&outcomes, "suppressed", Some("frequency_cap")), 97);
    assert!(
        outcomes
            .iter()
            .filter(|o| o["status"] == "suppressed")
            .all(|o| o["attempts"] == 0 && o["errcode"].is_null()),
        "no suppressed job made a call"
    );
    let stats = t.sim.stats().apps[DEFAULT_APPID].clone();
    assert_eq!((stats.send_calls, stats.accepted), (3, 3));
    // Nothing is left to come: no retry copy of any job is waiting.
    assert!(t.h.tap.next(Duration::from_secs(2)).await.is_none());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_send_equal_content_once_whatever_the_ids() {
    let mut t = Three::start(
        "dedup",
        "rate_per_second = 1000\nburst = 100\ncontent_dedup = \"5m\"",
    )
    .await;
    let user = openid(3);
    let same = |i: usize| {
        let mut j = job(&format!("{}-same-{i}", t.h.app), &user);
        j["data"]["keyword1.DATA"]["value"] = "one text".into();
        j
    };
    let mut jobs: Vec<Value> = (0..30).map(same).collect();
    // Other data is other content: each of these is sent.
    jobs.extend((0..5).map(|i| job(&format!("{}-other-{i}", t.h.app), &user)));
    futures_util::future::join_all(jobs.iter().map(|j| t.h.publish(j))).await;
    let outcomes = t.h.outcomes(35).await;
    assert_eq!(outcomes.len(), 35, "one outcome per job");
    assert_eq!(count(&outcomes, "sent", None), 6, "{outcomes:?}");
    assert_eq!(
        count(&outcomes, "suppressed", Some("content_duplicate")),
        29
    );
    let sent_same = outcomes
        .iter()
        .filter(|o| o["status"] == "sent" && o["id"].as_str().unwrap().contains("-same-"))
        .count();
    assert_eq!(sent_same, 1);
    assert_eq!(t.sim.stats().apps[DEFAULT_APPID].send_calls, 6);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cap_mode_defer_every_job_is_sent_one_window_apart() {
    let mut t = Three::start(
        "capdefer",
        "recipient_limit = { count = 1, per = \"2s\" }\ncap_mode = \"defer\"",
    )
    .await;
    let user = openid(5);
    let jobs: Vec<Value> = (0..4)
        .map(|i| job(&format!("{}-{i}", t.h.app), &user))
        .collect();
    futures_util::future::join_all(jobs.iter().map(|j| t.h.publish(j))).await;
    let outcomes = t.h.tap.collect(4, Duration::from_secs(20)).await;
    assert_eq!(count(&outcomes, "sent", None), 4, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| o["attempts"] == 1),
        "a deferred job uses no attempt while it waits: {outcomes:?}"
    );
    // One send per window: the window counts from each reservation, taken a moment before its
    // send (the first one's also waits for the token), so the calls are nearly 2 s apart; without
    // the cap they would be milliseconds apart.
    let mut times: Vec<f64> = t.sim.sends().iter().map(|s| s.at_ms).collect();
    times.sort_by(f64::total_cmp);
    assert_eq!(times.len(), 4, "no call for a deferred job before its turn");
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= 1_500.0, "{times:?}");
    }
    t.stop().await;
}
