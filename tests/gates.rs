//! Respect "no" end to end: the `wxcourier run` binary with `honor_preferences`, Redis state
//! and its callback, the simulator pushing users' events to it and answering its sends. A gate
//! set by an event suppresses the user's next job without a WeChat call and is lifted by the
//! opposite event; WeChat's 43101 sets one too; `wxcourier gate list|clear` shows and clears
//! what the worker set.

mod common;

use std::time::Duration;

use common::process::{Binary, OutputWithin, signal, wait_exit};
use common::*;
use serde_json::Value;
use wxcourier::outcome::PreferenceStatus;
use wxcourier::sim::push::CallbackTarget;
use wxcourier::sim::{DEFAULT_APPID, Decision, SimOptions, Simulator, UserEvent};

const TOKEN: &str = "gate-token";

fn popup(status: PreferenceStatus) -> UserEvent {
    UserEvent::SubscribeMsgPopupEvent {
        templates: vec![Decision {
            template_id: TEMPLATE.into(),
            status,
            scene: Some(1),
        }],
    }
}

/// The next report of `kind` (`follow`, `preference`) on the harness's tap.
async fn next_report(h: &mut Harness, kind: &str) -> Value {
    loop {
        let v = h
            .tap
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no {kind} report"));
        if v["kind"] == kind {
            return v;
        }
    }
}

/// The worker process, killed if the test ends before it stops it.
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sends_to(sim: &Simulator, user: &str) -> usize {
    sim.sends().iter().filter(|s| s.touser == user).count()
}

/// `wxcourier gate ARGS`: its exit code and stdout.
fn gate(bin: &Binary, args: &[&str]) -> (Option<i32>, String) {
    let out = bin
        .command(&format!("gate {}", args.join(" ")))
        .args(["--app", &bin.app])
        .output_within(Duration::from_secs(20));
    assert!(
        out.stderr.is_empty() || out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_set_by_an_event_suppresses_the_next_job_until_the_opposite_event_lifts_it() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("gates");
    let port = free_port();
    let bin = Binary::with(
        &app,
        &sim.base_url(),
        &format!(
            "rate_per_second = 150\nburst = 10\nhonor_preferences = true\ngate_ttl = \"1h\"\n\
             callback_token = \"{TOKEN}\""
        ),
        &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[state]\nurl = \"redis://127.0.0.1:6379\"\n"
        ),
    );
    sim.set_callback(
        DEFAULT_APPID,
        Some(CallbackTarget {
            url: format!("http://127.0.0.1:{port}/wechat/callback/{app}"),
            token: TOKEN.into(),
            aes_key: None,
        }),
    );
    let mut h = Harness::new(&app, &settings(&app, &sim)).await;
    let mut worker = Worker(bin.spawn_worker());
    // Ready once consuming, and the callback listens from then on.
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let mut up = false;
    for _ in 0..400 {
        if let Ok(r) = reqwest::get(&ready).await {
            up = r.status() == 200;
            if up {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the worker is ready");
    let (alice, carol, dave) = (openid(71), openid(72), openid(73));

    // Alice unfollows: her next job is held back, with no WeChat call.
    sim.push_user_event(DEFAULT_APPID, &alice, UserEvent::Unsubscribe)
        .unwrap();
    assert_eq!(next_report(&mut h, "follow").await["status"], "unsubscribe");
    h.publish(&job("gate-alice-1", &alice)).await;
    let o = h.outcome_of("gate-alice-1").await;
    assert_eq!(
        (
            o["status"].as_str(),
            o["reason"].as_str(),
            o["attempts"].as_u64()
        ),
        (Some("suppressed"), Some("not_following"), Some(0)),
        "{o}"
    );
    // Carol refuses the template in a popup: held back the same way.
    sim.push_user_event(DEFAULT_APPID, &carol, popup(PreferenceStatus::Reject))
        .unwrap();
    assert_eq!(next_report(&mut h, "preference").await["status"], "reject");
    h.publish(&job("gate-carol-1", &carol)).await;
    let o = h.outcome_of("gate-carol-1").await;
    assert_eq!(
        (o["status"].as_str(), o["reason"].as_str()),
        (Some("suppressed"), Some("recipient_refused")),
        "{o}"
    );
    assert_eq!(
        sends_to(&sim, &alice) + sends_to(&sim, &carol),
        0,
        "no WeChat call"
    );

    // What the worker set, as the command line shows it.
    let (code, listed) = gate(&bin, &["list"]);
    assert_eq!(code, Some(0));
    let lines: Vec<Vec<&str>> = listed.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert_eq!(
        lines[0][..3],
        [alice.as_str(), "all", "not_following"],
        "{listed}"
    );
    assert_eq!(
        lines[1][..3],
        [carol.as_str(), TEMPLATE, "recipient_refused"],
        "{listed}"
    );
    let (_, json) = gate(&bin, &["list", "--json", "--to", &carol]);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json[0]["template_id"], TEMPLATE);

    // The opposite events lift the gates: both are sent.
    sim.push_user_event(DEFAULT_APPID, &alice, UserEvent::Subscribe)
        .unwrap();
    assert_eq!(next_report(&mut h, "follow").await["status"], "subscribe");
    sim.push_user_event(DEFAULT_APPID, &carol, popup(PreferenceStatus::Accept))
        .unwrap();
    assert_eq!(next_report(&mut h, "preference").await["status"], "accept");
    for (id, user) in [("gate-alice-2", &alice), ("gate-carol-2", &carol)] {
        h.publish(&job(id, user)).await;
        assert_eq!(h.outcome_of(id).await["status"], "sent", "{id}");
    }
    assert_eq!(gate(&bin, &["list"]).1, "", "no gate is left");

    // WeChat's 43101 fails Dave's job and gates the next one; a clear lets it go again.
    sim.set_refusing(&dave, true);
    h.publish(&job("gate-dave-1", &dave)).await;
    let o = h.outcome_of("gate-dave-1").await;
    assert_eq!(
        (o["status"].as_str(), o["errcode"].as_i64()),
        (Some("failed"), Some(43101)),
        "{o}"
    );
    h.publish(&job("gate-dave-2", &dave)).await;
    assert_eq!(h.outcome_of("gate-dave-2").await["status"], "suppressed");
    assert_eq!(sends_to(&sim, &dave), 1, "the second job made no call");
    sim.set_refusing(&dave, false);
    assert_eq!(
        gate(&bin, &["clear", "--to", &dave]),
        (Some(0), "cleared 1 gate\n".into())
    );
    h.publish(&job("gate-dave-3", &dave)).await;
    assert_eq!(h.outcome_of("gate-dave-3").await["status"], "sent");

    // Clearing the app leaves nothing behind in the shared Redis. Another user: a second
    // unsubscribe of Alice's within the same second would be taken for WeChat repeating the
    // first (its CreateTime names it).
    sim.push_user_event(DEFAULT_APPID, &openid(74), UserEvent::Unsubscribe)
        .unwrap();
    next_report(&mut h, "follow").await;
    assert_eq!(gate(&bin, &["clear"]), (Some(0), "cleared 1 gate\n".into()));

    signal(&worker.0, "TERM");
    assert_eq!(
        wait_exit(&mut worker.0, Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    h.cleanup().await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_verbs_refuse_memory_state_and_unknown_apps() {
    let bin = Binary::new(&unique_app("gates_cli"), "http://127.0.0.1:1", "");
    let out = bin
        .command("gate list")
        .args(["--app", &bin.app])
        .output_within(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("state.url is memory"));
    let out = bin
        .command("gate clear --app nosuchapp")
        .output_within(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a configured app"));
    let out = bin
        .command("gate list")
        .output_within(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "--app is required");
}
