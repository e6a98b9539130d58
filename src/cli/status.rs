//! `wxcourier status --app A ID… [--json]`: each job's story (received, each try and its
//! wait, its end, WeChat's delivery report), read where the worker keeps it: straight from
//! Redis with Redis state, or from the running worker's admin endpoint with memory state.
//! Exits 1 when any id is unknown, 2 for a bad command line or config.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use super::shared::{ConfigArg, EXIT_BAD_CONFIG, EXIT_USAGE, bad_config};
use crate::config::{Settings, is_account_name};
use crate::job::is_job_id;
use crate::state::State;
use crate::trail::{Story, Trails};
use crate::types::Secret;

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The app the jobs were sent for.
    #[arg(long)]
    app: String,
    /// One or more job ids.
    #[arg(required = true)]
    ids: Vec<String>,
    /// One JSON object per job, one per line: {"app", "id", "status", "trail": […]}.
    #[arg(long)]
    json: bool,
}

/// How long one question to the worker's admin endpoint may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the stories are read.
enum Source {
    /// Redis, which every worker writes to.
    Shared(Trails),
    /// The worker's admin endpoint: with memory state, only the worker holds them.
    Worker {
        url: String,
        token: Secret,
        client: reqwest::Client,
    },
}

impl Source {
    fn from_settings(settings: &Settings) -> Result<Self, String> {
        if settings.state.url.expose() != "memory" {
            let state = State::from_settings(&settings.state, Duration::from_secs(1))
                .map_err(|e| e.to_string())?;
            let ttl = settings.state.trail_ttl.get();
            return Ok(Source::Shared(Trails::for_state(
                &state,
                ttl,
                Default::default(),
            )));
        }
        let (Some(listen), Some(token)) = (&settings.admin.listen, &settings.admin.token) else {
            return Err(
                "with memory state each job's story is kept in the worker: set admin.listen \
                 and WXCOURIER_ADMIN__TOKEN as the worker has them, so status can ask it"
                    .into(),
            );
        };
        let mut addr: SocketAddr = listen
            .parse()
            .map_err(|_| format!("admin.listen {listen:?} is not an address"))?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let client = reqwest::Client::builder()
            .timeout(ASK_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Source::Worker {
            url: format!("http://{addr}/v1/jobs"),
            token: token.clone(),
            client,
        })
    }

    async fn story(&self, app: &str, id: &str) -> Result<Option<Story>, String> {
        match self {
            Source::Shared(trails) => trails
                .story(app, id)
                .await
                .map_err(|e| format!("cannot read state.url: {e}")),
            Source::Worker { url, token, client } => {
                let answer = client
                    .get(format!("{url}/{app}/{id}"))
                    .bearer_auth(token.expose())
                    .send()
                    .await
                    .map_err(|e| format!("cannot reach the worker's admin.listen: {e}"))?;
                match answer.status().as_u16() {
                    200 => answer
                        .json::<Story>()
                        .await
                        .map(Some)
                        .map_err(|e| format!("the worker's answer is not a story: {e}")),
                    404 => Ok(None),
                    401 => Err(
                        "the worker refused the token: WXCOURIER_ADMIN__TOKEN must be the \
                         worker's"
                            .into(),
                    ),
                    other => Err(format!("the worker answered HTTP {other}")),
                }
            }
        }
    }
}

pub(crate) async fn run(args: StatusArgs) -> ExitCode {
    let settings = match args.config.load_for_broker() {
        Ok(s) => s,
        Err(e) => return bad_config(&e),
    };
    if !is_account_name(&args.app) {
        eprintln!(
            "wxcourier status: --app {:?} is not an app name (a-z 0-9 _)",
            args.app
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let source = match Source::from_settings(&settings) {
        Ok(s) => s,
        // Where to read is a matter of the config: fix it, as for any bad config.
        Err(e) => {
            eprintln!("wxcourier status: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let mut all_known = true;
    for id in &args.ids {
        if !is_job_id(id) {
            eprintln!("wxcourier status: {id:?} is not a job id (1-128 of A-Z a-z 0-9 . _ : -)");
            all_known = false;
            continue;
        }
        match source.story(&args.app, id).await {
            Ok(Some(story)) if args.json => {
                println!(
                    "{}",
                    serde_json::to_string(&story).expect("a story serializes")
                );
            }
            Ok(Some(story)) => print!("{}", human(&story)),
            Ok(None) => {
                eprintln!(
                    "wxcourier status: {id}: unknown to app {} (never seen, or forgotten after \
                     state.trail_ttl)",
                    args.app
                );
                all_known = false;
            }
            Err(e) => {
                eprintln!("wxcourier status: {id}: {e}");
                all_known = false;
            }
        }
    }
    if all_known {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The story as lines: the job and its status, then each step with its details.
fn human(story: &Story) -> String {
    let mut out = format!("{} ({}): {}\n", story.id, story.app, story.status);
    for step in &story.trail {
        let details: Vec<String> = step
            .detail
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        out.push_str(&format!(
            "  {}  {:<10} {}\n",
            step.at,
            step.step.as_str(),
            details.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trail::{Entry, StepName};

    #[test]
    fn the_human_form_names_the_job_its_status_and_each_step_with_its_details() {
        let steps = vec![
            Entry::new(time::OffsetDateTime::UNIX_EPOCH, StepName::Received),
            Entry::new(time::OffsetDateTime::UNIX_EPOCH, StepName::Sent).with("msgid", 42),
        ];
        let story = Story::new("shop", "j1", steps).unwrap();
        let text = human(&story);
        assert!(text.starts_with("j1 (shop): sent\n"), "{text}");
        assert!(text.contains("received"), "{text}");
        assert!(text.contains("sent       msgid=42"), "{text}");
    }

    #[test]
    fn memory_state_without_the_admin_endpoint_says_how_to_reach_the_worker() {
        let settings = Settings::default();
        let Err(why) = Source::from_settings(&settings) else {
            panic!("no source")
        };
        assert!(
            why.contains("admin.listen") && why.contains("WXCOURIER_ADMIN__TOKEN"),
            "{why}"
        );
    }
}
