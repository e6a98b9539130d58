//! `not_before` end to end: scheduled jobs wait in the broker's delay tiers, are sent at their
//! time and never before, and a kill -9 of the worker while they wait loses none of them.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::process::{Binary, signal, wait_exit};
use common::*;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use wxcourier::sim::{SimOptions, Simulator};

const JOBS: usize = 20;

fn at(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_jobs_are_sent_at_their_time_and_survive_a_kill_9_while_they_wait() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("sched");
    let bin = Binary::new(&app, &sim.base_url(), "");
    let mut h = Harness::new(&app, &settings(&app, &sim)).await;
    let mut worker = bin.spawn_worker();
    wait_for_consumer(
        &h.conn,
        &wxcourier::broker::job_queue(&app),
        Duration::from_secs(20),
    )
    .await;

    // One job due now, and JOBS due 6 s from now.
    let due = OffsetDateTime::now_utc() + time::Duration::seconds(6);
    h.publish(&job("now-1", &openid(1))).await;
    let mut ids = HashSet::new();
    for n in 0..JOBS {
        let id = format!("later-{n}");
        let mut j = job(&id, &openid(100 + n));
        j["not_before"] = json!(at(due));
        h.publish(&j).await;
        ids.insert(id);
    }
    let first = h.outcome_of("now-1").await;
    assert_eq!(first["status"], "sent", "{first}");

    // While they wait in the delay tiers: kill -9, then a new worker.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        sim.sends()
            .iter()
            .all(|s| s.client_msg_id.as_deref() == Some("now-1"))
    );
    signal(&worker, "KILL");
    let _ = worker.wait();
    worker = bin.spawn_worker();

    let mut seen = HashSet::new();
    let mut outcomes = Vec::new();
    while seen.len() < JOBS {
        let o = tokio::time::timeout(Duration::from_secs(30), h.outcomes(1))
            .await
            .expect("every scheduled job ends within 30 s")
            .remove(0);
        let id = o["id"].as_str().unwrap().to_owned();
        assert!(ids.contains(&id), "{o}");
        assert!(seen.insert(id), "one outcome per job: {o}");
        outcomes.push(o);
    }
    signal(&worker, "TERM");
    let exit = wait_exit(&mut worker, Duration::from_secs(30)).and_then(|s| s.code());
    for o in &outcomes {
        assert_eq!(o["status"], "sent", "{o}");
        assert_eq!(o["attempts"], 1, "waiting used no attempt: {o}");
        let finished = OffsetDateTime::parse(o["finished_at"].as_str().unwrap(), &Rfc3339).unwrap();
        assert!(finished >= due, "sent before its not_before: {o}");
        // The shortest tier (1 s) past its time, and slack for a loaded machine.
        assert!(
            finished - due < time::Duration::seconds(5),
            "sent late: {o}"
        );
    }
    ids.insert("now-1".into());
    assert_each_job_accepted_once(&sim, &ids);
    assert_eq!(exit, Some(0));
    h.cleanup().await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_before_after_not_after_is_rejected_to_the_dead_queue() {
    let mut t = spawn_app("sched_bad", |_| {}).await;
    let mut j = job("backwards-1", &openid(1));
    j["not_before"] = json!("2030-01-02T00:00:00Z");
    j["not_after"] = json!("2030-01-01T00:00:00Z");
    t.publish(&j).await;
    let o = t.outcome_of("backwards-1").await;
    assert_eq!(o["status"], "rejected", "{o}");
    assert!(o["error"].as_str().unwrap().contains("not_before"), "{o}");
    let dead = t.take_dead(1).await;
    assert!(dead[0].1.contains("not_before"), "{}", dead[0].1);
    t.stop().await;
}
