//! Preference gates: a user's "no" kept per app, so later sends to that user are held back
//! without a WeChat call. A gate covers every template of the app (the user stopped following)
//! or one template (the user refused it), and lapses at its own time. The trait is the
//! capability; memory keeps gates for one process, Redis for every instance
//! (`redis::gates`). Times are Unix seconds given by the caller, so the pipeline's clock rules.
//!
//! Held as `Arc<dyn Gates>` like [`super::Reports`]: the callback and the command line use it,
//! and the pipeline asks once per job of an app that honours preferences.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;

use super::error::StateResult;

/// What a gate holds back: every send to the user, or the sends of one template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GateScope {
    All,
    Template(String),
}

impl GateScope {
    /// The scope's name inside a user's gates: `all`, or `t:` and the template id, so no
    /// template id can read as `all`.
    pub(crate) fn field(&self) -> String {
        match self {
            GateScope::All => "all".into(),
            GateScope::Template(t) => format!("t:{t}"),
        }
    }

    pub(crate) fn from_field(field: &str) -> Option<Self> {
        match field {
            "all" => Some(GateScope::All),
            _ => field
                .strip_prefix("t:")
                .map(|t| GateScope::Template(t.to_owned())),
        }
    }
}

/// Why a gate was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateWhy {
    /// The user stopped following the account (an `unsubscribe` event, or WeChat's 43004).
    NotFollowing,
    /// The user refused the template (a preference event, or WeChat's 43101).
    Refused,
}

impl GateWhy {
    /// The outcome reason a job held back by it gets (CONTRACT §2).
    pub fn as_str(self) -> &'static str {
        match self {
            GateWhy::NotFollowing => "not_following",
            GateWhy::Refused => "recipient_refused",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "not_following" => Some(GateWhy::NotFollowing),
            "recipient_refused" => Some(GateWhy::Refused),
            _ => None,
        }
    }
}

/// One gate as it is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gate {
    pub openid: String,
    pub scope: GateScope,
    pub why: GateWhy,
    /// Unix seconds.
    pub set_at: i64,
    /// Unix seconds: from then on the gate holds nothing back.
    pub expires_at: i64,
}

impl Gate {
    /// The stored form of what the gate says beside its user and scope: `WHY SET_AT EXPIRES`.
    pub(crate) fn value(&self) -> String {
        format!("{} {} {}", self.why.as_str(), self.set_at, self.expires_at)
    }

    /// Reads [`Gate::value`] back; `None` for text no version wrote.
    pub(crate) fn from_value(openid: &str, scope: GateScope, value: &str) -> Option<Self> {
        let mut parts = value.split(' ');
        let why = GateWhy::parse(parts.next()?)?;
        let set_at = parts.next()?.parse().ok()?;
        let expires_at = parts.next()?.parse().ok()?;
        Some(Gate {
            openid: openid.to_owned(),
            scope,
            why,
            set_at,
            expires_at,
        })
    }

    pub fn live_at(&self, now: i64) -> bool {
        now < self.expires_at
    }
}

/// The gates of every app, by user.
pub trait Gates: Send + Sync {
    /// Sets (or renews) the gate of `openid` for `scope`, from `now` for `ttl`.
    fn set_gate<'a>(
        &'a self,
        app: &'a str,
        openid: &'a str,
        scope: &'a GateScope,
        why: GateWhy,
        now: i64,
        ttl: Duration,
    ) -> BoxFuture<'a, StateResult<()>>;
    /// Removes the gate of `openid` for `scope`, if there is one.
    fn lift_gate<'a>(
        &'a self,
        app: &'a str,
        openid: &'a str,
        scope: &'a GateScope,
    ) -> BoxFuture<'a, StateResult<()>>;
    /// The live gate that holds back a send of `template` to `openid`: the one for every
    /// template first.
    fn gate_for<'a>(
        &'a self,
        app: &'a str,
        openid: &'a str,
        template: &'a str,
        now: i64,
    ) -> BoxFuture<'a, StateResult<Option<Gate>>>;
    /// The live gates of `app` (of one user with `openid`), by user and scope.
    fn list_gates<'a>(
        &'a self,
        app: &'a str,
        openid: Option<&'a str>,
        now: i64,
    ) -> BoxFuture<'a, StateResult<Vec<Gate>>>;
    /// Removes the gates of `app` (of one user with `openid`); how many live ones went.
    fn clear_gates<'a>(
        &'a self,
        app: &'a str,
        openid: Option<&'a str>,
        now: i64,
    ) -> BoxFuture<'a, StateResult<usize>>;
}

/// Sorted as the command line lists them: by user, `all` before templates.
pub(crate) fn sorted(mut gates: Vec<Gate>) -> Vec<Gate> {
    gates.sort_by(|a, b| {
        (&a.openid, a.scope != GateScope::All, a.scope.field()).cmp(&(
            &b.openid,
            b.scope != GateScope::All,
            b.scope.field(),
        ))
    });
    gates
}

/// Gates of one process, bounded: past `capacity` the lapsed ones go, then those that lapse
/// soonest, so a flood of events cannot grow the process without end.
pub(crate) struct MemoryGates {
    by_user: Mutex<HashMap<(String, String), HashMap<GateScope, Gate>>>,
    capacity: usize,
}

impl MemoryGates {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            by_user: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn count(map: &HashMap<(String, String), HashMap<GateScope, Gate>>) -> usize {
        map.values().map(HashMap::len).sum()
    }

    /// Makes room for one more gate.
    fn make_room(
        map: &mut HashMap<(String, String), HashMap<GateScope, Gate>>,
        capacity: usize,
        now: i64,
    ) {
        if Self::count(map) < capacity {
            return;
        }
        map.values_mut()
            .for_each(|g| g.retain(|_, gate| gate.live_at(now)));
        map.retain(|_, g| !g.is_empty());
        while Self::count(map) >= capacity {
            let soonest = map
                .iter()
                .flat_map(|(user, g)| {
                    g.values()
                        .map(move |gate| (gate.expires_at, user, &gate.scope))
                })
                .min_by_key(|(at, ..)| *at)
                .map(|(_, user, scope)| (user.clone(), scope.clone()));
            let Some((user, scope)) = soonest else { return };
            if let Some(g) = map.get_mut(&user) {
                g.remove(&scope);
                if g.is_empty() {
                    map.remove(&user);
                }
            }
        }
    }

    fn live(&self, app: &str, openid: Option<&str>, now: i64) -> Vec<Gate> {
        let map = self.by_user.lock();
        map.iter()
            .filter(|((a, user), _)| a == app && openid.is_none_or(|o| o == user))
            .flat_map(|(_, g)| g.values().filter(|gate| gate.live_at(now)).cloned())
            .collect()
    }
}

fn key(app: &str, openid: &str) -> (String, String) {
    (app.to_owned(), openid.to_owned())
}

impl Gates for MemoryGates {
    fn set_gate<'a>(
        &'a self,
        app: &'a str,
        openid: &'a str,
        scope: &'a GateScope,
        why: GateWhy,
        now: i64,
        ttl: Duration,
    ) -> BoxFuture<'a, StateResult<()>> {
        let gate = Gate {
            openid: openid.to_owned(),
            scope: scope.clone(),
            why,
            set_at: now,
            expires_at: now.saturating_add(ttl.as_secs() as i64),
        };
        let mut map = self.by_user.lock();
        let fresh = map
            .get(&key(app, openid))
            .is_none_or(|g| !g.contains_key(scope));
        if fresh {
            Self::make_room(&mut map, self.capacity, now);
        }
        map.entry(key(app, openid))
            .or_default()
            .insert(scope.clone(), gate);
        Box::pin(async { Ok(()) })
    }

    fn lift_gate<'a>(
        &'a self,
        app: &'a str,
        openid: &'a str,
        scope: &'a GateScope,
    ) -> BoxFuture<'a, StateResult<()>> {
        let mut map = self.by_user.lock();
        if let Some(g) = map.get_mut(&key(app, openid)) {
            g.remove(scope);
            if g.is_empty() {
                map.remove(&key(app, openid));
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn gate_for<'a>(
        &'a self,
        app: &'a str,
        openid: &'a str,
        template: &'a str,
        now: i64,
    ) -> BoxFuture<'a, StateResult<Option<Gate>>> {
        let map = self.by_user.lock();
        let found = map.get(&key(app, openid)).and_then(|g| {
            [GateScope::All, GateScope::Template(template.to_owned())]
                .iter()
                .filter_map(|scope| g.get(scope))
                .find(|gate| gate.live_at(now))
                .cloned()
        });
        Box::pin(async move { Ok(found) })
    }

    fn list_gates<'a>(
        &'a self,
        app: &'a str,
        openid: Option<&'a str>,
        now: i64,
    ) -> BoxFuture<'a, StateResult<Vec<Gate>>> {
        let gates = sorted(self.live(app, openid, now));
        Box::pin(async move { Ok(gates) })
    }

    fn clear_gates<'a>(
        &'a self,
        app: &'a str,
        openid: Option<&'a str>,
        now: i64,
    ) -> BoxFuture<'a, StateResult<usize>> {
        let cleared = self.live(app, openid, now).len();
        self.by_user
            .lock()
            .retain(|(a, user), _| !(a == app && openid.is_none_or(|o| o == user)));
        Box::pin(async move { Ok(cleared) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_reads_back_from_its_stored_form_and_rejects_other_text() {
        let gate = Gate {
            openid: "o1".into(),
            scope: GateScope::Template("t:1".into()),
            why: GateWhy::Refused,
            set_at: 100,
            expires_at: 200,
        };
        assert_eq!(gate.value(), "recipient_refused 100 200");
        let field = gate.scope.field();
        assert_eq!(field, "t:t:1");
        let scope = GateScope::from_field(&field).unwrap();
        assert_eq!(Gate::from_value("o1", scope, &gate.value()), Some(gate));
        assert_eq!(GateScope::from_field("all"), Some(GateScope::All));
        assert_eq!(GateScope::from_field("other"), None);
        for bad in ["", "refused 1 2", "not_following x 2", "not_following 1"] {
            assert_eq!(Gate::from_value("o1", GateScope::All, bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn memory_gates_beyond_capacity_drop_the_lapsed_then_the_soonest_to_lapse() {
        let gates = MemoryGates::new(2);
        let day = Duration::from_secs(86_400);
        let all = GateScope::All;
        gates
            .set_gate(
                "a",
                "short",
                &all,
                GateWhy::NotFollowing,
                0,
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        gates
            .set_gate("a", "long", &all, GateWhy::NotFollowing, 0, day)
            .await
            .unwrap();
        // Renewing a gate that is there takes no room.
        gates
            .set_gate("a", "long", &all, GateWhy::NotFollowing, 1, day)
            .await
            .unwrap();
        assert_eq!(gates.list_gates("a", None, 5).await.unwrap().len(), 2);
        gates
            .set_gate("a", "new", &all, GateWhy::NotFollowing, 5, day)
            .await
            .unwrap();
        let users: Vec<String> = gates
            .list_gates("a", None, 5)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.openid)
            .collect();
        assert_eq!(users, ["long", "new"]);
    }
}
