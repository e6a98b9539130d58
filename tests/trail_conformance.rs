//! Each job's story, kept by every state backend alike: steps in the order kept, read by any
//! instance that shares the store, bounded per job, forgotten after `state.trail_ttl`, and a
//! backend that cannot be reached costs the job nothing but a count. Memory, Redis as a single
//! node, and behind Sentinel and as a Cluster when `TEST_REDIS_SENTINEL_URL` /
//! `TEST_REDIS_CLUSTER_URL` name one (`scripts/redis-ha.sh` starts both).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use wxcourier::state::State;
use wxcourier::trail::{Entry, MAX_STEPS, StepName, Trails};

#[path = "common/redis_sets.rs"]
mod redis_sets;
use redis_sets::REDIS_URL;

const TTL: Duration = Duration::from_secs(60);

fn redis_urls() -> Vec<(&'static str, String)> {
    redis_sets::redis_urls("stories")
}

fn state(url: &str) -> State {
    State::from_url(url, TTL, 1000, Duration::from_secs(5)).unwrap()
}

fn trails_of(state: &State) -> (Trails, Counter) {
    let failures = Counter::default();
    (Trails::for_state(state, TTL, failures.clone()), failures)
}

fn app() -> String {
    format!("t_trail_{:08x}", rand::random::<u32>())
}

fn step(name: StepName, second: i64) -> Entry {
    let at = time::OffsetDateTime::from_unix_timestamp(1_800_000_000 + second).unwrap();
    Entry::new(at, name)
}

fn names(trails: &[Entry]) -> Vec<&'static str> {
    trails
        .iter()
        .map(|e| match e.step {
            StepName::Received => "received",
            StepName::Attempt => "attempt",
            StepName::Sent => "sent",
            StepName::Delivery => "delivery",
            _ => "other",
        })
        .collect()
}

/// What every backend promises, through `one` and, for a shared store, a second instance `two`.
async fn contract(name: &str, one: &Trails, two: &Trails, failures: &Counter) {
    let app = app();
    assert_eq!(
        one.story(&app, "j1").await.unwrap(),
        None,
        "{name}: unknown"
    );
    one.keep(
        &app,
        "j1",
        &[step(StepName::Received, 0), step(StepName::Attempt, 1)],
    )
    .await;
    one.keep(&app, "j1", &[step(StepName::Sent, 2).with("msgid", 42u64)])
        .await;
    // A delivery report kept before the step that sent it still reads after it.
    two.keep(
        &app,
        "j2",
        &[step(StepName::Delivery, 9).with("status", "delivered")],
    )
    .await;
    two.keep(
        &app,
        "j2",
        &[step(StepName::Received, 5), step(StepName::Sent, 6)],
    )
    .await;
    let story = two.story(&app, "j1").await.unwrap().expect("kept");
    assert_eq!(
        names(&story.trail),
        ["received", "attempt", "sent"],
        "{name}"
    );
    assert_eq!(
        (story.app.as_str(), story.id.as_str()),
        (app.as_str(), "j1")
    );
    assert_eq!(story.status, "sent", "{name}");
    assert_eq!(story.trail[2].detail["msgid"], 42, "{name}");
    let story = one.story(&app, "j2").await.unwrap().expect("kept");
    assert_eq!(
        names(&story.trail),
        ["received", "sent", "delivery"],
        "{name}"
    );
    assert_eq!(story.status, "delivered", "{name}");
    assert_eq!(one.story(&app, "j3").await.unwrap(), None, "{name}");
    assert_eq!(
        one.story("t_trail_other", "j1").await.unwrap(),
        None,
        "{name}"
    );
    // Bounded per job: the newest steps stay.
    for n in 0..(MAX_STEPS as i64 + 5) {
        one.keep(&app, "busy", &[step(StepName::Attempt, 100 + n)])
            .await;
    }
    let story = one.story(&app, "busy").await.unwrap().unwrap();
    assert_eq!(story.trail.len(), MAX_STEPS, "{name}");
    assert_eq!(
        story.trail[0],
        step(StepName::Attempt, 105),
        "{name}: the oldest went"
    );
    assert_eq!(failures.get(), 0, "{name}");
}

#[tokio::test]
async fn every_backend_keeps_a_jobs_story_in_order_bounded_and_shared_by_its_instances() {
    let memory = state("memory");
    let (trails, failures) = trails_of(&memory);
    contract("memory", &trails, &trails, &failures).await;
    for (name, url) in redis_urls() {
        let (first, second) = (state(&url), state(&url));
        let (one, failures) = trails_of(&first);
        let (two, _) = trails_of(&second);
        contract(name, &one, &two, &failures).await;
    }
}

#[tokio::test]
async fn in_redis_a_story_is_one_list_under_the_apps_hash_tag_that_expires_after_the_ttl() {
    let app = app();
    let (one, _) = trails_of(&state(REDIS_URL));
    one.keep(&app, "j1", &[step(StepName::Received, 0)]).await;
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("wxcourier:{{{app}}}:trail:j1");
    let len: i64 = redis::cmd("LLEN")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 1);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= TTL.as_millis() as i64, "{pttl}");
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        one.story(&app, "j1").await.unwrap(),
        None,
        "expired is unknown"
    );
}

#[tokio::test]
async fn an_unreachable_backend_costs_a_kept_step_only_a_count_and_a_read_an_error() {
    let down = state("redis://127.0.0.1:1");
    let (trails, failures) = trails_of(&down);
    trails
        .keep("shop", "j1", &[step(StepName::Received, 0)])
        .await;
    trails.keep("shop", "j1", &[]).await;
    assert_eq!(
        failures.get(),
        1,
        "one failed keep, and nothing to keep is no call"
    );
    assert!(trails.story("shop", "j1").await.is_err());
}
