//! Quiet hours with paused time: a job that comes during them is held until they end plus its
//! spread, holding no claim and using no attempt, or suppressed with `drop`; an urgent one
//! passes. Each is counted once. [`T0`] is 16:00 in Shanghai.

use super::fakes::*;
use super::*;
use crate::outcome::SendOutcome;
use crate::quiet_hours::{QuietHours, QuietMode, QuietPolicy, QuietWindow, Zone, spread_for};
use crate::state::fakes::StoreCall;
use crate::worker::pipeline::step::QUIET_HOURS;

const SPREAD: Duration = Duration::from_secs(600);

/// 15:00-17:00 in Shanghai holds at [`T0`] and ends an hour after it; 22:00-08:00 does not.
const HOLDS_AT_T0: &str = "15:00-17:00";
const OVER_AT_T0: &str = "22:00-08:00";
const ENDS_AFTER_T0: Duration = Duration::from_secs(3600);

fn world(window: &str, mode: QuietMode) -> World {
    World::new(Setup {
        quiet: Some(QuietPolicy {
            hours: QuietHours {
                window: QuietWindow::parse(window).unwrap(),
                zone: Zone::named("Asia/Shanghai").unwrap(),
            },
            mode,
            spread: SPREAD,
        }),
        ..Setup::default()
    })
}

fn urgent(mut job: serde_json::Value) -> serde_json::Value {
    job["urgent"] = true.into();
    job
}

/// The app's count in one of the quiet-hours families.
fn counted(world: &World, family: fn(&Metrics) -> &Family) -> u64 {
    family(&world.deps.metrics)
        .get_or_create(&Metrics::app("a"))
        .get()
}

type Family = prometheus_client::metrics::family::Family<
    crate::metrics::AppLabel,
    prometheus_client::metrics::counter::Counter,
>;

fn deferred(m: &Metrics) -> &Family {
    &m.quiet_hours_deferred
}
fn dropped(m: &Metrics) -> &Family {
    &m.quiet_hours_dropped
}
fn urgent_passed(m: &Metrics) -> &Family {
    &m.quiet_hours_urgent
}

/// Runs `job` through its holds until it ends, moving the paused clock as the broker would:
/// its outcome and how long it waited in all.
async fn until_it_ends(world: &World, job: &[u8]) -> (SendOutcome, Duration) {
    let (mut state, mut waited) = (RetryState::default(), Duration::ZERO);
    for _ in 0..20 {
        match world.process(job, state).await {
            Step::Retry {
                after,
                state: next,
                wait,
                ..
            } => {
                assert!(
                    matches!(wait, Wait::Until(_)),
                    "a hold, not a retry: {wait:?}"
                );
                assert_eq!(next.attempts, 0, "a hold uses no attempt");
                assert_eq!(next.first_try_ms, None, "retry.max_age has not started");
                waited += after;
                tokio::time::advance(after).await;
                state = next;
            }
            Step::Finish(o) => return (o, waited),
            other => panic!("{other:?}"),
        }
    }
    panic!("too many hops");
}

fn claims(world: &World) -> usize {
    world
        .store()
        .calls()
        .iter()
        .filter(|c| matches!(c, StoreCall::Claimed(..)))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_job_in_quiet_hours_waits_until_they_end_plus_its_spread() {
    let world = world(HOLDS_AT_T0, QuietMode::Defer);
    let first = world
        .process(&body(template("night-1")), RetryState::default())
        .await;
    assert!(
        matches!(
            first,
            Step::Retry {
                wait: Wait::Until(QUIET_HOURS),
                ..
            }
        ),
        "{first:?}"
    );
    let (outcome, waited) = until_it_ends(&world, &body(template("night-1"))).await;
    assert_eq!(outcome.status, SendStatus::Sent, "{outcome:?}");
    // Never before the end plus its share of the spread, at most one shortest tier after.
    let due = ENDS_AFTER_T0 + spread_for("night-1", SPREAD);
    assert!(waited >= due, "{waited:?} < {due:?}");
    assert!(waited <= due + world.deps.schedule.tiers()[0], "{waited:?}");
    assert_eq!(world.wechat.received().len(), 1);
    // Only the turn that sent it claimed the id.
    assert_eq!(claims(&world), 1, "{:?}", world.store().calls());
}

#[tokio::test(start_paused = true)]
async fn each_deferral_is_counted_once_however_many_hops_it_takes() {
    let world = world(HOLDS_AT_T0, QuietMode::Defer);
    let (outcome, _) = until_it_ends(&world, &body(template("night-2"))).await;
    assert_eq!(outcome.status, SendStatus::Sent);
    assert_eq!(counted(&world, deferred), 1);
    assert_eq!(counted(&world, dropped), 0);
    assert_eq!(counted(&world, urgent_passed), 0);
}

#[tokio::test(start_paused = true)]
async fn jobs_held_overnight_leave_spread_over_the_minutes_after_the_end() {
    let world = world(HOLDS_AT_T0, QuietMode::Defer);
    let mut holds = Vec::new();
    for n in 0..50 {
        let job = body(template(&format!("morning-{n}")));
        match world.process(&job, RetryState::default()).await {
            Step::Retry { state, .. } => holds.push(state.quiet_until_ms.unwrap()),
            other => panic!("{other:?}"),
        }
    }
    let end_ms = t0_ms() + ENDS_AFTER_T0.as_millis() as u64;
    let spread_ms = SPREAD.as_millis() as u64;
    assert!(
        holds
            .iter()
            .all(|&t| (end_ms..end_ms + spread_ms).contains(&t))
    );
    // Spread over the span, not bunched at its start.
    let late = holds
        .iter()
        .filter(|&&t| t >= end_ms + spread_ms / 2)
        .count();
    assert!((10..=40).contains(&late), "{late} of 50 in the second half");
    assert_eq!(counted(&world, deferred), 50);
    assert!(world.wechat.received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn with_drop_a_job_in_quiet_hours_is_suppressed_without_a_call() {
    let world = world(HOLDS_AT_T0, QuietMode::Drop);
    let step = world
        .process(&body(template("night-3")), RetryState::default())
        .await;
    let Step::Finish(outcome) = step else {
        panic!("{step:?}")
    };
    assert_eq!(outcome.status, SendStatus::Suppressed);
    assert_eq!(outcome.reason, Some(OutcomeReason::QuietHours));
    let error = outcome.error.unwrap();
    assert!(
        error.contains("quiet hours") && error.contains("15:00-17:00 Asia/Shanghai"),
        "{error}"
    );
    assert_eq!(outcome.id.as_deref(), Some("night-3"));
    assert!(world.wechat.received().is_empty());
    assert_eq!(world.wechat.token_fetches(), 0, "no token was taken");
    // Decided after the claim, which it gives back.
    assert_eq!(claims(&world), 1);
    assert!(
        world
            .store()
            .calls()
            .contains(&StoreCall::Released("night-3".into()))
    );
    assert_eq!(counted(&world, dropped), 1);
    assert_eq!(counted(&world, deferred), 0);
}

#[tokio::test(start_paused = true)]
async fn with_drop_a_job_sent_before_is_still_its_duplicate_not_suppressed() {
    let world = world(HOLDS_AT_T0, QuietMode::Drop);
    // Sent once (urgent), then redelivered without the flag during the same quiet hours: a
    // crash between its outcome and its ack looks like this.
    world.wechat.answer(code(0));
    let first = world
        .process(&body(urgent(template("night-4"))), RetryState::default())
        .await;
    assert!(
        matches!(first, Step::Finish(ref o) if o.status == SendStatus::Sent),
        "{first:?}"
    );
    match world
        .process(&body(template("night-4")), RetryState::default())
        .await
    {
        Step::Finish(o) => assert!(o.status == SendStatus::Sent && o.duplicate, "{o:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(world.wechat.received().len(), 1);
    assert_eq!(counted(&world, dropped), 0);
}

#[tokio::test(start_paused = true)]
async fn an_urgent_job_passes_quiet_hours_and_is_counted() {
    for mode in [QuietMode::Defer, QuietMode::Drop] {
        let world = world(HOLDS_AT_T0, mode);
        let step = world
            .process(&body(urgent(template("urgent-1"))), RetryState::default())
            .await;
        assert!(
            matches!(step, Step::Finish(ref o) if o.status == SendStatus::Sent),
            "{mode:?}: {step:?}"
        );
        assert_eq!(world.wechat.received().len(), 1);
        assert_eq!(counted(&world, urgent_passed), 1);
        assert_eq!(counted(&world, deferred) + counted(&world, dropped), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn outside_quiet_hours_jobs_go_at_once_and_nothing_is_counted() {
    for mode in [QuietMode::Defer, QuietMode::Drop] {
        let world = world(OVER_AT_T0, mode);
        for job in [template("day-1"), urgent(template("day-2"))] {
            let step = world.process(&body(job), RetryState::default()).await;
            assert!(
                matches!(step, Step::Finish(ref o) if o.status == SendStatus::Sent),
                "{step:?}"
            );
        }
        let all =
            counted(&world, urgent_passed) + counted(&world, deferred) + counted(&world, dropped);
        assert_eq!(all, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_job_due_in_quiet_hours_waits_for_their_end_too() {
    let world = world(HOLDS_AT_T0, QuietMode::Defer);
    let mut job = template("later-night");
    job["not_before"] = (T0 + time::Duration::minutes(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .into();
    let first = world
        .process(&body(job.clone()), RetryState::default())
        .await;
    assert!(
        matches!(first, Step::Retry { wait: Wait::Until(w), .. } if w != QUIET_HOURS),
        "its not_before first: {first:?}"
    );
    let (outcome, waited) = until_it_ends(&world, &body(job)).await;
    assert_eq!(outcome.status, SendStatus::Sent);
    assert!(
        waited >= ENDS_AFTER_T0 + spread_for("later-night", SPREAD),
        "{waited:?}"
    );
    assert_eq!(counted(&world, deferred), 1);
}

#[tokio::test(start_paused = true)]
async fn a_carried_end_holds_the_job_only_when_a_hold_could_have_written_it() {
    let world = world(OVER_AT_T0, QuietMode::Defer);
    let carrying = |ahead: Duration| RetryState {
        quiet_until_ms: Some(t0_ms() + ahead.as_millis() as u64),
        ..RetryState::default()
    };
    // Back from a hop after the quiet hours ended, before its share of the spread: it waits.
    let step = world
        .process(
            &body(template("spread-1")),
            carrying(Duration::from_secs(300)),
        )
        .await;
    assert!(
        matches!(step, Step::Retry { wait: Wait::Until(QUIET_HOURS), after, .. } if after <= Duration::from_secs(300)),
        "{step:?}"
    );
    // An end past any night's (a header a producer wrote) or already passed is not kept.
    for ahead in [Duration::from_secs(40 * 3600), Duration::ZERO] {
        let step = world
            .process(&body(template("forged-1")), carrying(ahead))
            .await;
        assert!(
            matches!(step, Step::Finish(ref o) if o.status == SendStatus::Sent),
            "{ahead:?}: {step:?}"
        );
    }
    assert_eq!(counted(&world, deferred), 0);
}
