//! A job's story end to end, with the real `wxcourier` binary, the broker, the simulator and its
//! delivery reports: `wxcourier status --json` and `GET /v1/jobs/APP/ID` on `admin.listen` both
//! show it received, sent with its msgid and, once the simulator's report came, delivered; an
//! unknown id exits 1 and answers 404; the endpoint refuses a caller without its token. With
//! Redis state `status` reads Redis; with memory state it asks the worker's endpoint.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::process::{Binary, OutputWithin};
use common::*;
use serde_json::Value;
use wxcourier::broker::job_queue;
use wxcourier::sim::push::CallbackTarget;
use wxcourier::sim::{Answer, DEFAULT_APPID, SimOptions, Simulator};

const TOKEN: &str = "an-admin-token-for-tests-0123456789";
const CALLBACK_TOKEN: &str = "cb-token";

struct Running {
    sim: Simulator,
    binary: Binary,
    worker: Child,
    admin: String,
    harness: Harness,
}

async fn start(prefix: &str, state_url: &str) -> Running {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app(prefix);
    let (http, admin) = (free_port(), free_port());
    let binary = Binary::with(
        &app,
        &sim.base_url(),
        &format!("rate_per_second = 150\nburst = 10\ncallback_token = \"{CALLBACK_TOKEN}\""),
        &format!(
            "[state]\nurl = \"{state_url}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n"
        ),
    );
    let harness = Harness::new(&app, &settings(&app, &sim)).await;
    let worker = binary
        .command("run")
        .env("WXCOURIER_ADMIN__TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for_consumer(&harness.conn, &job_queue(&app), Duration::from_secs(30)).await;
    sim.set_callback(
        DEFAULT_APPID,
        Some(CallbackTarget {
            url: format!("http://127.0.0.1:{http}/wechat/callback/{app}"),
            token: CALLBACK_TOKEN.into(),
            aes_key: None,
        }),
    );
    Running {
        sim,
        binary,
        worker,
        admin: format!("http://127.0.0.1:{admin}/v1/jobs/{app}"),
        harness,
    }
}

impl Running {
    /// `wxcourier status --app APP IDS… --json`: its exit code and the stories it printed.
    fn status(&self, ids: &[&str]) -> (i32, Vec<Value>, String) {
        let out = self
            .binary
            .command(&format!("status --app {} --json", self.binary.app))
            .args(ids)
            .env("WXCOURIER_ADMIN__TOKEN", TOKEN)
            .output_within(Duration::from_secs(30));
        let stories = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap_or(-1), stories, stderr)
    }

    /// The job's story, as `status` prints it, once it holds `step`.
    async fn story_until(&self, id: &str, step: &str) -> Value {
        let started = Instant::now();
        loop {
            let (code, stories, stderr) = self.status(&[id]);
            if code == 0 && stories.len() == 1 && steps(&stories[0]).contains(&step) {
                return stories[0].clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {step} in the story: {code} {stories:?} {stderr}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn get(&self, id: &str, token: Option<&str>) -> (u16, String) {
        let mut request = reqwest::Client::new().get(format!("{}/{id}", self.admin));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn stop(mut self) {
        signal(&self.worker, "TERM");
        assert!(wait_exit(&mut self.worker, Duration::from_secs(20)).is_some());
        self.harness.cleanup().await;
        self.sim.stop();
    }
}

fn steps(story: &Value) -> Vec<&str> {
    story["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect()
}

/// Sends one job and follows its story through `status` and the endpoint until its delivery
/// report is in it.
async fn a_jobs_story_reads_received_sent_then_delivered(prefix: &str, state_url: &str) {
    let mut r = start(prefix, state_url).await;
    let id = format!("{}-order-1", r.binary.app);
    r.harness.publish(&job(&id, &openid(1))).await;
    let outcome = r.harness.outcome_of(&id).await;
    assert_eq!(outcome["status"], "sent", "{outcome}");
    let msgid = outcome["msgid"].as_u64().unwrap();
    let story = r.story_until(&id, "delivery").await;
    assert_eq!(steps(&story), ["received", "sent", "delivery"], "{story}");
    assert_eq!(story["app"], r.binary.app.as_str());
    assert_eq!(story["id"], id.as_str());
    assert_eq!(story["status"], "delivered", "{story}");
    assert_eq!(story["trail"][1]["msgid"], msgid, "{story}");
    assert_eq!(story["trail"][2]["msgid"], msgid, "{story}");
    assert_eq!(story["trail"][2]["status"], "delivered", "{story}");

    let (status, body) = r.get(&id, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let served: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served, story, "the endpoint and status tell one story");

    let unknown = format!("{}-never", r.binary.app);
    let (code, stories, stderr) = r.status(&[&id, &unknown]);
    assert_eq!(code, 1, "an unknown id exits 1: {stderr}");
    assert_eq!(stories.len(), 1, "the known one is still printed");
    assert!(stderr.contains(&unknown), "{stderr}");
    assert_eq!(r.get(&unknown, Some(TOKEN)).await.0, 404);
    assert_eq!(r.get(&id, None).await.0, 401);
    assert_eq!(
        r.get(&id, Some("an-admin-token-for-tests-012345678X"))
            .await
            .0,
        401
    );

    // A try WeChat answers "system busy" is an attempt with its errcode and the wait chosen.
    let busy = format!("{}-order-2", r.binary.app);
    r.sim.script(&openid(2), vec![Answer::Code(-1)]);
    r.harness.publish(&job(&busy, &openid(2))).await;
    assert_eq!(r.harness.outcome_of(&busy).await["status"], "sent");
    // Kept beside the outcome's publish, so it may come a moment after the outcome.
    let story = &r.story_until(&busy, "sent").await;
    assert_eq!(
        steps(story)[..3],
        ["received", "attempt", "sent"],
        "{story}"
    );
    let attempt = &story["trail"][1];
    assert_eq!(attempt["errcode"], -1, "{story}");
    assert_eq!(attempt["wait"], "backoff", "{story}");
    assert!(attempt["wait_ms"].as_u64().unwrap() > 0, "{story}");
    assert_eq!(story["trail"][2]["attempts"], 2, "{story}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_state_status_and_the_endpoint_show_the_whole_story() {
    a_jobs_story_reads_received_sent_then_delivered("trail_r", "redis://127.0.0.1:6379").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_memory_state_status_asks_the_worker_and_shows_the_whole_story() {
    a_jobs_story_reads_received_sent_then_delivered("trail_m", "memory").await;
}

#[test]
fn status_without_a_place_to_read_or_with_a_bad_app_exits_2_saying_what_to_fix() {
    let binary = Binary::new(&unique_app("trail_cfg"), "http://127.0.0.1:9", "");
    let out = binary
        .command(&format!("status --app {} some-id", binary.app))
        .env_remove("WXCOURIER_ADMIN__TOKEN")
        .output_within(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("admin.listen"), "{stderr}");
    let out = binary
        .command("status --app Bad!App some-id")
        .output_within(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--app"));
}
