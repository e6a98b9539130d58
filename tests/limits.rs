//! Rate limits, the 45009 pause, and isolation between accounts.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use wxcourier::config::AppSettings;
use wxcourier::sim::{SimOptions, Simulator};
use wxcourier::types::Secret;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_jobs_at_20_per_second_with_a_burst_of_20_take_4_seconds() {
    let mut t = spawn_app("rate", |s| {
        for a in s.apps.values_mut() {
            a.rate_per_second = common::rate(20.0);
            a.burst = common::count(20);
        }
    })
    .await;
    let ids = t.publish_numbered(100).await;
    let mut seen = Default::default();
    t.read_until(&mut seen, 100, Duration::from_secs(15)).await;
    assert_eq!(seen, ids);
    let (span_s, accepted) = accepted_span(&t.sim);
    assert_eq!(accepted, 100);
    // 20 go at once, the other 80 at 20/s.
    let achieved = 80.0 / span_s;
    eprintln!(
        "rate test: 100 sends over {span_s:.3} s, achieved {achieved:.2}/s for 20/s configured (accuracy {:.3})",
        achieved / 20.0
    );
    assert!(
        (3.6..=4.4).contains(&span_s),
        "took {span_s:.3} s, expected 4 s ± 10%"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_out_of_quota_pauses_alone_probes_gently_and_drains_when_its_quota_returns() {
    const A_ID: &str = "wx00000000000000aa";
    const B_ID: &str = "wx00000000000000bb";
    let sim = Simulator::start(
        "127.0.0.1:0",
        SimOptions {
            apps: vec![
                (A_ID.into(), "secret".into()),
                (B_ID.into(), "secret".into()),
            ],
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    sim.set_quota_left(A_ID, 0);
    let app_b = unique_app("quota_b");
    let b_settings = AppSettings::new(B_ID, Secret::new("secret"));
    let b_name = app_b.clone();
    let mut a = spawn_app_on("quota_a", sim, move |s| {
        for app in s.apps.values_mut() {
            app.appid = A_ID.into();
        }
        s.apps.insert(b_name, b_settings);
    })
    .await;
    let mut b = Harness::new(&app_b, &settings(&app_b, &a.sim)).await;

    let a_ids = a.publish_numbered(30).await;
    let started = Instant::now();
    let b_ids = b.publish_numbered(30).await;
    let mut b_seen = Default::default();
    b.read_until(&mut b_seen, 30, Duration::from_secs(10)).await;
    assert_eq!(b_seen, b_ids, "B's jobs all ended");
    let b_took = started.elapsed();
    assert!(
        b_took < Duration::from_secs(3),
        "B was not held up by A: {b_took:?}"
    );
    assert_eq!(a.sim.stats().apps[B_ID].accepted, 30);

    // A is paused: over 3 s WeChat sees only probes (pauses of 300 ms doubling to 600 ms).
    let calls_before = a.sim.stats().apps[A_ID].send_calls;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probes = a.sim.stats().apps[A_ID].send_calls - calls_before;
    eprintln!(
        "quota test: A made {calls_before} calls before pausing, {probes} probes in 3 s; B's 30 jobs took {b_took:?}"
    );
    assert!(
        calls_before <= 30,
        "at most one call per job before the pause: {calls_before}"
    );
    assert!((1..=8).contains(&probes), "probes, not hammering: {probes}");
    assert!(
        a.tap.next(Duration::from_millis(100)).await.is_none(),
        "no outcome for A yet"
    );

    a.sim.set_quota_left(A_ID, 1000);
    let mut outcomes: HashMap<String, Vec<String>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while outcomes.len() < 30 && Instant::now() < deadline {
        if let Some(o) = a.tap.next(Duration::from_secs(5)).await {
            outcomes
                .entry(o["id"].as_str().unwrap().into())
                .or_default()
                .push(o["status"].as_str().unwrap().into());
        }
    }
    // Any second outcome would have arrived by now.
    while let Some(o) = a.tap.next(Duration::from_millis(500)).await {
        outcomes
            .entry(o["id"].as_str().unwrap().into())
            .or_default()
            .push(o["status"].as_str().unwrap().into());
    }
    assert_eq!(
        outcomes
            .keys()
            .cloned()
            .collect::<std::collections::HashSet<_>>(),
        a_ids,
        "A's backlog drained"
    );
    assert!(
        outcomes.values().all(|s| s == &["sent"]),
        "one outcome each, all sent: {outcomes:?}"
    );
    assert_eq!(a.queued().await, 0);
    b.cleanup().await;
    a.stop().await;
}
