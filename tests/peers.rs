//! Two `wxcourier run` processes on one app with `state.url = "memory"`: each notices the
//! other on the app's queue, warns that rate and idempotency are per process, and exports the
//! count; with Redis state they stay quiet.

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::process::{Binary, signal, wait_exit};
use common::*;
use wxcourier::sim::{SimOptions, Simulator};

const WARNING: &str = "another consumer takes jobs from this queue";

/// One worker process with its own metrics port and log file.
struct Worker {
    child: Child,
    bin: Binary,
    port: u16,
    log: PathBuf,
}

impl Worker {
    async fn start(app: &str, sim: &Simulator, state: &str) -> Self {
        let port = free_port();
        let bin = Binary::new(
            app,
            &sim.base_url(),
            &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{state}"),
        );
        let log = bin.dir.path().join("worker.log");
        let child = bin
            .command("run")
            .env("RUST_LOG", "wxcourier=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let w = Self {
            child,
            bin,
            port,
            log,
        };
        w.until("ready", Duration::from_secs(30), || async {
            reqwest::get(format!("http://127.0.0.1:{}/readyz", w.port))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        w
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn warnings(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(WARNING))
            .count()
    }

    /// `wxcourier_foreign_consumers{app="…"}`, if exported.
    async fn foreign(&self) -> Option<i64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let series = format!("wxcourier_foreign_consumers{{app=\"{}\"}} ", self.bin.app);
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|v| v.trim().parse().unwrap())
    }

    async fn until<F: std::future::Future<Output = bool>>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut() -> F,
    ) {
        let start = Instant::now();
        while !check().await {
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop(mut self) {
        signal(&self.child, "TERM");
        let status = wait_exit(&mut self.child, Duration::from_secs(30));
        assert!(status.is_some_and(|s| s.success()), "exits 0 on SIGTERM");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_memory_state_workers_on_one_queue_warn_and_count_each_other() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("peers");
    let h = Harness::new(&app, &settings(&app, &sim)).await;

    let a = Worker::start(&app, &sim, "").await;
    // Alone, its own consumer is not counted as another.
    a.until("the first count", Duration::from_secs(10), || async {
        a.foreign().await == Some(0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.foreign().await, Some(0));
    assert_eq!(a.warnings(), 0, "{}", a.log());

    let b = Worker::start(&app, &sim, "").await;
    // The newcomer warns at its start, within seconds.
    b.until(
        "the second worker's warning",
        Duration::from_secs(10),
        || async { b.warnings() == 1 },
    )
    .await;
    assert_eq!(b.foreign().await, Some(1));
    // The first one notices at its next count.
    a.until(
        "the first worker's warning",
        Duration::from_secs(30),
        || async { a.warnings() == 1 && a.foreign().await == Some(1) },
    )
    .await;
    let line = a.log();
    let line = line.lines().find(|l| l.contains(WARNING)).unwrap();
    assert!(
        line.contains("rate") && line.contains("idempotency"),
        "{line}"
    );
    assert!(line.contains(&app), "{line}");

    b.stop();
    a.until("the count to drop", Duration::from_secs(30), || async {
        a.foreign().await == Some(0)
    })
    .await;
    assert!(
        a.log()
            .contains("no other consumer takes jobs from this queue now")
    );
    assert_eq!(a.warnings(), 1, "warned once, not at every count");
    a.stop();
    h.cleanup().await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sharing_redis_state_do_not_warn() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("peersredis");
    let h = Harness::new(&app, &settings(&app, &sim)).await;
    let redis = "[state]\nurl = \"redis://127.0.0.1:6379/\"\n";
    let a = Worker::start(&app, &sim, redis).await;
    let b = Worker::start(&app, &sim, redis).await;
    // Longer than the first count and its confirmation.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for w in [&a, &b] {
        assert_eq!(w.warnings(), 0, "{}", w.log());
        assert_eq!(w.foreign().await, None, "no count with shared state");
    }
    b.stop();
    a.stop();
    h.cleanup().await;
    sim.stop();
}
