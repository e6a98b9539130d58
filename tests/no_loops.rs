//! Nothing is handed back to the broker in a loop, and nothing is lost when a job cannot be
//! tried now: an id in flight elsewhere, a token that cannot be had, quota answers, an
//! expiry after the send, a lost publishing channel, a job the broker gives up on. (A job
//! turned back by a pause is covered by the pipeline's unit tests.)

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use lapin::options::{BasicGetOptions, BasicNackOptions};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use wxcourier::sim::{Answer, DEFAULT_APPID};
use wxcourier::types::Secret;

/// A slow rate, then the same id twice. The second copy waits behind the
/// first's claim in delay queues (no requeue the broker counts), and ends as a duplicate once
/// the first is sent, on RabbitMQ 3.x and 4.x alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_in_flight_elsewhere_waits_in_delay_queues_and_ends_as_a_duplicate() {
    let mut t = spawn_app("inflight", |s| {
        let app = s.apps.values_mut().next().unwrap();
        // One send every 12 s: the old hand-back (a requeue every 500 ms) passed RabbitMQ
        // 4.x's 20 counted redeliveries in 10 s, and the broker dropped the job.
        app.rate_per_second = common::rate(1.0 / 12.0);
        app.burst = common::count(1);
    })
    .await;
    t.publish(&job("p1", &openid(1))).await;
    t.publish(&job("x1", &openid(2))).await;
    t.publish(&job("x1", &openid(2))).await;
    // p1 at once, then x1 after 12 s; the second x1 waits meanwhile in the 200 ms tier.
    let outcomes = t.tap.collect(3, Duration::from_secs(30)).await;
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    let x1: Vec<_> = outcomes.iter().filter(|o| o["id"] == "x1").collect();
    assert_eq!(x1.len(), 2);
    assert!(x1.iter().all(|o| o["status"] == "sent"), "{x1:?}");
    assert_eq!(x1.iter().filter(|o| o["duplicate"] == true).count(), 1);
    assert_eq!(x1[0]["msgid"], x1[1]["msgid"]);
    assert_each_job_accepted_once(&t.sim, &HashSet::from(["p1".into(), "x1".into()]));
    assert!(
        t.ctx.metrics.render().contains("wxcourier_retries_total"),
        "the wait went through the delay tiers"
    );
    t.stop().await;
}

/// A wrong secret: WeChat's token endpoint sees a few calls per backoff step, not one per
/// job per second; the app pauses and its jobs wait in the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_asked_about_a_few_times_and_the_jobs_wait_in_the_broker() {
    let mut t = spawn_app("badsecret", |s| {
        let app = s.apps.values_mut().next().unwrap();
        app.secret = Secret::new("not-the-secret");
    })
    .await;
    for i in 0..5 {
        t.publish(&job(&format!("bs-{i}"), &openid(i))).await;
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let calls = t.sim.stats().apps[DEFAULT_APPID].stable_token_calls;
    // Backoff 1, 2, 4 s: about four fetches in 8 s whatever the number of jobs.
    assert!((1..=5).contains(&calls), "{calls} token calls in 8 s");
    assert_eq!(t.sim.stats().apps[DEFAULT_APPID].send_calls, 0);
    let metrics = t.ctx.metrics.render();
    assert!(
        metrics.contains("wxcourier_token_fetch_failures_total"),
        "{metrics}"
    );
    assert!(
        t.tap.next(Duration::from_millis(100)).await.is_none(),
        "no outcome: the jobs wait"
    );
    // Stopped, every job is back in its queue within the longest pause so far.
    let queue = wxcourier::broker::job_queue(&t.app);
    let h = t.stop_keeping_queue().await;
    let conn = &h.conn;
    let mut waiting = 0;
    for _ in 0..100 {
        waiting = queue_len(conn, &queue).await;
        if waiting == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(waiting, 5, "every job kept");
    h.cleanup().await;
}

/// Ten 45009 answers and then one -1 leave the job its attempts: quota answers do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_answers_do_not_use_up_attempts_for_a_later_transient_error() {
    let mut t = spawn_app("quotacount", |s| {
        s.retry.max_attempts = common::count(3);
        s.retry.pause = common::nz_ms(50);
        s.retry.max_pause = ms(50);
        s.retry.initial_delay = common::nz_ms(50);
    })
    .await;
    let user = openid(7);
    let mut answers = vec![Answer::Code(45009); 10];
    answers.push(Answer::Code(-1));
    t.sim.script(&user, answers);
    t.publish(&job("qc-1", &user)).await;
    let o = t.outcome_of("qc-1").await;
    assert_eq!(o["status"], "sent", "{o}");
    assert_eq!(o["attempts"], 12);
    t.stop().await;
}

/// A job sent just before `not_after` and delivered again after it is a duplicate, not expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_redelivered_after_its_not_after_is_a_duplicate_not_expired() {
    let mut t = spawn_app("dupexp", |_| {}).await;
    let soon = OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let mut j = job("de-1", &openid(8));
    j["not_after"] = json!(soon.format(&Rfc3339).unwrap());
    t.publish(&j).await;
    let first = t.outcome_of("de-1").await;
    assert_eq!(first["status"], "sent");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    t.publish(&j).await;
    let again = t.outcome_of("de-1").await;
    assert_eq!(again["status"], "sent", "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["msgid"], first["msgid"]);
    t.stop().await;
}

/// When the publishing channel dies, the worker starts a new session instead of sending
/// messages whose outcome it cannot publish; the job is then sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_publishing_channel_starts_a_new_session_and_nothing_is_sent_twice() {
    let mut t = spawn_app("pubdown", |_| {}).await;
    t.publish(&job("pd-0", &openid(11))).await;
    assert_eq!(t.outcome_of("pd-0").await["status"], "sent");
    let publisher = t.ctx.results.get().expect("a session is up");
    publisher.close().await.unwrap();
    eventually(Duration::from_secs(10), "a new session", || {
        t.ctx.metrics.broker_reconnects.get() >= 1 && t.ctx.health.is_ready()
    })
    .await;
    t.publish(&job("pd-1", &openid(12))).await;
    assert_eq!(t.outcome_of("pd-1").await["status"], "sent");
    assert_each_job_accepted_once(&t.sim, &HashSet::from(["pd-0".into(), "pd-1".into()]));
    t.stop().await;
}

/// A consumer that keeps handing a job back: past the delivery limit the broker moves it to
/// `wxcourier.dead` (at least once), where `dead list` says why, instead of dropping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_the_delivery_limit_is_dead_lettered_with_a_readable_reason() {
    let app = unique_app("dlimit");
    let sim = wxcourier::sim::Simulator::start("127.0.0.1:0", Default::default())
        .await
        .unwrap();
    let h = Harness::new(&app, &settings(&app, &sim)).await;
    h.publish(&job("dl-1", &openid(13))).await;
    let queue = wxcourier::broker::job_queue(&app);
    let ch = h.conn.create_channel().await.unwrap();
    let limit = wxcourier::broker::topology::JOB_DELIVERY_LIMIT as usize;
    let mut deliveries = 0;
    for _ in 0..limit + 5 {
        let Some(msg) = ch
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
        else {
            break;
        };
        deliveries += 1;
        msg.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert!(deliveries > limit, "{deliveries} deliveries");
    let found = take_dead_lettered(&h, &app).await;
    assert_eq!(found.len(), 1, "the job is in wxcourier.dead, not dropped");
    assert_eq!(found[0].1, "delivery_limit");
    assert_eq!(queue_len(&h.conn, &queue).await, 0);
    h.cleanup().await;
    sim.stop();
}
