//! Respect "no" (`apps.NAME.honor_preferences`): what sets and lifts a preference gate, and
//! what a gate means for a job. A user's unfollow holds back every send to them, a refused
//! template holds back that template; a follow or an accept lifts it; WeChat's own refusals
//! (43101, 43004) set the same gates. The gates themselves are kept by
//! [`crate::state::gates`]; the callback and the pipeline decide through here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::outcome::OutcomeReason;
use crate::state::StateResult;
use crate::state::gates::{Gate, GateScope, GateWhy, Gates};

/// WeChat: the user refused this message (a subscription they did not accept).
const USER_REFUSED: i64 = 43101;
/// WeChat: the user does not follow the account.
const REQUIRE_SUBSCRIBE: i64 = 43004;

/// A change to one user's gates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GateChange {
    Set(GateScope, GateWhy),
    Lift(GateScope),
}

impl GateChange {
    /// What an unfollow (`following = false`) or a follow does.
    pub(crate) fn follow(following: bool) -> Self {
        if following {
            GateChange::Lift(GateScope::All)
        } else {
            GateChange::Set(GateScope::All, GateWhy::NotFollowing)
        }
    }

    /// What a user's answer about `template` does.
    pub(crate) fn preference(template: &str, accepted: bool) -> Self {
        let scope = GateScope::Template(template.to_owned());
        if accepted {
            GateChange::Lift(scope)
        } else {
            GateChange::Set(scope, GateWhy::Refused)
        }
    }

    /// The gate WeChat's answer `errcode` to a send of `template` means, if any.
    pub(crate) fn from_errcode(errcode: i64, template: &str) -> Option<Self> {
        match errcode {
            USER_REFUSED => Some(Self::preference(template, false)),
            REQUIRE_SUBSCRIBE => Some(Self::follow(false)),
            _ => None,
        }
    }
}

/// The outcome reason of a job a gate held back.
pub(crate) fn reason(gate: &Gate) -> OutcomeReason {
    match gate.why {
        GateWhy::NotFollowing => OutcomeReason::NotFollowing,
        GateWhy::Refused => OutcomeReason::RecipientRefused,
    }
}

/// The outcome's `error` text of a job a gate held back.
pub(crate) fn describe(gate: &Gate) -> String {
    let what = match (&gate.why, &gate.scope) {
        (GateWhy::NotFollowing, _) => "the user stopped following the account".to_owned(),
        (GateWhy::Refused, GateScope::Template(t)) => format!("the user refused template {t}"),
        (GateWhy::Refused, GateScope::All) => "the user refused every message".to_owned(),
    };
    format!("{what}: held back until a follow or an accept lifts the gate, or it lapses")
}

/// One app's gates: where they are kept and how long one lasts.
#[derive(Clone)]
pub(crate) struct PreferenceGates {
    pub(crate) store: Arc<dyn Gates>,
    pub(crate) ttl: Duration,
}

impl PreferenceGates {
    /// Applies `change` to the gates of `openid`, at `now` (Unix seconds).
    pub(crate) async fn apply(
        &self,
        app: &str,
        openid: &str,
        change: &GateChange,
        now: i64,
    ) -> StateResult<()> {
        match change {
            GateChange::Set(scope, why) => {
                self.store
                    .set_gate(app, openid, scope, *why, now, self.ttl)
                    .await
            }
            GateChange::Lift(scope) => self.store.lift_gate(app, openid, scope).await,
        }
    }

    /// The live gate that holds back a send of `template` to `openid`, if any.
    pub(crate) async fn holding(
        &self,
        app: &str,
        openid: &str,
        template: &str,
        now: i64,
    ) -> StateResult<Option<Gate>> {
        self.store.gate_for(app, openid, template, now).await
    }
}

/// The gates of the apps that honour preferences, by app name.
#[derive(Clone, Default)]
pub(crate) struct AppGates(HashMap<String, PreferenceGates>);

impl AppGates {
    /// One entry per app of `settings` with `honor_preferences`, over `store`.
    pub(crate) fn new(settings: &Settings, store: &Arc<dyn Gates>) -> Self {
        Self(
            settings
                .apps
                .iter()
                .filter(|(_, app)| app.honor_preferences)
                .map(|(name, app)| {
                    let gates = PreferenceGates {
                        store: store.clone(),
                        ttl: app.gate_ttl.0,
                    };
                    (name.clone(), gates)
                })
                .collect(),
        )
    }

    /// The gates of `app`, when it honours preferences.
    pub(crate) fn of(&self, app: &str) -> Option<&PreferenceGates> {
        self.0.get(app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppSettings;
    use crate::state::gates::MemoryGates;
    use crate::types::{Secret, Span};

    #[test]
    fn wechat_refusals_set_the_gates_events_would_and_other_codes_none() {
        assert_eq!(
            GateChange::from_errcode(43101, "t1"),
            Some(GateChange::Set(
                GateScope::Template("t1".into()),
                GateWhy::Refused
            ))
        );
        assert_eq!(
            GateChange::from_errcode(43004, "t1"),
            Some(GateChange::Set(GateScope::All, GateWhy::NotFollowing))
        );
        for other in [0, 43019, 40003, 45009] {
            assert_eq!(GateChange::from_errcode(other, "t1"), None, "{other}");
        }
        assert_eq!(GateChange::follow(true), GateChange::Lift(GateScope::All));
        assert_eq!(
            GateChange::preference("t1", true),
            GateChange::Lift(GateScope::Template("t1".into()))
        );
    }

    #[tokio::test]
    async fn only_apps_that_honour_preferences_get_gates_with_their_own_ttl() {
        let mut settings = Settings::default();
        let mut on = AppSettings::new("wx1", Secret::new("s"));
        on.honor_preferences = true;
        on.gate_ttl = Span(Duration::from_secs(60));
        settings.apps.insert("on".into(), on);
        settings
            .apps
            .insert("off".into(), AppSettings::new("wx2", Secret::new("s")));
        let store: Arc<dyn Gates> = Arc::new(MemoryGates::new(10));
        let apps = AppGates::new(&settings, &store);
        assert!(apps.of("off").is_none());
        let gates = apps.of("on").expect("honours preferences");
        gates
            .apply("on", "o1", &GateChange::follow(false), 1000)
            .await
            .unwrap();
        let gate = gates
            .holding("on", "o1", "t9", 1059)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (reason(&gate), gate.expires_at),
            (OutcomeReason::NotFollowing, 1060)
        );
        assert!(describe(&gate).contains("stopped following"));
        assert_eq!(gates.holding("on", "o1", "t9", 1060).await.unwrap(), None);
        gates
            .apply("on", "o1", &GateChange::preference("t1", false), 2000)
            .await
            .unwrap();
        let refused = gates
            .holding("on", "o1", "t1", 2000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reason(&refused), OutcomeReason::RecipientRefused);
        assert!(describe(&refused).contains("refused template t1"));
        assert_eq!(gates.holding("on", "o1", "t2", 2000).await.unwrap(), None);
        gates
            .apply("on", "o1", &GateChange::preference("t1", true), 2001)
            .await
            .unwrap();
        assert_eq!(gates.holding("on", "o1", "t1", 2001).await.unwrap(), None);
    }
}
