//! Cancels: a cancel before its job, during its hold, in a retry tier, racing its send and
//! after it; each ends in exactly one of {job `cancelled`, cancel `accepted`} or {job `sent`,
//! cancel `too_late`}. Malformed cancels are refused to `wxcourier.dead` with their reason.

use super::fakes::*;
use super::*;
use crate::job::cancel::Cancel;
use crate::outcome::cancel::{CancelAnswer, CancelStatus};
use crate::state::Holder;
use crate::state::fakes::StoreCall;

use super::super::step::{CANCEL_WAITS, SCHEDULED};

async fn cancel(world: &World, id: &str) -> Step {
    world
        .process(&Cancel::body(id), RetryState::default())
        .await
}

/// The answer a step publishes, and whether the original goes to `wxcourier.dead`.
fn answer(step: Step) -> (CancelAnswer, Option<String>) {
    match step {
        Step::Answer { answer, dead } => (answer, dead),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn status_of(step: Step) -> CancelStatus {
    let (a, dead) = answer(step);
    assert_eq!(dead, None, "{a:?}");
    assert_eq!(a.app, "a");
    a.status
}

fn ended(step: &Step) -> SendStatus {
    match step {
        Step::Finish(o) => o.status,
        other => panic!("expected an outcome, got {other:?}"),
    }
}

/// `job` with `not_before` this many seconds after [`T0`].
fn not_before(mut job: serde_json::Value, secs: i64) -> serde_json::Value {
    let at = (T0 + time::Duration::seconds(secs))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    job["not_before"] = at.into();
    job
}

#[tokio::test(start_paused = true)]
async fn a_cancel_that_comes_first_is_kept_and_ends_its_job_when_it_comes() {
    let world = World::new(Setup::default());
    assert_eq!(
        status_of(cancel(&world, "c-1").await),
        CancelStatus::Accepted
    );
    let job = body(template("c-1"));
    for delivery in ["first", "redelivered"] {
        let step = world.process(&job, RetryState::default()).await;
        let Step::Finish(o) = &step else {
            panic!("{delivery}: {step:?}")
        };
        assert_eq!(o.status, SendStatus::Cancelled, "{delivery}");
        assert_eq!(o.id.as_deref(), Some("c-1"));
        assert_eq!(o.attempts, 0);
        assert!(o.error.as_deref().unwrap().contains("cancelled"), "{o:?}");
    }
    assert!(world.wechat.received().is_empty(), "no WeChat call");
    assert_eq!(world.wechat.token_fetches(), 0, "no token either");
    // Another id of the app is not touched.
    assert_eq!(
        ended(
            &world
                .process(&body(template("c-2")), RetryState::default())
                .await
        ),
        SendStatus::Sent
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_held_for_its_not_before_ends_at_its_next_hop_once_cancelled() {
    let world = World::new(Setup::default());
    let job = body(not_before(template("later-1"), 3 * 86_400));
    let step = world.process(&job, RetryState::default()).await;
    let Step::Retry {
        after, state, wait, ..
    } = step
    else {
        panic!("{step:?}")
    };
    assert_eq!(wait, Wait::Until(SCHEDULED));
    assert_eq!(
        status_of(cancel(&world, "later-1").await),
        CancelStatus::Accepted
    );
    tokio::time::advance(after).await;
    let step = world.process(&job, state).await;
    assert_eq!(ended(&step), SendStatus::Cancelled, "days before its time");
    assert!(world.wechat.received().is_empty());
    let claimed = world
        .store()
        .calls()
        .iter()
        .any(|c| matches!(c, StoreCall::Claimed(_)));
    assert!(!claimed, "a held job never claimed its id");
}

#[tokio::test(start_paused = true)]
async fn a_held_job_stays_held_when_shared_state_cannot_say() {
    let world = World::new(Setup::default());
    let job = body(not_before(template("later-2"), 600));
    world.store().down.store(true, Ordering::SeqCst);
    let step = world.process(&job, RetryState::default()).await;
    assert!(
        matches!(
            step,
            Step::Retry {
                wait: Wait::Until(SCHEDULED),
                ..
            }
        ),
        "{step:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_waiting_in_a_retry_tier_is_cancelled_at_its_next_turn() {
    let world = World::new(Setup {
        sends: vec![code(-1)],
        ..Setup::default()
    });
    let job = body(template("busy-1"));
    let step = world.process(&job, RetryState::default()).await;
    let Step::Retry { state, wait, .. } = step else {
        panic!("{step:?}")
    };
    assert_eq!(wait, Wait::Transient);
    // Its claim was released with the retry: the cancel is decided at once.
    assert_eq!(
        status_of(cancel(&world, "busy-1").await),
        CancelStatus::Accepted
    );
    let step = world.process(&job, state).await;
    let Step::Finish(o) = &step else {
        panic!("{step:?}")
    };
    assert_eq!((o.status, o.attempts), (SendStatus::Cancelled, 1));
    assert_eq!(
        world.wechat.received().len(),
        1,
        "only the try before the cancel"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sent_job_gets_no_second_outcome_and_its_cancel_is_too_late() {
    let world = World::new(Setup::default());
    let job = body(template("sent-1"));
    assert_eq!(
        ended(&world.process(&job, RetryState::default()).await),
        SendStatus::Sent
    );
    assert_eq!(
        status_of(cancel(&world, "sent-1").await),
        CancelStatus::TooLate
    );
    assert_eq!(
        status_of(cancel(&world, "sent-1").await),
        CancelStatus::TooLate
    );
    // A redelivery of the job still reads as the send it was, never as cancelled.
    let again = world.process(&job, RetryState::default()).await;
    let Step::Finish(o) = &again else {
        panic!("{again:?}")
    };
    assert_eq!(o.status, SendStatus::Sent);
    assert!(o.duplicate);
    assert_eq!(world.wechat.received().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_racing_a_send_waits_for_the_claim_and_is_then_too_late() {
    let world = World::new(Setup::default());
    *world.wechat.latency.lock() = Duration::from_secs(2);
    let job = body(template("race-1"));
    let sending = world.process(&job, RetryState::default());
    let cancelling = async {
        // The job holds its claim and is inside its WeChat call.
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel(&world, "race-1").await
    };
    let (sent, first) = tokio::join!(sending, cancelling);
    assert_eq!(ended(&sent), SendStatus::Sent);
    let Step::Retry {
        after, state, wait, ..
    } = first
    else {
        panic!("{first:?}")
    };
    assert_eq!(wait, Wait::NotNow(CANCEL_WAITS));
    assert_eq!(state.attempts, 0);
    assert_eq!(after, world.deps.schedule.tiers()[0]);
    tokio::time::advance(after).await;
    let second = world.process(&Cancel::body("race-1"), state).await;
    assert_eq!(status_of(second), CancelStatus::TooLate);
    assert_eq!(world.wechat.received().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_that_finds_a_claim_released_without_a_send_is_accepted() {
    let world = World::new(Setup::default());
    let holder = Holder::new();
    world.store().claim_landed_late("a", "held-1", holder);
    let first = cancel(&world, "held-1").await;
    let Step::Retry { state, .. } = first else {
        panic!("{first:?}")
    };
    assert!(
        !world.store().memory().is_cancelled("a", "held-1"),
        "nothing kept while the claim is held"
    );
    world.store().memory().release("a", "held-1", holder);
    let second = world.process(&Cancel::body("held-1"), state).await;
    assert_eq!(status_of(second), CancelStatus::Accepted);
    let job = world
        .process(&body(template("held-1")), RetryState::default())
        .await;
    assert_eq!(ended(&job), SendStatus::Cancelled);
    assert!(world.wechat.received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_lapsed_claim_met_by_a_cancel_right_before_the_send_ends_cancelled() {
    // The claim aged past a third of its lifetime while the job waited for the rate limit,
    // and the renewal right before the call found it lapsed and a cancel kept.
    let world = World::new(Setup {
        rate_wait: Duration::from_secs(30),
        claim_ttl: Duration::from_secs(60),
        ..Setup::default()
    });
    *world.store().renewal.lock() = Some(crate::state::Renewal::Cancelled);
    let step = world
        .process(&body(template("lapsed-1")), RetryState::default())
        .await;
    assert_eq!(ended(&step), SendStatus::Cancelled);
    assert!(world.wechat.received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_cancel_that_shared_state_cannot_decide_waits_then_is_refused_after_max_age() {
    let world = World::new(Setup::default());
    world.store().down.store(true, Ordering::SeqCst);
    let step = cancel(&world, "down-1").await;
    let Step::Retry { state, wait, .. } = step else {
        panic!("{step:?}")
    };
    assert_eq!(wait, Wait::NotNow(super::super::step::STATE_DOWN));
    assert!(state.first_try_ms.is_some());
    tokio::time::advance(Duration::from_secs(25 * 3600)).await;
    let (a, dead) = answer(world.process(&Cancel::body("down-1"), state).await);
    assert_eq!(a.status, CancelStatus::Rejected);
    assert_eq!(a.id.as_deref(), Some("down-1"));
    let dead = dead.expect("kept in wxcourier.dead");
    assert!(dead.contains("max_age"), "{dead}");
    assert_eq!(a.error.as_deref(), Some(dead.as_str()));
}

#[tokio::test(start_paused = true)]
async fn a_malformed_cancel_is_refused_to_dead_with_its_reason() {
    let world = World::new(Setup::default());
    for (body, field, id) in [
        (r#"{"kind":"cancel"}"#.to_owned(), "id", None),
        (r#"{"kind":"cancel","id":"bad id"}"#.to_owned(), "id", None),
        (
            r#"{"kind":"cancel","id":"j1","touser":"o1"}"#.to_owned(),
            "touser",
            Some("j1"),
        ),
        (
            format!(
                r#"{{"kind":"cancel","id":"j2","pad":"{}"}}"#,
                "x".repeat(2048)
            ),
            "body",
            Some("j2"),
        ),
    ] {
        let step = world.process(body.as_bytes(), RetryState::default()).await;
        let (a, dead) = answer(step);
        assert_eq!(a.status, CancelStatus::Rejected, "{body}");
        assert_eq!(a.id.as_deref(), id, "{body}");
        let dead = dead.unwrap_or_else(|| panic!("{body}: no dead copy"));
        assert!(dead.starts_with(&format!("{field}: ")), "{body}: {dead}");
    }
    assert!(world.store().calls().is_empty(), "nothing recorded");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_for_an_app_not_configured_is_refused() {
    let world = World::new(Setup::default());
    let incoming = Incoming {
        app: "other",
        body: &Cancel::body("j1"),
        message_id: None,
        headers_len: 0,
        retry: RetryState::default(),
        outlet: &OPEN,
        trace: None,
    };
    let (a, dead) = answer(process(&world.deps, incoming).await);
    assert_eq!(
        (a.status, a.app.as_str()),
        (CancelStatus::Rejected, "other")
    );
    assert!(dead.unwrap().contains("not a configured app"));
}
