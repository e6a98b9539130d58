//! The template catalog of an app (`apps.NAME.catalog = true`): the account's templates, fetched
//! at start and every `apps.NAME.catalog_refresh`, against which a template job is checked
//! before any token or quota is spent. A job whose `template_id` is not in the catalog, or
//! whose `data` lacks a `{{key.DATA}}` placeholder of its template's content, is rejected with
//! the missing keys named. Keys the template does not have, and WeChat's 2023 display rules,
//! are logged once per template. Without a catalog (the fetch failed) jobs are sent unchecked,
//! with a warning; a failed refresh keeps the last good catalog.

pub(crate) mod content;
pub mod keeper;
pub(crate) mod list;
pub(crate) mod review;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use crate::job::Job;
use crate::kinds::{FieldError, Kind};
pub(crate) use list::Template;
use review::{JobData, Review};

/// Most (template, warning) pairs remembered as logged; past it the memory starts afresh
/// (and each warning may be logged once more).
const MAX_LOGGED: usize = 10_000;

/// One app's catalog.
pub(crate) struct Catalog {
    app: String,
    templates: parking_lot::RwLock<Option<Arc<HashMap<String, Template>>>>,
    /// Turns true once the first fetch has ended, well or not.
    attempted: tokio::sync::watch::Sender<bool>,
    /// How long a job waits for that first fetch before it goes unchecked.
    first_wait: Duration,
    logged: parking_lot::Mutex<HashSet<(String, &'static str)>>,
    warned_unchecked: AtomicBool,
    size: Gauge,
}

impl Catalog {
    /// `first_wait`: how long a job at start waits for the first fetch to end (it is bounded by
    /// the token and list calls' timeouts). `size` is the `wxcourier_catalog_templates` gauge.
    pub(crate) fn new(app: &str, first_wait: Duration, size: Gauge) -> Self {
        Self {
            app: app.to_owned(),
            templates: parking_lot::RwLock::new(None),
            attempted: tokio::sync::watch::Sender::new(false),
            first_wait,
            logged: parking_lot::Mutex::new(HashSet::new()),
            warned_unchecked: AtomicBool::new(false),
            size,
        }
    }

    /// The templates now in force, by id; `None` before any fetch succeeded.
    pub(crate) fn templates(&self) -> Option<Arc<HashMap<String, Template>>> {
        self.templates.read().clone()
    }

    /// A fetch succeeded: these are the account's templates from now on.
    pub(crate) fn replace(&self, templates: Vec<Template>) {
        let by_id: HashMap<String, Template> =
            templates.into_iter().map(|t| (t.id.clone(), t)).collect();
        self.size.set(by_id.len() as i64);
        *self.templates.write() = Some(Arc::new(by_id));
        self.warned_unchecked.store(false, Ordering::Relaxed);
        self.attempted.send_replace(true);
    }

    /// A fetch failed: the last good catalog (if any) stays in force.
    pub(crate) fn fetch_failed(&self) {
        self.attempted.send_replace(true);
    }

    /// Checks a job before any token or quota is spent: `Err` names the field and the rule
    /// the job breaks against its template. Only template jobs are checked.
    pub(crate) async fn check(&self, job: &Job) -> Result<(), FieldError> {
        if job.kind != Kind::Template {
            return Ok(());
        }
        let mut attempted = self.attempted.subscribe();
        let _ = tokio::time::timeout(self.first_wait, attempted.wait_for(|done| *done)).await;
        let Some(templates) = self.templates() else {
            if !self.warned_unchecked.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    app = %self.app,
                    "the template catalog is not loaded (its fetch failed); template jobs are sent unchecked until it loads"
                );
            }
            return Ok(());
        };
        let Some(data) = JobData::from_body(job.wechat_bytes()) else {
            return Ok(());
        };
        let (template, found) = hold(&templates, &self.app, &data)?;
        self.log_once_per_template(template, &found);
        Ok(())
    }

    fn log_once_per_template(&self, template: &Template, found: &Review) {
        let first_time = |what: &'static str| {
            let mut logged = self.logged.lock();
            if logged.len() >= MAX_LOGGED {
                logged.clear();
            }
            logged.insert((template.id.clone(), what))
        };
        if !found.extra.is_empty() && first_time("extra_keys") {
            tracing::warn!(
                app = %self.app,
                template_id = %template.id,
                keys = %found.extra.join(", "),
                "template jobs fill keys the template does not have; they are sent, and WeChat does not show those keys (logged once per template)"
            );
        }
        for note in &found.notes {
            if first_time(note.label()) {
                tracing::warn!(
                    app = %self.app,
                    template_id = %template.id,
                    "template job: {note} (logged once per template)"
                );
            }
        }
    }
}

/// Holds a template job's `data` against `app`'s templates: its template and what the review
/// found, or the rejection (an unknown template, placeholders left empty).
pub(crate) fn hold<'a>(
    templates: &'a HashMap<String, Template>,
    app: &str,
    data: &JobData,
) -> Result<(&'a Template, Review), FieldError> {
    let Some(template) = templates.get(&data.template_id) else {
        return Err(FieldError::new(
            "template_id",
            format!(
                "{:?} is not one of the account's {} template(s) (apps.{app}.catalog is on)",
                data.template_id,
                templates.len(),
            ),
        ));
    };
    let found = review::review(template, data);
    if !found.missing.is_empty() {
        return Err(missing_keys(&found.missing));
    }
    Ok((template, found))
}

/// The rejection of a job that leaves placeholders of its template empty.
fn missing_keys(keys: &[String]) -> FieldError {
    let placeholders: Vec<String> = keys.iter().map(|k| format!("{{{{{k}.DATA}}}}")).collect();
    FieldError::new(
        "data",
        format!(
            "lacks {}, which the template's content shows as {}",
            keys.join(", "),
            placeholders.join(" ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn catalog() -> Catalog {
        let c = Catalog::new("shop", Duration::from_millis(50), Gauge::default());
        c.replace(vec![Template {
            id: "order_paid".into(),
            title: "订单支付成功".into(),
            keys: vec![
                "first".into(),
                "keyword1".into(),
                "keyword2".into(),
                "remark".into(),
            ],
        }]);
        c
    }

    fn job(template_id: &str, data: serde_json::Value) -> Job {
        let body = json!({"id": "j1", "touser": "oia2TjuEGTNoeX76QEjQNrcURxG8",
            "template_id": template_id, "data": data});
        crate::job::parse(&serde_json::to_vec(&body).unwrap(), None).unwrap()
    }

    #[tokio::test]
    async fn a_complete_job_passes() {
        let j = job(
            "order_paid",
            json!({"keyword1": {"value": "1842"}, "keyword2.DATA": {"value": "¥260.00"}}),
        );
        assert_eq!(catalog().check(&j).await, Ok(()));
    }

    #[tokio::test]
    async fn a_job_lacking_placeholders_is_refused_naming_them() {
        let j = job("order_paid", json!({"first": {"value": "hi"}}));
        let e = catalog().check(&j).await.unwrap_err();
        assert_eq!(e.field, "data");
        assert_eq!(
            e.rule,
            "lacks keyword1, keyword2, which the template's content shows as {{keyword1.DATA}} {{keyword2.DATA}}"
        );
    }

    #[tokio::test]
    async fn an_unknown_template_is_refused() {
        let j = job("withdrawn", json!({"keyword1": {"value": "1842"}}));
        let e = catalog().check(&j).await.unwrap_err();
        assert_eq!(e.field, "template_id");
        assert!(
            e.rule.contains("\"withdrawn\"") && e.rule.contains("1 template(s)"),
            "{}",
            e.rule
        );
    }

    #[tokio::test]
    async fn extra_keys_and_display_notes_pass() {
        let j = job(
            "order_paid",
            json!({"keyword1": {"value": "1842", "color": "#173177"}, "keyword2": {"value": "x".repeat(40)}, "extra": {"value": "?"}}),
        );
        let c = catalog();
        assert_eq!(c.check(&j).await, Ok(()));
        assert_eq!(c.check(&j).await, Ok(()));
        // Each warning was remembered once for the template.
        let logged = c.logged.lock();
        assert_eq!(logged.len(), 3, "{logged:?}");
        assert!(logged.contains(&("order_paid".into(), "extra_keys")));
    }

    #[tokio::test]
    async fn without_a_catalog_jobs_pass_after_the_first_fetch_ended() {
        let c = Catalog::new("shop", Duration::from_secs(30), Gauge::default());
        c.fetch_failed();
        let started = std::time::Instant::now();
        let j = job("anything", json!({"k": {"value": "v"}}));
        assert_eq!(c.check(&j).await, Ok(()));
        assert!(started.elapsed() < Duration::from_secs(1), "did not wait");
    }

    #[tokio::test]
    async fn a_job_at_start_waits_for_the_first_fetch_but_not_forever() {
        let c = Arc::new(Catalog::new(
            "shop",
            Duration::from_secs(5),
            Gauge::default(),
        ));
        let later = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            later.replace(vec![]);
        });
        let j = job("anything", json!({"k": {"value": "v"}}));
        assert!(
            c.check(&j).await.is_err(),
            "checked against the fetched (empty) catalog"
        );
        let never = Catalog::new("shop", Duration::from_millis(50), Gauge::default());
        assert_eq!(
            never.check(&j).await,
            Ok(()),
            "unchecked once the wait is over"
        );
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_good_catalog() {
        let c = catalog();
        c.fetch_failed();
        let j = job("withdrawn", json!({"k": {"value": "v"}}));
        assert!(c.check(&j).await.is_err());
    }

    #[tokio::test]
    async fn other_kinds_are_not_checked() {
        let body = json!({"id": "j1", "kind": "subscribe", "touser": "oia2TjuEGTNoeX76QEjQNrcURxG8",
            "template_id": "nowhere", "data": {"thing1": {"value": "x"}}});
        let j = crate::job::parse(&serde_json::to_vec(&body).unwrap(), None).unwrap();
        assert_eq!(catalog().check(&j).await, Ok(()));
    }
}
