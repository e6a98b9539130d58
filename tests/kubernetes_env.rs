//! `wxcourier run` inside a Kubernetes pod: the service-link variables Kubernetes injects for
//! Services named `wxcourier…` do not stop the worker, while a mistyped key still does.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{Binary, OutputWithin, signal, wait_exit};
use common::*;
use wxcourier::sim::{SimOptions, Simulator};

/// Every variable Kubernetes sets for the Service `wxcourier` (ports 80/http and 9102/UDP)
/// and for a second Service `wxcourier-metrics` (IPv6 ClusterIP).
fn service_links() -> Vec<(&'static str, &'static str)> {
    vec![
        ("WXCOURIER_SERVICE_HOST", "10.96.12.7"),
        ("WXCOURIER_SERVICE_PORT", "80"),
        ("WXCOURIER_SERVICE_PORT_HTTP", "80"),
        ("WXCOURIER_SERVICE_PORT_STATSD", "9102"),
        ("WXCOURIER_PORT", "tcp://10.96.12.7:80"),
        ("WXCOURIER_PORT_80_TCP", "tcp://10.96.12.7:80"),
        ("WXCOURIER_PORT_80_TCP_PROTO", "tcp"),
        ("WXCOURIER_PORT_80_TCP_PORT", "80"),
        ("WXCOURIER_PORT_80_TCP_ADDR", "10.96.12.7"),
        ("WXCOURIER_PORT_9102_UDP", "udp://10.96.12.7:9102"),
        ("WXCOURIER_PORT_9102_UDP_PROTO", "udp"),
        ("WXCOURIER_PORT_9102_UDP_PORT", "9102"),
        ("WXCOURIER_PORT_9102_UDP_ADDR", "10.96.12.7"),
        ("WXCOURIER_METRICS_SERVICE_HOST", "fd00:10:96::9"),
        ("WXCOURIER_METRICS_SERVICE_PORT", "9090"),
        ("WXCOURIER_METRICS_PORT", "tcp://[fd00:10:96::9]:9090"),
        (
            "WXCOURIER_METRICS_PORT_9090_TCP",
            "tcp://[fd00:10:96::9]:9090",
        ),
        ("WXCOURIER_METRICS_PORT_9090_TCP_PROTO", "tcp"),
        ("WXCOURIER_METRICS_PORT_9090_TCP_PORT", "9090"),
        ("WXCOURIER_METRICS_PORT_9090_TCP_ADDR", "fd00:10:96::9"),
    ]
}

fn with_links(mut cmd: Command) -> Command {
    for (k, v) in service_links() {
        cmd.env(k, v);
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_becomes_ready_with_every_service_link_variable_set() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("k8senv");
    let port = free_port();
    let bin = Binary::new(
        &app,
        &sim.base_url(),
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let log = bin.dir.path().join("stderr.log");
    let mut cmd = with_links(bin.command("run"));
    let mut worker = cmd
        .env("RUST_LOG", "wxcourier=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ready_url = format!("http://127.0.0.1:{port}/readyz");
    let mut ready = false;
    for _ in 0..300 {
        if let Some(status) = worker.try_wait().unwrap() {
            panic!(
                "the worker exited {status}: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        if reqwest::get(&ready_url)
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz turns 200");
    signal(&worker, "TERM");
    let status = wait_exit(&mut worker, Duration::from_secs(30)).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    for (name, _) in service_links() {
        assert!(
            text.lines()
                .any(|l| l.contains("DEBUG") && l.contains("service link") && l.contains(name)),
            "{name} is logged at debug as ignored:\n{text}"
        );
    }
    let conn = connect().await;
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .queue_delete(
            wxcourier::broker::job_queue(&app).as_str().into(),
            Default::default(),
        )
        .await;
    sim.stop();
}

#[test]
fn a_mistyped_key_among_the_service_links_still_exits_2_naming_it() {
    let bin = Binary::new(&unique_app("k8styp"), "http://127.0.0.1:1", "");
    for (name, value) in [
        (
            "WXCOURIER_AMQP_URL",
            "amqp://guest:hunter2@127.0.0.1:5672/%2f",
        ),
        ("WXCOURIER_HTTP_PORT", "8080"),
        ("WXCOURIER_PORT_80_TCP_ADDR", "not-an-address"),
    ] {
        let out = with_links(bin.command("run"))
            .env(name, value)
            .output_within(Duration::from_secs(20));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    }
}
