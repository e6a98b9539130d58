//! The kill switch: a paused template's jobs wait (holding no claim, spending no attempt) or
//! end `suppressed` with reason `paused`, other templates' jobs are sent, a whole-app pause
//! holds every template, and a resume lets the waiting jobs go.

use super::fakes::*;
use super::*;
use crate::config::PauseMode;
use crate::outcome::OutcomeReason;
use crate::state::fakes::StoreCall;
use crate::state::{PauseScope, Paused};

fn paused(scopes: &[PauseScope]) -> Paused {
    scopes
        .iter()
        .fold(Paused::default(), |p, scope| p.paused(scope))
}

fn t1() -> PauseScope {
    PauseScope::Template("t1".into())
}

/// `template(id)` naming `template_id`.
fn of_template(id: &str, template_id: &str) -> serde_json::Value {
    let mut job = template(id);
    job["template_id"] = template_id.into();
    job
}

fn claims(world: &World) -> usize {
    world
        .store()
        .calls()
        .iter()
        .filter(|c| matches!(c, StoreCall::Claimed(..)))
        .count()
}

fn counted(world: &World, action: &str) -> bool {
    world.deps.metrics.render().contains(&format!(
        "wxcourier_paused_jobs_total{{app=\"a\",action=\"{action}\"}} 1"
    ))
}

#[tokio::test(start_paused = true)]
async fn a_paused_templates_job_waits_without_a_claim_and_is_sent_once_resumed() {
    let world = World::new(Setup {
        sends: vec![code(0)],
        ..Setup::default()
    });
    world.app().switch.set_shared(&paused(&[t1()]));
    let job = body(template("held-1"));
    let (after, state) = match world.process(&job, RetryState::default()).await {
        Step::Retry {
            after, state, wait, ..
        } => {
            assert_eq!(wait, Wait::Until(super::super::step::PAUSED));
            (after, state)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(state.attempts, 0, "a hold uses no attempt");
    assert_eq!(state.first_try_ms, None, "retry.max_age has not started");
    // The longest tier within the re-check, never longer.
    assert!(after <= super::super::paused::PAUSE_RECHECK, "{after:?}");
    assert_eq!(
        after,
        world.deps.schedule.tier_within(Duration::from_secs(60))
    );
    assert_eq!(claims(&world), 0, "a held job holds no claim");
    assert!(world.wechat.received().is_empty());
    assert!(counted(&world, "held"));

    world.app().switch.set_shared(&Paused::default());
    tokio::time::advance(after).await;
    let step = world.process(&job, state).await;
    assert!(
        matches!(step, Step::Finish(ref o) if o.status == SendStatus::Sent),
        "{step:?}"
    );
    assert_eq!(world.wechat.received().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn only_the_paused_template_waits_and_other_templates_are_sent() {
    let world = World::new(Setup {
        sends: vec![code(0)],
        ..Setup::default()
    });
    world.app().switch.set_shared(&paused(&[t1()]));
    let step = world
        .process(&body(of_template("free-1", "t2")), RetryState::default())
        .await;
    assert!(
        matches!(step, Step::Finish(ref o) if o.status == SendStatus::Sent),
        "{step:?}"
    );
    assert!(matches!(
        world
            .process(&body(template("held-2")), RetryState::default())
            .await,
        Step::Retry { .. }
    ));
    assert_eq!(world.wechat.received().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_whole_app_pause_holds_every_template_and_kind() {
    let world = World::new(Setup::default());
    world.app().switch.set_shared(&paused(&[PauseScope::App]));
    for job in [
        template("app-1"),
        of_template("app-2", "t9"),
        subscribe("app-3"),
    ] {
        let step = world.process(&body(job), RetryState::default()).await;
        assert!(
            matches!(
                step,
                Step::Retry {
                    wait: Wait::Until(_),
                    ..
                }
            ),
            "{step:?}"
        );
    }
    assert!(world.wechat.received().is_empty());
    assert_eq!(claims(&world), 0);
}

#[tokio::test(start_paused = true)]
async fn with_drop_a_paused_job_ends_suppressed_without_a_send_and_its_claim_is_released() {
    let world = World::new(Setup {
        pause_mode: PauseMode::Drop,
        ..Setup::default()
    });
    world.app().switch.set_shared(&paused(&[t1()]));
    let state = RetryState::default();
    let outcome = match world.process(&body(template("drop-1")), state).await {
        Step::Finish(o) => o,
        other => panic!("{other:?}"),
    };
    assert_eq!(outcome.status, SendStatus::Suppressed);
    assert_eq!(outcome.reason, Some(OutcomeReason::Paused));
    assert_eq!(outcome.id.as_deref(), Some("drop-1"));
    assert_eq!(outcome.template_id.as_deref(), Some("t1"));
    assert!(outcome.error.as_deref().unwrap().contains("paused"));
    assert_eq!(outcome.attempts, 0);
    assert!(world.wechat.received().is_empty());
    assert_eq!(world.wechat.token_fetches(), 0, "no token was taken");
    assert!(
        world
            .store()
            .calls()
            .contains(&StoreCall::Released("drop-1".into())),
        "{:?}",
        world.store().calls()
    );
    assert!(counted(&world, "dropped"));
}

#[tokio::test(start_paused = true)]
async fn with_drop_a_job_sent_before_the_pause_is_still_a_duplicate_not_suppressed() {
    let world = World::new(Setup {
        sends: vec![code(0)],
        pause_mode: PauseMode::Drop,
        ..Setup::default()
    });
    let job = body(template("sent-1"));
    let first = world.process(&job, RetryState::default()).await;
    assert!(matches!(first, Step::Finish(ref o) if o.status == SendStatus::Sent));
    world.app().switch.set_shared(&paused(&[PauseScope::App]));
    match world.process(&job, RetryState::default()).await {
        Step::Finish(o) => {
            assert_eq!(o.status, SendStatus::Sent);
            assert!(o.duplicate, "{o:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(world.wechat.received().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_job_waits_for_its_time_first_and_then_for_the_pause() {
    let world = World::new(Setup::default());
    world.app().switch.set_shared(&paused(&[t1()]));
    let mut job = template("later-1");
    job["not_before"] = "2026-03-01T09:00:00Z".into();
    match world.process(&body(job), RetryState::default()).await {
        Step::Retry { wait, .. } => {
            assert_eq!(wait, Wait::Until(super::super::step::SCHEDULED))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_held_job_whose_not_after_passes_ends_expired_without_a_send() {
    let world = World::new(Setup::default());
    world.app().switch.set_shared(&paused(&[t1()]));
    let job = body(not_after(template("late-1"), 5));
    let (mut state, mut hops) = (RetryState::default(), 0);
    let outcome = loop {
        match world.process(&job, state).await {
            Step::Retry {
                after, state: s, ..
            } => {
                hops += 1;
                assert!(hops < 50, "still held long past not_after");
                tokio::time::advance(after).await;
                state = s;
            }
            Step::Finish(o) => break o,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(outcome.status, SendStatus::Expired, "{outcome:?}");
    assert!(world.wechat.received().is_empty());
}
