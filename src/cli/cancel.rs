//! `wxcourier cancel --app A ID…`: publishes one cancel per job id (CONTRACT, *Delivery
//! policy*) to the jobs exchange with the app as routing key, with publisher confirms. The
//! worker answers each on `wxcourier.results` as `cancel.APP`; this verb does not wait for
//! the answers.

use std::process::ExitCode;

use futures_util::StreamExt;
use lapin::types::FieldTable;

use super::send::{Route, route_of};
use super::shared::{ConfigArg, EXIT_USAGE, bad_config};
use crate::broker::{self, JOBS_EXCHANGE, Publisher, UNROUTED, topology};
use crate::config::is_account_name;
use crate::job::cancel::Cancel;
use crate::job::is_job_id;

/// Publishes confirmed at once, pipelined on one channel.
const CONFIRMS_IN_FLIGHT: usize = 512;

#[derive(clap::Args)]
pub(crate) struct CancelArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The app (routing key) whose jobs to cancel.
    #[arg(long)]
    app: String,
    /// The ids of the jobs to cancel.
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
}

/// Why the arguments name no cancel to publish.
fn usage_error(args: &CancelArgs) -> Option<String> {
    if !is_account_name(&args.app) {
        return Some(format!(
            "--app must be an app (1-32 of a-z, 0-9 and _) or an authorizer (NAME:APPID), got {:?}",
            args.app
        ));
    }
    let bad = args.ids.iter().find(|id| !is_job_id(id))?;
    Some(format!(
        "a job id must be 1-128 characters of A-Z a-z 0-9 . _ : -, got {bad:?}"
    ))
}

pub(crate) async fn run(args: CancelArgs) -> ExitCode {
    let settings = match args.config.load_for_broker() {
        Ok(s) => s,
        Err(e) => return bad_config(&e),
    };
    if let Some(why) = usage_error(&args) {
        eprintln!("wxcourier cancel: {why}");
        return ExitCode::from(EXIT_USAGE);
    }
    let conn = match broker::connect(&settings.amqp, "wxcourier cancel").await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wxcourier cancel: {e}; check amqp.url and that RabbitMQ is running");
            return ExitCode::FAILURE;
        }
    };
    let app = args.app.as_str();
    let ready = async {
        topology::declare_exchanges(&conn)
            .await
            .map_err(|e| e.to_string())?;
        let route = route_of(&conn, &settings, app).await?;
        let publisher = Publisher::open(&conn, settings.amqp.publish_timeout.get())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((route, publisher))
    };
    let (route, publisher) = match ready.await {
        Ok(ready) => ready,
        Err(e) => {
            eprintln!("wxcourier cancel: {e}");
            return ExitCode::FAILURE;
        }
    };
    let publisher = &publisher;
    let unconfirmed: Vec<&str> = futures_util::stream::iter(args.ids.iter())
        .map(|id| async move {
            let body = Cancel::body(id);
            let published = publisher
                .publish_job(app, id, &body, FieldTable::default())
                .await;
            published.is_err().then_some(id.as_str())
        })
        .buffer_unordered(CONFIRMS_IN_FLIGHT)
        .filter_map(std::future::ready)
        .collect()
        .await;
    let _ = conn.close(200, "done".into()).await;
    let n = args.ids.len();
    if !unconfirmed.is_empty() {
        eprintln!(
            "wxcourier cancel: {} of {n} cancel(s) were not confirmed by the broker ({}); publish them again",
            unconfirmed.len(),
            unconfirmed.join(", ")
        );
        return ExitCode::FAILURE;
    }
    if let Route::Unrouted(why) = route {
        eprintln!(
            "wxcourier cancel: {n} cancel(s) landed in {UNROUTED}, not in {}: {why}",
            broker::job_queue(app)
        );
        return ExitCode::FAILURE;
    }
    println!(
        "published {n} cancel(s) to {JOBS_EXCHANGE} with routing key {app}, all confirmed; \
         the worker answers each on wxcourier.results as cancel.{app}"
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};

    use super::*;

    fn args(flags: &[&str]) -> Result<CancelArgs, clap::Error> {
        let command = CancelArgs::augment_args(clap::Command::new("cancel"));
        let matches =
            command.try_get_matches_from(std::iter::once("cancel").chain(flags.iter().copied()))?;
        CancelArgs::from_arg_matches(&matches)
    }

    #[test]
    fn the_app_and_every_id_are_checked_before_anything_is_published() {
        let ok = args(&["--app", "shop", "o-1", "o:2"]).unwrap();
        assert_eq!(ok.ids, ["o-1", "o:2"]);
        assert_eq!(usage_error(&ok), None);
        let bad_id = args(&["--app", "shop", "o-1", "no spaces"]).unwrap();
        assert!(usage_error(&bad_id).unwrap().contains("\"no spaces\""));
        let bad_app = args(&["--app", "Shop", "o-1"]).unwrap();
        assert!(usage_error(&bad_app).unwrap().contains("--app"));
        assert!(args(&["--app", "shop"]).is_err(), "at least one id");
        assert!(args(&["o-1"]).is_err(), "--app is required");
    }
}
