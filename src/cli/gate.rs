//! `wxcourier gate list|clear`: the preference gates an app keeps (`apps.NAME.honor_preferences`),
//! shown one per line, or cleared so the users they name are sent to again.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use super::shared::{ConfigArg, EXIT_USAGE, bad_config, when};
use crate::state::State;
use crate::state::gates::{Gate, GateScope};

#[derive(clap::Args)]
pub(crate) struct GateArgs {
    #[command(subcommand)]
    command: GateCommand,
}

#[derive(clap::Subcommand)]
enum GateCommand {
    /// Shows the live gates: openid, template (or "all"), why, set at, expires.
    List {
        #[command(flatten)]
        which: Which,
        /// One JSON array instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Removes the gates (of one user with --to): their next jobs are sent.
    Clear {
        #[command(flatten)]
        which: Which,
    },
}

#[derive(clap::Args)]
struct Which {
    #[command(flatten)]
    config: ConfigArg,
    /// The app whose gates these are.
    #[arg(long)]
    app: String,
    /// Only the gates of this user (OpenID).
    #[arg(long)]
    to: Option<String>,
}

/// The claim lifetime a state backend is opened with; this verb takes no claim.
const NO_CLAIMS: Duration = Duration::from_secs(60);

pub(crate) async fn run(args: GateArgs) -> ExitCode {
    let which = match &args.command {
        GateCommand::List { which, .. } | GateCommand::Clear { which } => which,
    };
    let settings = match which.config.load_for_broker() {
        Ok(s) => s,
        Err(e) => return bad_config(&e),
    };
    if !settings.apps.contains_key(&which.app) {
        eprintln!("wxcourier gate: {:?} is not a configured app", which.app);
        return ExitCode::from(EXIT_USAGE);
    }
    let state = match State::from_settings(&settings.state, NO_CLAIMS) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wxcourier gate: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let State::Memory(..) = state {
        eprintln!(
            "wxcourier gate: state.url is memory, where gates live inside the running worker \
             alone; with a redis:// state every instance and this command share them"
        );
        return ExitCode::FAILURE;
    }
    let store = state.gate_store();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (app, to) = (which.app.as_str(), which.to.as_deref());
    let done = match &args.command {
        GateCommand::List { json, .. } => store.list_gates(app, to, now).await.map(|gates| {
            print!("{}", listing(&gates, *json));
        }),
        GateCommand::Clear { .. } => store.clear_gates(app, to, now).await.map(|n| {
            println!("cleared {n} gate{}", if n == 1 { "" } else { "s" });
        }),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxcourier gate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The gates as the command prints them: tab-separated lines, or a JSON array (whose
/// `template` is null for a gate on every template).
fn listing(gates: &[Gate], as_json: bool) -> String {
    if as_json {
        let all: Vec<_> = gates
            .iter()
            .map(|g| {
                let template = match &g.scope {
                    GateScope::All => None,
                    GateScope::Template(t) => Some(t.as_str()),
                };
                json!({
                    "openid": g.openid,
                    "template_id": template,
                    "reason": g.why.as_str(),
                    "set_at": when(g.set_at),
                    "expires_at": when(g.expires_at),
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::from(all));
    }
    gates
        .iter()
        .map(|g| {
            let template = match &g.scope {
                GateScope::All => "all",
                GateScope::Template(t) => t.as_str(),
            };
            format!(
                "{}\t{}\t{}\t{}\t{}\n",
                g.openid,
                template,
                g.why.as_str(),
                when(g.set_at),
                when(g.expires_at)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::gates::GateWhy;

    #[test]
    fn a_gate_is_one_line_of_five_fields_or_one_json_object() {
        let gates = [
            Gate {
                openid: "o1".into(),
                scope: GateScope::All,
                why: GateWhy::NotFollowing,
                set_at: 0,
                expires_at: 86_400,
            },
            Gate {
                openid: "o1".into(),
                scope: GateScope::Template("t1".into()),
                why: GateWhy::Refused,
                set_at: 60,
                expires_at: 120,
            },
        ];
        assert_eq!(
            listing(&gates, false),
            "o1\tall\tnot_following\t1970-01-01T00:00:00Z\t1970-01-02T00:00:00Z\n\
             o1\tt1\trecipient_refused\t1970-01-01T00:01:00Z\t1970-01-01T00:02:00Z\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&listing(&gates, true)).unwrap();
        assert_eq!(parsed[0]["template_id"], serde_json::Value::Null);
        assert_eq!(parsed[1]["template_id"], "t1");
        assert_eq!(parsed[1]["reason"], "recipient_refused");
        assert_eq!(listing(&[], false), "");
    }
}
