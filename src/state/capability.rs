//! What a state backend can do, one trait per capability: idempotency (every backend), the
//! shared access token and the shared send rate (only backends every instance shares). A
//! backend declares what it provides in [`Capabilities`], and start-up refuses settings that
//! need a capability the backend lacks, instead of falling back to per-process tokens or rates.
//!
//! The pipeline's traits use `impl Future` (static dispatch): the pipeline calls them for every
//! job, and a boxed future per call would be an allocation per job for nothing. A backend that
//! serves several capabilities in one round trip (a claim and a rate slot in one script) can
//! add that as one more method here, implemented by the same backend. [`Reports`] is the
//! exception: the callback holds it as `Arc<dyn Reports>`, so its tests swap in a fake, and a
//! push makes a few calls, where a boxed future each is nothing beside the HTTP request.
//!
//! This file names no backend: the backends implement these traits, and `share` picks one.

use std::future::Future;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::error::{StateError, StateResult};
use super::rate_lease::SlotGrant;
use super::values::{Claim, Holder, Renewal, ReportKey, SentJob};
use crate::config::{Settings, TokenMode};
use crate::types::{Secret, TraceHeaders};

/// Which ids were sent (and as which msgid), and who is sending which id right now.
pub trait Idempotency: Send + Sync {
    /// Takes the send of `id` for `mine`, unless it was sent or another delivery is sending
    /// it. A claim held by `previous` (this job's turn before, named by its retry copy) is taken
    /// over: that turn has ended, but its claim may have reached shared state after the call
    /// timed out, or outlived a release that failed, and would hold the job back until it
    /// lapses. Holders are random, so no other delivery can name one.
    fn claim_as(
        &self,
        app: &str,
        id: &str,
        mine: Holder,
        previous: Option<Holder>,
    ) -> impl Future<Output = StateResult<Claim>> + Send;
    /// [`Idempotency::claim_as`] for a new holder and no earlier turn.
    fn claim(&self, app: &str, id: &str) -> impl Future<Output = StateResult<Claim>> + Send {
        self.claim_as(app, id, Holder::new(), None)
    }
    /// Extends the claim `holder` took, right before the send; a lapsed claim nobody took
    /// since is taken again.
    fn renew(
        &self,
        app: &str,
        id: &str,
        holder: Holder,
    ) -> impl Future<Output = StateResult<Renewal>> + Send;
    /// Gives up a claim without a send (the job is retried or failed). Only the holder's own
    /// claim is removed; an unreleased claim lapses by itself.
    fn release(
        &self,
        app: &str,
        id: &str,
        holder: Holder,
    ) -> impl Future<Output = StateResult<()>> + Send;
    /// Records that `id` was sent (ending its claim), as `msgid` when WeChat gave one, and then
    /// msgid → job (with its `meta` and `trace`) for reports. Without a msgid nothing is kept
    /// by msgid: no report can name it.
    fn record_sent(
        &self,
        app: &str,
        id: &str,
        msgid: Option<u64>,
        meta: Option<&Value>,
        trace: Option<&TraceHeaders>,
    ) -> impl Future<Output = StateResult<()>> + Send;
}

/// One access token per app for every instance, and the lock that makes its refresh happen once.
pub trait SharedTokens: Send + Sync {
    /// The shared token and how long the store keeps it.
    fn token(
        &self,
        app: &str,
    ) -> impl Future<Output = StateResult<Option<(Secret, Duration)>>> + Send;
    fn store_token(
        &self,
        app: &str,
        token: &Secret,
        lifetime: Duration,
    ) -> impl Future<Output = StateResult<()>> + Send;
    /// Takes the refresh lock for `hold`; false when another instance holds it.
    fn lock_refresh(
        &self,
        app: &str,
        holder: &str,
        hold: Duration,
    ) -> impl Future<Output = StateResult<bool>> + Send;
    /// Drops the refresh lock if `holder` still holds it.
    fn unlock_refresh(
        &self,
        app: &str,
        holder: &str,
    ) -> impl Future<Output = StateResult<()>> + Send;
}

/// One send-rate bucket per app for every instance: one send every `interval`, `burst` at
/// once. Each instance leases slots from it ([`super::rate_lease`]).
pub trait SharedRate: Send + Sync {
    /// Up to `want` slots of `app`'s bucket, to use now, or how long until one is free.
    fn grant(
        &self,
        app: &str,
        interval: Duration,
        burst: u32,
        want: u32,
    ) -> impl Future<Output = StateResult<SlotGrant>> + Send;
}

/// The callback's memory of what it published: which reports were published already (WeChat
/// repeats a push up to three times), and the job behind a msgid, which a delivery report names.
pub trait Reports: Send + Sync {
    /// The job that was sent as `msgid`, if it is remembered.
    fn job_for_msgid<'a>(
        &'a self,
        app: &'a str,
        msgid: u64,
    ) -> BoxFuture<'a, StateResult<Option<SentJob>>>;
    /// Marks the report `key` names as published; false when it was marked before.
    fn mark_report<'a>(
        &'a self,
        app: &'a str,
        key: &'a ReportKey,
    ) -> BoxFuture<'a, StateResult<bool>>;
    /// Undoes [`Reports::mark_report`] when the report could not be published, so that
    /// WeChat's retry of the push is not taken for a repeat.
    fn unmark_report<'a>(
        &'a self,
        app: &'a str,
        key: &'a ReportKey,
    ) -> BoxFuture<'a, StateResult<()>>;
}

/// What a backend provides: its declaration, read once at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend's name as `state.url` gives it (`memory`, `redis`).
    pub backend: &'static str,
    /// Sent ids, claims, msgids and reports are seen by every instance.
    pub shared_ids: bool,
    pub shared_tokens: bool,
    pub shared_rate: bool,
}

impl Capabilities {
    /// Refuses a backend that every instance shares but that lacks what running several
    /// instances needs: the send rate (`rate_per_second` holds across instances), and the
    /// access token for any app in classic mode (each classic fetch retires the token the
    /// other instances use). A backend for one instance needs neither.
    pub(crate) fn check(&self, settings: &Settings) -> Result<(), StateError> {
        if !self.shared_ids {
            return Ok(());
        }
        if !self.shared_rate {
            return Err(StateError::Lacks {
                backend: self.backend,
                capability: "the send rate",
                needed_by: "apps.*.rate_per_second (a rate for all instances together)".into(),
            });
        }
        let classic = settings
            .apps
            .iter()
            .find(|(_, app)| app.token_mode == TokenMode::Classic);
        if let Some((name, _)) = classic
            && !self.shared_tokens
        {
            return Err(StateError::Lacks {
                backend: self.backend,
                capability: "the access token",
                needed_by: format!("apps.{name}.token_mode = \"classic\""),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppSettings;

    fn settings(mode: TokenMode) -> Settings {
        let mut s = Settings::default();
        let mut app = AppSettings::new("wx1", Secret::new("s"));
        app.token_mode = mode;
        s.apps.insert("shop".into(), app);
        s
    }

    const SHARED_IDS_ONLY: Capabilities = Capabilities {
        backend: "hypothetical",
        shared_ids: true,
        shared_tokens: false,
        shared_rate: false,
    };

    #[test]
    fn a_backend_for_one_instance_needs_nothing_shared() {
        let memory = Capabilities {
            backend: "memory",
            shared_ids: false,
            shared_tokens: false,
            shared_rate: false,
        };
        assert_eq!(memory.check(&settings(TokenMode::Classic)), Ok(()));
    }

    #[test]
    fn a_shared_backend_without_a_shared_rate_fails_at_start_naming_it() {
        let err = SHARED_IDS_ONLY
            .check(&settings(TokenMode::Stable))
            .unwrap_err()
            .to_string();
        assert!(err.contains("state.url (hypothetical)"), "{err}");
        assert!(err.contains("not the send rate"), "{err}");
        assert!(err.contains("rate_per_second"), "{err}");
    }

    #[test]
    fn classic_tokens_need_a_shared_token_but_stable_ones_do_not() {
        let rate_only = Capabilities {
            shared_rate: true,
            ..SHARED_IDS_ONLY
        };
        assert_eq!(rate_only.check(&settings(TokenMode::Stable)), Ok(()));
        let err = rate_only
            .check(&settings(TokenMode::Classic))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not the access token"), "{err}");
        assert!(err.contains("apps.shop.token_mode = \"classic\""), "{err}");
        let full = Capabilities {
            shared_tokens: true,
            ..rate_only
        };
        assert_eq!(full.check(&settings(TokenMode::Classic)), Ok(()));
    }
}
