//! One set of expectations for every state backend: what memory state promises one instance,
//! Redis state promises every instance. Each check runs against both, on fresh app names.

use std::time::Duration;

use wxcourier::state::{Claim, Holder, Renewal, State};

const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn backends() -> Vec<(&'static str, State)> {
    let ttl = Duration::from_secs(60);
    vec![
        (
            "memory",
            State::from_url("memory", ttl, 1000, Duration::from_secs(5)).unwrap(),
        ),
        (
            "redis",
            State::from_url(REDIS_URL, ttl, 1000, Duration::from_secs(5)).unwrap(),
        ),
    ]
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
        s.release(&app, "j1", Holder::new()).await;
        assert_eq!(
            s.claim(&app, "j1").await.unwrap(),
            Claim::InFlight,
            "{name}: a stranger's release removes nothing"
        );
        s.release(&app, "j1", first).await;
        let second = fresh(name, s.claim(&app, "j1").await.unwrap());
        assert_eq!(
            s.renew(&app, "j1", first).await.unwrap(),
            Renewal::Lost,
            "{name}"
        );
        s.record_sent(&app, "j1", 42, None).await.unwrap();
        assert_eq!(
            s.renew(&app, "j1", second).await.unwrap(),
            Renewal::AlreadySent(42),
            "{name}"
        );
        assert_eq!(
            s.claim(&app, "j1").await.unwrap(),
            Claim::AlreadySent(42),
            "{name}"
        );
        fresh(name, s.claim(&format!("{app}x"), "j1").await.unwrap());
    }
}

#[tokio::test]
async fn a_lapsed_claim_nobody_took_is_taken_again_by_its_holder() {
    // Redis claims lapse after their lifetime; memory claims never do (their holder is in
    // this process), so renewal finds them held either way.
    let s = State::from_url(
        REDIS_URL,
        Duration::from_secs(60),
        10,
        Duration::from_millis(200),
    )
    .unwrap();
    let app = app();
    let holder = fresh("redis", s.claim(&app, "j2").await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.renew(&app, "j2", holder).await.unwrap(), Renewal::Held);
    assert_eq!(s.claim(&app, "j2").await.unwrap(), Claim::InFlight);
}

#[tokio::test]
async fn sent_jobs_map_back_from_their_msgid_and_reports_are_first_once() {
    for (name, s) in backends() {
        let app = app();
        let meta = serde_json::json!({"order": 1842});
        s.record_sent(&app, "j3", u64::MAX - 1, Some(&meta))
            .await
            .unwrap();
        let job = s.job_for_msgid(&app, u64::MAX - 1).await.unwrap().unwrap();
        assert_eq!((job.id.as_str(), job.meta), ("j3", Some(meta)), "{name}");
        assert!(s.job_for_msgid(&app, 7).await.unwrap().is_none(), "{name}");
        assert!(s.first_report(&app, 9).await.unwrap(), "{name}");
        assert!(!s.first_report(&app, 9).await.unwrap(), "{name}");
        s.forget_report(&app, 9).await;
        assert!(s.first_report(&app, 9).await.unwrap(), "{name}");
    }
}

#[tokio::test]
async fn user_events_are_first_once_per_key_and_can_be_forgotten() {
    for (name, s) in backends() {
        let app = app();
        let key = r#"["subscribe_msg_popup_event","1610969440","oia2","VRR0","reject"]"#;
        assert!(s.first_event(&app, key).await.unwrap(), "{name}");
        assert!(!s.first_event(&app, key).await.unwrap(), "{name}");
        // Another key, another app, and a report MsgID are all separate.
        assert!(
            s.first_event(&app, &key.replace("reject", "accept"))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            s.first_event(&format!("{app}x"), key).await.unwrap(),
            "{name}"
        );
        assert!(s.first_report(&app, 1610969440).await.unwrap(), "{name}");
        s.forget_event(&app, key).await;
        assert!(s.first_event(&app, key).await.unwrap(), "{name}");
    }
}
