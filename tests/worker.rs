//! The worker end to end: real RabbitMQ, the simulator, one fresh app per test.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use wxcourier::sim::{Answer, DEFAULT_APPID};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_status_reaches_the_results_exchange() {
    let mut t = spawn_app("statuses", |_| {}).await;
    t.publish(&job("ok-1", &openid(1))).await;
    t.publish(&job("bad-user-1", "oShort")).await;
    let mut late = job("late-1", &openid(2));
    late["not_after"] = json!("2020-01-01T00:00:00Z");
    t.publish(&late).await;
    t.publish(&job("rejected-1", "not an openid!")).await;

    let outcomes = t.outcomes(4).await;
    let status_of = |id: &str| {
        outcomes
            .iter()
            .find(|o| o["id"] == id)
            .map(|o| o["status"].clone())
    };
    assert_eq!(status_of("ok-1"), Some(json!("sent")));
    assert_eq!(status_of("bad-user-1"), Some(json!("failed")));
    assert_eq!(status_of("late-1"), Some(json!("expired")));
    let reason_of = |id: &str| outcomes.iter().find(|o| o["id"] == id).unwrap()["reason"].clone();
    assert_eq!(reason_of("bad-user-1"), json!("invalid_recipient"));
    for id in ["ok-1", "late-1", "rejected-1"] {
        assert_eq!(reason_of(id), serde_json::Value::Null, "{id}");
    }
    assert_eq!(status_of("rejected-1"), Some(json!("rejected")));
    let sent = outcomes.iter().find(|o| o["id"] == "ok-1").unwrap();
    assert_eq!(sent["attempts"], 1);
    assert_eq!(sent["errcode"], 0);
    assert_eq!(sent["meta"], json!({"test": "ok-1"}));
    assert_eq!(sent["app"], t.app.as_str());
    assert!(sent["msgid"].as_u64().unwrap() > 1 << 53);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_busy_twice_then_success_is_sent_with_three_attempts() {
    let mut t = spawn_app("busy", |_| {}).await;
    let user = openid(3);
    t.sim
        .script(&user, vec![Answer::Code(-1), Answer::Code(-1)]);
    t.publish(&job("busy-1", &user)).await;
    let o = t.outcome_of("busy-1").await;
    assert_eq!(
        (o["status"].as_str(), o["attempts"].as_u64()),
        (Some("sent"), Some(3))
    );
    assert_eq!(t.queued().await, 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_then_success_is_sent() {
    let mut t = spawn_app("quota", |_| {}).await;
    let user = openid(4);
    t.sim.script(&user, vec![Answer::Code(45009)]);
    t.publish(&job("quota-1", &user)).await;
    let o = t.outcome_of("quota-1").await;
    assert_eq!(
        (o["status"].as_str(), o["attempts"].as_u64()),
        (Some("sent"), Some(2))
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_retries_do_not_use_up_max_attempts() {
    let mut t = spawn_app("quota_many", |s| s.retry.max_attempts = common::count(2)).await;
    let user = openid(5);
    t.sim.script(&user, vec![Answer::Code(45009); 4]);
    t.publish(&job("quota-2", &user)).await;
    let o = t.outcome_of("quota-2").await;
    assert_eq!(
        (o["status"].as_str(), o["attempts"].as_u64()),
        (Some("sent"), Some(5))
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_error_refreshes_once_and_the_job_is_still_sent() {
    for code in [40001, 41006, 40014, 42001] {
        let mut t = spawn_app("token", |_| {}).await;
        let user = openid(6);
        t.sim.script(&user, vec![Answer::Code(code)]);
        let id = format!("token-{code}");
        t.publish(&job(&id, &user)).await;
        let o = t.outcome_of(&id).await;
        assert_eq!(
            (o["status"].as_str(), o["attempts"].as_u64()),
            (Some("sent"), Some(2)),
            "{code}"
        );
        let calls = t.sim.stats().apps[DEFAULT_APPID].stable_token_calls;
        assert_eq!(
            calls, 2,
            "errcode {code}: the first fetch plus exactly one refresh"
        );
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_token_error_for_the_same_job_backs_off_like_a_transient_one() {
    let mut t = spawn_app("token2", |_| {}).await;
    let user = openid(7);
    t.sim
        .script(&user, vec![Answer::Code(40001), Answer::Code(40001)]);
    t.publish(&job("token-twice", &user)).await;
    let o = t.outcome_of("token-twice").await;
    assert_eq!(
        (o["status"].as_str(), o["attempts"].as_u64()),
        (Some("sent"), Some(3))
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_fails_at_once() {
    let mut t = spawn_app("permanent", |_| {}).await;
    let user = openid(8);
    t.sim.script(&user, vec![Answer::Code(40003)]);
    t.publish(&job("perm-1", &user)).await;
    let o = t.outcome_of("perm-1").await;
    assert_eq!(o["status"], "failed");
    assert_eq!(o["attempts"], 1);
    assert_eq!(o["errcode"], 40003);
    assert_eq!(o["reason"], "invalid_recipient");
    assert!(o["error"].as_str().unwrap().contains("40003"));
    assert_eq!(t.sim.stats().apps[DEFAULT_APPID].send_calls, 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_out_after_max_attempts() {
    let mut t = spawn_app("exhaust", |_| {}).await;
    let user = openid(9);
    t.sim.script(&user, vec![Answer::Code(-1); 10]);
    t.publish(&job("exhaust-1", &user)).await;
    let o = t.outcome_of("exhaust-1").await;
    assert_eq!(o["status"], "failed");
    assert_eq!(o["attempts"], 4);
    assert_eq!(o["errcode"], -1);
    assert_eq!(o["reason"], "retries_exhausted");
    assert!(
        o["error"].as_str().unwrap().contains("retries ran out"),
        "{o}"
    );
    assert_eq!(t.sim.stats().apps[DEFAULT_APPID].send_calls, 4);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_failures_are_retried_and_failed_without_an_errcode() {
    let mut t = spawn_app("transport", |s| s.retry.max_attempts = common::count(3)).await;
    let ok_user = openid(10);
    t.sim.script(
        &ok_user,
        vec![
            Answer::Named("http500".into()),
            Answer::Named("bad_json".into()),
        ],
    );
    t.publish(&job("transport-ok", &ok_user)).await;
    let o = t.outcome_of("transport-ok").await;
    assert_eq!(
        (o["status"].as_str(), o["attempts"].as_u64()),
        (Some("sent"), Some(3))
    );

    let bad_user = openid(11);
    t.sim
        .script(&bad_user, vec![Answer::Named("drop".into()); 3]);
    t.publish(&job("transport-bad", &bad_user)).await;
    let o = t.outcome_of("transport-bad").await;
    assert_eq!(o["status"], "failed");
    assert_eq!(o["errcode"], serde_json::Value::Null);
    assert_eq!(o["reason"], "retries_exhausted");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_refused_gets_failed_with_reason_recipient_refused() {
    let mut t = spawn_app("refused", |_| {}).await;
    let user = openid(31);
    t.sim.set_refusing(&user, true);
    t.publish(&job("refused-1", &user)).await;
    let o = t.outcome_of("refused-1").await;
    assert_eq!(
        (
            o["status"].as_str(),
            o["reason"].as_str(),
            o["errcode"].as_i64()
        ),
        (Some("failed"), Some("recipient_refused"), Some(43101)),
        "{o}"
    );
    assert_eq!(o["attempts"], 1, "a refusal is not retried");
    // Another user of the same app is not affected, and a sent outcome has no reason.
    t.publish(&job("accepted-1", &openid(32))).await;
    let o = t.outcome_of("accepted-1").await;
    assert_eq!(o["status"], "sent");
    assert_eq!(o["reason"], serde_json::Value::Null);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_given_up_while_the_quota_is_spent_says_quota_exhausted() {
    let mut t = spawn_app("quota_out", |s| s.retry.max_age = common::nz_ms(700)).await;
    let user = openid(33);
    t.sim.script(&user, vec![Answer::Code(45009); 20]);
    t.publish(&job("quota-out-1", &user)).await;
    let o = t.outcome_of("quota-out-1").await;
    assert_eq!(
        (
            o["status"].as_str(),
            o["reason"].as_str(),
            o["errcode"].as_i64()
        ),
        (Some("failed"), Some("quota_exhausted"), Some(45009)),
        "{o}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_is_rejected_kept_in_dead_and_the_worker_goes_on() {
    let mut t = spawn_app("reject", |_| {}).await;
    let mut unknown = job("rej-unknown", &openid(12));
    unknown["tousr"] = json!("x");
    let mut marker = job("rej-marker", &openid(12));
    marker["data"] = json!({"k": {"value": "{{oops}}"}});
    let big = vec![b' '; 70 * 1024];
    let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        (b"not json".to_vec(), Some("rej-notjson")),
        (vec![0xff, 0xfe, 0xfd], None),
        (serde_json::to_vec(&unknown).unwrap(), Some("rej-unknown")),
        (serde_json::to_vec(&marker).unwrap(), Some("rej-marker")),
        (big, None),
        (br#"{"touser":"x"}"#.to_vec(), None),
    ];
    for (body, id) in &cases {
        t.publish_raw(body, *id).await;
    }
    let outcomes = t.outcomes(cases.len()).await;
    assert_eq!(outcomes.len(), cases.len());
    assert!(
        outcomes
            .iter()
            .all(|o| o["status"] == "rejected" && o["error"].is_string()),
        "{outcomes:?}"
    );
    assert!(outcomes.iter().any(|o| o["id"].is_null()));
    assert!(
        outcomes
            .iter()
            .any(|o| o["id"] == "rej-unknown" && o["error"].as_str().unwrap().starts_with("tousr"))
    );

    t.publish(&job("after-rejects", &openid(13))).await;
    assert_eq!(t.outcome_of("after-rejects").await["status"], "sent");

    let dead = t.take_dead(cases.len()).await;
    assert_eq!(dead.len(), cases.len());
    for (body, _) in &cases {
        assert!(
            dead.iter().any(|(b, why)| b == body && !why.is_empty()),
            "original kept unchanged"
        );
    }
    assert_eq!(t.sim.stats().apps[DEFAULT_APPID].send_calls, 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_is_not_sent_again_and_reports_the_first_msgid() {
    let mut t = spawn_app("dup", |_| {}).await;
    let j = job("dup-1", &openid(14));
    t.publish(&j).await;
    let first = t.outcome_of("dup-1").await;
    t.publish(&j).await;
    let second = t.outcome_of("dup-1").await;
    assert_eq!(second["status"], "sent");
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["msgid"], first["msgid"]);
    assert_eq!(first["duplicate"], false);
    let stats = t.sim.stats();
    assert_eq!(stats.apps[DEFAULT_APPID].send_calls, 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_not_after_expires_without_a_send() {
    let mut t = spawn_app("expire", |_| {}).await;
    let mut j = job("exp-1", &openid(15));
    j["not_after"] = json!("2001-01-01T00:00:00+08:00");
    t.publish(&j).await;
    let o = t.outcome_of("exp-1").await;
    assert_eq!(o["status"], "expired");
    assert_eq!(o["attempts"], 0);
    assert_eq!(t.sim.stats().apps[DEFAULT_APPID].send_calls, 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_an_unknown_app_lands_in_the_unrouted_queue() {
    let t = spawn_app("unrouted", |_| {}).await;
    let ghost = unique_app("ghost");
    let body = serde_json::to_vec(&job("ghost-1", &openid(16))).unwrap();
    let mut props = wxcourier::broker::publish::job_properties("ghost-1", Default::default());
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "x-wxcourier-app".into(),
        lapin::types::AMQPValue::LongString(ghost.as_str().into()),
    );
    props = props.with_headers(headers);
    t.publisher
        .publish(wxcourier::broker::publish::Publication {
            exchange: wxcourier::broker::JOBS_EXCHANGE,
            routing_key: &ghost,
            body: &body,
            properties: props,
            unroutable: wxcourier::broker::publish::Unroutable::Refused,
        })
        .await
        .expect("routed to the alternate exchange, so not returned");
    let found = take_matching(&t.conn, wxcourier::broker::UNROUTED, &ghost).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, body);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_properties_follow_the_contract() {
    use futures_util::StreamExt;
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    let t = spawn_app("props", |_| {}).await;
    let ch = t.conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            Default::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        "wxcourier.results".into(),
        format!("sent.{}", t.app).as_str().into(),
        QueueBindOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let mut c = ch
        .basic_consume(
            q.name().clone(),
            "p".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    t.publish(&job("props-1", &openid(17))).await;
    let d = tokio::time::timeout(Duration::from_secs(15), c.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let p = &d.properties;
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(
        p.correlation_id().as_ref().map(|s| s.as_str()),
        Some("props-1")
    );
    assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some("wxcourier"));
    assert_eq!(d.routing_key.as_str(), format!("sent.{}", t.app));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_exists_with_other_arguments_gets_an_error_that_says_what_to_do() {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    let conn = connect().await;
    let app = unique_app("clash");
    let name = wxcourier::broker::job_queue(&app);
    let ch = conn.create_channel().await.unwrap();
    // A classic queue where the worker wants a quorum one.
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions::durable(),
        Default::default(),
    )
    .await
    .unwrap();
    let err = wxcourier::broker::topology::declare_all(
        &conn,
        std::slice::from_ref(&app),
        &[Duration::from_millis(200)],
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&name) && err.contains("already exists") && err.contains("delete it"),
        "{err}"
    );
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_from_an_older_version_keeps_working_and_is_reported() {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use wxcourier::broker::topology;
    let conn = connect().await;
    let (old, new) = (unique_app("legacy"), unique_app("fresh"));
    let apps = [old.clone(), new.clone()];
    // What older versions declared: a quorum queue with no delivery limit.
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        wxcourier::broker::job_queue(&old).as_str().into(),
        QueueDeclareOptions::durable(),
        args,
    )
    .await
    .unwrap();

    let named = |found: &[topology::LegacyQueue], app: &str| {
        found
            .iter()
            .any(|q| q.0 == wxcourier::broker::job_queue(app))
    };
    let reported = topology::legacy_queues(&conn, &apps).await.unwrap();
    assert!(named(&reported, &old), "{reported:?}");
    assert!(!named(&reported, &new));
    assert!(
        topology::message_count(
            &conn.create_channel().await.unwrap(),
            &wxcourier::broker::job_queue(&new)
        )
        .await
        .is_err(),
        "checking creates nothing"
    );
    let declared = topology::declare_all(&conn, &apps, &[Duration::from_millis(200)])
        .await
        .expect("an older queue is kept, not a clash");
    assert!(
        named(&declared, &old) && !named(&declared, &new),
        "{declared:?}"
    );
    let ch = conn.create_channel().await.unwrap();
    for app in &apps {
        ch.queue_delete(
            wxcourier::broker::job_queue(app).as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    }
}

/// Consumers of `queue`, read with a passive declare (no management-API lag).
async fn consumers_of(conn: &lapin::Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let opts = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), opts, lapin::types::FieldTable::default())
        .await
        .unwrap();
    let _ = ch.close(200, "counted".into()).await;
    q.consumer_count()
}

/// The management API's name of the connection each consumer of `queue` is on.
async fn consumer_connections(queue: &str) -> Vec<String> {
    let url = format!("{}/api/queues/%2f/{queue}", management_url());
    let Ok(answer) = reqwest::get(&url).await else {
        return Vec::new();
    };
    let v: serde_json::Value = answer.json().await.unwrap_or_default();
    v["consumer_details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["channel_details"]["connection_name"].as_str())
        .map(str::to_owned)
        .collect()
}

/// Names of the broker's open connections.
async fn open_connections() -> Vec<String> {
    let url = format!("{}/api/connections?columns=name", management_url());
    let v: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .map(str::to_owned)
        .collect()
}

/// Apps beyond `amqp.consumers_per_connection` consume on further connections; the worker is
/// ready only once every app's consumer is registered, and every connection closes at stop.
#[tokio::test]
async fn apps_spread_over_connections_are_all_consumed_before_ready_and_closed_at_stop() {
    let mut extra = Vec::new();
    let mut t = spawn_app("conns", |s| {
        s.amqp.consumers_per_connection = common::count(1);
        let (name, app) = s
            .apps
            .iter()
            .next()
            .map(|(n, a)| (n.clone(), a.clone()))
            .unwrap();
        for suffix in ["b", "c"] {
            let more = format!("{name}_{suffix}");
            s.apps.insert(more.clone(), app.clone());
            extra.push(more);
        }
    })
    .await;
    let queues: Vec<String> = std::iter::once(t.app.clone())
        .chain(extra.iter().cloned())
        .map(|a| wxcourier::broker::job_queue(&a))
        .collect();
    eventually(Duration::from_secs(20), "the worker is ready", || {
        t.ctx.health.is_ready()
    })
    .await;
    for q in &queues {
        assert_eq!(
            consumers_of(&t.conn, q).await,
            1,
            "{q} is consumed once ready"
        );
    }
    let mut connections = Vec::new();
    for _ in 0..100 {
        connections.clear();
        for q in &queues {
            connections.extend(consumer_connections(q).await);
        }
        if connections.len() == queues.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    connections.sort();
    connections.dedup();
    assert_eq!(
        connections.len(),
        3,
        "one app per connection: {connections:?}"
    );

    let id = unique_app("job");
    t.publish(&job(&id, &openid(1))).await;
    assert_eq!(t.outcome_of(&id).await["status"], "sent");

    let harness = t.stop_keeping_queue().await;
    let mut left = connections.clone();
    for _ in 0..100 {
        let open = open_connections().await;
        left.retain(|c| open.contains(c));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        left.is_empty(),
        "connections left open after stop: {left:?}"
    );
    let ch = harness.conn.create_channel().await.unwrap();
    for q in &queues[1..] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    harness.cleanup().await;
}

/// Every task a run starts belongs to it: the consumers, the watchers, the lookups, the HTTP
/// server and each of its connections have ended when `run` returns, and the runtime soon runs
/// no more tasks than before the worker was built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_outlives_run() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;
    use wxcourier::sim::{SimOptions, Simulator};
    use wxcourier::startup::Application;
    use wxcourier::types::{Secret, Span};

    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("owned");
    let port = free_port();
    let mut s = settings(&app, &sim);
    // lapin's heartbeat task notices a closed connection only at its next beat: beat often,
    // so the runtime's count shows the worker's own tasks.
    s.amqp.url = Secret::new(format!("{}?heartbeat=1", amqp_url()));
    s.http.listen = Some(format!("127.0.0.1:{port}"));
    // An idle connection would stay open this long if nothing closed it at the stop.
    s.http.idle_timeout = Duration::from_secs(120).try_into().unwrap();
    // A keeper and a quota watch per app, besides the consumer and the watchers.
    s.wechat.daily_quota_refresh = Span(Duration::from_secs(3600));
    s.apps.get_mut(&app).unwrap().catalog = true;
    let harness = Harness::new(&app, &s).await;
    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();

    let application = Application::build(s).unwrap();
    let tasks = application.tasks();
    let health = application.pipeline.health.clone();
    let stop = CancellationToken::new();
    let run = tokio::spawn(application.run(stop.clone()));
    eventually(Duration::from_secs(20), "the worker is ready", || {
        health.is_ready()
    })
    .await;
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: wxcourier\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0; 1024];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &answer[..n]
    );
    assert!(!tasks.is_empty(), "the run's tasks are on its tracker");

    stop.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(30), run).await;
    ended.expect("run returned").unwrap().unwrap();
    assert!(
        tasks.is_closed(),
        "no task can join the run once it returned"
    );
    assert_eq!(tasks.len(), 0, "every task of the run has ended");
    let read = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut answer)).await;
    assert_eq!(
        read.expect("the idle connection was closed").unwrap(),
        0,
        "closed, not answered"
    );
    eventually(Duration::from_secs(5), "no more tasks than before", || {
        runtime.num_alive_tasks() <= before
    })
    .await;
    harness.cleanup().await;
    sim.stop();
}
