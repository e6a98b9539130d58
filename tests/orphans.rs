//! Removed apps do not disappear silently: a `wxcourier.jobs.*` queue whose app is no longer
//! configured is found through the real broker's management API, warned about at start with
//! its depth, counted in a gauge and reported by `check`; an unreachable, refusing or hostile
//! management API is said once and changes nothing else.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::process::{Binary, OutputWithin, signal, wait_exit};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wxcourier::broker::job_queue;
use wxcourier::broker::orphans::{self, ManagementApi, Orphan};
use wxcourier::sim::{SimOptions, Simulator};
use wxcourier::types::Secret;

/// A job queue left by an app that is then dropped from the config, holding `n` jobs.
async fn leave_orphan(sim: &Simulator, n: usize) -> Harness {
    let gone = unique_app("gone");
    let h = Harness::new(&gone, &settings(&gone, sim)).await;
    h.publish_numbered(n).await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queue_whose_app_is_gone_is_found_with_its_exact_depth() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let gone = leave_orphan(&sim, 3).await;
    let kept = unique_app("kept");
    let now = settings(&kept, &sim);
    let kept_h = Harness::new(&kept, &now).await;
    kept_h.publish_numbered(2).await;

    let api = ManagementApi::from_settings(&now.amqp).unwrap();
    let found = orphans::find(&now, &api, &gone.conn).await.unwrap();
    assert!(
        found.contains(&Orphan {
            queue: job_queue(&gone.app),
            messages: Some(3),
        }),
        "{found:?}"
    );
    assert!(!found.iter().any(|o| o.queue == job_queue(&kept)));

    let metrics = wxcourier::metrics::Metrics::new();
    metrics.set_orphans(found.iter().map(|o| o.gauge()));
    let text = metrics.render();
    assert!(
        text.contains(&format!(
            "wxcourier_orphan_queue_messages{{queue=\"{}\"}} 3",
            job_queue(&gone.app)
        )),
        "{text}"
    );
    gone.cleanup().await;
    kept_h.cleanup().await;
    sim.stop();
}

/// Reads a child's stderr lines as they come.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Collects lines until one contains `want` or `limit` passes.
fn read_until(rx: &mpsc::Receiver<String>, want: &str, limit: Duration) -> (bool, Vec<String>) {
    let start = Instant::now();
    let mut lines = Vec::new();
    while start.elapsed() < limit {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let hit = line.contains(want);
            lines.push(line);
            if hit {
                return (true, lines);
            }
        }
    }
    (false, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_warns_once_naming_the_queue_and_its_depth_and_exports_a_gauge_and_check_reports_it() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let gone = leave_orphan(&sim, 4).await;
    let queue = job_queue(&gone.app);
    let kept = unique_app("kept");
    let port = free_port();
    let b = Binary::new(
        &kept,
        &sim.base_url(),
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );

    let out = b.command("check").output_within(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning, not a failure: {text}"
    );
    assert!(
        text.contains(&format!(
            "job queues: WARNING: {queue} holds 4 message(s) but no app is configured for it"
        )),
        "{text}"
    );

    let mut worker = b
        .command("run")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(&mut worker);
    let (seen, lines) = read_until(&rx, &queue, Duration::from_secs(30));
    assert!(seen, "a warning names {queue}: {lines:#?}");
    let warning = lines.last().unwrap();
    assert!(
        warning.contains("WARN") && warning.contains("messages=4"),
        "{warning}"
    );
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let gauge = format!("wxcourier_orphan_queue_messages{{queue=\"{queue}\"}} 4");
    let mut text = String::new();
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(&metrics).await {
            text = r.text().await.unwrap_or_default();
            if text.contains(&gauge) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains(&gauge), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("wxcourier_orphan_queues ") && !l.ends_with(" 0")),
        "{text}"
    );
    // The worker's own app is no orphan, and it still works.
    let h = Harness::new(&kept, &settings(&kept, &sim)).await;
    let mut h = h;
    h.publish(&job("kept-1", &openid(1))).await;
    assert_eq!(h.outcome_of("kept-1").await["status"], "sent");
    assert!(!text.contains(&format!("queue=\"{}\"", job_queue(&kept))));

    signal(&worker, "TERM");
    assert!(wait_exit(&mut worker, Duration::from_secs(30)).is_some_and(|s| s.success()));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        !rest.iter().any(|l| l.contains(&queue)),
        "warned once: {rest:#?}"
    );
    gone.cleanup().await;
    h.cleanup().await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_refusing_management_api_is_said_once_without_the_password() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let kept = unique_app("nomgmt");
    let mgmt = reqwest::Url::parse(&management_url()).unwrap();
    let host = format!(
        "{}:{}",
        mgmt.host_str().unwrap(),
        mgmt.port_or_known_default().unwrap()
    );
    let cases = [
        // Nothing listens there.
        format!("http://guest:hunter2-secret@127.0.0.1:{}", free_port()),
        // The real API, wrong password.
        format!("http://guest:hunter2-secret@{host}"),
    ];
    for url in cases {
        let b = Binary::new(&kept, &sim.base_url(), "");
        let mut worker = b
            .command("run")
            .env("WXCOURIER_AMQP__MANAGEMENT_URL", &url)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = stderr_lines(&mut worker);
        let (seen, lines) = read_until(
            &rx,
            "cannot list queues through the RabbitMQ management API",
            Duration::from_secs(30),
        );
        assert!(seen, "{url}: {lines:#?}");
        assert!(lines.last().unwrap().contains("INFO"), "{lines:#?}");
        // The worker goes on and sends.
        let mut h = Harness::new(&kept, &settings(&kept, &sim)).await;
        let id = format!("{kept}-{}", free_port());
        h.publish(&job(&id, &openid(1))).await;
        assert_eq!(h.outcome_of(&id).await["status"], "sent");
        signal(&worker, "TERM");
        assert!(wait_exit(&mut worker, Duration::from_secs(30)).is_some_and(|s| s.success()));
        let all: Vec<String> = lines.into_iter().chain(rx.try_iter()).collect();
        assert_eq!(
            all.iter().filter(|l| l.contains("management API")).count(),
            1,
            "said once: {all:#?}"
        );
        assert!(!all.iter().any(|l| l.contains("hunter2")), "{all:#?}");

        let out = b
            .command("check")
            .env("WXCOURIER_AMQP__MANAGEMENT_URL", &url)
            .output_within(Duration::from_secs(60));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(
            text.contains("job queues: not checked") && !text.contains("hunter2"),
            "{text}"
        );
        h.cleanup().await;
    }
    sim.stop();
}

/// A fake management API that answers every request with `answer` (or never, when `None`).
async fn fake_api(answer: Option<Vec<u8>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                match answer {
                    Some(a) => {
                        let _ = s.write_all(&a).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_management_answer_is_an_error_not_a_hang_or_a_panic() {
    let conn = connect().await;
    let mut s = settings(
        "hostile",
        &Simulator::start("127.0.0.1:0", SimOptions::default())
            .await
            .unwrap(),
    );
    let huge = {
        let mut a = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20000000\r\n\r\n[".to_vec();
        a.extend(std::iter::repeat_n(b' ', 10_000_000));
        a
    };
    let cases: [(Option<Vec<u8>>, &str); 4] = [
        (
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 21\r\n\r\n<html>not json</html>".to_vec()),
            "not a queue listing",
        ),
        (
            Some(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n".to_vec()),
            "HTTP 500",
        ),
        (Some(huge), "over 8 MiB"),
        (None, "no answer"),
    ];
    for (answer, want) in cases {
        s.amqp.management_url = Some(Secret::new(fake_api(answer).await));
        let api = ManagementApi::from_settings(&s.amqp).unwrap();
        let started = Instant::now();
        let err = orphans::find(&s, &api, &conn)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{want}: bounded"
        );
    }
}
