//! The kill switch as one instance sees it (CONTRACT "Delivery policy"): each app's paused
//! templates, from its settings (`apps.NAME.paused_templates`) and from the shared state
//! (`wxcourier pause`), kept here so a job asks memory, never the state backend.
//!
//! [`keep`] reads every app's shared record again every [`REFRESH`], so a pause or a resume
//! reaches every instance within that and one state call (well within a second). Its cost is
//! one `SMEMBERS` per app per refresh, whatever the job rate; a job pays one atomic load while
//! nothing is paused, and a read lock and a set lookup while something is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use crate::config::PauseMode;
use crate::metrics::{AppAction, AppTemplate, Metrics};
use crate::state::{Paused, Pauses};

/// How often the shared pauses are read again: an instance acts on a record at most this old
/// (plus one state call, itself bounded by the call timeout).
pub(crate) const REFRESH: Duration = Duration::from_millis(400);

/// The gauge's `template` for the whole app.
const WHOLE_APP: &str = "*";

/// What a pause did to a job, for `wxcourier_paused_jobs_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Held,
    Dropped,
}

/// One app's kill switch.
pub(crate) struct KillSwitch {
    app: String,
    mode: PauseMode,
    /// `apps.NAME.paused_templates`: paused whatever the shared state says.
    configured: Paused,
    /// False while nothing is paused: the check every job makes is then one atomic load.
    any: AtomicBool,
    /// The configured pauses and the shared ones together.
    current: RwLock<Paused>,
    metrics: Arc<Metrics>,
}

impl KillSwitch {
    pub(crate) fn new(
        app: &str,
        configured: &[String],
        mode: PauseMode,
        metrics: Arc<Metrics>,
    ) -> Self {
        let configured = Paused {
            app: false,
            templates: configured.iter().cloned().collect(),
        };
        let switch = Self {
            app: app.to_owned(),
            mode,
            any: AtomicBool::new(false),
            current: RwLock::new(Paused::default()),
            configured,
            metrics,
        };
        switch.set_shared(&Paused::default());
        switch
    }

    pub(crate) fn mode(&self) -> PauseMode {
        self.mode
    }

    /// Whether a job of `template` is paused now.
    pub(crate) fn holds(&self, template: &str) -> bool {
        // Relaxed: a job that reads a change one job late is still within the refresh.
        self.any.load(Ordering::Relaxed) && self.current.read().holds(template)
    }

    /// Takes the shared record as read now, and shows the change in `wxcourier_paused`: 1 for
    /// each paused template (`*`: the whole app), 0 for one paused before and no longer.
    pub(crate) fn set_shared(&self, shared: &Paused) {
        let now = self.configured.union(shared);
        let before = {
            let mut current = self.current.write();
            self.any.store(!now.is_empty(), Ordering::Relaxed);
            std::mem::replace(&mut *current, now.clone())
        };
        let gauge = |template: &str, value: i64| {
            self.metrics
                .paused
                .get_or_create(&AppTemplate {
                    app: self.app.clone(),
                    template: template.to_owned(),
                })
                .set(value);
        };
        for t in before.templates.difference(&now.templates) {
            gauge(t, 0);
        }
        for t in &now.templates {
            gauge(t, 1);
        }
        if before.app || now.app {
            gauge(WHOLE_APP, i64::from(now.app));
        }
    }

    /// Counts a job the switch held back or ended.
    pub(crate) fn count(&self, action: Action) {
        let action = match action {
            Action::Held => "held",
            Action::Dropped => "dropped",
        };
        self.metrics
            .paused_jobs
            .get_or_create(&AppAction {
                app: self.app.clone(),
                action: action.to_owned(),
            })
            .inc();
    }
}

/// Reads each app's shared pauses every [`REFRESH`] into its switch, until `stop`. A failed
/// read keeps the last record: with the state down no job is claimed anyway, and a pause must
/// not lift itself because Redis blinked.
pub(crate) async fn keep<P: Pauses>(
    store: &P,
    switches: &[(&str, &KillSwitch)],
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let reads = switches.iter().map(|(app, switch)| async move {
            match store.paused(app).await {
                Ok(shared) => switch.set_shared(&shared),
                Err(e) => tracing::debug!(app, error = %e, "cannot read the shared pauses; the last ones stay"),
            }
        });
        futures_util::future::join_all(reads).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryState, PauseScope};

    fn switch(configured: &[&str]) -> KillSwitch {
        let configured: Vec<String> = configured.iter().map(|t| t.to_string()).collect();
        KillSwitch::new(
            "shop",
            &configured,
            PauseMode::Defer,
            Arc::new(Metrics::new()),
        )
    }

    fn gauge(s: &KillSwitch, template: &str) -> Option<i64> {
        let exposition = s.metrics.render();
        let line = format!("wxcourier_paused{{app=\"shop\",template=\"{template}\"}} ");
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn the_settings_pauses_stay_whatever_the_shared_record_says_and_the_gauge_follows() {
        let s = switch(&["cfg"]);
        assert!(s.holds("cfg") && !s.holds("other"));
        assert_eq!(gauge(&s, "cfg"), Some(1));
        s.set_shared(&Paused::default().paused(&PauseScope::Template("rt".into())));
        assert!(s.holds("rt") && s.holds("cfg"));
        assert_eq!(gauge(&s, "rt"), Some(1));
        s.set_shared(&Paused::default().paused(&PauseScope::App));
        assert!(s.holds("other"));
        assert_eq!(gauge(&s, "*"), Some(1));
        assert_eq!(gauge(&s, "rt"), Some(0), "resumed: shown as 0");
        s.set_shared(&Paused::default());
        assert!(!s.holds("other") && !s.holds("rt") && s.holds("cfg"));
        assert_eq!(gauge(&s, "*"), Some(0));
        assert_eq!(gauge(&s, "cfg"), Some(1));
    }

    #[test]
    fn nothing_paused_holds_nothing_and_shows_no_series() {
        let s = switch(&[]);
        assert!(!s.holds("t1"));
        assert!(s.current.read().is_empty());
        assert_eq!(gauge(&s, "*"), None);
        s.count(Action::Held);
        s.count(Action::Dropped);
        s.count(Action::Dropped);
        let exposition = s.metrics.render();
        assert!(
            exposition.contains("wxcourier_paused_jobs_total{app=\"shop\",action=\"dropped\"} 2"),
            "{exposition}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_in_the_store_reaches_the_switch_within_one_refresh_and_so_does_a_resume() {
        let store = MemoryState::new(Duration::from_secs(60), 100);
        let s = switch(&[]);
        let stop = CancellationToken::new();
        let keeper = {
            let (store, s, stop) = (&store, &s, stop.clone());
            async move { keep(store, &[("shop", s)], stop).await }
        };
        let test = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            store
                .pause("shop", &PauseScope::Template("t1".into()))
                .await
                .unwrap();
            tokio::time::sleep(REFRESH).await;
            assert!(s.holds("t1"), "paused within one refresh");
            store.resume("shop", &PauseScope::App).await.unwrap();
            tokio::time::sleep(REFRESH).await;
            assert!(!s.holds("t1"), "resumed within one refresh");
            stop.cancel();
        };
        tokio::join!(keeper, test);
    }
}
