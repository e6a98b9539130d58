//! `wxcourier send`: publishes jobs to the jobs exchange with publisher confirms.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::types::FieldTable;

use super::shared::{ConfigArg, bad_config};
use crate::broker::{self, JOBS_EXCHANGE, Publisher, UNROUTED, topology};
use crate::clock::{Clock, SystemClock};
use crate::config::is_account_name;
use crate::kinds::ReadOptions;

/// Publishes confirmed at once, pipelined on one channel.
const CONFIRMS_IN_FLIGHT: usize = 512;

/// How often the progress bar redraws while confirms are slow to come.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

#[derive(clap::Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The app (routing key) to send through.
    #[arg(long)]
    app: String,
    /// The follower's OpenID.
    #[arg(long, required_unless_present = "file")]
    to: Option<String>,
    /// The template ID.
    #[arg(long, required_unless_present = "file")]
    template: Option<String>,
    /// Template data as key=value (repeatable).
    #[arg(long, value_name = "KEY=VALUE", num_args = 1..)]
    data: Vec<String>,
    /// Link opened when the message is tapped.
    #[arg(long)]
    url: Option<String>,
    /// The job id (idempotency key); generated when absent.
    #[arg(long)]
    id: Option<String>,
    /// The message kind: template (default), subscribe or miniprogram_subscribe.
    #[arg(long)]
    kind: Option<String>,
    /// Publish one job per line of this JSON Lines file instead.
    #[arg(long, conflicts_with_all = ["to", "template", "data", "url", "id", "kind"])]
    file: Option<PathBuf>,
}

pub(crate) async fn run(args: SendArgs) -> ExitCode {
    let settings = match args.config.load_for_broker() {
        Ok(s) => s,
        Err(e) => return bad_config(&e),
    };
    if !is_account_name(&args.app) {
        eprintln!(
            "wxcourier send: --app must be an app (1-32 of a-z, 0-9 and _) or an authorizer (NAME:APPID), got {:?}",
            args.app
        );
        return ExitCode::from(super::shared::EXIT_USAGE);
    }
    let bodies = match &args.file {
        Some(path) => match read_lines(path) {
            Ok(lines) => lines,
            Err(e) => {
                eprintln!("wxcourier send: cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        // Checked as the app's worker reads it (`apps.NAME.truncate`), when the config names it.
        None => match job_from_flags(&args, &SystemClock, reading_of(&settings, &args.app)) {
            Ok(body) => vec![body],
            Err(e) => {
                eprintln!("wxcourier send: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let conn = match broker::connect(&settings.amqp, "wxcourier send").await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wxcourier send: {e}; check amqp.url and that RabbitMQ is running");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = topology::declare_exchanges(&conn).await {
        eprintln!("wxcourier send: {e}");
        return ExitCode::FAILURE;
    }
    let route = match route_of(&conn, &settings, &args.app).await {
        Ok(route) => route,
        Err(e) => {
            eprintln!("wxcourier send: {e}");
            return ExitCode::FAILURE;
        }
    };
    let publisher = match Publisher::open(&conn, settings.amqp.publish_timeout.get()).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wxcourier send: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bar = progress_bar(bodies.len(), args.file.is_some());
    let app = args.app.as_str();
    let publisher = &publisher;
    let failures: usize = futures_util::stream::iter(bodies.iter())
        .map(|body| {
            let bar = bar.clone();
            async move {
                let id = job_id_of(body).unwrap_or_default();
                let result = publisher
                    .publish_job(app, &id, body, FieldTable::default())
                    .await;
                bar.inc(1);
                result.is_err() as usize
            }
        })
        .buffer_unordered(CONFIRMS_IN_FLIGHT)
        .fold(0, |acc, failed| async move { acc + failed })
        .await;
    bar.finish_and_clear();
    let _ = conn.close(200, "done".into()).await;
    if failures == 0
        && let Route::Unrouted(why) = route
    {
        eprintln!(
            "wxcourier send: {} job(s) landed in {UNROUTED}, not in {}: {why}",
            bodies.len(),
            broker::job_queue(app)
        );
        ExitCode::FAILURE
    } else if failures == 0 {
        println!(
            "published {} job(s) to {JOBS_EXCHANGE} with routing key {app}, all confirmed",
            bodies.len()
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "wxcourier send: {failures} of {} job(s) were not confirmed by the broker; publish them again",
            bodies.len()
        );
        ExitCode::FAILURE
    }
}

/// Where the jobs of `app` will land.
pub(super) enum Route {
    /// The app's job queue, where a worker takes them.
    Queue,
    /// The jobs exchange's alternate exchange (`wxcourier.unrouted`), for this reason.
    Unrouted(String),
}

/// Declares the job queue of a configured app (the worker's own declaration, so a job sent
/// before any worker ran waits there); for an app the config does not name, asks the broker,
/// without creating anything, whether some worker declared its queue.
pub(super) async fn route_of(
    conn: &lapin::Connection,
    settings: &crate::config::Settings,
    app: &str,
) -> Result<Route, String> {
    if settings.apps.contains_key(app) {
        topology::app_queues(conn, &[app.to_owned()])
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Route::Queue);
    }
    if let Some((platform, appid)) = app.split_once(':')
        && settings.platforms.contains_key(platform)
    {
        return authorizer_route(settings, platform, appid).await;
    }
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    // A passive declare of a missing queue closes the channel: that answer is the "no".
    match topology::message_count(&ch, &broker::job_queue(app)).await {
        Ok(_) => {
            let _ = ch.close(200, "ok".into()).await;
            Ok(Route::Queue)
        }
        Err(_) => Ok(Route::Unrouted(format!(
            "no such app: {app} is not in this config and no worker has declared its queue; \
             add [apps.{app}] or check the name, then `wxcourier dead replay --from unrouted --app {app}`"
        ))),
    }
}

/// A platform's authorizer is routed to the platform's queue while it is active: the state
/// says so (the workers bind the queue to exactly the active ones).
async fn authorizer_route(
    settings: &crate::config::Settings,
    platform: &str,
    appid: &str,
) -> Result<Route, String> {
    let state =
        crate::state::State::from_settings(&settings.state, std::time::Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
    if let crate::state::State::Memory(..) = state {
        return Err(format!(
            "state.url is memory: whether {platform}:{appid} is an active authorizer is known to \
             its worker alone; send through a config with the workers' redis:// state"
        ));
    }
    let component = &settings.platforms[platform].component_appid;
    let kept = state
        .platform_store()
        .authorizer(component, appid)
        .await
        .map_err(|e| e.to_string())?;
    Ok(match kept {
        Some(a) if a.standing == crate::state::Standing::Active => Route::Queue,
        Some(a) => Route::Unrouted(format!(
            "{platform}:{appid} is {} with the platform; once the merchant authorizes again, \
             `wxcourier dead replay --from unrouted --app {platform}:{appid}`",
            a.standing.as_str()
        )),
        None => Route::Unrouted(format!(
            "{platform}:{appid} has not authorized the platform ({platform} knows no such \
             authorizer); once it does, `wxcourier dead replay --from unrouted --app {platform}:{appid}`"
        )),
    })
}

fn progress_bar(len: usize, visible: bool) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} jobs {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(PROGRESS_TICK);
    bar
}

fn read_lines(path: &std::path::Path) -> std::io::Result<Vec<Vec<u8>>> {
    let text = std::fs::read(path)?;
    Ok(text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect())
}

/// The job id of a body, to set as the AMQP `message_id` (the worker validates the rest).
fn job_id_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    serde_json::from_slice::<IdOnly>(body).ok()?.id
}

/// Why the flags make no job.
#[derive(Debug, thiserror::Error)]
enum FlagsError {
    #[error("--data must be KEY=VALUE, got {0:?}")]
    Data(String),
    #[error("the job is invalid: {0}")]
    Invalid(crate::job::Rejection),
}

/// How `app`'s worker reads its jobs; the contract's default for an app the config lacks.
fn reading_of(settings: &crate::config::Settings, app: &str) -> ReadOptions {
    settings
        .apps
        .get(app)
        .map(|a| a.reading())
        .unwrap_or_default()
}

/// The job the flags describe, checked as `reading` has it; without `--id`, one made of
/// `clock`'s time and a random part.
fn job_from_flags(
    args: &SendArgs,
    clock: &impl Clock,
    reading: ReadOptions,
) -> Result<Vec<u8>, FlagsError> {
    let mut data = serde_json::Map::new();
    for kv in &args.data {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| FlagsError::Data(kv.clone()))?;
        data.insert(k.to_owned(), serde_json::json!({ "value": v }));
    }
    let id = args.id.clone().unwrap_or_else(|| {
        let ms = clock.now_ms();
        format!("send-{ms}-{:08x}", rand::random::<u32>())
    });
    let mut job = serde_json::json!({
        "id": id,
        "touser": args.to,
        "template_id": args.template,
        "data": data,
    });
    if let Some(url) = &args.url {
        job["url"] = serde_json::json!(url);
    }
    if let Some(kind) = &args.kind {
        job["kind"] = serde_json::json!(kind);
    }
    // Validate here too, so a typo is reported now rather than as a rejected outcome later.
    let body = serde_json::to_vec(&job).expect("a JSON value serializes");
    crate::job::parse_with(&body, None, reading).map_err(FlagsError::Invalid)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};
    use time::OffsetDateTime;

    use super::*;

    /// A clock stopped at one instant.
    struct Stopped(OffsetDateTime);

    impl Clock for Stopped {
        fn now(&self) -> OffsetDateTime {
            self.0
        }
    }

    fn args(flags: &[&str]) -> SendArgs {
        let command = SendArgs::augment_args(clap::Command::new("send"));
        let matches =
            command.get_matches_from(std::iter::once("send").chain(flags.iter().copied()));
        SendArgs::from_arg_matches(&matches).unwrap()
    }

    #[test]
    fn a_generated_id_reads_the_time_from_the_clock_it_is_given() {
        let at = time::macros::datetime!(2026-03-01 08:00:00.250 UTC);
        let flags = [
            "--app",
            "shop",
            "--to",
            "o1",
            "--template",
            "t1",
            "--data",
            "k=v",
        ];
        let body = job_from_flags(&args(&flags), &Stopped(at), ReadOptions::default()).unwrap();
        let job: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let id = job["id"].as_str().unwrap();
        assert!(id.starts_with("send-1772352000250-"), "{id}");
    }
}
