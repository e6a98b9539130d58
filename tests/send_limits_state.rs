//! The send limits' contract on every state backend: a recipient's sliding window takes at
//! most its count of job ids, a content's mark one, a job asking again takes nothing more, and
//! only its holder gives a slot back. Memory state keeps it for one instance, Redis for every
//! instance: 100 reservations at once from three instances against a cap of 3 get exactly 3.
//! A reservation that asks the recipient's preference gates reads those the state keeps, and a
//! gated one takes nothing; in Redis it reads a stored gate exactly as a lookup does. Taken with
//! the job's claim, it is taken only when the claim is.
//! Redis runs as a single node always, and behind Sentinel and as a Cluster when
//! `TEST_REDIS_SENTINEL_URL` / `TEST_REDIS_CLUSTER_URL` name one (`scripts/redis-ha.sh urls`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use wxcourier::state::{
    Cancels, Claim, ClaimReserving, ContentWindow, GateAsk, GateScope, GateWhy, Holder,
    Idempotency, LimitRequest, RecipientCap, Reservation, SendLimits, State, StateError,
};

#[path = "common/redis_sets.rs"]
mod redis_sets;

fn redis_urls() -> Vec<(&'static str, String)> {
    redis_sets::redis_urls("the send limits")
}

fn open(url: &str) -> Arc<State> {
    Arc::new(State::from_url(url, Duration::from_secs(60), 1000, Duration::from_secs(5)).unwrap())
}

/// Each backend as three instances: for Redis three clients of one store, for memory the one
/// process's state three times.
fn backends() -> Vec<(&'static str, [Arc<State>; 3])> {
    let memory = open("memory");
    let mut all = vec![("memory", [memory.clone(), memory.clone(), memory])];
    for (name, url) in redis_urls() {
        all.push((name, [open(&url), open(&url), open(&url)]));
    }
    all
}

fn app() -> String {
    format!("t_limits_{:08x}", rand::random::<u32>())
}

fn cap(id: &str, count: u32, per: Duration) -> LimitRequest<'_> {
    LimitRequest {
        id,
        cap: Some(RecipientCap {
            touser: "o-user-1",
            count: NonZeroU32::new(count).unwrap(),
            per,
        }),
        content: None,
        gate: None,
    }
}

fn content(id: &str, window: Duration) -> LimitRequest<'_> {
    LimitRequest {
        id,
        cap: None,
        content: Some(ContentWindow {
            digest: "3f2a",
            window,
        }),
        gate: None,
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// Now, in Unix seconds: what the pipeline's clock gives a gate ask.
fn unix_now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_secs() as i64
}

/// A reservation under a cap of 1 and a content mark that asks the gates of its recipient
/// (`o-user-1`) for `template`.
fn gated_ask<'a>(id: &'a str, template: &'a str, now: i64) -> LimitRequest<'a> {
    LimitRequest {
        content: content(id, MINUTE).content,
        gate: Some(GateAsk {
            openid: "o-user-1",
            template,
            now,
        }),
        ..cap(id, 1, MINUTE)
    }
}

fn is_capped(r: Reservation) -> bool {
    matches!(r, Reservation::Capped { .. })
}

#[tokio::test]
async fn a_window_takes_its_count_and_a_job_asking_again_takes_no_second_slot() {
    for (name, [s, other, _]) in backends() {
        let app = app();
        let ok = Reservation::Granted;
        assert_eq!(s.reserve(&app, &cap("j1", 2, MINUTE)).await.unwrap(), ok);
        assert_eq!(
            other.reserve(&app, &cap("j2", 2, MINUTE)).await.unwrap(),
            ok
        );
        let over = s.reserve(&app, &cap("j3", 2, MINUTE)).await.unwrap();
        match over {
            Reservation::Capped { free_in } => assert!(
                free_in <= MINUTE && free_in > MINUTE - Duration::from_secs(5),
                "{name}: {free_in:?}"
            ),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(
            other.reserve(&app, &cap("j1", 2, MINUTE)).await.unwrap(),
            ok,
            "{name}: j1 holds a slot already"
        );
        assert!(
            is_capped(s.reserve(&app, &cap("j3", 2, MINUTE)).await.unwrap()),
            "{name}"
        );
        // Another recipient, another app: windows of their own.
        let mut elsewhere = cap("j3", 2, MINUTE);
        elsewhere.cap.as_mut().unwrap().touser = "o-user-2";
        assert_eq!(s.reserve(&app, &elsewhere).await.unwrap(), ok, "{name}");
        assert_eq!(
            s.reserve(&format!("{app}_b"), &cap("j3", 2, MINUTE))
                .await
                .unwrap(),
            ok
        );
    }
}

#[tokio::test]
async fn only_the_holder_gives_a_slot_back_and_then_it_is_free() {
    for (name, [s, other, _]) in backends() {
        let app = app();
        assert_eq!(
            s.reserve(&app, &cap("g1", 1, MINUTE)).await.unwrap(),
            Reservation::Granted
        );
        other
            .give_back(&app, &cap("stranger", 1, MINUTE))
            .await
            .unwrap();
        assert!(
            is_capped(s.reserve(&app, &cap("g2", 1, MINUTE)).await.unwrap()),
            "{name}"
        );
        other.give_back(&app, &cap("g1", 1, MINUTE)).await.unwrap();
        assert_eq!(
            s.reserve(&app, &cap("g2", 1, MINUTE)).await.unwrap(),
            Reservation::Granted,
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_window_slides_its_oldest_send_out_when_its_time_is_up() {
    let per = Duration::from_millis(600);
    for (name, [s, other, _]) in backends() {
        let app = app();
        assert_eq!(
            s.reserve(&app, &cap("w1", 1, per)).await.unwrap(),
            Reservation::Granted
        );
        let Reservation::Capped { free_in } =
            other.reserve(&app, &cap("w2", 1, per)).await.unwrap()
        else {
            panic!("{name}: the window is full")
        };
        assert!(free_in <= per, "{name}: {free_in:?}");
        tokio::time::sleep(free_in + Duration::from_millis(50)).await;
        assert_eq!(
            other.reserve(&app, &cap("w2", 1, per)).await.unwrap(),
            Reservation::Granted,
            "{name}"
        );
    }
}

#[tokio::test]
async fn equal_content_is_refused_to_other_ids_within_its_window_and_freed_by_its_holder() {
    for (name, [s, other, _]) in backends() {
        let app = app();
        let ok = Reservation::Granted;
        assert_eq!(s.reserve(&app, &content("c1", MINUTE)).await.unwrap(), ok);
        assert_eq!(
            other.reserve(&app, &content("c1", MINUTE)).await.unwrap(),
            ok,
            "{name}"
        );
        assert_eq!(
            other.reserve(&app, &content("c2", MINUTE)).await.unwrap(),
            Reservation::Duplicate,
            "{name}"
        );
        other.give_back(&app, &content("c2", MINUTE)).await.unwrap();
        assert_eq!(
            s.reserve(&app, &content("c3", MINUTE)).await.unwrap(),
            Reservation::Duplicate,
            "{name}: a stranger's give-back frees nothing"
        );
        s.give_back(&app, &content("c1", MINUTE)).await.unwrap();
        assert_eq!(
            s.reserve(&app, &content("c3", MINUTE)).await.unwrap(),
            ok,
            "{name}"
        );
        // A short window ends by itself.
        let short = Duration::from_millis(300);
        let app = format!("{app}_s");
        assert_eq!(s.reserve(&app, &content("e1", short)).await.unwrap(), ok);
        tokio::time::sleep(short + Duration::from_millis(50)).await;
        assert_eq!(
            other.reserve(&app, &content("e2", short)).await.unwrap(),
            ok,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_refused_job_takes_neither_the_slot_nor_the_mark() {
    for (name, [s, _, _]) in backends() {
        let app = app();
        let both = |id| LimitRequest {
            content: content(id, MINUTE).content,
            ..cap(id, 1, MINUTE)
        };
        assert_eq!(
            s.reserve(&app, &both("b1")).await.unwrap(),
            Reservation::Granted
        );
        assert_eq!(
            s.reserve(&app, &both("b2")).await.unwrap(),
            Reservation::Duplicate
        );
        s.give_back(&app, &both("b1")).await.unwrap();
        // b2 took no slot while refused: b3 finds both free.
        assert_eq!(
            s.reserve(&app, &both("b3")).await.unwrap(),
            Reservation::Granted,
            "{name}"
        );
        // Capped on the recipient, b4 leaves its (other) content unmarked for b5.
        let mut b4 = cap("b4", 1, MINUTE);
        b4.content = Some(ContentWindow {
            digest: "other",
            window: MINUTE,
        });
        assert!(is_capped(s.reserve(&app, &b4).await.unwrap()), "{name}");
        let mut b5 = content("b5", MINUTE);
        b5.content.as_mut().unwrap().digest = "other";
        assert_eq!(
            s.reserve(&app, &b5).await.unwrap(),
            Reservation::Granted,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_reservation_meets_the_gates_the_state_keeps_and_a_gated_one_takes_nothing() {
    for (name, [s, other, _]) in backends() {
        let app = app();
        let now = unix_now();
        let gates = s.gate_store();
        let refused = GateScope::Template("t-refused".into());
        gates
            .set_gate(&app, "o-user-1", &refused, GateWhy::Refused, now, MINUTE)
            .await
            .unwrap();
        // Another instance's reservation meets the gate set through this one's store.
        match other
            .reserve(&app, &gated_ask("r1", "t-refused", now))
            .await
        {
            Ok(Reservation::Gated(gate)) => {
                assert_eq!(
                    (gate.openid.as_str(), &gate.scope, gate.why),
                    ("o-user-1", &refused, GateWhy::Refused),
                    "{name}"
                );
                assert_eq!(gate.expires_at, now + 60, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        // The gated job took neither the slot (cap 1) nor the mark: r2 of another template
        // gets both.
        assert_eq!(
            s.reserve(&app, &gated_ask("r2", "t-other", now))
                .await
                .unwrap(),
            Reservation::Granted,
            "{name}"
        );
        // A gate on every template comes first and holds any template back, even one whose
        // slot a job already holds.
        gates
            .set_gate(
                &app,
                "o-user-1",
                &GateScope::All,
                GateWhy::NotFollowing,
                now,
                MINUTE,
            )
            .await
            .unwrap();
        match s.reserve(&app, &gated_ask("r2", "t-refused", now)).await {
            Ok(Reservation::Gated(gate)) => {
                assert_eq!(
                    (gate.scope, gate.why),
                    (GateScope::All, GateWhy::NotFollowing)
                )
            }
            other => panic!("{name}: {other:?}"),
        }
        // Lifted, or lapsed by the ask's clock, a gate holds nothing back.
        gates
            .lift_gate(&app, "o-user-1", &GateScope::All)
            .await
            .unwrap();
        assert_eq!(
            s.reserve(&app, &gated_ask("r2", "t-other", now))
                .await
                .unwrap(),
            Reservation::Granted,
            "{name}: r2 holds its slot already"
        );
        s.give_back(&app, &gated_ask("r2", "t-other", now))
            .await
            .unwrap();
        assert_eq!(
            s.reserve(&app, &gated_ask("r3", "t-refused", now + 60))
                .await
                .unwrap(),
            Reservation::Granted,
            "{name}: the template's gate lapsed at now + 60"
        );
        // Without an ask the gates are not read.
        s.give_back(&app, &gated_ask("r3", "t-refused", now))
            .await
            .unwrap();
        let mut unasked = gated_ask("r4", "t-refused", now);
        unasked.gate = None;
        assert_eq!(
            s.reserve(&app, &unasked).await.unwrap(),
            Reservation::Granted,
            "{name}"
        );
    }
}

/// A claim taken with its reservation: reserved only when the claim is fresh (not for an id
/// sent, claimed elsewhere or cancelled), and a fresh claim of an id that asked before finds
/// its own slot.
#[tokio::test]
async fn a_reservation_taken_with_a_claim_is_taken_only_when_the_claim_is() {
    for (name, [s, other, _]) in backends() {
        let app = app();
        let now = unix_now();
        let take = |s: &Arc<State>, id: &'static str, mine: Holder, previous: Option<Holder>| {
            let (s, app) = (s.clone(), app.clone());
            async move {
                // The cap of 1 alone: every id here has the same content.
                let mut request = gated_ask(id, "t1", now);
                request.content = None;
                s.claim_reserving(&app, id, mine, previous, &request)
                    .await
                    .unwrap()
            }
        };
        let first = Holder::new();
        let (claim, reserved) = take(&s, "k1", first, None).await;
        assert_eq!(
            (claim, reserved),
            (Claim::Fresh(first), Some(Reservation::Granted)),
            "{name}"
        );
        // Claimed elsewhere: no claim, and nothing reserved.
        let (claim, reserved) = take(&other, "k1", Holder::new(), None).await;
        assert_eq!((claim, reserved), (Claim::InFlight, None), "{name}");
        // Another id meets the cap of 1 that k1 holds, with its claim taken.
        let second = Holder::new();
        let (claim, reserved) = take(&other, "k2", second, None).await;
        assert_eq!(claim, Claim::Fresh(second), "{name}");
        assert!(
            matches!(reserved, Some(Reservation::Capped { .. })),
            "{name}: {reserved:?}"
        );
        other.release(&app, "k2", second).await.unwrap();
        // k1 sent: its next delivery is its duplicate and reserves nothing.
        s.record_sent(&app, "k1", Some(9), None, None)
            .await
            .unwrap();
        let (claim, reserved) = take(&other, "k1", Holder::new(), None).await;
        assert_eq!(
            (claim, reserved),
            (Claim::AlreadySent(Some(9)), None),
            "{name}"
        );
        // A cancelled id is answered as such and takes nothing: after k1's slot is given back,
        // k2 gets it although k3 asked first.
        s.record_cancel(&app, "k3", MINUTE).await.unwrap();
        let (claim, reserved) = take(&s, "k3", Holder::new(), None).await;
        assert_eq!((claim, reserved), (Claim::Cancelled, None), "{name}");
        s.give_back(&app, &cap("k1", 1, MINUTE)).await.unwrap();
        let third = Holder::new();
        let (claim, reserved) = take(&s, "k2", third, Some(second)).await;
        assert_eq!(
            (claim, reserved),
            (Claim::Fresh(third), Some(Reservation::Granted)),
            "{name}"
        );
        // The same turn's successor takes the claim over and finds its own slot.
        let fourth = Holder::new();
        let (claim, reserved) = take(&other, "k2", fourth, Some(third)).await;
        assert_eq!(
            (claim, reserved),
            (Claim::Fresh(fourth), Some(Reservation::Granted)),
            "{name}"
        );
        // A gate set meanwhile holds a fresh claim's job back.
        s.gate_store()
            .set_gate(
                &app,
                "o-user-1",
                &GateScope::All,
                GateWhy::NotFollowing,
                now,
                MINUTE,
            )
            .await
            .unwrap();
        let fifth = Holder::new();
        let (claim, reserved) = take(&s, "k5", fifth, None).await;
        assert_eq!(claim, Claim::Fresh(fifth), "{name}");
        assert!(
            matches!(reserved, Some(Reservation::Gated(_))),
            "{name}: {reserved:?}"
        );
    }
}

/// Gates as earlier versions and hand edits may have left them in Redis: the reservation's
/// script judges each stored value as the lookup (`Gates::gate_for`) does, so both paths hold
/// back the same jobs.
#[tokio::test]
async fn a_reservation_reads_stored_gates_exactly_as_a_gate_lookup_does() {
    let now = unix_now();
    let far = now + 3600;
    let values = [
        format!("recipient_refused {now} {far}"),
        format!("not_following {now} {far} extra parts"),
        format!("not_following +{now} +{far}"),
        format!("recipient_refused {now} {now}"),
        format!("recipient_refused {now} {}", now - 1),
        format!("refused {now} {far}"),
        format!("recipient_refused {now} {far}x"),
        format!("recipient_refused  {now} {far}"),
        format!("recipient_refused {now}"),
        format!("recipient_refused {now} 99999999999999999999"),
        format!("recipient_refused {now} 999999999999999999"),
        "".to_owned(),
        format!("recipient_refused 1.5 {far}"),
    ];
    let mut raw = redis::Client::open(redis_sets::REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let s = open(redis_sets::REDIS_URL);
    let gates = s.gate_store();
    let mut held = 0;
    for (i, value) in values.iter().enumerate() {
        for field in ["all", "t:t-forged"] {
            let app = app();
            let key = format!("wxcourier:{{{app}}}:gate:o-user-1");
            let _: i64 = redis::cmd("HSET")
                .arg(&key)
                .arg(field)
                .arg(value)
                .query_async(&mut raw)
                .await
                .unwrap();
            let looked_up = gates
                .gate_for(&app, "o-user-1", "t-forged", now)
                .await
                .unwrap();
            let id = format!("f{i}");
            let reserved = s.reserve(&app, &gated_ask(&id, "t-forged", now)).await;
            match (&looked_up, reserved) {
                (Some(gate), Ok(Reservation::Gated(by_script))) => {
                    assert_eq!(gate, &by_script, "{value:?} in {field}");
                    held += 1;
                }
                (None, Ok(Reservation::Granted)) => {}
                (lookup, reservation) => {
                    panic!("{value:?} in {field}: lookup {lookup:?}, reservation {reservation:?}")
                }
            }
            let _: i64 = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut raw)
                .await
                .unwrap();
            let _ = s.give_back(&app, &gated_ask(&id, "t-forged", now)).await;
        }
    }
    // The first three values and the 18-digit one are live gates, on either field.
    assert_eq!(held, 8, "the live gates among the forged values");
}

/// 100 jobs for one recipient at once, spread over three instances: exactly `count` granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_100_concurrent_reservations_against_a_cap_of_3_exactly_3_are_granted() {
    for (name, instances) in backends() {
        let app = app();
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let (s, app) = (instances[i % 3].clone(), app.clone());
                tokio::spawn(async move {
                    let id = format!("race-{i}");
                    s.reserve(&app, &cap(&id, 3, MINUTE)).await.unwrap()
                })
            })
            .collect();
        let (mut granted, mut capped) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Reservation::Granted => granted += 1,
                Reservation::Capped { .. } => capped += 1,
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!((granted, capped), (3, 97), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_100_concurrent_jobs_with_equal_content_exactly_one_is_granted() {
    for (name, instances) in backends() {
        let app = app();
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let (s, app) = (instances[i % 3].clone(), app.clone());
                tokio::spawn(async move {
                    let id = format!("same-{i}");
                    s.reserve(&app, &content(&id, MINUTE)).await.unwrap()
                })
            })
            .collect();
        let mut granted = 0;
        for t in tasks {
            match t.await.unwrap() {
                Reservation::Granted => granted += 1,
                Reservation::Duplicate => {}
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(granted, 1, "{name}");
    }
}

#[tokio::test]
async fn a_redis_outage_is_a_state_error_for_the_limits() {
    let s = State::from_url("redis://127.0.0.1:1", MINUTE, 10, Duration::from_secs(5)).unwrap();
    let app = app();
    let claimed = s
        .claim_reserving(&app, "o1", Holder::new(), None, &cap("o1", 3, MINUTE))
        .await;
    for e in [
        s.reserve(&app, &cap("o1", 3, MINUTE)).await.unwrap_err(),
        s.give_back(&app, &cap("o1", 3, MINUTE)).await.unwrap_err(),
        claimed.unwrap_err(),
    ] {
        assert!(
            matches!(e, StateError::Unavailable(_) | StateError::Timeout(_)),
            "{e:?}"
        );
    }
    assert!(!s.health().is_up(), "the outage marks the state down");
}
