//! `not_before`: a job waits in the delay tiers until its time, holding no claim and spending
//! no attempt, and is sent once it comes; out-of-range times are rejected by name.

use super::fakes::*;
use super::*;
use crate::state::fakes::StoreCall;

/// `job` with `not_before` this many seconds after [`T0`] (before it when negative).
fn not_before(mut job: serde_json::Value, secs: i64) -> serde_json::Value {
    let at = (T0 + time::Duration::seconds(secs))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    job["not_before"] = at.into();
    job
}

#[tokio::test(start_paused = true)]
async fn a_job_waits_for_its_not_before_through_chained_tiers_and_is_then_sent() {
    let world = World::new(Setup {
        sends: vec![code(0)],
        ..Setup::default()
    });
    let job = body(not_before(template("later-1"), 2 * 3600 + 5));
    let (mut state, mut waited, mut hops) = (RetryState::default(), Duration::ZERO, 0);
    loop {
        match world.process(&job, state).await {
            Step::Retry {
                after,
                state: next,
                wait,
                ..
            } => {
                assert_eq!(wait, Wait::Until(super::super::step::SCHEDULED));
                assert_eq!(next.attempts, 0, "a hold uses no attempt");
                assert_eq!(next.first_try_ms, None, "retry.max_age has not started");
                waited += after;
                hops += 1;
                tokio::time::advance(after).await;
                state = next;
            }
            Step::Finish(o) => {
                assert_eq!(o.status, SendStatus::Sent, "{o:?}");
                break;
            }
            other => panic!("{other:?}"),
        }
        assert!(hops < 20, "too many hops");
    }
    // Never before its time, and at most one shortest tier after it.
    let due = Duration::from_secs(2 * 3600 + 5);
    assert!(waited >= due, "{waited:?}");
    assert!(waited <= due + world.deps.schedule.tiers()[0], "{waited:?}");
    assert_eq!(world.wechat.received().len(), 1);
    // Only the turn that sent it claimed the id: a waiting job holds no claim.
    let claims = world
        .store()
        .calls()
        .iter()
        .filter(|c| matches!(c, StoreCall::Claimed(..)))
        .count();
    assert_eq!(claims, 1, "{:?}", world.store().calls());
}

#[tokio::test(start_paused = true)]
async fn a_not_before_that_has_passed_is_sent_at_once() {
    let world = World::new(Setup {
        sends: vec![code(0)],
        ..Setup::default()
    });
    let job = body(not_before(template("due-1"), -60));
    let step = world.process(&job, RetryState::default()).await;
    assert!(
        matches!(step, Step::Finish(ref o) if o.status == SendStatus::Sent),
        "{step:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_not_before_out_of_range_is_rejected_by_name() {
    for (secs, words) in [(31 * 86_400, "days ahead"), (-31 * 86_400, "in the past")] {
        let world = World::new(Setup::default());
        let job = body(not_before(template("far-1"), secs));
        match world.process(&job, RetryState::default()).await {
            Step::Reject { outcome, reason } => {
                assert_eq!(outcome.status, SendStatus::Rejected);
                assert!(
                    reason.contains("not_before") && reason.contains(words),
                    "{reason}"
                );
            }
            other => panic!("{secs}: {other:?}"),
        }
        assert!(world.wechat.received().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn not_after_passing_while_a_job_waits_ends_it_expired() {
    let world = World::new(Setup::default());
    let job = body(not_after(not_before(template("late-2"), 10), 10));
    let mut state = RetryState::default();
    let outcome = loop {
        match world.process(&job, state).await {
            Step::Retry {
                after, state: s, ..
            } => {
                // The broker hands it back a little late: past not_after.
                tokio::time::advance(after + Duration::from_secs(1)).await;
                state = s;
            }
            Step::Finish(o) => break o,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(outcome.status, SendStatus::Expired, "{outcome:?}");
    assert!(world.wechat.received().is_empty());
}
