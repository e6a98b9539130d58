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

#[test]
fn check_accepts_a_former_key_name_and_warns_naming_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "[amqp]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\n\
         [wechat]\nbase_url = \"http://127.0.0.1:1\"\ntimeout = \"1s\"\n\
         [retry]\nquota_pause = \"2m\"\n[apps.shop]\nappid = \"wx1\"\nsecret = \"s\"\n",
    );
    let out = bin()
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("config: ok"), "{text}");
    assert!(
        text.contains(
            "config: WARNING: retry.quota_pause is the former name of retry.pause: it is still \
             read, but write retry.pause instead"
        ),
        "{text}"
    );
    let both = write(&dir, "[retry]\nquota_pause = \"2m\"\npause = \"1m\"\n");
    let out = bin()
        .args(["check", "--config"])
        .arg(&both)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retry.pause and retry.quota_pause are both set"),
        "{err}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lists_the_catalog_and_the_quota_and_flags_sample_jobs() {
    let template = wxcourier::sim::SimTemplate {
        template_id: TEMPLATE.into(),
        title: "订单支付成功".into(),
        content:
            "{{first.DATA}}\n订单号：{{keyword1.DATA}}\n金额：{{keyword2.DATA}}\n{{remark.DATA}}"
                .into(),
        ..Default::default()
    };
    let sim = Simulator::start(
        "127.0.0.1:0",
        SimOptions {
            templates: [(wxcourier::sim::DEFAULT_APPID.to_owned(), vec![template])].into(),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let app = unique_app("check_catalog");
    let b = Binary::with(&app, &sim.base_url(), "catalog = true\ntruncate = true", "");
    let out = b.command("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for line in [
        format!(
            "app {app}: quota /cgi-bin/message/template/send: 0 of 1000000 used today, 1000000 left"
        ),
        format!("app {app}: catalog: 1 template(s)"),
        format!("  {TEMPLATE} \"订单支付成功\": first, keyword1, keyword2, remark"),
    ] {
        assert!(text.contains(&line), "{line:?} in {text}");
    }

    let jobs = b.dir.path().join("jobs.jsonl");
    let line = |id: &str, template: &str, data: serde_json::Value| {
        serde_json::json!({"id": id, "touser": openid(1), "template_id": template, "data": data})
            .to_string()
    };
    let lines = [
        line(
            "j1",
            TEMPLATE,
            serde_json::json!({"first": {"value": "hi"}, "keyword1": {"value": "1842", "color": "#173177"},
                "keyword2": {"value": "人民币二百六十元整，已于今日下午三点零一分支付成功"}}),
        ),
        line(
            "j2",
            TEMPLATE,
            serde_json::json!({"keyword1": {"value": "1842"}}),
        ),
        line(
            "j3",
            "unknown_template",
            serde_json::json!({"keyword1": {"value": "1842"}}),
        ),
        "not a job".to_owned(),
        line(
            "j5",
            TEMPLATE,
            serde_json::json!({"keyword1": {"value": "1"}, "keyword2": {"value": "2"}}),
        ),
        // Held as the app's worker reads it: with `truncate`, shortened and said so.
        line(
            "j6",
            TEMPLATE,
            serde_json::json!({"keyword1": {"value": "1"}, "keyword2": {"value": "2"},
                "thing3": {"value": "您的餐品已经备好请尽快到一号窗口取餐谢谢您光临本店"}}),
        ),
    ];
    std::fs::write(&jobs, lines.join("\n")).unwrap();
    let out = b
        .command("check")
        .arg("--jobs")
        .arg(&jobs)
        .args(["--app", &app])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a job would be rejected: {text}"
    );
    for line in [
        "job line 1 (j1): WARNING: first filled, but WeChat no longer shows first and remark (2023)",
        "job line 1 (j1): WARNING: color/topcolor set, but WeChat ignores colours (2023)",
        "job line 1 (j1): WARNING: keyword2 over 20 characters",
        "job line 2 (j2): REJECTED: data: lacks keyword2, which the template's content shows as {{keyword2.DATA}}",
        "job line 3 (j3): REJECTED: template_id: \"unknown_template\" is not one of the account's 1 template(s)",
        "job line 4: REJECTED: body: is not JSON",
        "job line 6 (j6): WARNING: data.thing3.value: shortened from 25 to 18 characters",
        "jobs: 6 checked against its template catalog, 5 flagged",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    assert!(
        !text.contains("job line 5"),
        "a clean job is not flagged: {text}"
    );
    assert_eq!(
        sim.stats().apps[wxcourier::sim::DEFAULT_APPID].send_calls,
        0,
        "check sends nothing"
    );
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
        "cancelled",
        "accepted",
        "suppressed",
        "not_following",
        "-scheduled",
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

/// Logs go to collectors (journald, `kubectl logs`, files), not terminals: no colour codes
/// unless stderr is a terminal.
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    use std::io::Read;
    let b = Binary::new(&unique_app("nocolour"), "http://127.0.0.1:1", "");
    let mut child = b
        .command("run")
        .env("WXCOURIER_AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Read until a warning about the unreachable broker is in, or the time is up.
        while std::time::Instant::now() < deadline
            && !String::from_utf8_lossy(&buf).contains("WARN")
        {
            match stderr.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    });
    let buf = reader.join();
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&buf.unwrap()).into_owned();
    assert!(text.contains("WARN"), "no warning logged:\n{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in piped logs:\n{text:?}"
    );
}

#[test]
fn the_top_level_help_names_every_kind_it_sends() {
    let out = bin().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for kind in wxcourier::kinds::Kind::ALL {
        assert!(
            help.contains(kind.name()),
            "{} missing: {help}",
            kind.name()
        );
    }
}

#[test]
fn dead_list_runs_without_the_apps_secrets_it_never_uses() {
    let app = unique_app("deadnosecret");
    let b = Binary::new(&app, "http://127.0.0.1:1", "");
    let secret = format!("WXCOURIER_APPS__{}__SECRET", app.to_ascii_uppercase());
    let out = b
        .command("dead list --from unrouted --limit 1")
        .env_remove(&secret)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
    // The worker still needs it, and says so.
    let out = b.command("run").env_remove(&secret).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&secret));
}

#[test]
fn check_points_a_refused_connection_at_wechat_base_url_not_at_the_credentials() {
    let app = unique_app("checknet");
    let b = Binary::new(&app, &format!("http://127.0.0.1:{}", free_port()), "");
    let out = b.command("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("app {app}: FAILED")))
        .unwrap_or_else(|| panic!("no failure line for {app}: {stdout}"));
    assert!(line.contains("wechat.base_url"), "{line}");
    assert!(
        !line.contains("whitelist") && !line.contains("secret"),
        "{line}"
    );
}

#[test]
fn usage_errors_exit_2_as_the_readme_says() {
    // A required flag missing (clap's own check) and a bad value (the verb's) agree.
    let out = bin()
        .args(["send", "--app", "shop", "--template", "t1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to"));
    let out = bin()
        .args(["send", "--app", "Bad App", "--to", "o1", "--template", "t1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains("2 usage error"),
        "README's verb table says so"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_before_any_worker_queues_the_job_and_an_unknown_app_is_reported_unrouted() {
    let app = unique_app("sendfirst");
    let b = Binary::new(&app, "http://127.0.0.1:1", "");
    let conn = connect().await;

    // Configured, no worker has run: the job waits in the app's own queue.
    let out = send_one(&b, &openid(1)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let queue = wxcourier::broker::job_queue(&app);
    assert_eq!(queue_len(&conn, &queue).await, 1);

    // Not configured and no queue: it lands unrouted, and send says so.
    let ghost = unique_app("ghost");
    let out = b
        .command("send")
        .args(["--app", &ghost, "--to", &openid(2), "--template", TEMPLATE])
        .args(["--data", "k=v", "--id", &ghost])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("wxcourier.unrouted") && stderr.contains("no such app"),
        "{stderr}"
    );
    let landed = take_where(&conn, "wxcourier.unrouted", |p| {
        (p.message_id().as_ref().map(|m| m.as_str()) == Some(ghost.as_str())).then(String::new)
    })
    .await;
    assert_eq!(landed.len(), 1, "the job is in wxcourier.unrouted");

    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
}
