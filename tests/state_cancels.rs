//! The cancel capability on every state backend: memory, and Redis as a single node, behind
//! Sentinel and as a Cluster (when `TEST_REDIS_SENTINEL_URL` / `TEST_REDIS_CLUSTER_URL` name
//! them; `scripts/redis-ha.sh urls` prints both). A cancel is kept only where the id is neither
//! claimed nor sent, every claim looks for it, and a cancel racing a send ends exactly one
//! way: {job cancelled, cancel accepted} or {job sent, cancel too late}.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use wxcourier::state::{CancelFound, Cancels, Claim, Holder, Idempotency, Renewal, State};

#[path = "common/redis_sets.rs"]
mod redis_sets;

const KEEP: Duration = Duration::from_secs(600);

fn redis_urls() -> Vec<(&'static str, String)> {
    redis_sets::redis_urls("cancels")
}

fn open(url: &str, in_flight_ttl: Duration) -> State {
    State::from_url(url, Duration::from_secs(60), 1000, in_flight_ttl).unwrap()
}

/// Each backend by name, with the URL a second instance opens (none for memory).
fn backends(in_flight_ttl: Duration) -> Vec<(&'static str, Option<String>, State)> {
    let mut all = vec![("memory", None, open("memory", in_flight_ttl))];
    for (name, url) in redis_urls() {
        all.push((name, Some(url.clone()), open(&url, in_flight_ttl)));
    }
    all
}

fn app() -> String {
    format!("t_cancel_{:08x}", rand::random::<u32>())
}

fn fresh(name: &str, c: Claim) -> Holder {
    match c {
        Claim::Fresh(h) => h,
        other => panic!("{name}: expected a fresh claim, got {other:?}"),
    }
}

#[tokio::test]
async fn a_cancel_before_its_job_is_kept_and_stops_every_claim_of_the_id() {
    for (name, _, s) in backends(Duration::from_secs(5)) {
        let app = app();
        assert_eq!(
            s.record_cancel(&app, "j1", KEEP).await,
            Ok(CancelFound::Kept),
            "{name}"
        );
        assert!(s.is_cancelled(&app, "j1").await.unwrap(), "{name}");
        assert_eq!(
            s.claim(&app, "j1").await.unwrap(),
            Claim::Cancelled,
            "{name}"
        );
        assert_eq!(
            s.claim(&app, "j1").await.unwrap(),
            Claim::Cancelled,
            "{name}: again"
        );
        assert_eq!(
            s.record_cancel(&app, "j1", KEEP).await,
            Ok(CancelFound::Kept),
            "{name}: a repeated cancel is accepted again"
        );
        // Other ids and other apps are not touched.
        fresh(name, s.claim(&app, "j2").await.unwrap());
        assert!(!s.is_cancelled(&app, "j2").await.unwrap(), "{name}");
        let other = app.replace("t_cancel_", "t_cancel_o");
        fresh(name, s.claim(&other, "j1").await.unwrap());
    }
}

#[tokio::test]
async fn a_cancel_waits_out_a_claim_and_is_too_late_for_a_sent_id() {
    for (name, _, s) in backends(Duration::from_secs(5)) {
        let app = app();
        let holder = fresh(name, s.claim(&app, "j1").await.unwrap());
        assert_eq!(
            s.record_cancel(&app, "j1", KEEP).await,
            Ok(CancelFound::InFlight),
            "{name}"
        );
        assert!(
            !s.is_cancelled(&app, "j1").await.unwrap(),
            "{name}: nothing kept"
        );
        assert_eq!(
            s.renew(&app, "j1", holder).await.unwrap(),
            Renewal::Held,
            "{name}"
        );
        s.record_sent(&app, "j1", Some(77), None, None)
            .await
            .unwrap();
        assert_eq!(
            s.record_cancel(&app, "j1", KEEP).await,
            Ok(CancelFound::Sent),
            "{name}"
        );
        assert_eq!(
            s.claim(&app, "j1").await.unwrap(),
            Claim::AlreadySent(Some(77)),
            "{name}: a sent job stays sent"
        );
        // Sent without a msgid (the subscribe kinds may be): too late as well.
        fresh(name, s.claim(&app, "j2").await.unwrap());
        s.record_sent(&app, "j2", None, None, None).await.unwrap();
        assert_eq!(
            s.record_cancel(&app, "j2", KEEP).await,
            Ok(CancelFound::Sent),
            "{name}"
        );
        // A claim released without a send (a retry) lets the cancel in.
        let h3 = fresh(name, s.claim(&app, "j3").await.unwrap());
        s.release(&app, "j3", h3).await.unwrap();
        assert_eq!(
            s.record_cancel(&app, "j3", KEEP).await,
            Ok(CancelFound::Kept),
            "{name}"
        );
        assert_eq!(
            s.claim_as(&app, "j3", Holder::new(), Some(h3))
                .await
                .unwrap(),
            Claim::Cancelled,
            "{name}: the next turn meets it"
        );
        assert_eq!(
            s.renew(&app, "j3", h3).await.unwrap(),
            Renewal::Cancelled,
            "{name}: a claim that is gone is not taken again"
        );
    }
}

#[tokio::test]
async fn a_claim_taken_over_from_an_earlier_turn_meets_a_cancel_and_goes() {
    for (name, _, s) in backends(Duration::from_secs(5)) {
        let app = app();
        let earlier = fresh(name, s.claim(&app, "j1").await.unwrap());
        s.release(&app, "j1", earlier).await.unwrap();
        s.record_cancel(&app, "j1", KEEP).await.unwrap();
        // The earlier turn's claim reached the store late, after the cancel was kept.
        let late = s.claim_as(&app, "j1", earlier, None).await.unwrap();
        assert_eq!(late, Claim::Cancelled, "{name}");
        assert_eq!(
            s.claim_as(&app, "j1", Holder::new(), Some(earlier))
                .await
                .unwrap(),
            Claim::Cancelled,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_lapsed_claim_is_not_retaken_before_the_send_once_a_cancel_is_kept() {
    for (name, _, s) in backends(Duration::from_millis(300)) {
        if name == "memory" {
            continue; // A claim in memory never lapses: its holder is in the process.
        }
        let app = app();
        let holder = fresh(name, s.claim(&app, "j1").await.unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            s.record_cancel(&app, "j1", KEEP).await,
            Ok(CancelFound::Kept),
            "{name}"
        );
        assert_eq!(
            s.renew(&app, "j1", holder).await.unwrap(),
            Renewal::Cancelled,
            "{name}"
        );
        assert_eq!(
            s.claim(&app, "j1").await.unwrap(),
            Claim::Cancelled,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_kept_cancel_lapses_after_its_time() {
    for (name, _, s) in backends(Duration::from_secs(5)) {
        let app = app();
        let keep = Duration::from_millis(300);
        assert_eq!(
            s.record_cancel(&app, "j1", keep).await,
            Ok(CancelFound::Kept),
            "{name}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!s.is_cancelled(&app, "j1").await.unwrap(), "{name}");
        fresh(name, s.claim(&app, "j1").await.unwrap());
    }
}

#[tokio::test]
async fn a_cancel_is_seen_by_every_instance_and_outlives_the_one_that_kept_it() {
    for (name, url, s) in backends(Duration::from_secs(5)) {
        let Some(url) = url else { continue };
        let app = app();
        s.record_cancel(&app, "j1", KEEP).await.unwrap();
        drop(s);
        // A restart, or another instance: a new connection to the same store.
        let other = open(&url, Duration::from_secs(5));
        assert!(other.is_cancelled(&app, "j1").await.unwrap(), "{name}");
        assert_eq!(
            other.claim(&app, "j1").await.unwrap(),
            Claim::Cancelled,
            "{name}"
        );
    }
}

/// One job and its cancel, racing: a worker claims the id and, if it may, "sends" (records it
/// sent); a canceller records the cancel, asking again while the id is claimed. Returns the
/// job's ending and the cancel's answer.
async fn race(
    sender: Arc<State>,
    canceller: Arc<State>,
    app: String,
    id: String,
) -> (&'static str, CancelFound) {
    let (a, i) = (app.clone(), id.clone());
    // A few milliseconds' jitter on each side, so that each may come first, and a cancel
    // often finds the claim held.
    let jitter = || Duration::from_micros(rand::random_range(0..4_000));
    let (before_claim, held, before_cancel) = (jitter(), jitter(), jitter());
    let job = tokio::spawn(async move {
        tokio::time::sleep(before_claim).await;
        match sender.claim(&a, &i).await.unwrap() {
            Claim::Fresh(_) => {
                tokio::time::sleep(held).await;
                sender
                    .record_sent(&a, &i, Some(1), None, None)
                    .await
                    .unwrap();
                "sent"
            }
            Claim::Cancelled => "cancelled",
            other => panic!("{other:?}"),
        }
    });
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(before_cancel).await;
        loop {
            match canceller.record_cancel(&app, &id, KEEP).await.unwrap() {
                CancelFound::InFlight => tokio::time::sleep(Duration::from_millis(2)).await,
                found => return found,
            }
        }
    });
    (job.await.unwrap(), cancel.await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_a_send_ends_exactly_one_way() {
    for (name, url, s) in backends(Duration::from_secs(5)) {
        let first = Arc::new(s);
        // Two instances on one store when it is shared: the send and the cancel come apart.
        let second = match &url {
            Some(url) => Arc::new(open(url, Duration::from_secs(5))),
            None => first.clone(),
        };
        let app = app();
        // Ten at a time: hundreds at once queue behind each other on one connection, and the
        // jitter no longer decides who comes first.
        let endings: Vec<_> = futures_util::stream::iter(0..200)
            .map(|n| race(first.clone(), second.clone(), app.clone(), format!("r{n}")))
            .buffered(10)
            .collect()
            .await;
        let (mut cancelled, mut sent) = (0, 0);
        for (n, ending) in endings.iter().enumerate() {
            match ending {
                ("cancelled", CancelFound::Kept) => cancelled += 1,
                ("sent", CancelFound::Sent) => sent += 1,
                other => panic!("{name}: race {n} ended {other:?}"),
            }
        }
        eprintln!("{name}: {cancelled} cancelled, {sent} sent of 200 races");
        assert_eq!(cancelled + sent, 200);
        assert!(
            cancelled > 0 && sent > 0,
            "{name}: the races were not close"
        );
    }
}
