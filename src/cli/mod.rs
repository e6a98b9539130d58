//! The command line (CONTRACT §7): one binary, one verb per job.

mod cancel;
mod check;
mod check_platforms;
mod dead;
#[cfg(feature = "sim")]
mod demo;
mod gate;
mod pause;
mod platform;
mod run;
mod send;
mod shared;
#[cfg(feature = "sim")]
mod sim;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::metrics::listing;
use shared::ConfigArg;

#[derive(Parser)]
#[command(
    name = "wxcourier",
    version,
    about = "Delivers WeChat template messages from RabbitMQ, and reports every outcome.",
    after_help = kinds_help()
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The worker daemon: consumes every app's queue until SIGTERM/SIGINT.
    Run(ConfigArg),
    /// The WeChat API simulator, for tests, demos and benchmarks.
    #[cfg(feature = "sim")]
    Sim(sim::SimArgs),
    /// Publishes one job (or many from --file) to the jobs exchange.
    Send(send::SendArgs),
    /// Publishes a cancel for each job id: a job not sent yet ends `cancelled`.
    Cancel(cancel::CancelArgs),
    /// Shows the whole flow on this machine: simulator, worker, sample jobs, outcomes.
    #[cfg(feature = "sim")]
    Demo(demo::DemoArgs),
    /// Validates the config, reaches the broker and fetches a token per app; prints each app's
    /// daily quota and template catalog, and holds sample jobs (--jobs) against it.
    Check(check::CheckArgs),
    /// Lists or replays rejected (`wxcourier.dead`) and unrouted jobs.
    Dead(dead::DeadArgs),
    /// Stops sending an app's jobs (or one template's), on every running worker within a
    /// second; the queue is still consumed (apps.NAME.pause_mode: the jobs wait, or are
    /// dropped). Prints what is paused now.
    Pause(pause::PauseArgs),
    /// Lifts `pause`: one template's, or (without --template) every pause of the app. Prints
    /// what is paused now.
    Resume(pause::PauseArgs),
    /// Prints each job's story by its id: received, each try, its end, its delivery report.
    Status(status::StatusArgs),
    /// Lists or clears the preference gates of an app (`apps.NAME.honor_preferences`).
    Gate(gate::GateArgs),
    /// A third-party platform's authorizers: list, import from WeChat, the authorization link,
    /// remove one.
    Platform(platform::PlatformArgs),
    /// Prints every metric family the worker exports, one per line: name, type, labels (comma
    /// separated) and help, separated by tabs. For the deploy checks, so hidden from --help.
    #[command(hide = true)]
    MetricsList,
}

/// The kinds of message the worker sends, for the top-level help: listed from `Kind::ALL`, so
/// a new kind shows up without touching this text.
fn kinds_help() -> String {
    format!("Message kinds it sends: {}.", crate::kinds::Kind::list())
}

/// Parses the command line and runs the verb.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            #[cfg(feature = "sim")]
            Command::Sim(args) => sim::run(args).await,
            Command::Send(args) => send::run(args).await,
            Command::Cancel(args) => cancel::run(args).await,
            #[cfg(feature = "sim")]
            Command::Demo(args) => demo::run(args).await,
            Command::Check(args) => check::run(args).await,
            Command::Dead(args) => dead::run(args).await,
            Command::Pause(args) => pause::run(args, pause::Throw::Pause).await,
            Command::Resume(args) => pause::run(args, pause::Throw::Resume).await,
            Command::Status(args) => status::run(args).await,
            Command::Gate(args) => gate::run(args).await,
            Command::Platform(args) => platform::run(args).await,
            Command::MetricsList => metrics_list(),
        }
    })
}

/// `wxcourier metrics-list`: the registry's own families, one line each.
fn metrics_list() -> ExitCode {
    for family in listing::families() {
        println!("{}", family.line());
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn metrics_list_is_a_verb_that_help_does_not_show() {
        let cli = Cli::try_parse_from(["wxcourier", "metrics-list"]).unwrap();
        assert!(matches!(cli.command, Command::MetricsList));
        let help = Cli::command().render_help().to_string();
        assert!(
            help.contains("check") && !help.contains("metrics-list"),
            "{help}"
        );
    }
}
