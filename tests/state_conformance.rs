//! One set of expectations for every state backend: what memory state promises one instance,
//! Redis state promises every instance. Each capability's contract runs against every backend
//! that declares it (idempotency and reports: both; the shared token and rate, with the rate
//! script's grants: Redis), on fresh app names, and every backend's declaration is checked
//! against what it hands out. Redis runs as a single node always, and also behind Sentinel and
//! as a Cluster when `TEST_REDIS_SENTINEL_URL` / `TEST_REDIS_CLUSTER_URL` name one
//! (`scripts/redis-ha.sh` starts both); an unset one is skipped with a note.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wxcourier::config::TokenMode;
use wxcourier::state::rate_lease::{RateLease, SlotGrant};
use wxcourier::state::{
    Claim, ClaimReserving, Holder, Idempotency, LimitRequest, RecipientCap, Renewal, ReportKey,
    Reports, SharedRate, SharedTokens, State, StateError,
};
use wxcourier::types::{Secret, TraceHeaders};
use wxcourier::wechat::client::{TokenError, WechatClient};
use wxcourier::wechat::shared_token::SharedTokenSource;
use wxcourier::wechat::token::{TokenSource, WechatTokenSource};

#[path = "common/redis_sets.rs"]
mod redis_sets;
use redis_sets::REDIS_URL;

/// Each Redis deployment to check, by name: the single node, then Sentinel and Cluster when
/// their URLs are set.
fn redis_urls() -> Vec<(&'static str, String)> {
    redis_sets::redis_urls("the state contract")
}

fn open(url: &str, in_flight_ttl: Duration) -> State {
    State::from_url(url, Duration::from_secs(60), 1000, in_flight_ttl).unwrap()
}

fn backends() -> Vec<(&'static str, State)> {
    let mut all = vec![(
        "memory",
        State::from_url(
            "memory",
            Duration::from_secs(60),
            1000,
            Duration::from_secs(5),
        )
        .unwrap(),
    )];
    for (name, url) in redis_urls() {
        all.push((name, open(&url, Duration::from_secs(5))));
    }
    all
}

/// The URL of the Redis deployment named `name`, for a second instance on the same store.
fn redis_url(name: &str) -> String {
    redis_urls()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, url)| url)
        .unwrap_or_else(|| panic!("{name} is not a Redis backend"))
}

fn app() -> String {
    format!("t_state_{:08x}", rand::random::<u32>())
}

fn fresh(name: &str, c: Claim) -> Holder {
    match c {
        Claim::Fresh(h) => h,
        other => panic!("{name}: expected a fresh claim, got {other:?}"),
    }
}

#[tokio::test]
async fn each_backend_declares_what_it_hands_out() {
    for (name, s) in backends() {
        let caps = s.capabilities();
        assert!(name.starts_with(caps.backend), "{name}: {}", caps.backend);
        assert_eq!(caps.shared_tokens, s.token_share().is_some(), "{name}");
        assert_eq!(caps.shared_rate, s.rate_share().is_some(), "{name}");
        let shared = caps.shared_ids && caps.shared_tokens && caps.shared_rate;
        let none = !caps.shared_ids && !caps.shared_tokens && !caps.shared_rate;
        match name {
            "memory" => assert!(none, "{name}: {caps:?}"),
            _ => assert!(shared, "{name}: {caps:?}"),
        }
    }
}

#[tokio::test]
async fn a_claim_is_exclusive_and_only_its_holder_releases_or_renews_it() {
    for (name, s) in backends() {
        let app = app();
        let first = fresh(name, s.claim(&app, "j1").await.unwrap());
        assert_eq!(
            s.claim(&app, "j1").await.unwrap(),
            Claim::InFlight,
            "{name}"
        );
        assert_eq!(
            s.renew(&app, "j1", first).await.unwrap(),
            Renewal::Held,
            "{name}"
        );
        s.release(&app, "j1", Holder::new()).await.unwrap();
        assert_eq!(
            s.claim(&app, "j1").await.unwrap(),
            Claim::InFlight,
            "{name}: a stranger's release removes nothing"
        );
        s.release(&app, "j1", first).await.unwrap();
        let second = fresh(name, s.claim(&app, "j1").await.unwrap());
        assert_eq!(
            s.renew(&app, "j1", first).await.unwrap(),
            Renewal::Lost,
            "{name}"
        );
        s.record_sent(&app, "j1", Some(42), None, None)
            .await
            .unwrap();
        assert_eq!(
            s.renew(&app, "j1", second).await.unwrap(),
            Renewal::AlreadySent(Some(42)),
            "{name}"
        );
        assert_eq!(
            s.claim(&app, "j1").await.unwrap(),
            Claim::AlreadySent(Some(42)),
            "{name}"
        );
        s.release(&app, "j1", second).await.unwrap();
        assert_eq!(
            s.claim(&app, "j1").await.unwrap(),
            Claim::AlreadySent(Some(42)),
            "{name}: releasing a claim that became a send keeps the send"
        );
        fresh(name, s.claim(&format!("{app}x"), "j1").await.unwrap());
    }
}

#[tokio::test]
async fn a_claim_left_by_the_jobs_previous_turn_is_taken_over_and_no_other() {
    for (name, s) in backends() {
        let app = app();
        // A turn whose claim reached the store though its call timed out, or whose release
        // failed: its claim stands, and the retry copy names it.
        let before = Holder::new();
        assert_eq!(
            s.claim_as(&app, "j1", before, None).await.unwrap(),
            Claim::Fresh(before),
            "{name}"
        );
        let stranger = Holder::new();
        assert_eq!(
            s.claim_as(&app, "j1", Holder::new(), Some(stranger))
                .await
                .unwrap(),
            Claim::InFlight,
            "{name}: naming another holder takes nothing"
        );
        let next = Holder::new();
        assert_eq!(
            s.claim_as(&app, "j1", next, Some(before)).await.unwrap(),
            Claim::Fresh(next),
            "{name}: the next turn takes its previous turn's claim over"
        );
        assert_eq!(
            s.renew(&app, "j1", before).await.unwrap(),
            Renewal::Lost,
            "{name}: the earlier turn holds nothing now"
        );
        assert_eq!(
            s.claim_as(&app, "j1", Holder::new(), Some(before))
                .await
                .unwrap(),
            Claim::InFlight,
            "{name}: a copy naming the earlier turn (an ack that was lost) does not take it back"
        );
        s.record_sent(&app, "j1", Some(43), None, None)
            .await
            .unwrap();
        assert_eq!(
            s.claim_as(&app, "j1", Holder::new(), Some(next))
                .await
                .unwrap(),
            Claim::AlreadySent(Some(43)),
            "{name}: a sent id is never taken over"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_deliveries_claiming_one_id_at_once_exactly_one_wins() {
    for (name, s) in backends() {
        let s = Arc::new(s);
        let app = app();
        let claims: Vec<_> = (0..20)
            .map(|_| {
                let (s, app) = (s.clone(), app.clone());
                tokio::spawn(async move { s.claim(&app, "race").await.unwrap() })
            })
            .collect();
        let mut fresh = 0;
        for c in claims {
            match c.await.unwrap() {
                Claim::Fresh(_) => fresh += 1,
                Claim::InFlight => {}
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(fresh, 1, "{name}");
    }
}

#[tokio::test]
async fn a_lapsed_claim_nobody_took_is_taken_again_by_its_holder() {
    // Redis claims lapse after their lifetime; memory claims never do (their holder is in
    // this process), so renewal finds them held either way.
    for (name, url) in redis_urls() {
        let s = open(&url, Duration::from_millis(200));
        let app = app();
        let holder = fresh(name, s.claim(&app, "j2").await.unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            s.renew(&app, "j2", holder).await.unwrap(),
            Renewal::Held,
            "{name}"
        );
        assert_eq!(
            s.claim(&app, "j2").await.unwrap(),
            Claim::InFlight,
            "{name}"
        );
    }
}

/// The reports contract (msgid → job, and report marks), for any backend: the callback holds
/// it as `dyn Reports`, so it is checked that way.
async fn reports_contract(name: &str, ids: &impl Idempotency, r: &dyn Reports) {
    let app = app();
    let meta = serde_json::json!({"order": 1842});
    ids.record_sent(&app, "j3", Some(u64::MAX - 1), Some(&meta), None)
        .await
        .unwrap();
    let job = r.job_for_msgid(&app, u64::MAX - 1).await.unwrap().unwrap();
    assert_eq!((job.id.as_str(), job.meta), ("j3", Some(meta)), "{name}");
    assert_eq!(job.trace, None, "{name}");
    assert!(r.job_for_msgid(&app, 7).await.unwrap().is_none(), "{name}");
    // A job's trace headers come back with it, for its delivery report.
    for tracestate in [None, Some("rojo=00f067aa0ba902b7".to_owned())] {
        let trace = TraceHeaders {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate,
        };
        ids.record_sent(&app, "j8", Some(8), None, Some(&trace))
            .await
            .unwrap();
        let job = r.job_for_msgid(&app, 8).await.unwrap().unwrap();
        assert_eq!((job.id.as_str(), job.trace), ("j8", Some(trace)), "{name}");
    }
    let report = ReportKey::MsgId(9);
    assert!(r.mark_report(&app, &report).await.unwrap(), "{name}");
    assert!(!r.mark_report(&app, &report).await.unwrap(), "{name}");
    r.unmark_report(&app, &report).await.unwrap();
    assert!(r.mark_report(&app, &report).await.unwrap(), "{name}");
    r.unmark_report(&app, &ReportKey::MsgId(10))
        .await
        .expect("un-marking what was never marked is no error");

    let event = ReportKey::Event(
        r#"["subscribe_msg_popup_event","1610969440","oia2","VRR0","reject"]"#.into(),
    );
    assert!(r.mark_report(&app, &event).await.unwrap(), "{name}");
    assert!(!r.mark_report(&app, &event).await.unwrap(), "{name}");
    // Another key, another app, and a report MsgID are all separate.
    let ReportKey::Event(text) = &event else {
        unreachable!()
    };
    let accepted = ReportKey::Event(text.replace("reject", "accept"));
    assert!(r.mark_report(&app, &accepted).await.unwrap(), "{name}");
    let other_app = format!("{app}x");
    assert!(r.mark_report(&other_app, &event).await.unwrap(), "{name}");
    let same_number = ReportKey::MsgId(1610969440);
    assert!(r.mark_report(&app, &same_number).await.unwrap(), "{name}");
    r.unmark_report(&app, &event).await.unwrap();
    assert!(r.mark_report(&app, &event).await.unwrap(), "{name}");
}

#[tokio::test]
async fn sent_jobs_map_back_from_their_msgid_and_reports_are_marked_once() {
    for (name, s) in backends() {
        reports_contract(name, &s, &s).await;
    }
}

#[tokio::test]
async fn an_id_sent_without_a_msgid_is_never_sent_again_and_nothing_is_kept_under_msgid_0() {
    for (name, s) in backends() {
        let app = app();
        let holder = fresh(name, s.claim(&app, "j4").await.unwrap());
        s.record_sent(&app, "j4", None, None, None).await.unwrap();
        assert_eq!(
            s.claim(&app, "j4").await.unwrap(),
            Claim::AlreadySent(None),
            "{name}"
        );
        assert_eq!(
            s.renew(&app, "j4", holder).await.unwrap(),
            Renewal::AlreadySent(None),
            "{name}"
        );
        // A msgid of 0 is no msgid.
        s.record_sent(&app, "j5", Some(0), None, None)
            .await
            .unwrap();
        assert_eq!(
            s.claim(&app, "j5").await.unwrap(),
            Claim::AlreadySent(None),
            "{name}"
        );
        assert!(
            Reports::job_for_msgid(&s, &app, 0).await.unwrap().is_none(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_unmark_on_an_unreachable_backend_is_an_error_not_silence() {
    // Nothing listens on port 1: every call fails. A failed un-mark must say so, or WeChat's
    // retry of the push would be taken for a repeat and the report lost without a word.
    let s = State::from_url(
        "redis://127.0.0.1:1",
        Duration::from_secs(60),
        10,
        Duration::from_secs(5),
    )
    .unwrap();
    let err = s
        .unmark_report("a", &ReportKey::MsgId(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StateError::Unavailable(_) | StateError::Timeout(_)),
        "{err:?}"
    );
}

/// The shared-token contract, for any backend that provides it.
async fn shared_tokens_contract(name: &str, t: &impl SharedTokens) {
    let app = app();
    assert!(t.token(&app).await.unwrap().is_none(), "{name}: none yet");
    t.store_token(&app, &Secret::new("tok-1"), Duration::from_secs(10))
        .await
        .unwrap();
    let (token, left) = t.token(&app).await.unwrap().expect("stored");
    assert_eq!(token.expose(), "tok-1", "{name}");
    assert!(
        left > Duration::from_secs(9) && left <= Duration::from_secs(10),
        "{name}: {left:?}"
    );
    // A token lives only as long as it was stored for.
    let other = format!("{app}x");
    t.store_token(&other, &Secret::new("brief"), Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(t.token(&other).await.unwrap().is_none(), "{name}: expired");

    let hold = Duration::from_secs(10);
    assert!(t.lock_refresh(&app, "h1", hold).await.unwrap(), "{name}");
    assert!(!t.lock_refresh(&app, "h2", hold).await.unwrap(), "{name}");
    t.unlock_refresh(&app, "h2").await.unwrap();
    assert!(
        !t.lock_refresh(&app, "h3", hold).await.unwrap(),
        "{name}: only the holder unlocks"
    );
    t.unlock_refresh(&app, "h1").await.unwrap();
    assert!(t.lock_refresh(&app, "h2", hold).await.unwrap(), "{name}");
    // A lock whose holder died lapses.
    assert!(
        t.lock_refresh(&other, "dead", Duration::from_millis(100))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        t.lock_refresh(&other, "next", hold).await.unwrap(),
        "{name}"
    );
}

#[tokio::test]
async fn every_backend_that_shares_tokens_keeps_its_contract() {
    let mut checked = 0;
    for (name, s) in backends() {
        match s.token_share() {
            Some(t) => {
                shared_tokens_contract(name, &t).await;
                checked += 1;
            }
            None => assert!(!s.capabilities().shared_tokens, "{name}"),
        }
    }
    assert_eq!(
        checked,
        redis_urls().len(),
        "every Redis deployment shares tokens"
    );
}

/// The shared-rate contract: as many slots as are free up to what was asked, a wait when none
/// is, and one bucket for every instance on the same store.
async fn shared_rate_contract(name: &str, one: &impl SharedRate, two: &impl SharedRate) {
    let app = &app();
    // 10 slots a second, 10 at once.
    let interval = Duration::from_millis(100);
    let grant = |s: u8, want| async move {
        match s {
            1 => one.grant(app, interval, 10, want).await.unwrap(),
            _ => two.grant(app, interval, 10, want).await.unwrap(),
        }
    };
    assert_eq!(grant(1, 4).await, SlotGrant::Slots(4), "{name}");
    assert_eq!(
        grant(2, 4).await,
        SlotGrant::Slots(4),
        "{name}: the other instance draws on the same bucket"
    );
    assert_eq!(
        grant(1, 4).await,
        SlotGrant::Slots(2),
        "{name}: only 2 of the burst left"
    );
    match grant(2, 1).await {
        SlotGrant::Wait(wait) => assert!(
            wait > Duration::ZERO && wait <= interval,
            "{name}: wait {wait:?}"
        ),
        other => panic!("{name}: expected a wait, got {other:?}"),
    }
    tokio::time::sleep(interval * 3).await;
    match grant(1, 10).await {
        SlotGrant::Slots(n) => assert!((2..=4).contains(&n), "{name}: {n} slots after 300 ms"),
        other => panic!("{name}: expected slots, got {other:?}"),
    }
}

/// Two instances, each with its lease on the shared bucket, send at the rate together.
async fn leases_keep_the_rate_together(name: &str, one: &impl SharedRate, two: &impl SharedRate) {
    let app = app();
    let (interval, burst) = (Duration::from_millis(50), 2);
    let leases = [
        RateLease::new(interval, burst),
        RateLease::new(interval, burst),
    ];
    let start = Instant::now();
    for i in 0..8 {
        let lease = &leases[i % 2];
        match i % 2 {
            0 => {
                lease
                    .take(|want| one.grant(&app, interval, burst, want))
                    .await
            }
            _ => {
                lease
                    .take(|want| two.grant(&app, interval, burst, want))
                    .await
            }
        }
        .unwrap();
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1000),
        "{name}: 8 sends at 20/s with a burst of 2 took {took:?}"
    );
}

#[tokio::test]
async fn every_backend_that_shares_the_rate_keeps_its_contract() {
    let mut checked = 0;
    for (name, s) in backends() {
        match s.rate_share() {
            Some(one) => {
                // A second instance: its own connection to the same store.
                let other = open(&redis_url(name), Duration::from_secs(5));
                let two = other.rate_share().unwrap();
                shared_rate_contract(name, &one, &two).await;
                leases_keep_the_rate_together(name, &one, &two).await;
                checked += 1;
            }
            None => assert!(!s.capabilities().shared_rate, "{name}"),
        }
    }
    assert_eq!(
        checked,
        redis_urls().len(),
        "every Redis deployment shares the rate"
    );
}

/// A Redis nobody answers at: nothing listens on port 1.
fn unreachable_redis() -> State {
    State::from_url(
        "redis://127.0.0.1:1",
        Duration::from_secs(60),
        10,
        Duration::from_secs(5),
    )
    .unwrap()
}

fn is_state_outage(e: &StateError) -> bool {
    matches!(e, StateError::Unavailable(_) | StateError::Timeout(_))
        && e.to_string()
            .contains("shared state (Redis) is unavailable")
}

#[tokio::test]
async fn a_redis_outage_is_a_state_error_in_every_capability() {
    let s = unreachable_redis();
    let app = app();
    let e = s.claim(&app, "j").await.unwrap_err();
    assert!(is_state_outage(&e), "{e:?}");
    assert!(!s.health().is_up(), "the outage marks the state down");
    let e = s
        .record_sent(&app, "j", Some(1), None, None)
        .await
        .unwrap_err();
    assert!(is_state_outage(&e), "{e:?}");
    let e = s.token_share().unwrap().token(&app).await.unwrap_err();
    assert!(is_state_outage(&e), "{e:?}");
    let rate = s.rate_share().unwrap();
    let e = rate
        .grant(&app, Duration::from_millis(10), 1, 1)
        .await
        .unwrap_err();
    assert!(is_state_outage(&e), "{e:?}");
    assert!(s.ping().await.is_err());
}

#[tokio::test]
async fn a_redis_outage_while_fetching_a_token_reads_as_state_not_as_wechat() {
    let s = unreachable_redis();
    // Nothing listens on port 9 either: had WeChat been asked, the error would say so.
    let wechat = WechatClient::new("http://127.0.0.1:9", Duration::from_secs(2)).unwrap();
    let source = SharedTokenSource {
        app: app(),
        shared: s.token_share().unwrap(),
        wechat: WechatTokenSource {
            client: wechat,
            appid: "wx0000000000000000".into(),
            secret: Secret::new("secret"),
            mode: TokenMode::Classic,
            fetched: Default::default(),
        },
    };
    let e = source.fetch(None).await.unwrap_err();
    assert!(
        matches!(e, TokenError::State(ref s) if is_state_outage(s)),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(!text.contains("WeChat"), "{text}");
}

/// A sent record is read back from shared state, which anything with Redis access can write:
/// a forged trace in it is checked as a producer's headers are, before a delivery report
/// echoes it.
#[tokio::test]
async fn a_forged_trace_in_a_sent_record_is_not_passed_on() {
    let app = app();
    let mut raw = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let records = [
        (
            91,
            serde_json::json!({"traceparent": "00-not-a-trace-01\r\nx: y"}),
        ),
        (
            92,
            serde_json::json!({"traceparent": "a".repeat(70_000), "tracestate": "rojo=1"}),
        ),
        (93, serde_json::json!({"traceparent": 7})),
        (
            94,
            serde_json::json!({"traceparent": parent, "tracestate": "bad\nline"}),
        ),
    ];
    let mut pipe = redis::pipe();
    for (msgid, trace) in &records {
        let record = serde_json::json!({"id": format!("forged-{msgid}"), "trace": trace});
        pipe.cmd("SET")
            .arg(format!("wxcourier:{{{app}}}:msgid:{msgid}"))
            .arg(record.to_string())
            .arg("PX")
            .arg(60_000)
            .ignore();
    }
    let () = pipe.query_async(&mut raw).await.unwrap();

    let s = open(REDIS_URL, Duration::from_secs(5));
    for msgid in [91, 92, 93] {
        let job = s.job_for_msgid(&app, msgid).await.unwrap().unwrap();
        assert_eq!(job.id, format!("forged-{msgid}"), "the job is still named");
        assert_eq!(job.trace, None, "msgid {msgid}");
    }
    // A valid traceparent still crosses; the bad tracestate beside it does not.
    let job = s.job_for_msgid(&app, 94).await.unwrap().unwrap();
    assert_eq!(
        job.trace,
        Some(TraceHeaders {
            traceparent: parent.into(),
            tracestate: None
        })
    );
}

#[tokio::test]
async fn what_was_written_before_keys_had_a_hash_tag_still_counts_on_a_single_node() {
    // A version before the hash tag wrote `wxcourier:APP:…`: after an upgrade, an id it sent
    // is not sent again, a report names its job, and its shared token is used.
    let app = app();
    let old = |kind: &str, rest: &str| format!("wxcourier:{app}:{kind}:{rest}");
    let mut raw = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut pipe = redis::pipe();
    for (k, v) in [
        (old("id", "sent-before"), "77"),
        (old("msgid", "77"), r#"{"id":"sent-before","meta":{"n":1}}"#),
        (old("id", "held-before"), "inflight:00000000000000ab"),
        (old("token", "current"), "tok-before"),
    ] {
        pipe.cmd("SET").arg(k).arg(v).arg("PX").arg(60_000).ignore();
    }
    let () = pipe.query_async(&mut raw).await.unwrap();

    let s = open(REDIS_URL, Duration::from_secs(5));
    assert_eq!(
        s.claim(&app, "sent-before").await.unwrap(),
        Claim::AlreadySent(Some(77))
    );
    assert_eq!(
        s.renew(&app, "sent-before", Holder::new()).await.unwrap(),
        Renewal::AlreadySent(Some(77))
    );
    assert_eq!(
        s.claim(&app, "held-before").await.unwrap(),
        Claim::InFlight,
        "a claim an older instance holds is respected"
    );
    // So does the claim an app with send limits takes with its reservation, which then takes
    // nothing.
    for (id, found) in [
        ("sent-before", Claim::AlreadySent(Some(77))),
        ("held-before", Claim::InFlight),
    ] {
        let request = LimitRequest {
            id,
            cap: Some(RecipientCap {
                touser: "o-legacy",
                count: std::num::NonZeroU32::new(1).unwrap(),
                per: Duration::from_secs(60),
            }),
            content: None,
            gate: None,
        };
        let answer = s
            .claim_reserving(&app, id, Holder::new(), None, &request)
            .await
            .unwrap();
        assert_eq!(answer, (found, None), "{id}");
    }
    let job = s.job_for_msgid(&app, 77).await.unwrap().unwrap();
    assert_eq!(job.id, "sent-before");
    let (token, _) = s.token_share().unwrap().token(&app).await.unwrap().unwrap();
    assert_eq!(token.expose(), "tok-before");

    // What is written now goes under the tag, and a stored token under both layouts, so
    // instances of the older version still running beside this one read it.
    fresh("redis", s.claim(&app, "sent-now").await.unwrap());
    s.record_sent(&app, "sent-now", Some(78), None, None)
        .await
        .unwrap();
    let tagged: Option<String> = redis::cmd("GET")
        .arg(format!("wxcourier:{{{app}}}:id:sent-now"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(tagged.as_deref(), Some("78"));
    let untagged: Option<String> = redis::cmd("GET")
        .arg(old("id", "sent-now"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(untagged, None);
    s.token_share()
        .unwrap()
        .store_token(&app, &Secret::new("tok-now"), Duration::from_secs(10))
        .await
        .unwrap();
    let before: Option<String> = redis::cmd("GET")
        .arg(old("token", "current"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(before.as_deref(), Some("tok-now"));
}

#[tokio::test]
async fn sentinels_or_cluster_nodes_nobody_answers_at_are_a_state_outage_within_the_call_timeout() {
    // Nothing listens on ports 1 and 2.
    for url in [
        "redis+sentinel://:hunter2@127.0.0.1:1,127.0.0.1:2/wxm",
        "redis+cluster://:hunter2@127.0.0.1:1,127.0.0.1:2",
    ] {
        let s = open(url, Duration::from_secs(5));
        let start = Instant::now();
        let e = s.claim(&app(), "j").await.unwrap_err();
        assert!(
            start.elapsed() <= Duration::from_millis(2500),
            "{url}: {:?}",
            start.elapsed()
        );
        assert!(is_state_outage(&e), "{url}: {e:?}");
        assert!(!e.to_string().contains("hunter2"), "{url}: {e}");
        assert!(
            !s.health().is_up(),
            "{url}: the outage marks the state down"
        );
        let e = s.describe().await.unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{url}: {e}");
    }
}
