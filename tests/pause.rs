//! The kill switch on the real binary, RabbitMQ and Redis: `wxcourier pause` while a worker
//! runs holds a template's jobs (no send) while the app's other jobs go out, within a second
//! of the command; `wxcourier resume` lets the waiting jobs go; with `pause_mode = "drop"` a
//! paused job ends `suppressed` with reason `paused`. The metrics and `check` show it.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::process::{Binary, OutputWithin, signal, wait_exit};
use common::*;
use serde_json::Value;
use wxcourier::broker::job_queue;
use wxcourier::sim::{SimOptions, Simulator};

const PAUSED: &str = "tpl_paused";
const OTHER: &str = "tpl_other";

fn redis_state(port: u16) -> String {
    format!("[state]\nurl = \"redis://127.0.0.1:6379/\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n")
}

fn of_template(id: &str, template: &str, n: usize) -> Value {
    let mut j = job(id, &openid(n));
    j["template_id"] = template.into();
    j
}

/// `wxcourier VERB --app APP [--template T]`: its exit code and what it printed.
fn throw(bin: &Binary, verb: &str, template: Option<&str>) -> (Option<i32>, String) {
    let mut c = bin.command(verb);
    c.args(["--app", &bin.app]);
    if let Some(t) = template {
        c.args(["--template", t]);
    }
    let out = c.output_within(Duration::from_secs(15));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Reads outcomes for `wait` (each `next` waits at most what is left), keyed by id.
async fn outcomes_for(h: &mut Harness, wait: Duration) -> Vec<Value> {
    let end = Instant::now() + wait;
    let mut got = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match h.tap.next(left).await {
            Some(o) => got.push(o),
            None => break,
        }
    }
    got
}

/// One `wxcourier run` process and the port of its `/metrics`.
struct Instance {
    bin: Binary,
    child: std::process::Child,
    port: u16,
}

/// `count` workers of one new app on Redis state, each ready (consuming).
async fn start(prefix: &str, app_keys: &str, count: usize) -> (Simulator, Harness, Vec<Instance>) {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app(prefix);
    let h = Harness::new(&app, &settings(&app, &sim)).await;
    let mut fleet = Vec::new();
    for _ in 0..count {
        let port = free_port();
        let bin = Binary::with(
            &app,
            &sim.base_url(),
            &format!("rate_per_second = 150\nburst = 10\n{app_keys}"),
            &redis_state(port),
        );
        let child = bin.spawn_worker();
        fleet.push(Instance { bin, child, port });
    }
    for i in &fleet {
        let ready = format!("http://127.0.0.1:{}/readyz", i.port);
        let mut waited = Duration::ZERO;
        while !reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(waited < Duration::from_secs(30), "{ready} never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
    }
    wait_for_consumer(&h.conn, &job_queue(&app), Duration::from_secs(20)).await;
    (sim, h, fleet)
}

async fn stop(sim: Simulator, h: &Harness, fleet: Vec<Instance>) {
    // Leaves nothing paused in the shared Redis.
    let _ = throw(&fleet[0].bin, "resume", None);
    for mut i in fleet {
        signal(&i.child, "TERM");
        assert!(wait_exit(&mut i.child, Duration::from_secs(20)).is_some());
    }
    h.cleanup().await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_paused_at_run_time_waits_within_a_second_while_others_send_until_resumed() {
    // Two instances: the pause must reach each of them.
    let (sim, mut h, fleet) = start("pausecli", "", 2).await;
    let bin = &fleet[0].bin;

    let (code, text) = throw(bin, "pause", Some(PAUSED));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("paused: templates {PAUSED}")),
        "{text}"
    );
    let paused_at = Instant::now();

    // Probes of the paused template every 100 ms after the command: those the worker took
    // before its switch saw the pause are sent; the one at 1 s must not be.
    let mut probes = Vec::new();
    for i in 1..=10u64 {
        tokio::time::sleep_until((paused_at + Duration::from_millis(100 * i)).into()).await;
        let id = format!("{}-probe-{i}", bin.app);
        h.publish(&of_template(&id, PAUSED, i as usize)).await;
        probes.push((id, paused_at.elapsed()));
    }
    let mut held: HashSet<String> = (0..5).map(|i| format!("{}-held-{i}", bin.app)).collect();
    for (i, id) in held.iter().enumerate() {
        h.publish(&of_template(id, PAUSED, 100 + i)).await;
    }
    let free = format!("{}-free", bin.app);
    h.publish(&of_template(&free, OTHER, 200)).await;

    // Several re-checks' worth (the test tiers are under a second).
    let seen = outcomes_for(&mut h, Duration::from_secs(4)).await;
    let sent: HashSet<&str> = seen
        .iter()
        .filter(|o| o["status"] == "sent")
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert!(
        sent.contains(free.as_str()),
        "the other template is sent: {seen:?}"
    );
    let last_probe = &probes.last().unwrap().0;
    assert!(
        !sent.contains(last_probe.as_str()),
        "a job published 1 s after the pause was sent: {seen:?}"
    );
    assert!(
        held.iter().all(|id| !sent.contains(id.as_str())),
        "{seen:?}"
    );
    let taken_before: Vec<_> = probes
        .iter()
        .filter(|(id, _)| sent.contains(id.as_str()))
        .map(|(_, at)| *at)
        .collect();
    // The measured figure: the pause reached the worker after the last probe it let through
    // and before the next one, 100 ms later.
    match taken_before.iter().max() {
        Some(last) => eprintln!(
            "the last probe sent was published {last:?} after the pause command ({} of 10 sent)",
            taken_before.len()
        ),
        None => eprintln!("every probe was held, the first published 100 ms after the pause"),
    }
    assert_eq!(
        sim.sends().len(),
        sent.len(),
        "one WeChat call per sent job, none for a held one"
    );
    // Each instance shows the pause; the jobs held were held by one or the other.
    let mut held_counted = false;
    for i in &fleet {
        let m = metrics(i.port).await;
        let gauge = format!(
            "wxcourier_paused{{app=\"{}\",template=\"{PAUSED}\"}} 1",
            bin.app
        );
        assert!(m.contains(&gauge), "{m}");
        held_counted |= m.contains(&format!(
            "wxcourier_paused_jobs_total{{app=\"{}\",action=\"held\"}}",
            bin.app
        ));
    }
    assert!(held_counted, "the held jobs are counted");

    let check = bin.command("check").output_within(Duration::from_secs(30));
    let listed = String::from_utf8_lossy(&check.stdout);
    assert!(
        listed.contains(&format!("app {}: paused: templates {PAUSED}", bin.app)),
        "check lists the pause: {listed}"
    );

    let (code, text) = throw(bin, "resume", Some(PAUSED));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("paused: nothing"), "{text}");

    // Every waiting job goes out once: the held ones and the probes not sent before.
    for (id, _) in &probes {
        if !sent.contains(id.as_str()) {
            held.insert(id.clone());
        }
    }
    let expected = held.len();
    let mut after = HashSet::new();
    for o in outcomes_for(&mut h, Duration::from_secs(10)).await {
        assert_eq!(o["status"], "sent", "{o}");
        after.insert(o["id"].as_str().unwrap().to_owned());
        if after.len() == expected {
            break;
        }
    }
    assert_eq!(after, held, "every waiting job is sent after the resume");
    assert_eq!(sim.sends().len(), sent.len() + expected, "each sent once");
    for i in &fleet {
        let m = metrics(i.port).await;
        let gauge = format!(
            "wxcourier_paused{{app=\"{}\",template=\"{PAUSED}\"}} 0",
            bin.app
        );
        assert!(m.contains(&gauge), "{m}");
    }
    stop(sim, &h, fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_drop_a_whole_app_pause_ends_its_jobs_suppressed_and_a_resume_sends_again() {
    let (sim, mut h, fleet) = start("pausedrop", "pause_mode = \"drop\"", 1).await;
    let (bin, port) = (&fleet[0].bin, fleet[0].port);
    let (code, text) = throw(bin, "pause", None);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("paused: the whole app"), "{text}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let dropped = format!("{}-dropped", bin.app);
    h.publish(&of_template(&dropped, OTHER, 1)).await;
    let o = h.outcome_of(&dropped).await;
    assert_eq!(o["status"], "suppressed", "{o}");
    assert_eq!(o["reason"], "paused", "{o}");
    assert!(sim.sends().is_empty(), "no WeChat call for a dropped job");
    let m = metrics(port).await;
    assert!(
        m.contains(&format!(
            "wxcourier_paused{{app=\"{}\",template=\"*\"}} 1",
            bin.app
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "wxcourier_paused_jobs_total{{app=\"{}\",action=\"dropped\"}} 1",
            bin.app
        )),
        "{m}"
    );

    let (code, text) = throw(bin, "resume", None);
    assert_eq!(code, Some(0), "{text}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = format!("{}-sent", bin.app);
    h.publish(&of_template(&sent, OTHER, 2)).await;
    assert_eq!(h.outcome_of(&sent).await["status"], "sent");
    stop(sim, &h, fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_refuses_an_unknown_app_and_memory_state_and_says_why() {
    let app = unique_app("pauseuse");
    let bin = Binary::new(&app, "http://127.0.0.1:1", "");
    let (code, text) = throw(&bin, "pause", None);
    assert_eq!(code, Some(2), "memory state: {text}");
    assert!(text.contains("paused_templates"), "{text}");
    let redis = Binary::new(&app, "http://127.0.0.1:1", &redis_state(free_port()));
    let mut c = redis.command("pause");
    c.args(["--app", "not_configured"]);
    let out = c.output_within(Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a configured app"));
    let unreachable = Binary::new(
        &app,
        "http://127.0.0.1:1",
        "[state]\nurl = \"redis://127.0.0.1:1/\"\n",
    );
    let (code, text) = throw(&unreachable, "resume", Some("t1"));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot reach the state"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_the_file_pauses_are_not_sent_with_memory_state_either() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("pausefile");
    let bin = Binary::with(
        &app,
        &sim.base_url(),
        &format!("paused_templates = [\"{PAUSED}\"]\npause_mode = \"drop\""),
        "",
    );
    let mut h = Harness::new(&app, &settings(&app, &sim)).await;
    let mut worker = bin.spawn_worker();
    wait_for_consumer(&h.conn, &job_queue(&app), Duration::from_secs(20)).await;
    let (dropped, sent) = (format!("{app}-dropped"), format!("{app}-sent"));
    h.publish(&of_template(&dropped, PAUSED, 1)).await;
    h.publish(&of_template(&sent, OTHER, 2)).await;
    let mut statuses = std::collections::HashMap::new();
    for o in h.outcomes(2).await {
        statuses.insert(o["id"].as_str().unwrap().to_owned(), o);
    }
    assert_eq!(statuses[&dropped]["status"], "suppressed", "{statuses:?}");
    assert_eq!(statuses[&dropped]["reason"], "paused", "{statuses:?}");
    assert_eq!(statuses[&sent]["status"], "sent", "{statuses:?}");
    assert_eq!(sim.sends().len(), 1);
    signal(&worker, "TERM");
    assert!(wait_exit(&mut worker, Duration::from_secs(20)).is_some());
    h.cleanup().await;
    sim.stop();
}
