//! `wxcourier pause|resume --app A [--template T]`: the kill switch at run time. It writes the
//! app's record in the shared state, which every running worker reads again within a second;
//! the queue is still consumed, and the paused jobs wait or end `suppressed` as
//! `apps.A.pause_mode` says. Prints what is paused afterwards, the settings' part included.

use std::process::ExitCode;
use std::time::Duration;

use super::shared::{ConfigArg, EXIT_USAGE, bad_config};
use crate::config::Settings;
use crate::state::{PauseScope, Paused, Pauses, State};

/// The claim lifetime a state needs to be opened with; these verbs take no claim.
const UNUSED_CLAIM_TTL: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub(crate) struct PauseArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The configured app.
    #[arg(long)]
    app: String,
    /// One template_id; without it, the whole app.
    #[arg(long)]
    template: Option<String>,
}

/// Which way the switch is thrown.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Throw {
    Pause,
    Resume,
}

pub(super) async fn run(args: PauseArgs, throw: Throw) -> ExitCode {
    let settings = match args.config.load_for_broker() {
        Ok(s) => s,
        Err(e) => return bad_config(&e),
    };
    let scope = match scope_of(&settings, &args) {
        Ok(scope) => scope,
        Err(why) => {
            eprintln!("wxcourier: {why}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let state = match State::from_settings(&settings.state, UNUSED_CLAIM_TTL) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("wxcourier: bad config: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let changed = match throw {
        Throw::Pause => state.pause(&args.app, &scope).await,
        Throw::Resume => state.resume(&args.app, &scope).await,
    };
    match changed {
        Ok(shared) => {
            println!("{}", report(&args.app, &settings, &shared));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wxcourier: cannot reach the state ({e}); nothing was changed");
            ExitCode::FAILURE
        }
    }
}

/// For `check`: each app with something paused, as `pause` prints it; the settings' part alone
/// with memory state, and what could not be read said so.
pub(super) async fn paused_lines(settings: &Settings) -> Vec<String> {
    let shared = match settings.state.url.expose() {
        "memory" => None,
        _ => State::from_settings(&settings.state, UNUSED_CLAIM_TTL).ok(),
    };
    let mut lines = Vec::new();
    for (name, app) in &settings.apps {
        let read = match &shared {
            None => Ok(Paused::default()),
            Some(state) => state.paused(name).await,
        };
        match read {
            Ok(p) if p.is_empty() && app.paused_templates.is_empty() => {}
            Ok(p) => lines.push(report(name, settings, &p)),
            Err(e) => lines.push(format!("{name}: paused: cannot read the state ({e})")),
        }
    }
    lines
}

/// What the arguments name, or why they cannot be used: an app the config lacks (a typo would
/// pause nothing that runs), an empty template, or memory state, which no other process reads.
fn scope_of(settings: &Settings, args: &PauseArgs) -> Result<PauseScope, String> {
    if !settings.apps.contains_key(&args.app) {
        return Err(format!(
            "--app {:?} is not a configured app (apps.NAME)",
            args.app
        ));
    }
    if settings.state.url.expose() == "memory" {
        return Err(format!(
            "state.url is \"memory\": a running worker keeps its state to itself, so a pause \
             cannot reach it; use Redis state, or set apps.{}.paused_templates and restart",
            args.app
        ));
    }
    match args.template.as_deref().map(str::trim) {
        None => Ok(PauseScope::App),
        Some("") => Err("--template must name a template_id".into()),
        Some(t) => Ok(PauseScope::Template(t.to_owned())),
    }
}

/// `APP: paused: …`, with the templates the settings pause named as such: those stay paused
/// whatever `resume` says.
fn report(app: &str, settings: &Settings, shared: &Paused) -> String {
    let configured = &settings.apps[app].paused_templates;
    let configured = Paused {
        app: false,
        templates: configured.iter().cloned().collect(),
    };
    let now = shared.union(&configured);
    let mut line = format!("{app}: paused: {now}");
    if !configured.is_empty() {
        let names: Vec<&str> = configured.templates.iter().map(String::as_str).collect();
        line.push_str(&format!(
            " ({} by apps.{app}.paused_templates, which only a restart changes)",
            names.join(", ")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppSettings;
    use crate::types::Secret;

    fn settings(state: &str, configured: &[&str]) -> Settings {
        let mut s = Settings::default();
        s.state.url = Secret::new(state);
        let mut app = AppSettings::new("wx1", Secret::new("s"));
        app.paused_templates = configured.iter().map(|t| t.to_string()).collect();
        s.apps.insert("shop".into(), app);
        s
    }

    fn args(app: &str, template: Option<&str>) -> PauseArgs {
        PauseArgs {
            config: ConfigArg::default(),
            app: app.into(),
            template: template.map(Into::into),
        }
    }

    #[test]
    fn the_arguments_name_the_app_or_one_template_of_a_configured_app_on_shared_state() {
        let s = settings("redis://127.0.0.1:6379", &[]);
        assert_eq!(scope_of(&s, &args("shop", None)), Ok(PauseScope::App));
        assert_eq!(
            scope_of(&s, &args("shop", Some("t1"))),
            Ok(PauseScope::Template("t1".into()))
        );
        let e = scope_of(&s, &args("shpo", None)).unwrap_err();
        assert!(e.contains("\"shpo\" is not a configured app"), "{e}");
        let e = scope_of(&s, &args("shop", Some(" "))).unwrap_err();
        assert!(e.contains("--template"), "{e}");
        let memory = settings("memory", &[]);
        let e = scope_of(&memory, &args("shop", None)).unwrap_err();
        assert!(e.contains("apps.shop.paused_templates"), "{e}");
    }

    #[test]
    fn the_report_names_what_is_paused_and_what_the_settings_keep_paused() {
        let s = settings("redis://127.0.0.1:6379", &["cfg"]);
        let shared = Paused::default().paused(&PauseScope::Template("t1".into()));
        assert_eq!(
            report("shop", &s, &shared),
            "shop: paused: templates cfg, t1 (cfg by apps.shop.paused_templates, which only a \
             restart changes)"
        );
        let plain = settings("redis://127.0.0.1:6379", &[]);
        assert_eq!(
            report("shop", &plain, &Paused::default()),
            "shop: paused: nothing"
        );
    }
}
