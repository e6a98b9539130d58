//! `wxcourier check`: is this configuration ready to run? Also prints each app's daily quota,
//! its template catalog (when `catalog` is on), and holds sample jobs (`--jobs`) against it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::shared::{ConfigArg, bad_config};
use crate::broker;
use crate::broker::orphans::{self, ManagementApi};
use crate::broker::results_bindings::unbound;
use crate::broker::results_policy::{self, AlternateExchange};
use crate::broker::{RESULTS_EXCHANGE, RESULTS_UNROUTED, topology};
use crate::catalog::{self, Template, review::JobData};
use crate::config::AppSettings;
use crate::config::Settings;
use crate::daily_quota;
use crate::kinds::Kind;
use crate::state::{State, StateError};
use crate::wechat::client::{CallError, TokenError, WechatClient};
use crate::wechat::lookup::Lookup;
use crate::wechat::token::{TokenKeeper, WechatTokenSource};

/// How long `check` waits for the broker before reporting it unreachable.
const BROKER_CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// How long the queue checks and the close may take once connected: a broker that stops
/// answering mid-check must not leave `check` hanging (it is run by hand and by deploy hooks).
const BROKER_CHECKS_LIMIT: Duration = Duration::from_secs(30);

/// `check` claims no job, but the store is built with a claim lifetime all the same.
const UNUSED_CLAIM_TTL: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Sample jobs (JSON Lines, one job per line) to hold against the templates of --app:
    /// each line that would be rejected, and each 2023 display rule it runs into, is printed.
    #[arg(long, requires = "app")]
    jobs: Option<PathBuf>,
    /// The app whose templates --jobs are held against.
    #[arg(long, requires = "jobs")]
    app: Option<String>,
}

pub(crate) async fn run(args: CheckArgs) -> ExitCode {
    let settings = match args.config.load().and_then(|s| s.require_apps().map(|_| s)) {
        Ok(s) => s,
        Err(e) => return bad_config(&e),
    };
    let jobs = match (&args.jobs, &args.app) {
        (Some(path), Some(app)) => {
            if !settings.apps.contains_key(app) {
                eprintln!("wxcourier check: --app {app:?} is not an app of this config");
                return ExitCode::from(super::shared::EXIT_BAD_CONFIG);
            }
            match std::fs::read_to_string(path) {
                Ok(text) => Some((app.clone(), text)),
                Err(e) => {
                    eprintln!("wxcourier check: cannot read {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    println!(
        "config: ok ({} app(s), {} platform(s))",
        settings.apps.len(),
        settings.platforms.len()
    );
    for renamed in &settings.renamed_keys {
        println!("config: WARNING: {}", renamed.advice());
    }
    let mut ok = true;
    match tokio::time::timeout(
        BROKER_CONNECT_LIMIT,
        broker::connect(&settings.amqp, "wxcourier check"),
    )
    .await
    {
        Ok(Ok(conn)) => {
            println!("broker: ok");
            let checks = async {
                report_legacy(&settings, &conn).await;
                report_orphans(&settings, &conn).await;
                report_results(&settings).await;
                let _ = conn.close(200, "check done".into()).await;
            };
            if tokio::time::timeout(BROKER_CHECKS_LIMIT, checks)
                .await
                .is_err()
            {
                println!(
                    "queue checks: not finished: the broker stopped answering within {}s",
                    BROKER_CHECKS_LIMIT.as_secs()
                );
            }
        }
        Ok(Err(e)) => {
            ok = false;
            println!("broker: FAILED: {e}; check amqp.url and that RabbitMQ is running");
        }
        Err(_) => {
            ok = false;
            println!(
                "broker: FAILED: no answer within {}s; check amqp.url",
                BROKER_CONNECT_LIMIT.as_secs()
            );
        }
    }
    if settings.state.url.expose() != "memory" {
        match check_state(&settings.state).await {
            Ok(mode) => println!("state: ok ({mode})"),
            Err(e) => {
                ok = false;
                println!("state: FAILED: {e}; check state.url (and state.ca_file for rediss…)");
            }
        }
    }
    // Information, never a failure: a pause is an operator's choice.
    for line in super::pause::paused_lines(&settings).await {
        println!("app {line}");
    }
    let client = match WechatClient::new(&settings.wechat.base_url, settings.wechat.timeout.get()) {
        Ok(c) => c,
        Err(e) => {
            println!("wechat: FAILED: {e}");
            return ExitCode::FAILURE;
        }
    };
    let classifier = crate::startup::classifier(&settings.wechat);
    for (name, app) in &settings.apps {
        let keeper = token_keeper(&client, app);
        if let Err(e) = keeper.get().await {
            ok = false;
            println!("app {name}: FAILED: {e}; {}", token_hint(name, &e));
            continue;
        }
        println!("app {name}: token ok");
        let lookup = Lookup {
            client: &client,
            keeper: &keeper,
            classifier: &classifier,
        };
        report_quota(name, app, &lookup).await;
        let for_jobs = jobs.as_ref().filter(|(a, _)| a == name);
        if !app.catalog && for_jobs.is_none() {
            continue;
        }
        let templates = match catalog::keeper::fetch(&lookup).await {
            Ok(listed) => {
                report_catalog(name, &listed.templates, listed.skipped);
                Some(listed.templates)
            }
            Err(e) => {
                // With the catalog on, the worker would send template jobs unchecked.
                if app.catalog {
                    ok = false;
                }
                println!("app {name}: catalog: FAILED: {e}");
                None
            }
        };
        if let Some((_, text)) = for_jobs {
            let by_id = templates.map(|ts| ts.into_iter().map(|t| (t.id.clone(), t)).collect());
            ok &= report_jobs(name, app, by_id.as_ref(), text);
        }
    }
    ok &= super::check_platforms::report(&settings, &client).await;
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A token keeper for one app, as the worker has.
fn token_keeper(client: &WechatClient, app: &AppSettings) -> TokenKeeper {
    TokenKeeper::new(Box::new(WechatTokenSource {
        client: client.clone(),
        appid: app.appid.clone(),
        secret: app.secret.clone(),
        mode: app.token_mode,
        fetched: Default::default(),
    }))
}

/// The daily quota of each endpoint the app sends through: information, never a failure.
async fn report_quota(name: &str, app: &AppSettings, lookup: &Lookup<'_>) {
    for endpoint in daily_quota::endpoints(app) {
        match daily_quota::fetch(lookup, endpoint).await {
            Ok(q) => println!(
                "app {name}: quota {endpoint}: {} of {} used today, {} left",
                q.used, q.daily_limit, q.remain
            ),
            Err(e) => println!("app {name}: quota {endpoint}: not available: {e}"),
        }
    }
}

/// The templates, one line each: id, title, placeholder keys.
fn report_catalog(name: &str, templates: &[Template], skipped: usize) {
    println!("app {name}: catalog: {} template(s)", templates.len());
    for t in templates {
        println!("  {} {:?}: {}", t.id, t.title, t.keys.join(", "));
    }
    if skipped > 0 {
        println!(
            "app {name}: catalog: WARNING: {skipped} entries without a usable template_id were skipped"
        );
    }
}

/// Holds each line of `text` (one job each) as the worker would: the rules every job must
/// keep, the app's kinds, and for template jobs the catalog and the 2023 display rules. Prints
/// one line per finding; false when a job would be rejected.
fn report_jobs(
    name: &str,
    app: &AppSettings,
    templates: Option<&HashMap<String, Template>>,
    text: &str,
) -> bool {
    let mut ok = true;
    let (mut jobs, mut flagged) = (0, 0);
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        jobs += 1;
        let mut found: Vec<String> = Vec::new();
        let mut rejected = None;
        // Whether the catalog's notes already told what WeChat will not show.
        let mut displayed = false;
        let job = match crate::job::parse_with(line.as_bytes(), None, app.reading()) {
            Ok(job) => Some(job),
            Err(r) => {
                rejected = Some(r.to_string());
                None
            }
        };
        if let Some(job) = &job {
            // What `apps.NAME.truncate` would cut, as the outcome would say it.
            found.extend(job.warnings.shortened.iter().cloned());
            if !app.kinds.sends(job.kind) {
                rejected = Some(format!(
                    "kind: {:?} is not a kind this app sends (apps.{name}.kinds)",
                    job.kind.name()
                ));
            } else if job.kind == Kind::Template
                && let Some(templates) = templates
                && let Some(data) = JobData::from_body(job.wechat_bytes())
            {
                match catalog::hold(templates, name, &data) {
                    Ok((_, review)) => {
                        if !review.extra.is_empty() {
                            found.push(format!(
                                "{} not in the template: sent, but not shown",
                                review.extra.join(", ")
                            ));
                        }
                        found.extend(review.notes.iter().map(|n| n.to_string()));
                        displayed = true;
                    }
                    Err(e) => rejected = Some(format!("{}: {}", e.field, e.rule)),
                }
            }
            if !displayed {
                found.extend(job.warnings.display.iter().cloned());
            }
        }
        let which = match job.as_ref() {
            Some(j) => format!("job line {} ({})", n + 1, j.id),
            None => format!("job line {}", n + 1),
        };
        if let Some(why) = rejected {
            ok = false;
            flagged += 1;
            println!("{which}: REJECTED: {why}");
            continue;
        }
        if !found.is_empty() {
            flagged += 1;
        }
        for f in found {
            println!("{which}: WARNING: {f}");
        }
    }
    let against = if templates.is_some() {
        "its template catalog"
    } else {
        "the job rules only (no catalog)"
    };
    println!("app {name}: jobs: {jobs} checked against {against}, {flagged} flagged");
    ok
}

/// Queues an older version declared without delivery limits: a warning each, not a failure
/// (they work; the migration is in docs/operations.md).
async fn report_legacy(settings: &Settings, conn: &lapin::Connection) {
    let apps: Vec<String> = settings.apps.keys().cloned().collect();
    match topology::legacy_queues(conn, &apps).await {
        Ok(found) if found.is_empty() => println!("queue limits: ok"),
        Ok(found) => {
            for queue in found {
                println!("queue limits: WARNING: {queue}");
            }
        }
        Err(e) => println!("queue limits: not checked: {e}"),
    }
}

/// Job queues of apps no longer configured: a warning each, not a failure (removing an app on
/// purpose is fine; its waiting jobs are what a person must decide about).
async fn report_orphans(settings: &Settings, conn: &lapin::Connection) {
    let api = match ManagementApi::from_settings(&settings.amqp) {
        Ok(api) => api,
        Err(e) => {
            println!("job queues: not checked: {e}");
            return;
        }
    };
    match orphans::find(settings, &api, conn).await {
        Ok(found) if found.is_empty() => println!("job queues: ok (none without an app)"),
        Ok(found) => {
            for o in found {
                let depth = o
                    .messages
                    .map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string());
                println!(
                    "job queues: WARNING: {} holds {depth} message(s) but no app is configured for it; they are not sent",
                    o.queue
                );
            }
        }
        Err(e) => println!(
            "job queues: not checked: the RabbitMQ management API at {}: {e}",
            api.describe()
        ),
    }
}

/// Routing keys of `wxcourier.results` that no queue takes, per app (a warning each: those
/// results are dropped, or kept with `results.keep_unrouted`), and where the alternate exchange
/// stands. Bindings are listed by the management API only: without it, `check` cannot tell.
async fn report_results(settings: &Settings) {
    let api = match ManagementApi::from_settings(&settings.amqp) {
        Ok(api) => api,
        Err(e) => {
            println!("results: not checked: {e}");
            return;
        }
    };
    let bindings = match api.bindings_from(RESULTS_EXCHANGE).await {
        Ok(Some(bindings)) => bindings,
        Ok(None) => {
            println!(
                "results: WARNING: {RESULTS_EXCHANGE} does not exist yet: no queue takes any outcome (run the worker, then bind your queues)"
            );
            return;
        }
        Err(e) => {
            println!(
                "results: not checked: cannot tell which outcomes reach a queue without the RabbitMQ management API at {}: {e}",
                api.describe()
            );
            return;
        }
    };
    let kept = report_alternate_exchange(settings, &api).await;
    let fate = match kept {
        true => format!("kept in {RESULTS_UNROUTED}"),
        false => "dropped (counted in wxcourier_outcomes_unrouted_total)".to_owned(),
    };
    let mut all_bound = true;
    let reports = settings.http.listen.is_some();
    for (name, app) in &settings.apps {
        let statuses = crate::outcome::result_statuses(
            reports && app.callback_token.is_some(),
            app.may_suppress(),
        );
        let keys: Vec<String> = statuses.iter().map(|s| format!("{s}.{name}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let missing = unbound(&keys, &bindings);
        if !missing.is_empty() {
            all_bound = false;
            println!(
                "results: WARNING: app {name}: no queue takes {}; these results are {fate}",
                missing.join(", ")
            );
        }
    }
    if all_bound {
        println!("results: ok (a queue takes every status of every app)");
    }
}

/// Says where `wxcourier.results`' alternate exchange stands, warning when it is not what
/// `results.keep_unrouted` asks; true when results no queue takes are kept.
async fn report_alternate_exchange(settings: &Settings, api: &ManagementApi) -> bool {
    let keep = settings.results.keep_unrouted;
    let state = match results_policy::inspect(api).await {
        Ok(state) => state,
        Err(e) => {
            println!("results: alternate exchange not checked: {e}");
            return false;
        }
    };
    let command = results_policy::operator_command(api.vhost());
    match state {
        AlternateExchange::Kept { by } => {
            if !keep {
                println!(
                    "results: WARNING: results.keep_unrouted is off, but {by} keeps results no queue takes in {RESULTS_UNROUTED}"
                );
            }
            true
        }
        AlternateExchange::Elsewhere { exchange, by } => {
            println!(
                "results: alternate exchange {exchange} (set by {by}) takes results no queue takes"
            );
            false
        }
        AlternateExchange::Unset { policy } if keep => {
            match policy {
                Some(other) => println!(
                    "results: WARNING: results.keep_unrouted is on, but policy {other} is in force on wxcourier.results without an alternate exchange: add \"alternate-exchange\": \"{RESULTS_UNROUTED}\" to it"
                ),
                None => println!(
                    "results: WARNING: results.keep_unrouted is on, but no policy sets the alternate exchange (the worker sets it when its management user has the policymaker tag); run: {command}"
                ),
            }
            false
        }
        AlternateExchange::Unset { .. } | AlternateExchange::NoExchange => false,
    }
}

/// Reaches the shared state (Redis), over TLS for `rediss…`, and says in which mode.
async fn check_state(settings: &crate::config::StateSettings) -> Result<String, StateError> {
    let state = State::from_settings(settings, UNUSED_CLAIM_TTL)?;
    state.describe().await
}

/// What to check after a failed token fetch, fitting its cause: a call that never reached
/// WeChat points at the network and `wechat.base_url`, never at the credentials.
fn token_hint(app: &str, e: &TokenError) -> String {
    match e {
        TokenError::Call(CallError::Connect(_) | CallError::Timeout) => {
            "check wechat.base_url, DNS, TLS and that this host can reach it".into()
        }
        TokenError::Call(CallError::Status(_) | CallError::Body(_)) => {
            "check that wechat.base_url points at the WeChat API".into()
        }
        TokenError::Refused { errcode: 40013, .. } => format!("check apps.{app}.appid"),
        TokenError::Refused { errcode: 40125, .. } => format!("check apps.{app}.secret"),
        TokenError::Refused { errcode: 40164, .. } => {
            "add this host's IP to the account's IP whitelist".into()
        }
        TokenError::Refused { .. } => {
            format!("check apps.{app}.appid, its secret and the IP whitelist")
        }
        TokenError::State(_) => "check state.url".into(),
        TokenError::NoTicket => {
            "wait for WeChat's ticket push (every 10 minutes) to the platform's event URL".into()
        }
    }
}
