//! The admin endpoint under hostile callers: no token, a wrong one, one of another length, a
//! malformed path, a huge path, and many requests at once; and what it answers the right one.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::Request;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::*;
use crate::config::HttpSettings;
use crate::state::State as Backend;
use crate::trail::{Entry, StepName};

const TOKEN: &str = "s3cret-admin-token-0123456789";

async fn admin() -> AdminState {
    let week = Duration::from_secs(7 * 24 * 3600);
    let state = Backend::from_url("memory", week, 10, week).unwrap();
    let trails = Arc::new(Trails::for_state(&state, week, Default::default()));
    let received = Entry::new(time::OffsetDateTime::UNIX_EPOCH, StepName::Received);
    trails.keep("shop", "order-1", &[received]).await;
    AdminState::new(trails, &Secret::new(TOKEN))
}

async fn get(state: &AdminState, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut request = Request::get(path);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = routes(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn without_the_token_every_path_is_401_and_says_nothing_of_the_job() {
    let s = admin().await;
    for path in [
        "/v1/jobs/shop/order-1",
        "/v1/jobs/shop/nope",
        "/other",
        "/v1/jobs/Shop!/x",
    ] {
        let (status, body) = get(&s, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(
            !body.contains("order-1") && !body.contains("received"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_wrong_token_of_any_length_or_form_is_401() {
    let s = admin().await;
    let same_length = "x".repeat(TOKEN.len());
    let longer = format!("{TOKEN}x");
    let huge = "y".repeat(8 * 1024);
    let wrong = [
        bearer(&same_length),
        bearer(&TOKEN[..TOKEN.len() - 1]),
        bearer(&longer),
        bearer(""),
        bearer(&huge),
        format!("bearer {TOKEN}"),
        format!("Basic {TOKEN}"),
        format!("Bearer  {TOKEN}"),
        TOKEN.to_owned(),
    ];
    for authorization in &wrong {
        let (status, _) = get(&s, "/v1/jobs/shop/order-1", Some(authorization)).await;
        assert_eq!(status, 401, "{authorization:.40}");
    }
}

#[tokio::test]
async fn the_right_token_gets_the_story_and_404_for_an_unknown_id() {
    let s = admin().await;
    let (status, body) = get(&s, "/v1/jobs/shop/order-1", Some(&bearer(TOKEN))).await;
    assert_eq!(status, 200, "{body}");
    let story: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(story["app"], "shop");
    assert_eq!(story["id"], "order-1");
    assert_eq!(story["status"], "received");
    assert_eq!(story["trail"][0]["step"], "received");
    assert_eq!(story["trail"][0]["at"], "1970-01-01T00:00:00.000Z");
    for unknown in [
        "/v1/jobs/shop/order-2",
        "/v1/jobs/other/order-1",
        "/v1/jobs/shop",
    ] {
        let (status, _) = get(&s, unknown, Some(&bearer(TOKEN))).await;
        assert_eq!(status, 404, "{unknown}");
    }
}

#[tokio::test]
async fn a_malformed_app_or_id_is_400_never_a_lookup() {
    let s = admin().await;
    let long_id = "a".repeat(129);
    let long_app = "a".repeat(33);
    for path in [
        "/v1/jobs/Shop/order-1".to_owned(),
        format!("/v1/jobs/{long_app}/order-1"),
        format!("/v1/jobs/shop/{long_id}"),
        "/v1/jobs/shop/order%201".to_owned(),
        "/v1/jobs/shop/order%2F1".to_owned(),
        "/v1/jobs/shop/%FF%FE".to_owned(),
        "/v1/jobs/shop/%7B%7D".to_owned(),
    ] {
        let (status, _) = get(&s, &path, Some(&bearer(TOKEN))).await;
        assert_eq!(status, 400, "{path:.60}");
    }
}

/// Serves the admin routes on a free port, as `admin.listen` does, with `max_connections`.
async fn serving(max_connections: usize) -> (String, CancellationToken, TaskTracker) {
    let settings = HttpSettings {
        max_connections: std::num::NonZeroUsize::new(max_connections).unwrap(),
        ..HttpSettings::default()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    crate::http::serve(
        &addr,
        &settings,
        routes(admin().await),
        stop.clone(),
        &tasks,
    )
    .await
    .unwrap();
    (addr, stop, tasks)
}

#[tokio::test]
async fn a_huge_path_is_refused_by_the_server_before_any_handler() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, stop, _tasks) = serving(8).await;
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let path = format!("/v1/jobs/shop/{}", "a".repeat(64 * 1024));
    let head = format!(
        "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\n\r\n",
        bearer(TOKEN)
    );
    // The server may stop reading once the head is over its limit: a write error is fine.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{:.80}",
        answer
    );
    assert!(!answer.contains("received"), "no story for a huge path");
    let client = reqwest::Client::new();
    let fine = format!("http://{addr}/v1/jobs/shop/order-1");
    let r = client
        .get(&fine)
        .header("authorization", bearer(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "still serving");
    stop.cancel();
}

#[tokio::test]
async fn many_requests_at_once_are_each_answered_and_none_gets_in_without_the_token() {
    let (addr, stop, _tasks) = serving(8).await;
    // Each request on a connection of its own, closed after it: 400 connections against 8
    // slots, the rest waiting in the backlog.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("http://{addr}/v1/jobs/shop/order-1");
    let calls = (0..400).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let token = if i % 2 == 0 {
                format!("wrong-{i}")
            } else {
                TOKEN.to_owned()
            };
            let r = client
                .get(&url)
                .header("authorization", bearer(&token))
                .send()
                .await;
            (i, r.map(|r| r.status().as_u16()))
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    for (i, answer) in answers {
        let want = if i % 2 == 0 { 401 } else { 200 };
        assert_eq!(answer.expect("answered"), want, "request {i}");
    }
    stop.cancel();
}
