//! A third-party platform's authorization event URL end to end, against the simulator as
//! WeChat and Redis as the shared state: verify tickets kept (the newest), the component token
//! fetched with them, merchants authorizing (the code exchanged once across repeats),
//! re-authorizing and withdrawing, and hostile pushes refused before anything is kept. What a
//! push says is unit-tested in `src/platform/push.rs`; the refusal matrix of the signature
//! and the envelope in `src/callback/tests.rs`, whose checks the receiver shares.

mod common;

use std::time::Duration;

use common::platform_kit::*;
use wxcourier::sim::PlatformFaults;
use wxcourier::sim::push::{CallbackPush, CallbackTarget, signed_request};
use wxcourier::state::Standing;
use wxcourier::types::Secret;
use wxcourier::wechat::client::TokenError;
use wxcourier::wechat::token::TokenSource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_ticket_is_kept_and_gets_the_platform_its_token() {
    let p = spawn_platform("pf_ticket").await;
    p.t.sim.push_ticket(&p.component).unwrap();
    let ticket = p.wait_for_ticket().await;
    // The kept ticket is the one WeChat issued: its component token call succeeds.
    p.client().component_token(&ticket).await.unwrap();
    // An older ticket pushed late does not replace the newer one.
    let old = format!(
        "<xml><AppId>{c}</AppId><CreateTime>1000</CreateTime><InfoType>component_verify_ticket</InfoType>\
         <ComponentVerifyTicket>ticket@@@old</ComponentVerifyTicket></xml>",
        c = p.component
    );
    assert_eq!(
        p.push(&p.component, old, None).await,
        (200, "success".into())
    );
    let kept = p.store.ticket(&p.component).await.unwrap().unwrap();
    assert_eq!(
        kept.value, ticket,
        "a late, older ticket replaced the newest"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_is_exchanged_once_updated_and_withdrawn() {
    let p = spawn_platform("pf_auth").await;
    p.t.sim.push_ticket(&p.component).unwrap();
    let ticket = p.wait_for_ticket().await;

    p.t.sim.authorize(&p.component, "wxmerchant1").unwrap();
    let first = p.wait_for_standing("wxmerchant1", Standing::Active).await;
    assert_eq!(p.stats().query_auth_calls, 1);
    // The kept refresh token is the one WeChat issued: a refresh with it succeeds.
    let client = p.client();
    let token = client.component_token(&ticket).await.unwrap().token;
    let refresh = first
        .refresh_token
        .clone()
        .expect("a refresh token is kept");
    client
        .authorizer_token(&token, "wxmerchant1", &refresh)
        .await
        .unwrap();

    // The merchant authorizes again: a new code and refresh token; the old one is refused.
    p.t.sim.authorize(&p.component, "wxmerchant1").unwrap();
    let mut second = first.clone();
    for _ in 0..200 {
        second = p
            .store
            .authorizer(&p.component, "wxmerchant1")
            .await
            .unwrap()
            .unwrap();
        if second.refresh_token != first.refresh_token {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_ne!(
        second.refresh_token, first.refresh_token,
        "updateauthorized kept nothing new"
    );
    let refused = client
        .authorizer_token(&token, "wxmerchant1", &refresh)
        .await
        .unwrap_err();
    assert_eq!(refused.errcode(), Some(61023));

    // Withdrawn: revoked, and the refresh token is gone from the state.
    p.t.sim.unauthorize(&p.component, "wxmerchant1").unwrap();
    let revoked = p.wait_for_standing("wxmerchant1", Standing::Revoked).await;
    assert_eq!(revoked.refresh_token, None);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_authorization_push_is_answered_without_a_second_exchange() {
    let p = spawn_platform("pf_repeat").await;
    p.t.sim.push_ticket(&p.component).unwrap();
    p.wait_for_ticket().await;
    let code = p.t.sim.authorize(&p.component, "wxmerchant2").unwrap();
    let kept = p.wait_for_standing("wxmerchant2", Standing::Active).await;
    assert_eq!(p.stats().query_auth_calls, 1);
    // WeChat repeats a push (or an attacker replays one within the window): answered
    // `success`, with no second exchange and nothing changed.
    let created = u64::try_from(kept.changed_at).unwrap();
    for _ in 0..3 {
        let xml = authorized_xml(&p.component, "wxmerchant2", &code, created);
        assert_eq!(
            p.push(&p.component, xml, None).await,
            (200, "success".into())
        );
    }
    assert_eq!(
        p.stats().query_auth_calls,
        1,
        "a repeated push exchanged its code again"
    );
    let again = p
        .store
        .authorizer(&p.component, "wxmerchant2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, kept);
    // A later push with a code WeChat does not know: not answered `success`, nothing changed,
    // and the code given back so that WeChat's repeat is tried again, not lost to a claim.
    let xml = authorized_xml(
        &p.component,
        "wxmerchant2",
        "queryauthcode@@@unknown",
        created + 5,
    );
    for _ in 0..2 {
        let (status, _) = p.push(&p.component, xml.clone(), None).await;
        assert_eq!(
            status, 503,
            "an unexchangeable code must not be answered success"
        );
    }
    assert_eq!(p.stats().query_auth_calls, 3);
    let again = p
        .store
        .authorizer(&p.component, "wxmerchant2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, kept, "a failed exchange changed what was kept");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ticket_an_authorization_is_not_acknowledged_and_a_ticket_is_asked_for() {
    let p = spawn_platform("pf_noticket").await;
    // Tickets are lost: the worker has none, so it cannot exchange the code.
    p.set_faults(PlatformFaults {
        lose_tickets: true,
        ..Default::default()
    });
    p.t.sim.authorize(&p.component, "wxmerchant3").unwrap();
    // The simulator tries three times, each answered 503; the worker asked WeChat for a ticket.
    let mut asked = 0;
    for _ in 0..200 {
        asked = p.stats().start_push_ticket_calls;
        if asked > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        asked > 0,
        "no api_start_push_ticket after a token fetch without a ticket"
    );
    assert_eq!(
        p.store
            .authorizer(&p.component, "wxmerchant3")
            .await
            .unwrap(),
        None
    );
    // Tickets flow again, and the merchant's next authorization is kept.
    p.set_faults(PlatformFaults::default());
    p.t.sim.push_ticket(&p.component).unwrap();
    p.wait_for_ticket().await;
    // The token keeper backs off after its failed fetches: the next push may still be
    // answered 503 for a few seconds, and the simulator's pushes retry three times.
    for _ in 0..20 {
        p.t.sim.authorize(&p.component, "wxmerchant3").unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if p.store
            .authorizer(&p.component, "wxmerchant3")
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
    }
    p.wait_for_standing("wxmerchant3", Standing::Active).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pushes_are_refused_before_anything_is_kept() {
    let p = spawn_platform("pf_hostile").await;
    let c = p.component.clone();
    let now = unix_now();
    let ticket = |value: &str| {
        format!(
            "<xml><AppId>{c}</AppId><CreateTime>{now}</CreateTime><InfoType>component_verify_ticket</InfoType>\
             <ComponentVerifyTicket>{value}</ComponentVerifyTicket></xml>"
        )
    };
    // Sealed for another AppID (another platform's key would not open it at all).
    assert_eq!(
        p.push("wxother000000000", ticket("t@@@1"), None).await.0,
        403
    );
    // Stale: signed an hour ago.
    assert_eq!(p.push(&c, ticket("t@@@2"), Some(now - 3600)).await.0, 403);
    // Forged: a right body with a wrong signature.
    let push = CallbackPush {
        target: CallbackTarget {
            url: p.url.clone(),
            token: "not-the-token".into(),
            aes_key: Some(AES_KEY.into()),
        },
        appid: c.clone(),
        xml: ticket("t@@@3"),
    };
    let (url, body) = signed_request(&push);
    assert_eq!(post(&url, body).await.0, 403);
    // Plain: the platform takes sealed pushes only.
    let plain = CallbackPush {
        target: CallbackTarget {
            url: p.url.clone(),
            token: TOKEN.into(),
            aes_key: None,
        },
        appid: c.clone(),
        xml: ticket("t@@@4"),
    };
    let (url, body) = signed_request(&plain);
    assert_eq!(post(&url, body).await.0, 403);
    // Oversized, before anything is read.
    let (url, _) = signed_request(&push);
    assert_eq!(post(&url, "x".repeat(70 * 1024)).await.0, 413);
    // Signed and sealed, but not a push: no InfoType, a malformed AuthorizerAppid.
    assert_eq!(
        p.push(
            &c,
            format!("<xml><CreateTime>{now}</CreateTime></xml>"),
            None
        )
        .await
        .0,
        400
    );
    let bad_appid = authorized_xml(&c, "../../etc", "code@@@1", now);
    assert_eq!(p.push(&c, bad_appid, None).await.0, 400);
    // Another platform's URL.
    let other = p.url.replace(&format!("/{}", p.name), "/nosuch");
    let (url, body) = signed_request(&CallbackPush {
        target: CallbackTarget {
            url: other,
            token: TOKEN.into(),
            aes_key: Some(AES_KEY.into()),
        },
        appid: c.clone(),
        xml: ticket("t@@@5"),
    });
    assert_eq!(post(&url, body).await.0, 404);
    // The message and event URL of an authorizer: sealed for the component AppID, as WeChat
    // forwards an authorizer's events; anything else is refused.
    let event = wxcourier::sim::push::event_xml("wxa1", &common::openid(1), 42, "success", now);
    let at = |path: &str, appid: &str, safe: bool| {
        signed_request(&CallbackPush {
            target: CallbackTarget {
                url: format!("{}/{path}", p.url),
                token: TOKEN.into(),
                aes_key: safe.then(|| AES_KEY.into()),
            },
            appid: appid.into(),
            xml: event.clone(),
        })
    };
    let (url, body) = at("wxa1", &c, true);
    assert_eq!(post(&url, body).await, (200, "success".into()));
    let (url, body) = at("wxa1", "wxa1", true);
    assert_eq!(
        post(&url, body).await.0,
        403,
        "sealed for the authorizer, not the platform"
    );
    let (url, body) = at("wxa1", &c, false);
    assert_eq!(post(&url, body).await.0, 403, "a plain push");
    let (url, body) = at("wx-a1", &c, true);
    assert_eq!(post(&url, body).await.0, 404, "an AppID that is no AppID");
    // Nothing of any of them was kept.
    assert_eq!(p.store.ticket(&c).await.unwrap(), None);
    assert!(p.store.authorizers(&c).await.unwrap().is_empty());
    p.stop().await;
}

/// The worker's own view of the platform of `p`, for calling its token sources directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorizer_token_comes_from_the_kept_refresh_token_and_sends() {
    let p = authorized("pf_atoken", "wxsender1").await;
    let grant = token_source(&p, "wxsender1").fetch(None).await.unwrap();
    assert!(sends_with(&p, &grant.token).await);
    assert_eq!(p.stats().authorizer_token_calls, 1);
    assert_eq!(p.stats().authorizer_list_calls, 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_a_state_lost_are_recovered_from_the_authorizer_list() {
    let p = authorized("pf_lost", "wxsender2").await;
    // Redis restarted without persistence: every refresh token of the platform is gone.
    p.lose_authorizers().await;
    assert_eq!(
        p.store.authorizer(&p.component, "wxsender2").await.unwrap(),
        None
    );
    let grant = token_source(&p, "wxsender2").fetch(None).await.unwrap();
    assert!(sends_with(&p, &grant.token).await);
    assert_eq!(p.stats().authorizer_list_calls, 1);
    // Kept again, so the next refresh needs no list.
    let kept = p
        .store
        .authorizer(&p.component, "wxsender2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.standing, Standing::Active);
    assert!(kept.refresh_token.is_some());
    token_source(&p, "wxsender2").fetch(None).await.unwrap();
    assert_eq!(p.stats().authorizer_list_calls, 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciliation_keeps_again_what_a_state_lost_and_never_undoes_a_withdrawal() {
    use wxcourier::platform::reconcile::RECONCILE_ROUND;
    let p = authorized("pf_recon", "wxkept1").await;
    for appid in ["wxkept2", "wxgone3"] {
        p.t.sim.authorize(&p.component, appid).unwrap();
        p.wait_for_standing(appid, Standing::Active).await;
    }
    // A Redis restarted without persistence: the authorizers and the round's claim are gone
    // (the ticket is kept here, so the worker has a component token to read the list with).
    p.lose_authorizers().await;
    // Then a withdrawal the list does not show yet: kept, and it must stay.
    let withdrawn = wxcourier::state::Authorizer {
        appid: "wxgone3".into(),
        standing: Standing::Revoked,
        refresh_token: None,
        changed_at: unix_now() as i64,
    };
    assert!(
        p.store
            .put_authorizer(&p.component, &withdrawn)
            .await
            .unwrap()
    );
    let reads = p.stats().authorizer_list_calls;
    p.store
        .release_round(&p.component, RECONCILE_ROUND)
        .await
        .unwrap();
    // Within one look (5 s) of some instance, with no send asking for them.
    let started = std::time::Instant::now();
    let restored = loop {
        let kept = p.store.authorizers(&p.component).await.unwrap();
        let active: Vec<_> = kept
            .iter()
            .filter(|a| a.standing == Standing::Active && a.refresh_token.is_some())
            .map(|a| a.appid.as_str())
            .collect();
        if active.len() == 2 || started.elapsed() > Duration::from_secs(15) {
            break kept;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let standing = |appid: &str| {
        restored
            .iter()
            .find(|a| a.appid == appid)
            .map(|a| a.standing)
    };
    assert_eq!(standing("wxkept1"), Some(Standing::Active), "{restored:?}");
    assert_eq!(standing("wxkept2"), Some(Standing::Active), "{restored:?}");
    assert_eq!(standing("wxgone3"), Some(Standing::Revoked), "{restored:?}");
    assert_eq!(p.stats().authorizer_list_calls, reads + 1);
    let metrics = p.t.ctx.metrics.render();
    let restored_line = format!(
        "wxcourier_platform_refresh_tokens_restored_total{{platform=\"{}\"}} 2",
        p.name
    );
    assert!(metrics.contains(&restored_line), "{metrics}");
    // A restored token refreshes as kept: no recovery through the list.
    let grant = token_source(&p, "wxkept2").fetch(None).await.unwrap();
    assert!(sends_with(&p, &grant.token).await);
    // The round is held for a day: later looks read nothing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(p.stats().authorizer_list_calls, reads + 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_token_is_recovered_once_then_the_merchant_must_authorize_again() {
    let p = authorized("pf_refused", "wxsender3").await;
    // A kept refresh token WeChat no longer takes (61023): the list has the current one.
    let mut kept = p
        .store
        .authorizer(&p.component, "wxsender3")
        .await
        .unwrap()
        .unwrap();
    kept.refresh_token = Some(Secret::new("refreshtoken@@@stale"));
    p.store.put_authorizer(&p.component, &kept).await.unwrap();
    let grant = token_source(&p, "wxsender3").fetch(None).await.unwrap();
    assert!(sends_with(&p, &grant.token).await);
    assert_eq!(p.stats().authorizer_list_calls, 1);
    // WeChat refuses every refresh now: the list's token is the refused one, so recovery
    // fails, and the authorizer needs the merchant.
    p.set_faults(PlatformFaults {
        refuse_refresh: true,
        ..Default::default()
    });
    let err = token_source(&p, "wxsender3").fetch(None).await.unwrap_err();
    assert!(
        matches!(err, TokenError::Refused { errcode: 61023, .. }),
        "{err:?}"
    );
    let marked = p
        .store
        .authorizer(&p.component, "wxsender3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(marked.standing, Standing::NeedsReauthorization);
    assert_eq!(marked.refresh_token, None);
    // From then on a fetch says so without calling WeChat.
    let calls = p.stats().authorizer_token_calls;
    token_source(&p, "wxsender3").fetch(None).await.unwrap_err();
    assert_eq!(p.stats().authorizer_token_calls, calls);
    // The merchant authorizes again: active, and sending.
    p.set_faults(PlatformFaults::default());
    p.t.sim.authorize(&p.component, "wxsender3").unwrap();
    p.wait_for_standing("wxsender3", Standing::Active).await;
    let grant = token_source(&p, "wxsender3").fetch(None).await.unwrap();
    assert!(sends_with(&p, &grant.token).await);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_refresh_token_the_list_leaves_out_needs_the_merchant() {
    let p = authorized("pf_unlisted", "wxsender4").await;
    let mut kept = p
        .store
        .authorizer(&p.component, "wxsender4")
        .await
        .unwrap()
        .unwrap();
    kept.refresh_token = None;
    p.store.put_authorizer(&p.component, &kept).await.unwrap();
    p.set_faults(PlatformFaults {
        list_without_refresh_token: true,
        ..Default::default()
    });
    let err = token_source(&p, "wxsender4").fetch(None).await.unwrap_err();
    assert!(
        matches!(err, TokenError::Refused { errcode: 61023, .. }),
        "{err:?}"
    );
    p.wait_for_standing("wxsender4", Standing::NeedsReauthorization)
        .await;
    p.stop().await;
}

/// `wxcourier platform VERB …` with a config for `p`'s platform on Redis, the component secret
/// in the environment unless `secret` is None. `NAME` in `args` is the platform's name.
fn platform_verb(
    p: &Platform,
    dir: &std::path::Path,
    args: &[&str],
    secret: Option<&str>,
) -> (i32, String, String) {
    let config = dir.join("platform.toml");
    std::fs::write(
        &config,
        format!(
            "[wechat]\nbase_url = \"{}\"\ntimeout = \"2s\"\n[state]\nurl = \"{REDIS}\"\n\
             [platforms.{}]\ncomponent_appid = \"{}\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{AES_KEY}\"\n",
            p.t.sim.base_url(),
            p.name,
            p.component
        ),
    )
    .unwrap();
    let variable = format!(
        "WXCOURIER_PLATFORMS__{}__COMPONENT_SECRET",
        p.name.to_ascii_uppercase()
    );
    let args: Vec<String> = args.iter().map(|a| a.replace("NAME", &p.name)).collect();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wxcourier"));
    cmd.arg("platform")
        .args(&args)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env_remove(&variable);
    if let Some(secret) = secret {
        cmd.env(&variable, secret);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_verbs_import_list_remove_and_link() {
    let p = authorized("pf_verbs", "wxverb1").await;
    for appid in ["wxverb2", "wxverb3"] {
        p.t.sim.authorize(&p.component, appid).unwrap();
        p.wait_for_standing(appid, Standing::Active).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let verb = |args: &[&str], secret| platform_verb(&p, dir, args, secret);

    // Onboarding (or a state that lost everything): import keeps every listed authorizer.
    p.lose_authorizers().await;
    let (code, out, err) = verb(&["import", "--platform", "NAME"], Some(SECRET));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("kept 3 authorizers"), "{out}");
    // The imported tokens are the real ones: each authorizer gets a token.
    for appid in ["wxverb1", "wxverb2", "wxverb3"] {
        token_source(&p, appid).fetch(None).await.unwrap();
    }

    let (code, out, _) = verb(&["list", "--platform", "NAME"], None);
    assert_eq!(code, 0);
    let accounts: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    let want: Vec<String> = ["wxverb1", "wxverb2", "wxverb3"]
        .iter()
        .map(|a| format!("{}:{a}", p.name))
        .collect();
    assert_eq!(accounts, want, "{out}");
    assert!(out.lines().all(|l| l.contains("\tactive\t")), "{out}");
    assert!(!out.contains("refreshtoken"), "a refresh token was printed");

    let (code, out, _) = verb(
        &["remove", "--platform", "NAME", "--authorizer", "wxverb2"],
        None,
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("{}:wxverb2 is retired", p.name));
    let (_, out, _) = verb(&["list", "--platform", "NAME", "--json"], None);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[1]["account"], format!("{}:wxverb2", p.name));
    assert_eq!(rows[1]["standing"], "revoked");
    assert!(!out.contains("refreshtoken"), "a refresh token was printed");

    let (code, out, err) = verb(
        &[
            "authorize-url",
            "--platform",
            "NAME",
            "--redirect",
            "https://example.com/back",
        ],
        Some(SECRET),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("https://mp.weixin.qq.com/cgi-bin/componentloginpage?component_appid=")
            && out.contains("pre_auth_code=preauthcode")
            && out.contains("redirect_uri=https%3A%2F%2Fexample.com%2Fback"),
        "{out}"
    );

    // What an operator gets wrong is named, with exit 2.
    let (code, _, err) = verb(
        &["authorize-url", "--platform", "NAME", "--redirect", "x"],
        None,
    );
    assert_eq!(code, 2);
    let variable = format!(
        "WXCOURIER_PLATFORMS__{}__COMPONENT_SECRET",
        p.name.to_ascii_uppercase()
    );
    assert!(err.contains(&variable), "{err}");
    let (code, _, err) = verb(&["list", "--platform", "nosuch"], None);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = verb(
        &["remove", "--platform", "NAME", "--authorizer", "../x"],
        None,
    );
    assert_eq!(code, 2);

    // `check` reports the platform: its ticket, its token, its authorizers.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wxcourier"))
        .args(["check", "--config"])
        .arg(dir.join("platform.toml"))
        .env(&variable, SECRET)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let name = &p.name;
    for line in [
        format!("platform {name}: ticket: ok"),
        format!("platform {name}: component token ok"),
        format!("platform {name}: authorizers: 2 active, 1 revoked, 0 needing re-authorization"),
    ] {
        assert!(text.contains(&line), "{line} not in:\n{text}");
    }
    assert!(
        !text.contains("refreshtoken"),
        "check printed a refresh token"
    );

    // The list without refresh tokens: nothing kept, and the operator is told which.
    p.set_faults(PlatformFaults {
        list_without_refresh_token: true,
        ..Default::default()
    });
    let (code, out, _) = verb(&["import", "--platform", "NAME"], Some(SECRET));
    assert_eq!(code, 0);
    assert!(
        out.contains("kept 0 authorizers") && out.contains("wxverb1"),
        "{out}"
    );
    p.stop().await;
}
