//! The platform's own token (`component_access_token`), fetched from the newest verify ticket
//! the state keeps. With no ticket yet, or one WeChat calls stale (`61006`), it asks WeChat to
//! push a new one, so a platform whose instances all restarted needs no ten-minute wait.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::component::ComponentClient;
use crate::state::PlatformStore;
use crate::types::Secret;
use crate::wechat::client::{TokenError, TokenGrant};
use crate::wechat::token::TokenSource;

/// WeChat's answer to a token request with a stale ticket.
pub(crate) const STALE_TICKET: i64 = 61006;

/// Fetches the component token with the ticket kept for the platform.
pub struct ComponentTokenSource {
    pub client: ComponentClient,
    pub store: Arc<dyn PlatformStore>,
}

impl ComponentTokenSource {
    /// Asks for a ticket push; a failure is only logged: the token fetch's own error is what
    /// the caller needs, and the keeper's backoff paces the next try.
    async fn ask_for_ticket(&self) {
        match self.client.start_push_ticket().await {
            Ok(()) => tracing::info!(
                component_appid = self.client.appid(),
                "asked WeChat to push a component_verify_ticket"
            ),
            Err(e) => tracing::warn!(
                component_appid = self.client.appid(),
                error = %e,
                "cannot ask WeChat for a component_verify_ticket"
            ),
        }
    }
}

impl TokenSource for ComponentTokenSource {
    fn fetch<'a>(
        &'a self,
        _stale: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<TokenGrant, TokenError>> {
        Box::pin(async move {
            let Some(ticket) = self.store.ticket(self.client.appid()).await? else {
                self.ask_for_ticket().await;
                return Err(TokenError::NoTicket);
            };
            match self.client.component_token(&ticket.value).await {
                Ok(grant) => Ok(grant),
                Err(e) => {
                    if e.errcode() == Some(STALE_TICKET) {
                        self.ask_for_ticket().await;
                    }
                    Err(e.into())
                }
            }
        })
    }
}
