//! The throughput, latency and start-up benchmark: `cargo bench --bench throughput [-- OPTIONS]`
//! (`-- --help` lists them).
//!
//! Each measurement starts the simulator and its subject as separate processes on this machine
//! against the local RabbitMQ: the release worker (`wxcourier run`), the floor
//! (`wxcourier-floor`: consume → POST → confirmed publish → ack, nothing else) or the
//! broker-only floor (no POST). Throughput runs preload N jobs and time the first outcome to
//! the last; they read each process's CPU time and peak RSS and the broker's CPU time from
//! /proc. The sections compare the worker with its ceilings in one invocation: at 1 app, at N
//! apps, with Redis state, with every delivery policy on, in latency under load; the startup
//! section times `wxcourier run` with many apps until `/readyz` answers, and the platform-startup
//! section with one third-party platform of many authorizers until all are routed. A summary
//! table ends the run. `--soak` runs the soak instead. Without `--bench` (as `cargo test` runs it) it makes a short smoke run.

#[path = "../../tests/common/kit.rs"]
mod kit;
mod measure;
mod minimal;
mod options;
mod platform_spread;
mod platform_startup;
mod report;
mod sections;
mod soak;
mod subjects;

use options::Options;

#[tokio::main]
async fn main() {
    let Some(o) = Options::parse() else {
        return;
    };
    if let Some(dir) = &o.perf {
        subjects::profile_into(dir.clone());
    }
    if o.wechat == options::Wechat::Minimal {
        subjects::use_minimal_wechat();
    }
    let conn = kit::connect().await;
    if o.soak {
        soak::run(&conn, o.jobs).await;
        return;
    }
    println!(
        "wxcourier benchmark{}: {} jobs per run, {} run(s), prefetch {}, WeChat: {:?}",
        if o.smoke {
            " (smoke run: small figures, only checks that it works)"
        } else {
            ""
        },
        o.jobs,
        o.runs,
        subjects::PREFETCH,
        o.wechat
    );
    let out = sections::run(&conn, &o).await;
    report::print(&out.rows);
    let _ = conn.close(200, "benchmark done".into()).await;
    // Every job must get its outcome; a run that lost some fails the benchmark (and the
    // smoke run in CI), after the figures the others gave.
    if !out.shortfalls.is_empty() {
        eprintln!("\nruns that did not get every outcome (their figures are left out):");
        for s in &out.shortfalls {
            eprintln!("  {s}");
        }
        std::process::exit(1);
    }
}
