//! Hostile jobs that once broke the worker's connection: an enormous unknown key echoed into
//! a header, and a job carrying more headers than a frame holds. Each must end as one rejected
//! outcome with the original kept in `wxcourier.dead`, without a reconnect, and the job
//! behind it must be sent exactly once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties};
use serde_json::json;
use wxcourier::broker::publish::{Publication, Unroutable, job_properties};
use wxcourier::broker::{JOBS_EXCHANGE, Publisher};
use wxcourier::sim::Answer;

/// `url` with one more query parameter.
fn with_query(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// A producer connection that negotiates RabbitMQ's largest default frame (128 KiB), as a
/// client library with default settings does, so it can publish what the worker cannot echo.
async fn wide_frame_producer() -> (Connection, Publisher) {
    let url = with_query(&amqp_url(), "frame_max=131072");
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ answers");
    let publisher = Publisher::open(&conn, Duration::from_secs(5))
        .await
        .unwrap();
    (conn, publisher)
}

/// Asserts the worker kept one connection throughout, then sends a good job behind the
/// poison and checks it is sent exactly once.
async fn the_next_job_is_sent_once_without_a_reconnect(t: &mut TestApp, next: &str) {
    t.publish(&job(next, &openid(2))).await;
    assert_eq!(t.outcome_of(next).await["status"], "sent");
    // A second outcome of the same job would arrive now if it had been redelivered.
    let extra = t.tap.collect(1, Duration::from_secs(2)).await;
    assert!(extra.is_empty(), "one outcome only: {extra:?}");
    assert_eq!(t.ctx.metrics.broker_reconnects.get(), 0, "no reconnect");
    assert_each_job_accepted_once(&t.sim, &HashSet::from([next.to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_65_kib_unknown_key_is_rejected_without_breaking_the_connection() {
    let mut t = spawn_app("poisonkey", |_| {}).await;
    // 65,530 bytes in all, almost all of it one unknown key: the body is under the 64 KiB
    // limit, so the job is parsed and rejected for the key, which the reason names.
    let mut poison = job("poison-key", &openid(1));
    let rest = serde_json::to_vec(&poison).unwrap().len() + r#","":1"#.len();
    let key = "k".repeat(65_530 - rest);
    poison[key.as_str()] = json!(1);
    let body = serde_json::to_vec(&poison).unwrap();
    assert_eq!(body.len(), 65_530);
    t.publish_raw(&body, Some("poison-key")).await;

    let o = t.outcome_of("poison-key").await;
    assert_eq!(o["status"], "rejected");
    let error = o["error"].as_str().unwrap();
    assert!(
        error.len() <= 1024,
        "the outcome's error is bounded: {}",
        error.len()
    );
    assert!(error.ends_with("is not a known field"), "{error}");

    let dead = t.take_dead(1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, body, "original kept unchanged");
    assert!(
        dead[0].1.len() <= 1024,
        "header bounded: {}",
        dead[0].1.len()
    );

    the_next_job_is_sent_once_without_a_reconnect(&mut t, "after-poison-key").await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_100_kib_of_headers_is_rejected_and_kept_in_dead() {
    let mut t = spawn_app("poisonhdr", |_| {}).await;
    let (conn, producer) = wide_frame_producer().await;
    let mut headers = FieldTable::default();
    for i in 0..100 {
        headers.insert(
            format!("h{i}").into(),
            AMQPValue::LongString(LongString::from("v".repeat(1000))),
        );
    }
    let body = serde_json::to_vec(&job("poison-headers", &openid(1))).unwrap();
    producer
        .publish(Publication {
            exchange: JOBS_EXCHANGE,
            routing_key: &t.app,
            body: &body,
            properties: job_properties("poison-headers", headers),
            unroutable: Unroutable::Refused,
        })
        .await
        .expect("the broker takes it");

    let o = t.outcome_of("poison-headers").await;
    assert_eq!(o["status"], "rejected", "{o}");
    assert!(o["error"].as_str().unwrap().contains("headers"), "{o}");
    assert_eq!(
        t.sim.stats().apps[wxcourier::sim::DEFAULT_APPID].send_calls,
        0
    );

    let dead = t.take_dead(1).await;
    assert_eq!(dead.len(), 1, "kept in wxcourier.dead: {dead:?}");
    assert_eq!(dead[0].0, body, "body kept unchanged");
    assert!(dead[0].1.contains("headers"), "{}", dead[0].1);

    the_next_job_is_sent_once_without_a_reconnect(&mut t, "after-poison-headers").await;
    let _ = conn.close(200, "done".into()).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_headers_just_under_the_limit_is_sent_and_its_retry_copy_fits() {
    // 12 KiB of producer headers: below the limit, so the job is sent; a transient failure
    // first makes the worker publish a retry copy carrying them, which must not break a frame.
    let mut t = spawn_app("hdrok", |_| {}).await;
    t.sim.script(&openid(3), vec![Answer::Code(-1)]);
    let mut headers = FieldTable::default();
    for i in 0..12 {
        headers.insert(
            format!("trace{i}").into(),
            AMQPValue::LongString(LongString::from("t".repeat(1000))),
        );
    }
    let body = serde_json::to_vec(&job("hdr-ok", &openid(3))).unwrap();
    t.publisher
        .publish(Publication {
            exchange: JOBS_EXCHANGE,
            routing_key: &t.app,
            body: &body,
            properties: job_properties("hdr-ok", headers),
            unroutable: Unroutable::Refused,
        })
        .await
        .unwrap();
    let o = t.outcome_of("hdr-ok").await;
    assert_eq!(o["status"], "sent", "{o}");
    assert_eq!(o["attempts"], 2);
    assert_eq!(t.ctx.metrics.broker_reconnects.get(), 0);
    t.stop().await;
}
