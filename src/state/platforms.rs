//! What a third-party platform keeps between pushes and across instances: the newest verify
//! ticket per component AppID, the authorization codes already exchanged, and each
//! authorizer's refresh token and standing. The trait is the capability; memory keeps it for
//! one process, Redis for every instance (`redis::platforms`). Refresh tokens have no expiry
//! here: losing one means a merchant must authorize again, or a recovery through WeChat's
//! authorizer list.
//!
//! Every write says when what it carries was true (a push's `CreateTime`, or the clock), and a
//! write older than what is kept is refused: pushes can arrive late, twice or out of order.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::error::StateResult;
use crate::types::Secret;

/// The newest `component_verify_ticket` WeChat pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub value: Secret,
    /// The push's `CreateTime`, Unix seconds.
    pub created_at: i64,
}

impl Ticket {
    /// The stored form: `CREATED_AT TICKET`.
    pub(crate) fn stored(&self) -> String {
        format!("{} {}", self.created_at, self.value.expose())
    }

    pub(crate) fn from_stored(text: &str) -> Option<Self> {
        let (at, value) = text.split_once(' ')?;
        Some(Ticket {
            value: Secret::new(value),
            created_at: at.parse().ok()?,
        })
    }
}

/// Where an authorizer stands with the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Authorized: its refresh token is kept.
    Active,
    /// The merchant withdrew the authorization (`unauthorized`, or `platform remove`).
    Revoked,
    /// Its refresh token was refused or lost and could not be recovered: the merchant must
    /// authorize again.
    NeedsReauthorization,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Active => "active",
            Standing::Revoked => "revoked",
            Standing::NeedsReauthorization => "needs_reauthorization",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Standing::Active,
            Standing::Revoked,
            Standing::NeedsReauthorization,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One authorizer of a platform as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorizer {
    pub appid: String,
    pub standing: Standing,
    /// Kept while active; gone once revoked.
    pub refresh_token: Option<Secret>,
    /// When what this says became true, Unix seconds.
    pub changed_at: i64,
}

impl Authorizer {
    /// The stored form: `STANDING CHANGED_AT [REFRESH_TOKEN]`, the token last so that nothing
    /// it holds can shift the other fields.
    pub(crate) fn stored(&self) -> String {
        let token = self.refresh_token.as_ref().map_or("", |t| t.expose());
        format!("{} {} {token}", self.standing.as_str(), self.changed_at)
    }

    pub(crate) fn from_stored(appid: &str, text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, ' ');
        let standing = Standing::parse(parts.next()?)?;
        let changed_at = parts.next()?.parse().ok()?;
        let refresh_token = parts.next().filter(|t| !t.is_empty()).map(Secret::new);
        Some(Authorizer {
            appid: appid.to_owned(),
            standing,
            refresh_token,
            changed_at,
        })
    }
}

/// Where the exchange of an authorization code stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeClaim {
    /// This caller exchanges it.
    Claimed,
    /// Another caller is exchanging it now.
    Held,
    /// It was exchanged, and what it gave is kept.
    Exchanged,
}

impl CodeClaim {
    /// The stored form of a code being exchanged, or exchanged.
    pub(crate) fn stored(self) -> &'static str {
        match self {
            CodeClaim::Claimed | CodeClaim::Held => "held",
            CodeClaim::Exchanged => "exchanged",
        }
    }

    /// What a caller finding `stored` gets.
    pub(crate) fn found(stored: &str) -> Self {
        if stored == "exchanged" {
            CodeClaim::Exchanged
        } else {
            CodeClaim::Held
        }
    }
}

/// The platform state of every component AppID.
pub trait PlatformStore: Send + Sync {
    /// Keeps `ticket` for `component` unless a newer one is kept; whether it is the one kept
    /// now.
    fn keep_ticket<'a>(
        &'a self,
        component: &'a str,
        ticket: &'a Ticket,
    ) -> BoxFuture<'a, StateResult<bool>>;
    /// The newest ticket kept for `component`, however old.
    fn ticket<'a>(&'a self, component: &'a str) -> BoxFuture<'a, StateResult<Option<Ticket>>>;
    /// Claims the exchange of an authorization `code` for `hold`: only the first caller gets
    /// [`CodeClaim::Claimed`], so a push WeChat repeats, or one that reaches two instances, is
    /// exchanged once.
    fn claim_code<'a>(
        &'a self,
        component: &'a str,
        code: &'a str,
        hold: Duration,
    ) -> BoxFuture<'a, StateResult<CodeClaim>>;
    /// Marks a claimed code exchanged for `keep` (longer than the code lives), so repeats of
    /// its push are answered without a second exchange.
    fn finish_code<'a>(
        &'a self,
        component: &'a str,
        code: &'a str,
        keep: Duration,
    ) -> BoxFuture<'a, StateResult<()>>;
    /// Gives a claimed code back, after its exchange failed, so WeChat's repeat can try again.
    fn release_code<'a>(
        &'a self,
        component: &'a str,
        code: &'a str,
    ) -> BoxFuture<'a, StateResult<()>>;
    /// Claims the platform's periodic task `round` (e.g. a reconciliation) for `hold`: true for
    /// the first caller only, so of many instances one does it per `hold`. A state that lost its
    /// data lost the claim too, so the task comes due at once.
    fn claim_round<'a>(
        &'a self,
        component: &'a str,
        round: &'a str,
        hold: Duration,
    ) -> BoxFuture<'a, StateResult<bool>>;
    /// Gives a claimed `round` back, after the task failed, so the next look tries again.
    fn release_round<'a>(
        &'a self,
        component: &'a str,
        round: &'a str,
    ) -> BoxFuture<'a, StateResult<()>>;
    /// Writes `authorizer` unless what is kept for it changed later; whether it was written.
    fn put_authorizer<'a>(
        &'a self,
        component: &'a str,
        authorizer: &'a Authorizer,
    ) -> BoxFuture<'a, StateResult<bool>>;
    /// One authorizer of `component`.
    fn authorizer<'a>(
        &'a self,
        component: &'a str,
        appid: &'a str,
    ) -> BoxFuture<'a, StateResult<Option<Authorizer>>>;
    /// A number that changes whenever an authorizer of `component` is written: a reader that
    /// keeps something in step with the authorizers reads them again only when it moved.
    fn authorizers_version<'a>(&'a self, component: &'a str) -> BoxFuture<'a, StateResult<u64>>;
    /// Every authorizer of `component`, by AppID.
    fn authorizers<'a>(&'a self, component: &'a str)
    -> BoxFuture<'a, StateResult<Vec<Authorizer>>>;
}

/// One component AppID's state in memory.
#[derive(Default)]
struct Component {
    ticket: Option<Ticket>,
    /// Codes claimed or exchanged, and when that lapses.
    codes: HashMap<String, (CodeClaim, Instant)>,
    authorizers: BTreeMap<String, Authorizer>,
    /// Periodic tasks claimed, and when each claim lapses.
    rounds: HashMap<String, Instant>,
    /// Writes of authorizers so far.
    version: u64,
}

/// Platform state of one process: enough for one instance, lost at its end.
#[derive(Default)]
pub(crate) struct MemoryPlatforms {
    components: Mutex<HashMap<String, Component>>,
}

impl MemoryPlatforms {
    fn with<T>(&self, component: &str, f: impl FnOnce(&mut Component) -> T) -> T {
        let mut map = self.components.lock();
        f(map.entry(component.to_owned()).or_default())
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, StateResult<T>> {
    Box::pin(async move { Ok(value) })
}

impl PlatformStore for MemoryPlatforms {
    fn keep_ticket<'a>(
        &'a self,
        component: &'a str,
        ticket: &'a Ticket,
    ) -> BoxFuture<'a, StateResult<bool>> {
        let kept = self.with(component, |c| {
            let newer_kept = c
                .ticket
                .as_ref()
                .is_some_and(|t| t.created_at > ticket.created_at);
            if !newer_kept {
                c.ticket = Some(ticket.clone());
            }
            !newer_kept
        });
        ready(kept)
    }

    fn ticket<'a>(&'a self, component: &'a str) -> BoxFuture<'a, StateResult<Option<Ticket>>> {
        ready(self.with(component, |c| c.ticket.clone()))
    }

    fn claim_code<'a>(
        &'a self,
        component: &'a str,
        code: &'a str,
        hold: Duration,
    ) -> BoxFuture<'a, StateResult<CodeClaim>> {
        let now = Instant::now();
        let claim = self.with(component, |c| {
            c.codes.retain(|_, (_, lapses)| *lapses > now);
            if let Some((found, _)) = c.codes.get(code) {
                return CodeClaim::found(found.stored());
            }
            c.codes
                .insert(code.to_owned(), (CodeClaim::Held, now + hold));
            CodeClaim::Claimed
        });
        ready(claim)
    }

    fn finish_code<'a>(
        &'a self,
        component: &'a str,
        code: &'a str,
        keep: Duration,
    ) -> BoxFuture<'a, StateResult<()>> {
        let lapses = Instant::now() + keep;
        self.with(component, |c| {
            c.codes
                .insert(code.to_owned(), (CodeClaim::Exchanged, lapses))
        });
        ready(())
    }

    fn release_code<'a>(
        &'a self,
        component: &'a str,
        code: &'a str,
    ) -> BoxFuture<'a, StateResult<()>> {
        self.with(component, |c| c.codes.remove(code));
        ready(())
    }

    fn claim_round<'a>(
        &'a self,
        component: &'a str,
        round: &'a str,
        hold: Duration,
    ) -> BoxFuture<'a, StateResult<bool>> {
        let now = Instant::now();
        let claimed = self.with(component, |c| {
            if c.rounds.get(round).is_some_and(|lapses| *lapses > now) {
                return false;
            }
            c.rounds.insert(round.to_owned(), now + hold);
            true
        });
        ready(claimed)
    }

    fn release_round<'a>(
        &'a self,
        component: &'a str,
        round: &'a str,
    ) -> BoxFuture<'a, StateResult<()>> {
        self.with(component, |c| c.rounds.remove(round));
        ready(())
    }

    fn put_authorizer<'a>(
        &'a self,
        component: &'a str,
        authorizer: &'a Authorizer,
    ) -> BoxFuture<'a, StateResult<bool>> {
        let written = self.with(component, |c| {
            let later_kept = c
                .authorizers
                .get(&authorizer.appid)
                .is_some_and(|a| a.changed_at > authorizer.changed_at);
            if !later_kept {
                c.authorizers
                    .insert(authorizer.appid.clone(), authorizer.clone());
                c.version += 1;
            }
            !later_kept
        });
        ready(written)
    }

    fn authorizer<'a>(
        &'a self,
        component: &'a str,
        appid: &'a str,
    ) -> BoxFuture<'a, StateResult<Option<Authorizer>>> {
        ready(self.with(component, |c| c.authorizers.get(appid).cloned()))
    }

    fn authorizers_version<'a>(&'a self, component: &'a str) -> BoxFuture<'a, StateResult<u64>> {
        ready(self.with(component, |c| c.version))
    }

    fn authorizers<'a>(
        &'a self,
        component: &'a str,
    ) -> BoxFuture<'a, StateResult<Vec<Authorizer>>> {
        ready(self.with(component, |c| c.authorizers.values().cloned().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_and_authorizers_read_back_from_their_stored_forms() {
        let ticket = Ticket {
            value: Secret::new("ticket@@@with spaces"),
            created_at: 1_700_000_000,
        };
        assert_eq!(Ticket::from_stored(&ticket.stored()), Some(ticket));
        let active = Authorizer {
            appid: "wxa".into(),
            standing: Standing::Active,
            refresh_token: Some(Secret::new("refreshtoken@@@a b")),
            changed_at: 5,
        };
        assert_eq!(
            Authorizer::from_stored("wxa", &active.stored()),
            Some(active)
        );
        let revoked = Authorizer {
            appid: "wxa".into(),
            standing: Standing::Revoked,
            refresh_token: None,
            changed_at: 6,
        };
        assert_eq!(revoked.stored(), "revoked 6 ");
        assert_eq!(
            Authorizer::from_stored("wxa", &revoked.stored()),
            Some(revoked)
        );
        for bad in ["", "active", "gone 1 x", "active x y"] {
            assert_eq!(Authorizer::from_stored("wxa", bad), None, "{bad}");
        }
        assert_eq!(Ticket::from_stored("nospace"), None);
    }
}
