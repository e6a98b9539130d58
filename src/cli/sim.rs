//! `wxcourier sim`: the WeChat API simulator as a process.

use std::process::ExitCode;
use std::time::Duration;

use crate::sim::{Faults, SimOptions, Simulator};

#[derive(clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9780")]
    listen: String,
    /// An account it knows, as APPID:SECRET (repeatable). Default: wx0000000000000000:secret.
    #[arg(long = "app", value_name = "APPID:SECRET")]
    apps: Vec<String>,
    /// Token lifetime.
    #[arg(long, default_value = "7200s", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
    /// How long an old classic token keeps working after a new one is issued.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    token_grace: Duration,
    /// Sends per app before 45009.
    #[arg(long, default_value_t = 1_000_000)]
    daily_quota: u64,
    /// Share of sends answered -1 (system busy).
    #[arg(long, default_value_t = 0.0)]
    busy: f64,
    /// Share of sends answered 45009.
    #[arg(long, default_value_t = 0.0)]
    quota_share: f64,
    /// Share of requests answered HTTP 503.
    #[arg(long, default_value_t = 0.0)]
    http5xx: f64,
    /// Share of requests whose connection is dropped.
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Share of sends answered with a body that is not JSON.
    #[arg(long, default_value_t = 0.0)]
    bad_json: f64,
    /// Latency added to every request.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
}

pub async fn run(args: SimArgs) -> ExitCode {
    crate::telemetry::init_logging(&Default::default());
    let mut apps = Vec::new();
    for a in &args.apps {
        match a.split_once(':') {
            Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
                apps.push((id.to_owned(), secret.to_owned()))
            }
            _ => {
                eprintln!("wxcourier sim: --app must be APPID:SECRET, got {a:?}");
                return ExitCode::from(2);
            }
        }
    }
    let mut options = SimOptions {
        token_ttl: args.token_ttl,
        token_grace: args.token_grace,
        daily_quota: args.daily_quota,
        faults: Faults {
            busy: args.busy,
            quota: args.quota_share,
            http5xx: args.http5xx,
            drop: args.drop,
            bad_json: args.bad_json,
            latency_ms: args.latency.as_millis() as u64,
        },
        ..SimOptions::default()
    };
    if !apps.is_empty() {
        options.apps = apps;
    }
    let sim = match Simulator::start(&args.listen, options).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("wxcourier sim: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "wxcourier sim: WeChat API simulator on {} (stats at {}/sim/stats)",
        sim.base_url(),
        sim.base_url()
    );
    super::termination().await;
    sim.stop();
    ExitCode::SUCCESS
}
