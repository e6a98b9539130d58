//! The verbs as a user runs them: exit codes, one-sentence errors, `send`, `check`, `demo`.

mod common;

use std::process::Command;

use common::process::Binary;
use common::*;
use wxcourier::sim::{SimOptions, Simulator};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wxcourier"))
}

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[apps.shop]\nappid = \"wx1\"\n", "apps.shop.secret"),
        (
            "[apps.shop]\nappid = \"wx1\"\nsecret = \"s\"\nrate_per_second = 0\n",
            "apps.shop.rate_per_second",
        ),
        ("[retry]\nmax_atempts = 3\n", "max_atempts"),
        ("[amqp\nurl=", "TOML"),
        ("", "apps"),
    ];
    for (toml, key) in cases {
        let path = write(&dir, toml);
        for verb in ["run", "check"] {
            let out = bin()
                .arg(verb)
                .arg("--config")
                .arg(&path)
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{verb} with {toml:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(key) || err.to_lowercase().contains(&key.to_lowercase()),
                "{verb}: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
        }
    }
    let out = bin()
        .args(["run", "--config", "/nonexistent/wx.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_with_a_reachable_broker_and_good_credentials_and_fails_otherwise() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("check");
    let b = Binary::new(&app, &sim.base_url(), "");
    let out = b.command("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("broker: ok") && text.contains("token ok"),
        "{text}"
    );

    let out = b
        .command("check")
        .env(
            format!("WXCOURIER_APPS__{}__SECRET", app.to_uppercase()),
            "wrong",
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("40125") && !text.contains("wrong"), "{text}");

    let out = b
        .command("check")
        .env("WXCOURIER_AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("broker: FAILED"));
    sim.stop();
}

/// `wxcourier send` of one job to `to` with data `k=v`, ready for more flags.
fn send_one(b: &Binary, to: &str) -> Command {
    let mut c = b.command("send");
    c.args([
        "--app",
        &b.app,
        "--to",
        to,
        "--template",
        TEMPLATE,
        "--data",
        "k=v",
    ]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_publishes_one_job_or_a_file_of_them_with_confirms() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("send");
    let b = Binary::new(&app, &sim.base_url(), "");
    let h = Harness::new(&app, &settings(&app, &sim)).await;

    let out = send_one(&b, &openid(1))
        .args(["first=hi", "--id", "cli-1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let file = b.dir.path().join("jobs.jsonl");
    let lines: Vec<String> = (0..25)
        .map(|i| serde_json::to_string(&job(&format!("cli-f{i}"), &openid(i))).unwrap())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = b
        .command("send")
        .args(["--app", &app, "--file"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(h.queued().await, 26);

    let out = send_one(&b, "bad user").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("touser"));

    // Another kind: its typed keys are checked before anything is published.
    let subscribe = |data: &str| {
        b.command("send")
            .args(["--app", &app, "--to", &openid(2), "--template", TEMPLATE])
            .args(["--kind", "subscribe", "--data", data])
            .output()
            .unwrap()
    };
    let out = subscribe("thing1=hello");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let out = subscribe("number1=twelve");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("data.number1.value: number"), "{stderr}");
    let out = send_one(&b, &openid(3))
        .args(["--kind", "sms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kind"));
    assert_eq!(h.queued().await, 27);

    let out = send_one(&b, &openid(1))
        .env("WXCOURIER_AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    h.cleanup().await;
    sim.stop();
}

#[test]
fn demo_shows_every_status_and_exits_0() {
    let out = bin()
        .arg("demo")
        .env("WXCOURIER_AMQP__URL", amqp_url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for status in [
        "sent",
        "failed",
        "rejected",
        "expired",
        "true",
        "delivered",
        "recipient_refused",
        "subscribe",
        "miniprogram_subscribe",
        "subscribe_msg_popup_event",
        "unsubscribe",
    ] {
        assert!(text.contains(status), "{status} in\n{text}");
    }
}

#[test]
fn demo_says_how_to_start_rabbitmq_when_it_is_unreachable() {
    let out = bin()
        .arg("demo")
        .env("WXCOURIER_AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rabbitmq-server -detached") && err.trim().lines().count() == 1,
        "{err}"
    );
}
