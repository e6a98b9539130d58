//! Nothing is handed back to the broker in a loop, and nothing is lost when a job cannot be
//! tried now: an id in flight elsewhere, a token that cannot be had, quota answers, an
//! expiry after the send, a lost publishing channel, a job the broker gives up on. (A job
//! turned back by a pause is covered by the pipeline's unit tests.)
//!
//! What the broker counts toward a job queue's delivery limit depends on its series. Before
//! 4.3 every return of a delivery counted. From 4.3 on only a failure does: a `basic.reject`
//! with requeue, or a channel closed with the delivery unacked; a `basic.nack` with requeue
//! and a consumer timeout do not. Each way a job goes back is tested here on the series under
//! test, with what that series does.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicRejectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use wxcourier::sim::{Answer, DEFAULT_APPID};
use wxcourier::types::Secret;

/// A slow rate, then the same id twice. The second copy waits behind the
/// first's claim in delay queues (no requeue the broker counts), and ends as a duplicate once
/// the first is sent, on RabbitMQ 3.x and 4.x alike. The three are queued before the worker
/// starts: published while it ran, a broker slow to confirm (a CI machine's disk under load)
/// once delivered the second copy after the first was sent, and nothing was in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_in_flight_elsewhere_waits_in_delay_queues_and_ends_as_a_duplicate() {
    let queued = [
        job("p1", &openid(1)),
        job("x1", &openid(2)),
        job("x1", &openid(2)),
    ];
    let mut t = spawn_app_with_queued("inflight", &queued, |s| {
        let app = s.apps.values_mut().next().unwrap();
        // One send every 12 s: the old hand-back (a requeue every 500 ms) passed RabbitMQ
        // 4.x's 20 counted redeliveries in 10 s, and the broker dropped the job.
        app.rate_per_second = common::rate(1.0 / 12.0);
        app.burst = common::count(1);
    })
    .await;
    // p1 at once, then x1 after 12 s; the second x1 waits meanwhile in the 200 ms tier.
    let outcomes = t.tap.collect(3, Duration::from_secs(30)).await;
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    let x1: Vec<_> = outcomes.iter().filter(|o| o["id"] == "x1").collect();
    assert_eq!(x1.len(), 2);
    assert!(x1.iter().all(|o| o["status"] == "sent"), "{x1:?}");
    assert_eq!(x1.iter().filter(|o| o["duplicate"] == true).count(), 1);
    assert_eq!(x1[0]["msgid"], x1[1]["msgid"]);
    assert_each_job_accepted_once(&t.sim, &HashSet::from(["p1".into(), "x1".into()]));
    let text = t.ctx.metrics.render();
    assert!(
        text.lines()
            .any(|l| l.starts_with("wxcourier_retries_total{") && l.contains("cause=\"not_now\"")),
        "the wait went through the delay tiers, as a job that could not be tried now: {text}"
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

/// The broker's series as (major, minor), from the version it announces.
async fn series() -> (u32, u32) {
    let version = broker_version().await;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// Whether the broker under test counts a `basic.nack` with requeue toward the delivery limit
/// (every series before 4.3; rabbitmq-server #15387 made 4.3 count failures only).
async fn nack_requeue_counts() -> bool {
    series().await < (4, 3)
}

/// A count header of a delivery (`x-delivery-count`, `x-acquired-count`), when present.
fn count_header(props: &BasicProperties, key: &str) -> Option<i64> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        other => panic!("{key} is {other:?}"),
    }
}

/// How a test gives a job back to its queue.
#[derive(Clone, Copy, Debug)]
enum GiveBack {
    /// `basic.reject` with requeue: "this delivery failed".
    Reject,
    /// `basic.nack` with requeue: "not now".
    Nack,
    /// The consumer's connection closes with the delivery unacked, as when its process dies.
    Die,
}

/// Gets the job of `queue` and gives it back `how`, at most `rounds` times or until the queue
/// stays empty for 2 s (the broker dead-lettered it). Returns each delivery's
/// `x-delivery-count` (`None` when absent).
async fn give_back(
    conn: &Connection,
    queue: &str,
    how: GiveBack,
    rounds: usize,
) -> Vec<Option<i64>> {
    let mut counts = Vec::new();
    let mut own = None;
    for _ in 0..rounds {
        // A job given back by a closed connection is back once the broker has seen the
        // close, a moment after it.
        let mut got = None;
        for _ in 0..40 {
            let conn: &Connection = match how {
                GiveBack::Die => own.insert(connect().await),
                GiveBack::Reject | GiveBack::Nack => conn,
            };
            let ch = conn.create_channel().await.unwrap();
            if let Some(msg) = ch
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .unwrap()
            {
                got = Some((ch, msg.delivery));
                break;
            }
            let _ = ch.close(200, "empty".into()).await;
            if let Some(conn) = own.take() {
                let _ = conn.close(200, "empty".into()).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some((ch, delivery)) = got else { break };
        counts.push(count_header(&delivery.properties, "x-delivery-count"));
        match how {
            GiveBack::Reject => {
                delivery
                    .reject(BasicRejectOptions { requeue: true })
                    .await
                    .unwrap();
            }
            GiveBack::Nack => {
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            GiveBack::Die => {
                let conn = own.take().unwrap();
                conn.close(200, "died".into()).await.unwrap();
            }
        }
        let _ = ch.close(200, "done".into()).await;
    }
    counts
}

/// A harness with one job of `app` queued, and the simulator it points at.
async fn one_queued_job(prefix: &str) -> (Harness, wxcourier::sim::Simulator) {
    let app = unique_app(prefix);
    let sim = wxcourier::sim::Simulator::start("127.0.0.1:0", Default::default())
        .await
        .unwrap();
    let h = Harness::new(&app, &settings(&app, &sim)).await;
    h.publish(&job(&format!("{prefix}-1"), &openid(13))).await;
    (h, sim)
}

/// Asserts the job of `h` was delivered once more than the limit allows and then moved to
/// `wxcourier.dead` by the broker with a reason `dead list` shows, not dropped.
async fn assert_dead_lettered_past_the_limit(h: &Harness, deliveries: usize) {
    let limit = wxcourier::broker::topology::JOB_DELIVERY_LIMIT as usize;
    assert_eq!(deliveries, limit + 1, "{deliveries} deliveries");
    let found = take_dead_lettered(h, &h.app).await;
    assert_eq!(found.len(), 1, "the job is in wxcourier.dead, not dropped");
    assert_eq!(found[0].1, "delivery_limit");
    assert_eq!(h.queued().await, 0);
}

/// A consumer that keeps rejecting a job with requeue ("this failed"): past the delivery
/// limit the broker moves it to `wxcourier.dead`, where `dead list` says why, on every series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_rejected_past_the_delivery_limit_is_dead_lettered_with_a_readable_reason() {
    let (h, sim) = one_queued_job("dlimit").await;
    let limit = wxcourier::broker::topology::JOB_DELIVERY_LIMIT as usize;
    let queue = wxcourier::broker::job_queue(&h.app);
    let counts = give_back(&h.conn, &queue, GiveBack::Reject, limit + 5).await;
    assert_dead_lettered_past_the_limit(&h, counts.len()).await;
    h.cleanup().await;
    sim.stop();
}

/// A consumer that keeps nacking a job with requeue ("not now"): before 4.3 that counts like a
/// reject and the job is dead-lettered past the limit; on 4.3 it does not count, so the job
/// stays in its queue however often it comes back. (The worker never gives a job back this
/// way: its own hand-back rejects, see the next test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_nacked_with_requeue_counts_toward_the_limit_only_before_4_3() {
    let (h, sim) = one_queued_job("dnack").await;
    let limit = wxcourier::broker::topology::JOB_DELIVERY_LIMIT as usize;
    let queue = wxcourier::broker::job_queue(&h.app);
    let counts = give_back(&h.conn, &queue, GiveBack::Nack, limit + 5).await;
    if nack_requeue_counts().await {
        assert_dead_lettered_past_the_limit(&h, counts.len()).await;
    } else {
        assert_eq!(counts.len(), limit + 5, "every nack gave it back");
        assert!(
            counts.iter().all(|c| c.unwrap_or(0) == 0),
            "no nack counted: {counts:?}"
        );
        assert_eq!(h.queued().await, 1, "still in its queue");
        assert!(take_dead_lettered(&h, &h.app).await.is_empty());
    }
    h.cleanup().await;
    sim.stop();
}

/// A worker that dies on one job again and again (its connection closes with the job
/// unacked): every series counts that, and past the limit the job is dead-lettered instead of
/// taking every worker down in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_its_worker_dies_on_again_and_again_is_dead_lettered_past_the_limit() {
    let (h, sim) = one_queued_job("ddie").await;
    let limit = wxcourier::broker::topology::JOB_DELIVERY_LIMIT as usize;
    let queue = wxcourier::broker::job_queue(&h.app);
    let counts = give_back(&h.conn, &queue, GiveBack::Die, limit + 5).await;
    // 3.x sends `x-delivery-count: 0` on the first delivery, 4.x no header.
    let counts: Vec<i64> = counts.iter().map(|c| c.unwrap_or(0)).collect();
    let expected: Vec<i64> = (0..counts.len() as i64).collect();
    assert_eq!(counts, expected, "each death counted once");
    assert_dead_lettered_past_the_limit(&h, counts.len()).await;
    h.cleanup().await;
    sim.stop();
}

/// The worker's own hand-back: a job whose outcome the broker refuses again and again goes
/// back to its queue after each refusal, and each return counts on every series (a reject, not
/// a nack), so past the limit the broker dead-letters it instead of the worker sending it
/// round forever. WeChat got it once: every later delivery was a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_outcome_is_refused_again_and_again_is_dead_lettered_past_the_limit() {
    let t = spawn_app("refused", |_| {}).await;
    // A queue bound to this app's outcomes that takes none: the broker nacks every outcome.
    let ch = t.conn.create_channel().await.unwrap();
    let refusing = format!("{}.refusing", t.app);
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare(
        refusing.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    ch.queue_bind(
        refusing.as_str().into(),
        "wxcourier.results".into(),
        format!("*.{}", t.app).as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    t.publish(&job("rf-1", &openid(14))).await;
    let limit = wxcourier::broker::topology::JOB_DELIVERY_LIMIT as u64;
    // Each round: a refused outcome, then the 500 ms pause before the hand-back.
    let found = {
        let started = std::time::Instant::now();
        loop {
            let found = take_dead_lettered(&t, &t.app).await;
            if !found.is_empty() || started.elapsed() > Duration::from_secs(60) {
                break found;
            }
        }
    };
    assert_eq!(
        found.len(),
        1,
        "the job is in wxcourier.dead past the limit"
    );
    assert_eq!(found[0].1, "delivery_limit");
    let handed_back = t.ctx.metrics.publish_failures.get();
    assert!(
        (limit + 1..=limit + 2).contains(&handed_back),
        "{handed_back} refused outcomes"
    );
    assert_each_job_accepted_once(&t.sim, &HashSet::from(["rf-1".to_owned()]));
    let _ = ch.close(200, "done".into()).await;
    t.stop().await;
}

/// A consumer that takes a job and never acks it. On 4.3 the queue takes the job back once the
/// consumer's timeout passes (`x-consumer-timeout`, 1 s here; 30 min by default), cancels that
/// consumer alone (lapin ends its stream; the worker then starts a new session) and leaves the
/// channel open. The return does not count: a stalled consumer is not the job's fault, so it
/// never gets a job dead-lettered. Before 4.3 a consumer timeout closes the channel, the death
/// above, and the timeout is the broker's own setting (there is no per-consumer one), so this
/// runs on 4.3 and later only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_its_consumer_never_acks_is_taken_back_uncounted_on_4_3() {
    if series().await < (4, 3) {
        eprintln!("consumer timeouts per consumer start with RabbitMQ 4.3; not this series");
        return;
    }
    let (h, sim) = one_queued_job("dstall").await;
    let queue = wxcourier::broker::job_queue(&h.app);
    let ch = h.conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(1000));
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "stalled".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap();
    let held = consumer.next().await.unwrap().unwrap();
    assert_eq!(
        count_header(&held.properties, "x-delivery-count").unwrap_or(0),
        0
    );
    let started = std::time::Instant::now();
    // 4.3.6 cancelled it 1.0 s after the delivery; 30 s is room for a loaded machine.
    let ended = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await;
    let waited = started.elapsed();
    assert!(
        matches!(ended, Ok(None)),
        "the broker cancelled the consumer: {ended:?}"
    );
    eprintln!("consumer cancelled {waited:?} after its delivery");
    assert!(ch.status().connected(), "the channel stays open");
    let again = h.conn.create_channel().await.unwrap();
    let msg = again
        .basic_get(queue.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("the job is back in its queue");
    let props = &msg.delivery.properties;
    assert_eq!(
        count_header(props, "x-delivery-count").unwrap_or(0),
        0,
        "not counted"
    );
    assert_eq!(
        count_header(props, "x-acquired-count"),
        Some(1),
        "{props:?}"
    );
    drop(held);
    let _ = again.close(200, "done".into()).await;
    let _ = ch.close(200, "done".into()).await;
    h.cleanup().await;
    sim.stop();
}

/// `PUT` (a definition) or `DELETE` (none) the policy `name` on the test broker's management
/// API.
async fn policy(name: &str, definition: Option<serde_json::Value>) {
    let url = reqwest::Url::parse(&management_url()).unwrap();
    // Credentials in the URL become an Authorization header of their own: send them once.
    let (user, password) = (url.username().to_owned(), url.password().map(str::to_owned));
    let mut api = url.join(&format!("/api/policies/%2F/{name}")).unwrap();
    api.set_username("").unwrap();
    api.set_password(None).unwrap();
    let client = reqwest::Client::new();
    let request = match definition {
        Some(body) => client.put(api).json(&body),
        None => client.delete(api),
    };
    request
        .basic_auth(user, password)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}

/// The same stalled consumer before 4.3, where the timeout is the channel's: with a
/// `consumer-timeout` policy of 1 s on the job's queue (3.12 and later) the broker closes the
/// consumer's channel, and that return counts like a death. 3.10 knows no such policy (its
/// timeout is broker-wide), so this runs on 4.0 to 4.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_its_consumer_never_acks_is_taken_back_counted_before_4_3() {
    let series = series().await;
    if !((4, 0)..(4, 3)).contains(&series) {
        eprintln!(
            "a per-queue consumer timeout closing the channel is 4.0 to 4.2; not this series"
        );
        return;
    }
    let (h, sim) = one_queued_job("dstallold").await;
    let queue = wxcourier::broker::job_queue(&h.app);
    let name = format!("{}-timeout", h.app);
    policy(
        &name,
        Some(json!({
            "pattern": format!("^{}$", queue.replace('.', "\\.")),
            "apply-to": "queues",
            "priority": 100,
            "definition": {"consumer-timeout": 1000},
        })),
    )
    .await;
    let ch = h.conn.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "stalled".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let held = consumer.next().await.unwrap().unwrap();
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(90), consumer.next()).await;
    let waited = started.elapsed();
    policy(&name, None).await;
    assert!(
        matches!(ended, Ok(None) | Ok(Some(Err(_)))),
        "the broker ended the consumer: {ended:?}"
    );
    eprintln!("consumer ended {waited:?} after its delivery");
    assert!(!ch.status().connected(), "the channel was closed");
    let again = h.conn.create_channel().await.unwrap();
    let mut msg = None;
    for _ in 0..50 {
        msg = again
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap();
        if msg.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let msg = msg.expect("the job is back in its queue");
    assert_eq!(
        count_header(&msg.delivery.properties, "x-delivery-count"),
        Some(1),
        "counted"
    );
    drop(held);
    let _ = again.close(200, "done".into()).await;
    h.cleanup().await;
    sim.stop();
}

/// The worker as the stalled consumer, on 4.3: WeChat answers in 1.5 s and the app's queue has
/// a 1 s `consumer-timeout` policy, so the queue takes the job back (uncounted) while the
/// worker still holds it and cancels the worker's consumer. The worker starts a new session,
/// the job comes back as a duplicate of its one send, and nothing is dead-lettered. Before
/// 4.3 the same policy closes the channel a minute later, the path above; not repeated here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_holding_a_job_past_its_consumer_timeout_resumes_and_sends_it_once_on_4_3() {
    if series().await < (4, 3) {
        eprintln!("a consumer timeout that cancels only the consumer is 4.3's; not this series");
        return;
    }
    let prefix = format!("stallw{:08x}", rand::random::<u32>());
    let name = format!("{prefix}-timeout");
    policy(
        &name,
        Some(json!({
            "pattern": format!("^wxcourier\\.jobs\\.t_{prefix}_"),
            "apply-to": "queues",
            "priority": 100,
            "definition": {"consumer-timeout": 1000},
        })),
    )
    .await;
    let mut t = spawn_app(&prefix, |s| {
        s.wechat.timeout = Duration::from_secs(5).try_into().unwrap();
    })
    .await;
    t.sim.set_faults(wxcourier::sim::Faults {
        latency_ms: 1500,
        ..Default::default()
    });
    t.publish(&job("sw-1", &openid(15))).await;
    let started = std::time::Instant::now();
    let first = t.outcome_of("sw-1").await;
    let waited = started.elapsed();
    // The first delivery's outcome may or may not have gone out before its session ended.
    let mut outcomes = t.tap.collect(1, Duration::from_secs(3)).await;
    outcomes.push(first);
    policy(&name, None).await;
    eprintln!(
        "first outcome after {waited:?}, {} in all, {} sessions restarted",
        outcomes.len(),
        t.ctx.metrics.broker_reconnects.get()
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o["id"] == "sw-1" && o["status"] == "sent"),
        "{outcomes:?}"
    );
    assert!(
        t.ctx.metrics.broker_reconnects.get() >= 1,
        "a new session after the cancel"
    );
    assert_each_job_accepted_once(&t.sim, &HashSet::from(["sw-1".to_owned()]));
    assert!(take_dead_lettered(&t, &t.app).await.is_empty());
    assert_eq!(t.queued().await, 0);
    t.stop().await;
}
