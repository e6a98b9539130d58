//! An authorizer's access token, refreshed with the refresh token the state keeps (and the new
//! one WeChat returns kept in its place). A refresh token WeChat refuses (`61023`) or the state
//! lost is recovered once through WeChat's authorizer list (one read serving every recovery
//! for a minute); when that fails too, the authorizer is marked as needing re-authorization,
//! and every fetch says so until a merchant authorizes again. Never a refresh token in a log or
//! an error.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Platform, PlatformError};
use crate::state::{Authorizer, Standing};
use crate::types::Secret;
use crate::wechat::client::{CallError, TokenError, TokenGrant};
use crate::wechat::token::TokenSource;

/// WeChat's answer to a refresh token it no longer takes.
pub(crate) const REFRESH_REFUSED: i64 = 61023;

/// Why an authorizer has no token, as a fetch reports it: WeChat's own code when it refused,
/// else 61023, the code a revoked authorization gives, so a job's outcome reads
/// `authorization_revoked` either way.
fn revoked(why: &str) -> TokenError {
    TokenError::Refused {
        errcode: REFRESH_REFUSED,
        errmsg: why.to_owned(),
    }
}

/// Fetches the token of one authorizer of `platform`.
pub struct AuthorizerTokenSource {
    pub platform: Arc<Platform>,
    pub appid: String,
}

impl AuthorizerTokenSource {
    fn component(&self) -> &str {
        self.platform.component_appid()
    }

    /// The refresh token WeChat lists for the authorizer, if it lists one other than
    /// `refused`.
    async fn listed(&self, refused: Option<&Secret>) -> Result<Option<Secret>, TokenError> {
        let listed = self
            .platform
            .listed_refresh_token(&self.appid)
            .await
            .map_err(|e| match e {
                PlatformError::Token(t) => t,
                PlatformError::Component(c) => c.into(),
                PlatformError::State(s) => s.into(),
                other => TokenError::Call(CallError::Body(other.to_string())),
            })?;
        Ok(listed.filter(|t| Some(t) != refused))
    }

    /// Marks the authorizer as needing re-authorization, as of `kept`'s time (a later
    /// authorization stands).
    async fn give_up(&self, kept: &Authorizer, why: &str) -> TokenError {
        let marked = Authorizer {
            standing: Standing::NeedsReauthorization,
            refresh_token: None,
            ..kept.clone()
        };
        let _ = self
            .platform
            .store
            .put_authorizer(self.component(), &marked)
            .await;
        tracing::error!(
            account = super::account_name(&self.platform.name, &self.appid),
            "{why}: the merchant must authorize the platform again"
        );
        revoked(why)
    }

    /// One refresh with `refresh`, keeping what WeChat returns in place of it.
    async fn refresh(&self, kept: &Authorizer, refresh: &Secret) -> Result<TokenGrant, TokenError> {
        let token = self.platform.component_token().await?;
        let (grant, next) = self
            .platform
            .component
            .authorizer_token(&token, &self.appid, refresh)
            .await?;
        if kept.refresh_token.as_ref() != Some(&next) {
            let rotated = Authorizer {
                standing: Standing::Active,
                refresh_token: Some(next),
                ..kept.clone()
            };
            self.platform
                .store
                .put_authorizer(self.component(), &rotated)
                .await?;
        }
        Ok(grant)
    }
}

impl TokenSource for AuthorizerTokenSource {
    fn fetch<'a>(
        &'a self,
        _stale: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<TokenGrant, TokenError>> {
        Box::pin(async move {
            let kept = self
                .platform
                .store
                .authorizer(self.component(), &self.appid)
                .await?;
            let kept = match kept {
                Some(a) if a.standing == Standing::Revoked => {
                    return Err(revoked("the merchant withdrew the authorization"));
                }
                Some(a) if a.standing == Standing::NeedsReauthorization => {
                    return Err(revoked("the authorization must be renewed by the merchant"));
                }
                Some(a) => a,
                // Not known here: a state that lost it, or an account nobody authorized.
                None => Authorizer {
                    appid: self.appid.clone(),
                    standing: Standing::Active,
                    refresh_token: None,
                    changed_at: 0,
                },
            };
            let first = match &kept.refresh_token {
                Some(refresh) => match self.refresh(&kept, refresh).await {
                    Err(TokenError::Refused { errcode, .. }) if errcode == REFRESH_REFUSED => {
                        Some(refresh.clone())
                    }
                    done => return done,
                },
                None => None,
            };
            // Refused or lost: once through WeChat's list, the documented recovery.
            match self.listed(first.as_ref()).await? {
                Some(listed) => {
                    tracing::warn!(
                        account = super::account_name(&self.platform.name, &self.appid),
                        "refresh token recovered from the authorizer list"
                    );
                    match self.refresh(&kept, &listed).await {
                        Err(TokenError::Refused { errcode, .. }) if errcode == REFRESH_REFUSED => {
                            Err(self
                                .give_up(&kept, "the listed refresh token is refused too")
                                .await)
                        }
                        done => done,
                    }
                }
                None => Err(self
                    .give_up(&kept, "no usable refresh token, kept or listed")
                    .await),
            }
        })
    }
}
