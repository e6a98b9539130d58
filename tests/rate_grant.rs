//! The shared rate bucket's script in Redis: grants as many slots as are free up to what was
//! asked, and says how long to wait when none is.

use std::time::Duration;

use wxcourier::state::RedisState;
use wxcourier::state::rate_lease::Grant;

fn redis() -> RedisState {
    RedisState::new(
        "redis://127.0.0.1:6379",
        None,
        Duration::from_secs(60),
        Duration::from_secs(5),
    )
    .unwrap()
}

#[tokio::test]
async fn grants_up_to_the_free_slots_then_says_how_long_to_wait() {
    let state = redis();
    let app = format!("t_grant_{:08x}", rand::random::<u32>());
    // 10 slots a second, 10 at once.
    let interval = Duration::from_millis(100);
    let grant = |want| state.rate_grant(&app, interval, 10, want);
    assert_eq!(grant(4).await.unwrap(), Grant::Slots(4));
    assert_eq!(grant(4).await.unwrap(), Grant::Slots(4));
    assert_eq!(
        grant(4).await.unwrap(),
        Grant::Slots(2),
        "only 2 of the burst left"
    );
    match grant(1).await.unwrap() {
        Grant::Wait(wait) => assert!(wait > Duration::ZERO && wait <= interval, "wait {wait:?}"),
        other => panic!("expected a wait, got {other:?}"),
    }
    tokio::time::sleep(interval * 3).await;
    match grant(10).await.unwrap() {
        Grant::Slots(n) => assert!((2..=4).contains(&n), "{n} slots after 300 ms"),
        other => panic!("expected slots, got {other:?}"),
    }
}
