//! Respect "no": with `honor_preferences`, a gate holds a job back as `suppressed` with its
//! reason before any WeChat call, token or rate slot; WeChat's 43101 and 43004 set the gate the
//! next job meets; gates lapse; and without the setting nothing is held back or set.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::fakes::*;
use super::*;
use crate::outcome::SendOutcome;
use crate::preferences::PreferenceGates;
use crate::state::gates::{Gate, GateScope, GateWhy, Gates, MemoryGates};
use crate::state::{StateError, StateResult};

const USER: &str = "o0000000000000000000000000001";
const HOUR: Duration = Duration::from_secs(3600);

fn honouring(store: Arc<dyn Gates>, sends: Vec<Result<SendReply, CallError>>) -> World {
    World::new(Setup {
        sends,
        preferences: Some(PreferenceGates { store, ttl: HOUR }),
        ..Setup::default()
    })
}

fn memory() -> Arc<dyn Gates> {
    Arc::new(MemoryGates::new(100))
}

fn now() -> i64 {
    T0.unix_timestamp()
}

fn with_template(mut job: serde_json::Value, template: &str) -> serde_json::Value {
    job["template_id"] = template.into();
    job
}

async fn finish(world: &World, job: serde_json::Value) -> SendOutcome {
    match world.process(&body(job), RetryState::default()).await {
        Step::Finish(o) => o,
        other => panic!("{other:?}"),
    }
}

fn assert_suppressed(o: &SendOutcome, reason: OutcomeReason) {
    assert_eq!(
        (o.status, o.reason),
        (SendStatus::Suppressed, Some(reason)),
        "{o:?}"
    );
    assert_eq!((o.attempts, o.errcode, o.msgid), (0, None, None), "{o:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unfollow_gate_suppresses_template_and_subscription_jobs_without_a_call() {
    let store = memory();
    store
        .set_gate(
            "a",
            USER,
            &GateScope::All,
            GateWhy::NotFollowing,
            now(),
            HOUR,
        )
        .await
        .unwrap();
    let world = honouring(store, vec![]);
    for job in [template("t-1"), subscribe("s-1")] {
        let id = job["id"].as_str().unwrap().to_owned();
        let o = finish(&world, job).await;
        assert_suppressed(&o, OutcomeReason::NotFollowing);
        assert!(
            o.error.as_deref().unwrap().contains("stopped following"),
            "{o:?}"
        );
        // The claim it took is given back: a later job with this id is not held by it.
        let calls = world.store().calls();
        assert!(
            calls.contains(&StoreCall::Released(id.clone())),
            "{calls:?}"
        );
    }
    assert!(world.wechat.received().is_empty(), "no WeChat call");
    assert_eq!(world.wechat.token_fetches(), 0, "no token taken");
    assert_eq!(
        world
            .app()
            .rate
            .turns
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no rate slot"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_template_is_suppressed_for_that_user_and_others_are_sent() {
    let store = memory();
    store
        .set_gate(
            "a",
            USER,
            &GateScope::Template("t1".into()),
            GateWhy::Refused,
            now(),
            HOUR,
        )
        .await
        .unwrap();
    let world = honouring(store.clone(), vec![code(0), code(0)]);
    let o = finish(&world, template("refused")).await;
    assert_suppressed(&o, OutcomeReason::RecipientRefused);
    assert!(
        o.error.as_deref().unwrap().contains("refused template t1"),
        "{o:?}"
    );
    let other_template = finish(&world, with_template(template("other"), "t2")).await;
    assert_eq!(other_template.status, SendStatus::Sent);
    let mut other_user = template("other-user");
    other_user["touser"] = "o0000000000000000000000000002".into();
    assert_eq!(finish(&world, other_user).await.status, SendStatus::Sent);
    // An accept lifts it.
    store
        .lift_gate("a", USER, &GateScope::Template("t1".into()))
        .await
        .unwrap();
    world.wechat.answer(code(0));
    assert_eq!(
        finish(&world, template("accepted")).await.status,
        SendStatus::Sent
    );
    assert_eq!(world.wechat.received().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_43101_fails_its_job_and_gates_that_template_for_the_next() {
    let store = memory();
    let world = honouring(store.clone(), vec![code(43101), code(0)]);
    let first = finish(&world, template("first")).await;
    assert_eq!(
        (first.status, first.reason, first.errcode),
        (
            SendStatus::Failed,
            Some(OutcomeReason::RecipientRefused),
            Some(43101)
        )
    );
    let gate: Option<Gate> = store.gate_for("a", USER, "t1", now()).await.unwrap();
    let gate = gate.expect("WeChat's refusal set the gate");
    assert_eq!(
        (gate.why, gate.expires_at),
        (GateWhy::Refused, now() + 3600)
    );
    assert_suppressed(
        &finish(&world, template("second")).await,
        OutcomeReason::RecipientRefused,
    );
    // Another template is still sent.
    let other = finish(&world, with_template(template("third"), "t2")).await;
    assert_eq!(other.status, SendStatus::Sent);
    assert_eq!(world.wechat.received().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_43004_fails_its_job_and_gates_every_template_until_it_lapses() {
    let store = memory();
    let world = honouring(store, vec![code(43004), code(0)]);
    let first = finish(&world, subscribe("first")).await;
    assert_eq!(
        (first.status, first.reason),
        (SendStatus::Failed, Some(OutcomeReason::NotFollowing))
    );
    let second = finish(&world, with_template(template("second"), "t7")).await;
    assert_suppressed(&second, OutcomeReason::NotFollowing);
    // Once gate_ttl has passed the gate holds nothing back.
    tokio::time::advance(HOUR).await;
    assert_eq!(
        finish(&world, template("later")).await.status,
        SendStatus::Sent
    );
    assert_eq!(world.wechat.received().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn without_honor_preferences_refusals_set_nothing_and_nothing_is_held_back() {
    let world = World::new(Setup {
        sends: vec![code(43101), code(43101)],
        ..Setup::default()
    });
    for id in ["first", "second"] {
        let o = finish(&world, template(id)).await;
        assert_eq!(
            (o.status, o.errcode),
            (SendStatus::Failed, Some(43101)),
            "{o:?}"
        );
    }
    assert_eq!(world.wechat.received().len(), 2, "both went to WeChat");
}

#[tokio::test(start_paused = true)]
async fn a_job_already_sent_stays_sent_when_a_gate_comes_after_it() {
    let store = memory();
    let world = honouring(store.clone(), vec![code(0)]);
    assert_eq!(
        finish(&world, template("once")).await.status,
        SendStatus::Sent
    );
    store
        .set_gate(
            "a",
            USER,
            &GateScope::All,
            GateWhy::NotFollowing,
            now(),
            HOUR,
        )
        .await
        .unwrap();
    let again = finish(&world, template("once")).await;
    assert_eq!(
        (again.status, again.duplicate),
        (SendStatus::Sent, true),
        "{again:?}"
    );
}

/// Gates whose backend is unreachable.
struct DownGates;

fn down<T: Send + 'static>() -> BoxFuture<'static, StateResult<T>> {
    Box::pin(async {
        Err(StateError::Unavailable(
            "connection refused (a test outage)".into(),
        ))
    })
}

impl Gates for DownGates {
    fn set_gate<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a GateScope,
        _: GateWhy,
        _: i64,
        _: Duration,
    ) -> BoxFuture<'a, StateResult<()>> {
        down()
    }
    fn lift_gate<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a GateScope,
    ) -> BoxFuture<'a, StateResult<()>> {
        down()
    }
    fn gate_for<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
        _: i64,
    ) -> BoxFuture<'a, StateResult<Option<Gate>>> {
        down()
    }
    fn list_gates<'a>(
        &'a self,
        _: &'a str,
        _: Option<&'a str>,
        _: i64,
    ) -> BoxFuture<'a, StateResult<Vec<Gate>>> {
        down()
    }
    fn clear_gates<'a>(
        &'a self,
        _: &'a str,
        _: Option<&'a str>,
        _: i64,
    ) -> BoxFuture<'a, StateResult<usize>> {
        down()
    }
}

#[tokio::test(start_paused = true)]
async fn gates_that_cannot_be_read_hold_the_job_in_the_broker_without_a_call() {
    let world = honouring(Arc::new(DownGates), vec![]);
    match world
        .process(&body(template("held")), RetryState::default())
        .await
    {
        Step::Retry { wait, state, .. } => {
            assert_eq!(wait, Wait::NotNow(STATE_DOWN));
            assert_eq!(state.attempts, 0);
        }
        other => panic!("{other:?}"),
    }
    assert!(world.wechat.received().is_empty());
    assert!(
        world
            .store()
            .calls()
            .contains(&StoreCall::Released("held".into()))
    );
}

/// The gate is read while the claim is taken, but counts only once the claim is held: a job
/// already sent gets its first outcome again, even while the gates cannot be read.
#[tokio::test(start_paused = true)]
async fn a_job_already_sent_stays_sent_while_the_gates_cannot_be_read() {
    let world = honouring(Arc::new(DownGates), vec![]);
    world
        .store()
        .memory()
        .record_sent("a", "sent-before", Some(77), None, None);
    let again = finish(&world, template("sent-before")).await;
    assert_eq!(
        (again.status, again.duplicate, again.msgid),
        (SendStatus::Sent, true, Some(77)),
        "{again:?}"
    );
    assert!(world.wechat.received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refusal_whose_gate_cannot_be_set_still_ends_failed_as_wechat_said() {
    /// Gates that read, but cannot be written.
    struct WriteDown(MemoryGates);
    impl Gates for WriteDown {
        fn set_gate<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a GateScope,
            _: GateWhy,
            _: i64,
            _: Duration,
        ) -> BoxFuture<'a, StateResult<()>> {
            down()
        }
        fn lift_gate<'a>(
            &'a self,
            a: &'a str,
            o: &'a str,
            s: &'a GateScope,
        ) -> BoxFuture<'a, StateResult<()>> {
            self.0.lift_gate(a, o, s)
        }
        fn gate_for<'a>(
            &'a self,
            a: &'a str,
            o: &'a str,
            t: &'a str,
            n: i64,
        ) -> BoxFuture<'a, StateResult<Option<Gate>>> {
            self.0.gate_for(a, o, t, n)
        }
        fn list_gates<'a>(
            &'a self,
            a: &'a str,
            o: Option<&'a str>,
            n: i64,
        ) -> BoxFuture<'a, StateResult<Vec<Gate>>> {
            self.0.list_gates(a, o, n)
        }
        fn clear_gates<'a>(
            &'a self,
            a: &'a str,
            o: Option<&'a str>,
            n: i64,
        ) -> BoxFuture<'a, StateResult<usize>> {
            self.0.clear_gates(a, o, n)
        }
    }
    let world = honouring(
        Arc::new(WriteDown(MemoryGates::new(10))),
        vec![code(43101), code(43101)],
    );
    for id in ["first", "second"] {
        let o = finish(&world, template(id)).await;
        assert_eq!(
            (o.status, o.errcode),
            (SendStatus::Failed, Some(43101)),
            "{o:?}"
        );
    }
    assert_eq!(
        world.wechat.received().len(),
        2,
        "no gate was set, so both were sent"
    );
}
