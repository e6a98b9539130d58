//! The soak: a large backlog through one worker while the simulator injects 5% faults, checking
//! that outcomes equal jobs and sampling the worker's memory as it drains.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::Connection;
use serde_json::json;
use wxcourier::broker::Publisher;
use wxcourier::broker::tap::ResultsTap;

use crate::measure;
use crate::subjects::{Running, Sim, Subject, declare, delete_queues, fresh_apps};

/// How long the drain waits for the next outcome before it gives up.
const OUTCOME_WAIT: Duration = Duration::from_secs(60);

/// `jobs` jobs through one worker; prints the statuses, RSS samples and the peak.
pub async fn run(conn: &Connection, jobs: usize) {
    let sim = Sim::simulator();
    let faults = json!({"busy": 0.02, "http5xx": 0.01, "drop": 0.01, "bad_json": 0.01});
    reqwest::Client::new()
        .post(format!("{}/sim/faults", sim.base))
        .json(&faults)
        .send()
        .await
        .expect("the simulator takes the faults");
    let apps = fresh_apps(1);
    declare(conn, &apps).await;
    let mut tap = ResultsTap::open(conn, &format!("*.{}", apps[0]))
        .await
        .unwrap();
    let publisher = Publisher::open(conn, Duration::from_secs(30))
        .await
        .unwrap();
    let started = Instant::now();
    measure::preload(&publisher, &apps, jobs, &apps[0]).await;
    println!(
        "soak: preloaded {jobs} jobs in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let running = Running::spawn(
        Subject::Worker {
            redis: false,
            policies: false,
        },
        &apps,
        &sim.base,
    );
    let pid = running.pid();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut count = 0;
    let mut rss_samples = Vec::new();
    let drain = Instant::now();
    while count < jobs {
        let Some(v) = tap.next(OUTCOME_WAIT).await else {
            break;
        };
        *statuses
            .entry(v["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
        count += 1;
        if count % (jobs / 10).max(1) == 0 {
            let rss = measure::status_mib(pid, "VmRSS:");
            rss_samples.push(rss);
            println!(
                "soak: {count} outcomes, RSS {rss:.1} MiB, {:.0} jobs/s",
                count as f64 / drain.elapsed().as_secs_f64()
            );
        }
    }
    let peak = measure::status_mib(pid, "VmHWM:");
    running.stop();
    delete_queues(conn, &apps).await;
    println!(
        "soak: {count} outcomes for {jobs} jobs in {:.0} s; statuses {statuses:?}; RSS samples {rss_samples:.1?} MiB; peak {peak:.1} MiB",
        drain.elapsed().as_secs_f64()
    );
}
