//! What operators rely on: `/metrics` counts real jobs, and trace-level logs hold no secret.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::{Binary, OutputWithin, signal};
use common::*;
use wxcourier::sim::{Answer, DEFAULT_APPID, SimOptions, Simulator};
use wxcourier::types::Secret;
use wxcourier::wechat::client::WechatClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_jobs() {
    let port = free_port();
    let mut t = spawn_app("metrics", |s| {
        s.http.listen = Some(format!("127.0.0.1:{port}"))
    })
    .await;
    let refused = openid(2);
    t.sim.script(&refused, vec![Answer::Code(40003)]);
    t.publish(&job("m-ok", &openid(1))).await;
    t.publish(&job("m-refused", &refused)).await;
    t.publish_raw(b"{", Some("m-bad")).await;
    assert_eq!(t.outcomes(3).await.len(), 3);
    let app = &t.app;
    for line in [
        format!("wxcourier_jobs_total{{app=\"{app}\",status=\"sent\"}} 1"),
        format!("wxcourier_jobs_total{{app=\"{app}\",status=\"failed\"}} 1"),
        format!("wxcourier_jobs_total{{app=\"{app}\",status=\"rejected\"}} 1"),
        format!("wxcourier_wechat_calls_total{{app=\"{app}\",errcode=\"0\"}} 1"),
        format!("wxcourier_wechat_calls_total{{app=\"{app}\",errcode=\"40003\"}} 1"),
        format!("wxcourier_token_refreshes_total{{app=\"{app}\"}} 1"),
        format!("wxcourier_send_latency_seconds_count{{app=\"{app}\"}} 2"),
        "wxcourier_in_flight_jobs 0".to_owned(),
    ] {
        // A job is counted just after its outcome is confirmed, so the last one may lag.
        let mut text = String::new();
        for _ in 0..50 {
            text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.contains(&line) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_never_show_a_secret_token_or_key() {
    const APP_SECRET: &str = "s3cr3t-app-secret-value";
    const CALLBACK_TOKEN: &str = "cb-token-value-123";
    const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    let sim = Simulator::start(
        "127.0.0.1:0",
        SimOptions {
            apps: vec![(DEFAULT_APPID.into(), APP_SECRET.into())],
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let app = unique_app("secrets");
    let port = free_port();
    let bin = Binary::new(
        &app,
        &sim.base_url(),
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n[log]\nformat = \"json\"\n"),
    );
    let mut h = Harness::new(&app, &settings(&app, &sim)).await;
    // One token error forces a refresh, so two tokens pass through the worker.
    let user = openid(1);
    sim.script(&user, vec![Answer::Code(40001)]);
    let mut child = bin
        .command("run")
        .env(
            format!("WXCOURIER_APPS__{}__SECRET", app.to_uppercase()),
            APP_SECRET,
        )
        .env(
            format!("WXCOURIER_APPS__{}__CALLBACK_TOKEN", app.to_uppercase()),
            CALLBACK_TOKEN,
        )
        .env(
            format!("WXCOURIER_APPS__{}__ENCODING_AES_KEY", app.to_uppercase()),
            AES_KEY,
        )
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut text).unwrap();
        text
    });
    h.publish(&job("secret-1", &user)).await;
    h.publish(&job("secret-2", &openid(2))).await;
    let mut seen = Default::default();
    h.read_until(&mut seen, 2, Duration::from_secs(20)).await;
    assert_eq!(seen.len(), 2);
    // A callback request too, so the receiver's code paths log as well.
    let _ = reqwest::get(format!(
        "http://127.0.0.1:{port}/wechat/callback/{app}?signature=x&timestamp=1&nonce=2&echostr=e"
    ))
    .await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let text = log.join().unwrap();
    assert!(
        text.len() > 10_000,
        "trace logging was on: {} bytes",
        text.len()
    );
    // The stable token every caller gets, as the worker had it.
    let client = WechatClient::new(&sim.base_url(), Duration::from_secs(2)).unwrap();
    let token = client
        .stable_token(DEFAULT_APPID, &Secret::new(APP_SECRET))
        .await
        .unwrap()
        .token;
    for secret in [
        APP_SECRET,
        CALLBACK_TOKEN,
        AES_KEY,
        token.expose(),
        "guest:guest",
    ] {
        assert!(!text.contains(secret), "{secret} appears in the logs");
    }
    h.cleanup().await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_list_shows_why_and_replay_sends_chosen_jobs_back() {
    let mut t = spawn_app("dead", |_| {}).await;
    let mut bad = job("dead-1", &openid(1));
    bad["colour"] = serde_json::json!("red");
    t.publish(&bad).await;
    assert_eq!(t.outcome_of("dead-1").await["status"], "rejected");
    let bin = Binary::new(&t.app, &t.sim.base_url(), "");

    let out = bin
        .command("dead list")
        .output_within(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    let line = text
        .lines()
        .find(|l| l.contains(&format!("app={}", t.app)))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("id=dead-1") && line.contains("colour: is not a known field"),
        "{line}"
    );

    let out = bin
        .command("dead replay")
        .output_within(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2), "replay needs a filter or --all");

    let out = bin
        .command("dead replay")
        .args(["--app", &t.app])
        .output_within(Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed 1 of"));
    // Back through the worker: still invalid, so rejected again and kept once more.
    assert_eq!(t.outcome_of("dead-1").await["status"], "rejected");
    let dead = t.take_dead(1).await;
    assert_eq!(dead.len(), 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_jobs_are_replayed_once_their_app_exists() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("late");
    let bin = Binary::new(&app, &sim.base_url(), "");
    let conn = connect().await;
    wxcourier::broker::topology::declare_exchanges(&conn)
        .await
        .unwrap();
    let publisher = wxcourier::broker::Publisher::open(&conn, Duration::from_secs(5))
        .await
        .unwrap();
    let body = serde_json::to_vec(&job("late-1", &openid(1))).unwrap();
    publisher
        .publish_job(&app, "late-1", &body, Default::default())
        .await
        .unwrap();
    // The app gets configured: its queue now exists.
    let h = Harness::new(&app, &settings(&app, &sim)).await;
    assert_eq!(h.queued().await, 0);
    let out = bin
        .command("dead replay")
        .args(["--from", "unrouted", "--app", &app])
        .output_within(Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(h.queued().await, 1);
    h.cleanup().await;
    sim.stop();
}
