//! WeChat misbehaving under load: dropped connections, calls longer than `wechat.timeout`,
//! bursts of 5xx and unreadable bodies. Every job still ends with one outcome, and no job is
//! ever sent under two different `client_msg_id`s.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use wxcourier::sim::Faults;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_ends_with_one_outcome_through_every_kind_of_wechat_fault() {
    let mut t = spawn_app("faults", |s| {
        s.wechat.timeout = common::nz_ms(300);
        s.retry.max_attempts = common::count(10);
    })
    .await;
    t.sim.set_faults(Faults {
        drop: 0.1,
        hang: 0.05,
        http5xx: 0.1,
        bad_json: 0.1,
        busy: 0.05,
        ..Faults::default()
    });
    let ids = t.publish_numbered(300).await;
    let mut outcomes: HashMap<String, Vec<String>> = HashMap::new();
    while outcomes.len() < ids.len() {
        let Some(o) = t.tap.next(Duration::from_secs(20)).await else {
            break;
        };
        outcomes
            .entry(o["id"].as_str().unwrap().into())
            .or_default()
            .push(o["status"].as_str().unwrap().into());
    }
    while let Some(o) = t.tap.next(Duration::from_millis(500)).await {
        outcomes
            .entry(o["id"].as_str().unwrap().into())
            .or_default()
            .push(o["status"].as_str().unwrap().into());
    }
    assert_eq!(
        outcomes.keys().cloned().collect::<HashSet<_>>(),
        ids,
        "every job ended"
    );
    assert!(outcomes.values().all(|s| s.len() == 1), "one outcome each");
    let sent = outcomes.values().filter(|s| s[0] == "sent").count();
    eprintln!(
        "faults test: {sent} of 300 sent, the rest failed after 10 tries; stats {:?}",
        t.sim.stats()
    );
    assert!(
        sent >= 290,
        "with 10 tries nearly every job gets through: {sent}"
    );
    assert_one_client_msg_id_per_job(&t.sim.sends());
    t.stop().await;
}
