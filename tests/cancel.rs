//! Cancels end to end, with the real broker, the worker binary and Redis state: a job
//! scheduled a few seconds ahead and cancelled with `wxcourier cancel` ends `cancelled`
//! without a WeChat call; a cancel for a job already sent is answered `too_late` and the job
//! gets no second outcome; a malformed cancel is answered `rejected` and kept in
//! `wxcourier.dead` with its reason.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use common::process::{Binary, OutputWithin, signal, wait_exit};
use common::*;
use wxcourier::broker::job_queue;
use wxcourier::sim::{SimOptions, Simulator};

/// What came on `wxcourier.results` for the app, by job id: the cancel answers and the job
/// outcomes apart.
#[derive(Default)]
struct Seen {
    answers: HashMap<String, Vec<Value>>,
    outcomes: HashMap<String, Vec<Value>>,
}

impl Seen {
    /// Reads results until `done` holds, or nothing came for `idle`.
    async fn read(&mut self, h: &mut Harness, idle: Duration, done: impl Fn(&Seen) -> bool) {
        while !done(self) {
            let Some(r) = h.tap.next(idle).await else {
                return;
            };
            let id = r["id"].as_str().unwrap_or("").to_owned();
            match r["kind"].as_str() {
                Some("cancel") => self.answers.entry(id).or_default().push(r),
                _ => self.outcomes.entry(id).or_default().push(r),
            }
        }
    }

    fn statuses(list: Option<&Vec<Value>>) -> Vec<String> {
        list.into_iter()
            .flatten()
            .map(|v| v["status"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    fn answer(&self, id: &str) -> Vec<String> {
        Self::statuses(self.answers.get(id))
    }

    fn outcome(&self, id: &str) -> Vec<String> {
        Self::statuses(self.outcomes.get(id))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_job_is_cancelled_and_a_sent_one_is_too_late() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("cancel");
    let bin = Binary::new(
        &app,
        &sim.base_url(),
        "[state]\nurl = \"redis://127.0.0.1:6379\"\n",
    );
    let mut h = Harness::new(&app, &settings(&app, &sim)).await;
    let mut worker = bin.spawn_worker();
    wait_for_consumer(&h.conn, &job_queue(&app), Duration::from_secs(30)).await;

    let (later, now) = (format!("{app}-later"), format!("{app}-now"));
    let at = (time::OffsetDateTime::now_utc() + time::Duration::seconds(6))
        .format(&Rfc3339)
        .unwrap();
    let mut scheduled = job(&later, &openid(1));
    scheduled["not_before"] = at.into();
    h.publish(&scheduled).await;
    h.publish(&job(&now, &openid(2))).await;
    let mut seen = Seen::default();
    seen.read(&mut h, Duration::from_secs(15), |s| {
        !s.outcome(&now).is_empty()
    })
    .await;
    assert_eq!(seen.outcome(&now), ["sent"]);
    assert!(seen.outcome(&later).is_empty(), "the scheduled job waits");

    let out = bin
        .command(&format!("cancel --app {app}"))
        .args([&later, &now])
        .output_within(Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("published 2 cancel(s)"), "{stdout}");

    seen.read(&mut h, Duration::from_secs(15), |s| {
        !s.answer(&later).is_empty() && !s.answer(&now).is_empty() && !s.outcome(&later).is_empty()
    })
    .await;
    assert_eq!(seen.answer(&later), ["accepted"]);
    assert_eq!(seen.answer(&now), ["too_late"]);
    assert_eq!(seen.outcome(&later), ["cancelled"], "ended before its time");
    let answer = &seen.answers[&later][0];
    assert_eq!(answer["app"], app.as_str());

    // Past the scheduled time: nothing more for either job.
    seen.read(&mut h, Duration::from_secs(8), |_| false).await;
    assert_eq!(seen.outcome(&later), ["cancelled"]);
    assert_eq!(seen.outcome(&now), ["sent"], "no second outcome");
    let sends: Vec<_> = sim.sends().into_iter().map(|s| s.touser).collect();
    assert_eq!(
        sends,
        [openid(2)],
        "only the job that was not cancelled reached WeChat"
    );

    // A malformed cancel: answered rejected, and kept in wxcourier.dead with its reason.
    h.publish_raw(br#"{"kind":"cancel","id":"x","touser":"o"}"#, None)
        .await;
    seen.read(&mut h, Duration::from_secs(15), |s| {
        !s.answer("x").is_empty()
    })
    .await;
    assert_eq!(seen.answer("x"), ["rejected"]);
    let dead = h.take_dead(1).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].1.contains("touser: is not a field of a cancel"),
        "{}",
        dead[0].1
    );

    signal(&worker, "TERM");
    let status = wait_exit(&mut worker, Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(0));
    h.cleanup().await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_before_its_job_is_kept_in_redis_across_a_kill_9_and_ends_the_job() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("cancelkept");
    let bin = Binary::new(
        &app,
        &sim.base_url(),
        "[state]\nurl = \"redis://127.0.0.1:6379\"\n",
    );
    let mut h = Harness::new(&app, &settings(&app, &sim)).await;
    let early = format!("{app}-early");

    let bad = bin
        .command(&format!("cancel --app {app}"))
        .args(["not an id"])
        .output_within(Duration::from_secs(30));
    assert_eq!(bad.status.code(), Some(2), "a bad id is a usage error");
    // Published before any worker runs: the cancel waits in the app's queue.
    let out = bin
        .command(&format!("cancel --app {app}"))
        .arg(&early)
        .output_within(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let mut worker = bin.spawn_worker();
    let mut seen = Seen::default();
    seen.read(&mut h, Duration::from_secs(20), |s| {
        !s.answer(&early).is_empty()
    })
    .await;
    assert_eq!(seen.answer(&early), ["accepted"]);
    signal(&worker, "KILL");
    wait_exit(&mut worker, Duration::from_secs(10)).expect("killed");

    // Another worker process, then the job.
    let mut worker = bin.spawn_worker();
    wait_for_consumer(&h.conn, &job_queue(&app), Duration::from_secs(30)).await;
    h.publish(&job(&early, &openid(1))).await;
    seen.read(&mut h, Duration::from_secs(15), |s| {
        !s.outcome(&early).is_empty()
    })
    .await;
    assert_eq!(seen.outcome(&early), ["cancelled"]);
    assert!(sim.sends().is_empty(), "no WeChat call");

    signal(&worker, "TERM");
    wait_exit(&mut worker, Duration::from_secs(30)).expect("exits");
    h.cleanup().await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_sends_on_three_workers_each_end_exactly_one_way() {
    const JOBS: usize = 60;
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    sim.set_faults(wxcourier::sim::Faults {
        latency_ms: 20,
        ..Default::default()
    });
    let app = unique_app("cancelrace");
    // A slow rate spreads the sends over the time the cancels arrive: many cancels find their
    // job's claim held while it waits for its turn, and wait for it.
    let bin = Binary::with(
        &app,
        &sim.base_url(),
        "rate_per_second = 40\nburst = 1",
        "[state]\nurl = \"redis://127.0.0.1:6379\"\n",
    );
    let mut h = Harness::new(&app, &settings(&app, &sim)).await;
    let mut workers: Vec<_> = (0..3).map(|_| bin.spawn_worker()).collect();
    wait_for_consumer(&h.conn, &job_queue(&app), Duration::from_secs(30)).await;
    let ids: Vec<String> = (0..JOBS).map(|n| format!("{app}-{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        // Every third job is answered "busy" once: it waits in a retry tier when its cancel
        // comes, and ends at its next turn.
        if n % 3 == 0 {
            sim.script(&openid(n), vec![wxcourier::sim::Answer::Code(-1)]);
        }
        h.publish(&job(id, &openid(n))).await;
    }
    let out = bin
        .command(&format!("cancel --app {app}"))
        .args(&ids)
        .output_within(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let mut seen = Seen::default();
    seen.read(&mut h, Duration::from_secs(20), |s| {
        s.answers.len() == JOBS && s.outcomes.len() == JOBS
    })
    .await;
    // And nothing more after that.
    seen.read(&mut h, Duration::from_secs(3), |_| false).await;
    let (mut cancelled, mut sent) = (0, 0);
    for id in &ids {
        let ending = (seen.answer(id), seen.outcome(id));
        match (ending.0.as_slice(), ending.1.as_slice()) {
            ([a], [o]) if a == "accepted" && o == "cancelled" => cancelled += 1,
            ([a], [o]) if a == "too_late" && o == "sent" => sent += 1,
            other => panic!("{id} ended {other:?}"),
        }
    }
    eprintln!("{cancelled} cancelled, {sent} sent of {JOBS}");
    let accepted_by_wechat = sim.sends().iter().filter(|s| s.errcode == 0).count();
    assert_eq!(
        accepted_by_wechat, sent,
        "every sent job, and only those, reached WeChat"
    );
    assert!(cancelled > 0, "some cancel came in time");

    for mut w in workers.drain(..) {
        signal(&w, "TERM");
        wait_exit(&mut w, Duration::from_secs(30)).expect("exits");
    }
    h.cleanup().await;
    sim.stop();
}
