//! The kill switch's shared record on every state backend: memory for one instance, Redis (a
//! single node always; Sentinel and Cluster when `TEST_REDIS_SENTINEL_URL` /
//! `TEST_REDIS_CLUSTER_URL` name one, as `scripts/redis-ha.sh urls` prints) for every instance:
//! a pause is seen by a second connection, a resume lifts it, and apps do not see each other's.

use std::time::Duration;

use wxcourier::state::{PauseScope, Paused, Pauses, State};

#[path = "common/redis_sets.rs"]
mod redis_sets;

fn redis_urls() -> Vec<(&'static str, String)> {
    redis_sets::redis_urls("the pause record")
}

fn open(url: &str) -> State {
    State::from_url(url, Duration::from_secs(60), 1000, Duration::from_secs(5)).unwrap()
}

fn app() -> String {
    format!("t_pause_{:08x}", rand::random::<u32>())
}

fn template(t: &str) -> PauseScope {
    PauseScope::Template(t.into())
}

fn templates(p: &Paused) -> Vec<&str> {
    p.templates.iter().map(String::as_str).collect()
}

/// One backend's contract: `one` writes, `two` (another instance on the same store, or the
/// same one in memory) reads.
async fn pauses_contract(name: &str, one: &impl Pauses, two: &impl Pauses) {
    let (app, other) = (app(), app());
    assert_eq!(two.paused(&app).await.unwrap(), Paused::default(), "{name}");

    let now = one.pause(&app, &template("t1")).await.unwrap();
    assert_eq!(templates(&now), ["t1"], "{name}: pause returns the record");
    assert!(!now.app, "{name}");
    let now = one.pause(&app, &template("t2")).await.unwrap();
    assert_eq!(templates(&now), ["t1", "t2"], "{name}");
    // Pausing twice is pausing once.
    let now = one.pause(&app, &template("t2")).await.unwrap();
    assert_eq!(templates(&now), ["t1", "t2"], "{name}");
    let seen = two.paused(&app).await.unwrap();
    assert_eq!(seen, now, "{name}: the other instance sees the pause");
    assert!(seen.holds("t1") && !seen.holds("t3"), "{name}");
    assert!(
        two.paused(&other).await.unwrap().is_empty(),
        "{name}: another app is not paused"
    );

    let now = one.resume(&app, &template("t1")).await.unwrap();
    assert_eq!(templates(&now), ["t2"], "{name}: one template resumed");
    let now = one.resume(&app, &template("never")).await.unwrap();
    assert_eq!(
        templates(&now),
        ["t2"],
        "{name}: resuming what is not paused changes nothing"
    );

    let now = two.pause(&app, &PauseScope::App).await.unwrap();
    assert!(now.app && now.holds("anything"), "{name}");
    assert_eq!(templates(&now), ["t2"], "{name}");
    assert!(one.paused(&app).await.unwrap().app, "{name}");

    let now = one.resume(&app, &PauseScope::App).await.unwrap();
    assert_eq!(
        now,
        Paused::default(),
        "{name}: the app's resume lifts every pause"
    );
    assert_eq!(two.paused(&app).await.unwrap(), Paused::default(), "{name}");
}

#[tokio::test]
async fn every_backend_keeps_the_pause_record() {
    let memory = State::from_url(
        "memory",
        Duration::from_secs(60),
        10,
        Duration::from_secs(5),
    )
    .unwrap();
    pauses_contract("memory", &memory, &memory).await;
    for (name, url) in redis_urls() {
        pauses_contract(name, &open(&url), &open(&url)).await;
    }
}

#[tokio::test]
async fn a_template_id_with_braces_and_colons_round_trips_and_keeps_to_its_app() {
    for (name, url) in redis_urls() {
        let state = open(&url);
        let app = app();
        let odd = "a}{b:template:c";
        let now = state.pause(&app, &template(odd)).await.unwrap();
        assert_eq!(templates(&now), [odd], "{name}");
        assert_eq!(
            templates(&open(&url).paused(&app).await.unwrap()),
            [odd],
            "{name}"
        );
        state.resume(&app, &PauseScope::App).await.unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_an_empty_record() {
    let state = open("redis://127.0.0.1:1");
    let app = app();
    assert!(state.paused(&app).await.is_err());
    assert!(state.pause(&app, &PauseScope::App).await.is_err());
    assert!(state.resume(&app, &PauseScope::App).await.is_err());
}
