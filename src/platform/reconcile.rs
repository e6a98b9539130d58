//! The reconciliation of a platform's refresh tokens with WeChat's authorizer list: what the
//! state lost (a Redis restarted without persistence) comes back from the list before a send
//! needs it. The list is a recovery path, not the source of truth: what the state holds, and
//! every push, wins over it.

use std::collections::{HashMap, HashSet};

use super::{Platform, PlatformError};
use crate::state::{Authorizer, Standing};

/// The name of the reconciliation's round in the state (`PlatformStore::claim_round`).
pub const RECONCILE_ROUND: &str = "reconcile";

/// What a reconciliation found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Authorizers WeChat lists.
    pub listed: usize,
    /// AppIDs the state had lost (or kept without a refresh token), kept again as `active` with
    /// the listed refresh token.
    pub restored: Vec<String>,
    /// Listed without a refresh token (WeChat leaves it out at times) and not kept: they
    /// recover on their next send, through the list, or need the merchant.
    pub without_token: Vec<String>,
    /// Kept as `active` but not listed: withdrawn while the push was lost, most likely. Left as
    /// they are; a send finds out.
    pub not_listed: usize,
}

impl Platform {
    /// Reads WeChat's authorizer list and keeps each listed authorizer the state does not hold
    /// (or holds as `active` without a refresh token) as `active` with the listed token, dated
    /// by its `auth_time`, so any push about it since wins. An authorizer the state holds with a
    /// token, withdrawn, or needing re-authorization is left as it is.
    pub async fn reconcile(&self) -> Result<Reconciled, PlatformError> {
        let component = self.component_appid();
        let listed = self.list_all().await?;
        let kept: HashMap<String, Authorizer> = self
            .store
            .authorizers(component)
            .await?
            .into_iter()
            .map(|a| (a.appid.clone(), a))
            .collect();
        let on_list: HashSet<&str> = listed
            .iter()
            .map(|row| row.authorizer_appid.as_str())
            .collect();
        let mut found = Reconciled {
            listed: listed.len(),
            not_listed: kept
                .values()
                .filter(|a| a.standing == Standing::Active)
                .filter(|a| !on_list.contains(a.appid.as_str()))
                .count(),
            ..Reconciled::default()
        };
        for row in listed {
            let appid = row.authorizer_appid;
            let changed_at = match kept.get(&appid) {
                None => row.auth_time.max(0),
                Some(a) if a.standing == Standing::Active && a.refresh_token.is_none() => {
                    a.changed_at
                }
                Some(_) => continue,
            };
            let Some(refresh_token) = row.refresh_token.filter(|t| !t.is_empty()) else {
                found.without_token.push(appid);
                continue;
            };
            let authorizer = Authorizer {
                appid,
                standing: Standing::Active,
                refresh_token: Some(refresh_token),
                changed_at,
            };
            // False when a push kept something newer meanwhile: that stands.
            if self.store.put_authorizer(component, &authorizer).await? {
                found.restored.push(authorizer.appid);
            }
        }
        if !found.restored.is_empty() {
            self.changed.notify_waiters();
        }
        Ok(found)
    }
}
