//! The app's send limits in the pipeline: a recipient's cap suppresses or defers the jobs over
//! it, equal content is suppressed within its window, and a reservation is kept only by a job
//! that was sent.

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;

use super::super::limits::{OVER_CAP, content_digest};
use super::fakes::*;
use super::*;
use crate::config::{AppLimits, CapMode, NonZeroSpan, RecipientLimit};
use crate::state::fakes::StoreCall;

fn capped(count: u32, per: Duration, mode: CapMode) -> AppLimits {
    AppLimits {
        recipient_limit: Some(RecipientLimit {
            count: NonZeroU32::new(count).unwrap(),
            per: NonZeroSpan::new(per).unwrap(),
        }),
        cap_mode: mode,
        content_dedup: None,
    }
}

fn deduped(window: Duration) -> AppLimits {
    AppLimits {
        content_dedup: Some(window),
        ..AppLimits::default()
    }
}

fn world(limits: AppLimits, sends: Vec<Result<SendReply, CallError>>) -> World {
    World::new(Setup {
        sends,
        limits,
        ..Setup::default()
    })
}

const DAY: Duration = Duration::from_secs(86_400);

async fn outcome(w: &World, job: serde_json::Value) -> crate::outcome::SendOutcome {
    match w.process(&body(job), RetryState::default()).await {
        Step::Finish(o) => o,
        other => panic!("{other:?}"),
    }
}

/// `template(id)` with its own data: the same recipient, other content.
fn numbered(id: &str) -> serde_json::Value {
    let mut job = template(id);
    job["data"]["k"]["value"] = id.into();
    job
}

#[tokio::test(start_paused = true)]
async fn jobs_over_the_recipients_cap_are_suppressed_without_a_call_or_a_claim_left() {
    let w = world(capped(2, DAY, CapMode::Suppress), vec![]);
    for id in ["c1", "c2"] {
        assert_eq!(outcome(&w, numbered(id)).await.status, SendStatus::Sent);
    }
    let o = outcome(&w, numbered("c3")).await;
    assert_eq!(o.status, SendStatus::Suppressed, "{o:?}");
    assert_eq!(o.reason, Some(OutcomeReason::FrequencyCap));
    let error = o.error.unwrap();
    assert!(
        error.contains("apps.a.recipient_limit") && error.contains("2 sends within 1day"),
        "{error}"
    );
    assert_eq!(o.attempts, 0);
    assert_eq!(
        w.wechat.received().len(),
        2,
        "no call for the suppressed job"
    );
    assert!(
        w.store()
            .calls()
            .contains(&StoreCall::Released("c3".into())),
        "its claim is given up: {:?}",
        w.store().calls()
    );
    // Another recipient has a window of its own.
    let mut other = numbered("c4");
    other["touser"] = "o0000000000000000000000000002".into();
    assert_eq!(outcome(&w, other).await.status, SendStatus::Sent);
    // The window slides: a day after the first two, the recipient may be sent to again.
    tokio::time::advance(DAY).await;
    assert_eq!(outcome(&w, numbered("c5")).await.status, SendStatus::Sent);
}

#[tokio::test(start_paused = true)]
async fn of_many_jobs_for_one_recipient_at_once_exactly_the_cap_are_sent() {
    let w = world(capped(3, DAY, CapMode::Suppress), vec![]);
    *w.wechat.latency.lock() = Duration::from_millis(50);
    let jobs: Vec<Vec<u8>> = (0..40).map(|i| body(numbered(&format!("m{i}")))).collect();
    let steps =
        futures_util::future::join_all(jobs.iter().map(|j| w.process(j, RetryState::default())))
            .await;
    let count = |status| {
        steps
            .iter()
            .filter(|s| matches!(s, Step::Finish(o) if o.status == status))
            .count()
    };
    assert_eq!(count(SendStatus::Sent), 3);
    assert_eq!(count(SendStatus::Suppressed), 37);
    assert_eq!(w.wechat.received().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_send_that_failed_gives_its_slot_back_and_a_sent_one_keeps_it() {
    let w = world(capped(1, DAY, CapMode::Suppress), vec![code(40003)]);
    let failed = outcome(&w, numbered("f1")).await;
    assert_eq!(failed.status, SendStatus::Failed, "{failed:?}");
    assert!(
        w.store()
            .calls()
            .contains(&StoreCall::GaveBack("f1".into()))
    );
    let sent = outcome(&w, numbered("f2")).await;
    assert_eq!(
        sent.status,
        SendStatus::Sent,
        "the failed job's slot was free"
    );
    assert!(
        !w.store()
            .calls()
            .contains(&StoreCall::GaveBack("f2".into()))
    );
    let over = outcome(&w, numbered("f3")).await;
    assert_eq!(over.reason, Some(OutcomeReason::FrequencyCap), "{over:?}");
}

#[tokio::test(start_paused = true)]
async fn a_retry_copy_gives_its_slot_back_and_takes_it_again_on_its_next_turn() {
    let w = world(capped(1, DAY, CapMode::Suppress), vec![code(-1)]);
    let job = body(numbered("r1"));
    let Step::Retry {
        after, state, wait, ..
    } = w.process(&job, RetryState::default()).await
    else {
        panic!("a transient answer is retried")
    };
    assert_eq!(wait, Wait::Transient);
    assert!(
        w.store()
            .calls()
            .contains(&StoreCall::GaveBack("r1".into()))
    );
    tokio::time::advance(after).await;
    let Step::Finish(o) = w.process(&job, state).await else {
        panic!("sent on its second turn")
    };
    assert_eq!(o.status, SendStatus::Sent);
    assert_eq!(o.attempts, 2);
    assert_eq!(
        outcome(&w, numbered("r2")).await.reason,
        Some(OutcomeReason::FrequencyCap)
    );
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_sent_job_takes_no_second_slot() {
    let w = world(capped(2, DAY, CapMode::Suppress), vec![]);
    let first = outcome(&w, numbered("d1")).await;
    assert_eq!(first.status, SendStatus::Sent);
    let again = outcome(&w, numbered("d1")).await;
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.msgid, first.msgid);
    let reservations = w
        .store()
        .calls()
        .iter()
        .filter(|c| matches!(c, StoreCall::Reserved(..)))
        .count();
    assert_eq!(reservations, 1, "{:?}", w.store().calls());
    assert_eq!(outcome(&w, numbered("d2")).await.status, SendStatus::Sent);
}

/// The reservation comes with the claim, before `not_after` and the other policies are met: a
/// job they end gives it back at once.
#[tokio::test(start_paused = true)]
async fn a_job_that_ends_before_its_send_leaves_no_slot_taken() {
    let w = world(capped(1, DAY, CapMode::Suppress), vec![]);
    let expired = outcome(&w, not_after(numbered("e1"), -60)).await;
    assert_eq!(expired.status, SendStatus::Expired);
    assert!(
        w.store()
            .calls()
            .contains(&StoreCall::GaveBack("e1".into())),
        "{:?}",
        w.store().calls()
    );
    assert_eq!(outcome(&w, numbered("e2")).await.status, SendStatus::Sent);
}

#[tokio::test(start_paused = true)]
async fn with_cap_mode_defer_a_job_over_the_cap_waits_until_a_slot_frees_then_is_sent() {
    let hour = Duration::from_secs(3600);
    let w = world(capped(1, hour, CapMode::Defer), vec![]);
    assert_eq!(outcome(&w, numbered("w1")).await.status, SendStatus::Sent);
    tokio::time::advance(Duration::from_secs(600)).await;
    let job = body(numbered("w2"));
    let (mut state, mut waited, mut hops) = (RetryState::default(), Duration::ZERO, 0);
    let o = loop {
        match w.process(&job, state).await {
            Step::Retry {
                after,
                state: next,
                wait,
                ..
            } => {
                assert_eq!(wait, Wait::Until(OVER_CAP));
                assert_eq!(next.attempts, 0, "a deferred job uses no attempt");
                assert_eq!(next.first_try_ms, None, "retry.max_age has not started");
                waited += after;
                hops += 1;
                tokio::time::advance(after).await;
                state = next;
            }
            Step::Finish(o) => break o,
            other => panic!("{other:?}"),
        }
        assert!(hops < 20, "too many hops");
    };
    assert_eq!(o.status, SendStatus::Sent, "{o:?}");
    // The slot frees 50 minutes after w2 first came; it is sent then, within a shortest tier.
    let frees = Duration::from_secs(3000);
    assert!(waited >= frees, "{waited:?}");
    assert!(waited <= frees + w.deps.schedule.tiers()[0], "{waited:?}");
    assert_eq!(w.wechat.received().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn equal_content_under_another_id_is_suppressed_within_the_window() {
    let w = world(deduped(Duration::from_secs(300)), vec![]);
    assert_eq!(outcome(&w, template("s1")).await.status, SendStatus::Sent);
    let o = outcome(&w, template("s2")).await;
    assert_eq!(o.status, SendStatus::Suppressed, "{o:?}");
    assert_eq!(o.reason, Some(OutcomeReason::ContentDuplicate));
    let error = o.error.unwrap();
    assert!(
        error.contains("apps.a.content_dedup") && error.contains("5m"),
        "{error}"
    );
    assert_eq!(w.wechat.received().len(), 1);
    // Other data is other content.
    assert_eq!(outcome(&w, numbered("s3")).await.status, SendStatus::Sent);
    tokio::time::advance(Duration::from_secs(300)).await;
    assert_eq!(outcome(&w, template("s4")).await.status, SendStatus::Sent);
}

#[tokio::test(start_paused = true)]
async fn a_failed_send_leaves_its_content_free_for_the_next_job() {
    let w = world(deduped(Duration::from_secs(300)), vec![code(40003)]);
    assert_eq!(outcome(&w, template("x1")).await.status, SendStatus::Failed);
    assert_eq!(outcome(&w, template("x2")).await.status, SendStatus::Sent);
}

#[tokio::test(start_paused = true)]
async fn without_the_limits_state_the_job_waits_and_nothing_is_sent() {
    let w = world(capped(3, DAY, CapMode::Suppress), vec![]);
    w.store().limits_down.store(true, Ordering::SeqCst);
    let step = w
        .process(&body(numbered("o1")), RetryState::default())
        .await;
    assert!(
        matches!(
            step,
            Step::Retry {
                wait: Wait::NotNow(STATE_DOWN),
                ..
            }
        ),
        "{step:?}"
    );
    assert!(w.wechat.received().is_empty());
    assert!(
        w.store()
            .calls()
            .contains(&StoreCall::Released("o1".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn an_app_without_limits_asks_the_state_nothing_about_them() {
    let w = world(AppLimits::default(), vec![]);
    assert_eq!(outcome(&w, template("n1")).await.status, SendStatus::Sent);
    assert!(
        !w.store()
            .calls()
            .iter()
            .any(|c| matches!(c, StoreCall::Reserved(..) | StoreCall::GaveBack(..)))
    );
}

fn digest_of(job: serde_json::Value) -> String {
    let job = crate::job::parse_with(&body(job), None, Default::default()).expect("valid");
    content_digest(&job)
}

#[test]
fn the_content_digest_ignores_the_id_and_the_key_order_and_nothing_else() {
    let base = digest_of(template("h1"));
    assert_eq!(base.len(), 64);
    assert_eq!(digest_of(template("h2")), base, "the id (client_msg_id)");
    let reordered = serde_json::json!({
        "data": {"k": {"value": "v"}},
        "template_id": "t1",
        "touser": "o0000000000000000000000000001",
        "id": "h3",
    });
    assert_eq!(digest_of(reordered), base, "the producer's key order");
    let mut meta = template("h4");
    meta["meta"] = serde_json::json!({"order": 7});
    assert_eq!(digest_of(meta), base, "meta is not sent");
    let mut touser = template("h5");
    touser["touser"] = "o0000000000000000000000000002".into();
    let mut template_id = template("h6");
    template_id["template_id"] = "t2".into();
    let mut url = template("h7");
    url["url"] = "https://example.com/a".into();
    for (what, other) in [
        ("touser", touser),
        ("template_id", template_id),
        ("data", numbered("h9")),
        ("url", url),
    ] {
        assert_ne!(digest_of(other), base, "{what}");
    }
    let mut as_template = template("h10");
    as_template["data"] = subscribe("h10")["data"].clone();
    assert_ne!(digest_of(subscribe("h8")), digest_of(as_template), "kind");
}

#[tokio::test(start_paused = true)]
async fn a_give_back_that_fails_still_ends_the_job_and_leaves_the_slot_taken() {
    let w = world(capped(1, DAY, CapMode::Suppress), vec![code(40003)]);
    *w.wechat.latency.lock() = Duration::from_secs(1);
    let job = body(numbered("k1"));
    let (step, ()) = tokio::join!(w.process(&job, RetryState::default()), async {
        // The state goes down while WeChat answers.
        tokio::time::sleep(Duration::from_millis(100)).await;
        w.store().limits_down.store(true, Ordering::SeqCst);
    });
    assert!(
        matches!(step, Step::Finish(ref o) if o.status == SendStatus::Failed),
        "{step:?}"
    );
    w.store().limits_down.store(false, Ordering::SeqCst);
    // The slot was not given back: the cap errs toward sending fewer, never more.
    let o = outcome(&w, numbered("k2")).await;
    assert_eq!(o.reason, Some(OutcomeReason::FrequencyCap), "{o:?}");
}

/// A content mark kept in Redis must still match after an upgrade: the digest of a job is what
/// it was when content de-duplication came (these were computed then), nested objects included.
#[test]
fn the_content_digest_stays_what_earlier_releases_computed() {
    let mut nested = template("p1");
    nested["miniprogram"] = serde_json::json!({"pagepath": "p", "appid": "wx1"});
    assert_eq!(
        digest_of(template("h1")),
        "84668fe984b951049436c5e376f7dbbdfd1031c3a5c1515a94914f36f462ce5a"
    );
    assert_eq!(
        digest_of(nested),
        "c48612c240f6aa474cf958d0ce2b24579a19b137b866fe5fb16e86861a85fa7a"
    );
}

/// With a send limit and `honor_preferences` both on, the gates are read in the reservation
/// (one call to the state): a gated job ends with the gate's reason before any WeChat call and
/// takes no slot, and once the gate is lifted the next job takes the slot and is sent.
#[tokio::test(start_paused = true)]
async fn beside_a_limit_the_gates_are_read_in_the_reservation_and_a_gated_job_takes_no_slot() {
    let w = World::new(Setup {
        limits: capped(1, DAY, CapMode::Suppress),
        store_gates: Some(DAY),
        ..Setup::default()
    });
    let gates = w.store().gates();
    let user = "o0000000000000000000000000001";
    let now = T0.unix_timestamp();
    let all = crate::state::GateScope::All;
    let why = crate::state::GateWhy::NotFollowing;
    gates
        .set_gate("a", user, &all, why, now, DAY)
        .await
        .unwrap();
    let o = outcome(&w, numbered("g1")).await;
    assert_eq!(
        (o.status, o.reason, o.attempts),
        (SendStatus::Suppressed, Some(OutcomeReason::NotFollowing), 0),
        "{o:?}"
    );
    assert!(w.wechat.received().is_empty(), "no call for a gated job");
    assert_eq!(
        w.store().calls(),
        [
            StoreCall::Claimed("g1".into()),
            StoreCall::Reserved("g1".into()),
            StoreCall::Released("g1".into()),
        ],
        "the gates were read in the reservation, and nothing is given back"
    );
    gates.lift_gate("a", user, &all).await.unwrap();
    assert_eq!(outcome(&w, numbered("g2")).await.status, SendStatus::Sent);
    // g1 took no slot: g2 took the only one.
    let o = outcome(&w, numbered("g3")).await;
    assert_eq!(o.reason, Some(OutcomeReason::FrequencyCap), "{o:?}");
}
