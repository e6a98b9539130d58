//! The operators' endpoint on `admin.listen`: `GET /v1/jobs/APP/ID` answers a job's story.
//! Never on the callback's port, which faces the internet; every request must carry
//! `Authorization: Bearer TOKEN`, compared in constant time, whatever its length.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::config::is_account_name;
use crate::job::is_job_id;
use crate::trail::Trails;
use crate::types::Secret;

/// What the admin routes read: where stories are, and the token they ask for.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) trails: Arc<Trails>,
    /// The SHA-1 of the token: compared digest to digest, so neither the comparison's time nor
    /// its length says anything about the token.
    token_digest: [u8; 20],
}

impl AdminState {
    pub(crate) fn new(trails: Arc<Trails>, token: &Secret) -> Self {
        Self {
            trails,
            token_digest: digest(token.expose().as_bytes()),
        }
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return false;
        };
        digest(given).ct_eq(&self.token_digest).into()
    }
}

fn digest(bytes: &[u8]) -> [u8; 20] {
    Sha1::digest(bytes).into()
}

pub(crate) fn routes(state: AdminState) -> Router {
    Router::new()
        .route("/v1/jobs/{app}/{id}", get(job_story))
        .fallback(not_found)
        .with_state(state)
}

/// 401 before anything else, so a caller without the token learns nothing, not even which
/// paths exist.
async fn job_story(
    State(s): State<AdminState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Response {
    if !s.admits(&headers) {
        return unauthorized();
    }
    let Ok(Path((app, id))) = path else {
        return plain(StatusCode::BAD_REQUEST, "the path is /v1/jobs/APP/ID");
    };
    if !is_account_name(&app) || !is_job_id(&id) {
        return plain(
            StatusCode::BAD_REQUEST,
            "APP is 1-32 of a-z 0-9 _, ID 1-128 of A-Z a-z 0-9 . _ : -",
        );
    }
    match s.trails.story(&app, &id).await {
        Ok(Some(story)) => axum::Json(story).into_response(),
        Ok(None) => plain(StatusCode::NOT_FOUND, "no story is kept for this job"),
        Err(e) => {
            tracing::warn!(app, error = %e, "a job's story could not be read");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "shared state is unavailable",
            )
        }
    }
}

async fn not_found(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if !s.admits(&headers) {
        return unauthorized();
    }
    plain(StatusCode::NOT_FOUND, "the path is /v1/jobs/APP/ID")
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a bearer token is required\n",
    )
        .into_response()
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, format!("{text}\n")).into_response()
}

#[cfg(test)]
mod tests;
