//! The kill switch's shared record (CONTRACT "Delivery policy", `wxcourier pause|resume`): which
//! of an app's templates, or the whole app, an operator paused at run time. Kept until resumed,
//! never expiring: a kill switch that lapsed by itself would send what someone meant to stop.
//! In memory it serves one process; in Redis every instance reads the same record.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;

use super::error::StateResult;

/// What a pause or a resume names: the whole app, or one of its templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PauseScope {
    App,
    Template(String),
}

/// What is paused for one app.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Paused {
    /// Every job of the app waits (or is dropped).
    pub app: bool,
    /// Jobs naming one of these `template_id`s wait (or are dropped).
    pub templates: BTreeSet<String>,
}

impl Paused {
    /// Whether a job of `template` is held by this record.
    pub fn holds(&self, template: &str) -> bool {
        self.app || self.templates.contains(template)
    }

    pub fn is_empty(&self) -> bool {
        !self.app && self.templates.is_empty()
    }

    /// Both records together: a template paused in either is paused.
    pub fn union(&self, other: &Paused) -> Paused {
        Paused {
            app: self.app || other.app,
            templates: self.templates.union(&other.templates).cloned().collect(),
        }
    }

    /// The record after `scope` was paused.
    pub(crate) fn paused(mut self, scope: &PauseScope) -> Paused {
        match scope {
            PauseScope::App => self.app = true,
            PauseScope::Template(t) => {
                self.templates.insert(t.clone());
            }
        }
        self
    }

    /// The record after `scope` was resumed: the whole app's resume lifts every pause of the
    /// app, so "resume the app" always means it sends again.
    pub(crate) fn resumed(mut self, scope: &PauseScope) -> Paused {
        match scope {
            PauseScope::App => return Paused::default(),
            PauseScope::Template(t) => {
                self.templates.remove(t);
            }
        }
        self
    }
}

impl fmt::Display for Paused {
    /// `nothing`, `the whole app`, or the templates by name (and the app when both).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let templates = self
            .templates
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        match (self.app, templates.is_empty()) {
            (false, true) => f.write_str("nothing"),
            (true, true) => f.write_str("the whole app"),
            (false, false) => write!(f, "templates {templates}"),
            (true, false) => write!(f, "the whole app (and templates {templates})"),
        }
    }
}

/// The run-time pauses of each app, shared by every instance when the backend is.
pub trait Pauses: Send + Sync {
    /// What is paused for `app` now.
    fn paused(&self, app: &str) -> impl Future<Output = StateResult<Paused>> + Send;
    /// Pauses `scope` and returns what is paused now.
    fn pause(
        &self,
        app: &str,
        scope: &PauseScope,
    ) -> impl Future<Output = StateResult<Paused>> + Send;
    /// Resumes `scope` (the whole app: every pause of it) and returns what is paused now.
    fn resume(
        &self,
        app: &str,
        scope: &PauseScope,
    ) -> impl Future<Output = StateResult<Paused>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(t: &str) -> PauseScope {
        PauseScope::Template(t.into())
    }

    #[test]
    fn a_record_holds_its_templates_or_every_template_when_the_app_is_paused() {
        let none = Paused::default();
        assert!(none.is_empty() && !none.holds("a"));
        let one = none.clone().paused(&template("a"));
        assert!(one.holds("a") && !one.holds("b") && !one.is_empty());
        let app = one.clone().paused(&PauseScope::App);
        assert!(app.holds("b"));
        assert_eq!(app.clone().resumed(&template("a")).templates.len(), 0);
        assert!(app.clone().resumed(&template("a")).holds("b"));
        assert_eq!(app.resumed(&PauseScope::App), Paused::default());
        assert_eq!(one.clone().resumed(&template("b")), one);
    }

    #[test]
    fn the_union_pauses_what_either_pauses_and_it_reads_as_a_sentence() {
        let a = Paused::default().paused(&template("a"));
        let b = Paused::default().paused(&template("b"));
        let both = a.union(&b);
        assert!(both.holds("a") && both.holds("b") && !both.app);
        assert_eq!(Paused::default().to_string(), "nothing");
        assert_eq!(both.to_string(), "templates a, b");
        let app = both.paused(&PauseScope::App);
        assert_eq!(app.to_string(), "the whole app (and templates a, b)");
        assert_eq!(
            Paused::default().paused(&PauseScope::App).to_string(),
            "the whole app"
        );
    }
}
