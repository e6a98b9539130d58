//! The platform state contract (`state::PlatformStore`) on every backend: memory, and Redis as a
//! single node, behind Sentinel and as a Cluster when their URLs are set. Newest ticket wins;
//! a code is exchanged by one caller, and remembered once exchanged; a periodic round is done
//! by one caller per period; an authorizer's older news never overwrites newer; refresh tokens
//! read back whole.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis_sets::redis_urls;
use wxcourier::state::{Authorizer, CodeClaim, PlatformStore, Standing, State, Ticket};
use wxcourier::types::Secret;

fn backends() -> Vec<(&'static str, Arc<dyn PlatformStore>)> {
    let open = |url: &str| {
        State::from_url(url, Duration::from_secs(60), 100, Duration::from_secs(5))
            .unwrap()
            .platform_store()
    };
    let mut all = vec![("memory", open("memory"))];
    for (name, url) in redis_urls("the platform state contract") {
        all.push((name, open(&url)));
    }
    all
}

fn component() -> String {
    format!("wxc{:016x}", rand::random::<u64>())
}

fn ticket(value: &str, at: i64) -> Ticket {
    Ticket {
        value: Secret::new(value),
        created_at: at,
    }
}

fn active(appid: &str, token: &str, at: i64) -> Authorizer {
    Authorizer {
        appid: appid.into(),
        standing: Standing::Active,
        refresh_token: Some(Secret::new(token)),
        changed_at: at,
    }
}

#[tokio::test]
async fn the_newest_ticket_is_kept_whatever_order_they_come_in() {
    for (name, store) in backends() {
        let c = component();
        assert_eq!(store.ticket(&c).await.unwrap(), None, "{name}");
        assert!(store.keep_ticket(&c, &ticket("t@@@2", 200)).await.unwrap());
        assert!(
            !store.keep_ticket(&c, &ticket("t@@@1", 100)).await.unwrap(),
            "{name}"
        );
        assert_eq!(
            store.ticket(&c).await.unwrap(),
            Some(ticket("t@@@2", 200)),
            "{name}"
        );
        assert!(
            store
                .keep_ticket(&c, &ticket("t@@@3 with space", 300))
                .await
                .unwrap()
        );
        assert_eq!(
            store.ticket(&c).await.unwrap(),
            Some(ticket("t@@@3 with space", 300)),
            "{name}"
        );
        // Each platform its own.
        assert_eq!(store.ticket(&component()).await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn a_code_is_claimed_once_given_back_on_failure_and_remembered_once_exchanged() {
    let hold = Duration::from_secs(30);
    for (name, store) in backends() {
        let c = component();
        let code = format!("queryauthcode@@@{}", "x".repeat(300));
        assert_eq!(
            store.claim_code(&c, &code, hold).await.unwrap(),
            CodeClaim::Claimed,
            "{name}"
        );
        assert_eq!(
            store.claim_code(&c, &code, hold).await.unwrap(),
            CodeClaim::Held,
            "{name}"
        );
        store.release_code(&c, &code).await.unwrap();
        assert_eq!(
            store.claim_code(&c, &code, hold).await.unwrap(),
            CodeClaim::Claimed,
            "{name}"
        );
        store.finish_code(&c, &code, hold).await.unwrap();
        assert_eq!(
            store.claim_code(&c, &code, hold).await.unwrap(),
            CodeClaim::Exchanged,
            "{name}"
        );
        // Another code, and the same code of another platform, are free.
        assert_eq!(
            store.claim_code(&c, "other", hold).await.unwrap(),
            CodeClaim::Claimed
        );
        assert_eq!(
            store.claim_code(&component(), &code, hold).await.unwrap(),
            CodeClaim::Claimed,
            "{name}"
        );
        // A claim lapses if its holder dies.
        let short = Duration::from_millis(100);
        assert_eq!(
            store.claim_code(&c, "dies", short).await.unwrap(),
            CodeClaim::Claimed
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            store.claim_code(&c, "dies", short).await.unwrap(),
            CodeClaim::Claimed,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_round_is_claimed_once_per_period_and_given_back_on_failure() {
    for (name, store) in backends() {
        let (c, period) = (component(), Duration::from_millis(300));
        // Twenty instances look at once: one does the round.
        let claims = (0..20).map(|_| store.claim_round(&c, "reconcile", period));
        let won = futures_util::future::join_all(claims)
            .await
            .into_iter()
            .filter(|claimed| *claimed.as_ref().unwrap())
            .count();
        assert_eq!(won, 1, "{name}");
        // Another round, and the same round of another platform, are free.
        assert!(
            store.claim_round(&c, "other", period).await.unwrap(),
            "{name}"
        );
        assert!(
            store
                .claim_round(&component(), "reconcile", period)
                .await
                .unwrap(),
            "{name}"
        );
        // A failed round is given back and taken at the next look.
        store.release_round(&c, "reconcile").await.unwrap();
        assert!(
            store.claim_round(&c, "reconcile", period).await.unwrap(),
            "{name}"
        );
        assert!(
            !store.claim_round(&c, "reconcile", period).await.unwrap(),
            "{name}"
        );
        // Due again once the period passed.
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(
            store.claim_round(&c, "reconcile", period).await.unwrap(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn older_news_of_an_authorizer_never_overwrites_newer() {
    for (name, store) in backends() {
        let c = component();
        let first = active("wxa", "refreshtoken@@@1 with space", 100);
        assert!(store.put_authorizer(&c, &first).await.unwrap());
        assert_eq!(
            store.authorizer(&c, "wxa").await.unwrap(),
            Some(first.clone()),
            "{name}"
        );
        let revoked = Authorizer {
            appid: "wxa".into(),
            standing: Standing::Revoked,
            refresh_token: None,
            changed_at: 200,
        };
        assert!(store.put_authorizer(&c, &revoked).await.unwrap());
        // A late authorization from before the withdrawal.
        assert!(
            !store
                .put_authorizer(&c, &active("wxa", "late", 150))
                .await
                .unwrap(),
            "{name}"
        );
        assert_eq!(
            store.authorizer(&c, "wxa").await.unwrap(),
            Some(revoked.clone()),
            "{name}"
        );
        // The same second is news: a re-authorization right after.
        let again = active("wxa", "refreshtoken@@@2", 200);
        assert!(store.put_authorizer(&c, &again).await.unwrap(), "{name}");
        // Every write moved the version, the refused one did not.
        let before = store.authorizers_version(&c).await.unwrap();
        assert!(
            !store
                .put_authorizer(&c, &active("wxa", "late", 1))
                .await
                .unwrap()
        );
        assert_eq!(
            store.authorizers_version(&c).await.unwrap(),
            before,
            "{name}"
        );
        let second = active("wxb", "refreshtoken@@@b", 50);
        store.put_authorizer(&c, &second).await.unwrap();
        assert!(
            store.authorizers_version(&c).await.unwrap() > before,
            "{name}"
        );
        let all = store.authorizers(&c).await.unwrap();
        assert_eq!(all, vec![again, second], "{name}");
        assert!(
            store.authorizers(&component()).await.unwrap().is_empty(),
            "{name}"
        );
    }
}
