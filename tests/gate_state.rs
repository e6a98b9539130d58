//! The preference gates' state contract (`apps.NAME.honor_preferences`), run against every
//! backend: memory, and Redis as a single node, behind Sentinel and as a Cluster when
//! `TEST_REDIS_SENTINEL_URL` / `TEST_REDIS_CLUSTER_URL` name one (`scripts/redis-ha.sh urls`);
//! an unset one is skipped with a note. Redis gates are also seen by a second instance.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wxcourier::state::{GateScope, GateWhy, Gates, State, StateError};

#[path = "common/redis_sets.rs"]
mod redis_sets;

const DAY: Duration = Duration::from_secs(86_400);

fn redis_urls() -> Vec<(&'static str, String)> {
    redis_sets::redis_urls("the gate contract")
}

fn open(url: &str) -> State {
    State::from_url(url, Duration::from_secs(60), 1000, Duration::from_secs(5)).unwrap()
}

/// Each backend's gates, by name; the state is kept alive beside them.
fn backends() -> Vec<(&'static str, String, Arc<dyn Gates>)> {
    let mut all = vec![("memory", "memory".to_owned(), open("memory").gate_store())];
    for (name, url) in redis_urls() {
        let gates = open(&url).gate_store();
        all.push((name, url, gates));
    }
    all
}

fn app() -> String {
    format!("t_gate_{:08x}", rand::random::<u32>())
}

/// Now, in Unix seconds: Redis lapses its keys on its own clock.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn t(id: &str) -> GateScope {
    GateScope::Template(id.to_owned())
}

async fn gate_contract(name: &str, g: &dyn Gates) {
    let (app, other_app, now) = (app(), app(), now());
    g.set_gate(
        &app,
        "gone",
        &GateScope::All,
        GateWhy::NotFollowing,
        now,
        DAY,
    )
    .await
    .unwrap();
    g.set_gate(&app, "picky", &t("t1"), GateWhy::Refused, now, DAY)
        .await
        .unwrap();

    // An unfollow holds back every template; a refusal only its own.
    let gone = g.gate_for(&app, "gone", "t9", now).await.unwrap();
    let gone = gone.unwrap_or_else(|| panic!("{name}: the unfollow gate"));
    assert_eq!(
        (gone.why, gone.scope.clone(), gone.set_at, gone.expires_at),
        (GateWhy::NotFollowing, GateScope::All, now, now + 86_400),
        "{name}"
    );
    let picky = g.gate_for(&app, "picky", "t1", now).await.unwrap();
    assert_eq!(picky.map(|p| p.why), Some(GateWhy::Refused), "{name}");
    assert_eq!(
        g.gate_for(&app, "picky", "t2", now).await.unwrap(),
        None,
        "{name}"
    );
    assert_eq!(
        g.gate_for(&app, "nobody", "t1", now).await.unwrap(),
        None,
        "{name}"
    );
    // Apps are apart.
    assert_eq!(
        g.gate_for(&other_app, "gone", "t1", now).await.unwrap(),
        None,
        "{name}"
    );

    // The gate for every template comes first when a user has both.
    g.set_gate(
        &app,
        "picky",
        &GateScope::All,
        GateWhy::NotFollowing,
        now,
        DAY,
    )
    .await
    .unwrap();
    let both = g.gate_for(&app, "picky", "t1", now).await.unwrap().unwrap();
    assert_eq!(both.scope, GateScope::All, "{name}");

    // Listed by user, `all` first; one user alone with `--to`.
    let listed: Vec<(String, GateScope)> = g
        .list_gates(&app, None, now)
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.openid, g.scope))
        .collect();
    assert_eq!(
        listed,
        [
            ("gone".to_owned(), GateScope::All),
            ("picky".to_owned(), GateScope::All),
            ("picky".to_owned(), t("t1")),
        ],
        "{name}"
    );
    assert_eq!(
        g.list_gates(&app, Some("picky"), now).await.unwrap().len(),
        2,
        "{name}"
    );
    assert!(
        g.list_gates(&other_app, None, now)
            .await
            .unwrap()
            .is_empty(),
        "{name}"
    );

    // A follow lifts the unfollow gate and leaves the refusal.
    g.lift_gate(&app, "picky", &GateScope::All).await.unwrap();
    let left = g.gate_for(&app, "picky", "t1", now).await.unwrap().unwrap();
    assert_eq!(left.scope, t("t1"), "{name}");
    g.lift_gate(&app, "picky", &t("t1")).await.unwrap();
    assert_eq!(
        g.gate_for(&app, "picky", "t1", now).await.unwrap(),
        None,
        "{name}"
    );
    // Lifting what is not there is no error.
    g.lift_gate(&app, "picky", &t("t1")).await.unwrap();
    assert_eq!(
        g.list_gates(&app, Some("picky"), now).await.unwrap(),
        [],
        "{name}"
    );

    // A gate holds nothing back from its lapse on, and is not listed.
    g.set_gate(
        &app,
        "brief",
        &t("t1"),
        GateWhy::Refused,
        now,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(
        g.gate_for(&app, "brief", "t1", now + 29)
            .await
            .unwrap()
            .is_some(),
        "{name}"
    );
    assert_eq!(
        g.gate_for(&app, "brief", "t1", now + 30).await.unwrap(),
        None,
        "{name}"
    );
    assert_eq!(
        g.list_gates(&app, None, now + 30).await.unwrap().len(),
        1,
        "{name}"
    );
    // Set again, it is renewed from the new time.
    g.set_gate(
        &app,
        "brief",
        &t("t1"),
        GateWhy::Refused,
        now + 20,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(
        g.gate_for(&app, "brief", "t1", now + 45)
            .await
            .unwrap()
            .is_some(),
        "{name}"
    );

    // Clearing one user, then the app, removes and counts live gates only.
    assert_eq!(
        g.clear_gates(&app, Some("brief"), now).await.unwrap(),
        1,
        "{name}"
    );
    assert_eq!(
        g.gate_for(&app, "brief", "t1", now).await.unwrap(),
        None,
        "{name}"
    );
    g.set_gate(
        &other_app,
        "gone",
        &GateScope::All,
        GateWhy::NotFollowing,
        now,
        DAY,
    )
    .await
    .unwrap();
    assert_eq!(g.clear_gates(&app, None, now).await.unwrap(), 1, "{name}");
    assert!(
        g.list_gates(&app, None, now).await.unwrap().is_empty(),
        "{name}"
    );
    assert_eq!(
        g.gate_for(&app, "gone", "t1", now).await.unwrap(),
        None,
        "{name}"
    );
    assert_eq!(g.clear_gates(&app, None, now).await.unwrap(), 0, "{name}");
    // Another app's gates stay.
    assert!(
        g.gate_for(&other_app, "gone", "t1", now)
            .await
            .unwrap()
            .is_some(),
        "{name}"
    );
    g.clear_gates(&other_app, None, now).await.unwrap();
}

#[tokio::test]
async fn every_backend_keeps_the_gate_contract() {
    for (name, _, gates) in backends() {
        gate_contract(name, gates.as_ref()).await;
    }
}

#[tokio::test]
async fn redis_gates_are_seen_and_lifted_by_every_instance_and_lapse_on_their_own() {
    for (name, url) in redis_urls() {
        let (one, two) = (open(&url).gate_store(), open(&url).gate_store());
        let (app, now) = (app(), now());
        one.set_gate(&app, "o1", &t("t1"), GateWhy::Refused, now, DAY)
            .await
            .unwrap();
        assert!(
            two.gate_for(&app, "o1", "t1", now).await.unwrap().is_some(),
            "{name}"
        );
        assert_eq!(
            two.list_gates(&app, None, now).await.unwrap().len(),
            1,
            "{name}"
        );
        two.lift_gate(&app, "o1", &t("t1")).await.unwrap();
        assert_eq!(
            one.gate_for(&app, "o1", "t1", now).await.unwrap(),
            None,
            "{name}"
        );

        // Redis itself forgets a lapsed gate: asked as of a time before its lapse, it is gone.
        one.set_gate(
            &app,
            "o2",
            &GateScope::All,
            GateWhy::NotFollowing,
            now,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(
            two.gate_for(&app, "o2", "t1", now).await.unwrap(),
            None,
            "{name}"
        );
        assert!(
            two.list_gates(&app, None, now).await.unwrap().is_empty(),
            "{name}"
        );
    }
}

fn is_state_outage(e: &StateError) -> bool {
    matches!(e, StateError::Unavailable(_) | StateError::Timeout(_))
}

#[tokio::test]
async fn a_redis_outage_is_a_state_error_for_every_gate_call() {
    let state = open("redis://127.0.0.1:1");
    let g = state.gate_store();
    let (app, now) = (app(), now());
    let all = GateScope::All;
    let e = g
        .set_gate(&app, "o", &all, GateWhy::NotFollowing, now, DAY)
        .await
        .unwrap_err();
    assert!(is_state_outage(&e), "{e:?}");
    assert!(is_state_outage(
        &g.lift_gate(&app, "o", &all).await.unwrap_err()
    ));
    assert!(is_state_outage(
        &g.gate_for(&app, "o", "t", now).await.unwrap_err()
    ));
    assert!(is_state_outage(
        &g.list_gates(&app, None, now).await.unwrap_err()
    ));
    assert!(is_state_outage(
        &g.clear_gates(&app, Some("o"), now).await.unwrap_err()
    ));
    assert!(!state.health().is_up());
}
