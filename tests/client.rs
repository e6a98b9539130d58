//! The WeChat client and token keeper against the simulator: expiry, invalidation under load,
//! every error class, de-duplication, and no token in any error.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::openid;
use wxcourier::config::{TokenMode, WechatSettings};
use wxcourier::job;
use wxcourier::sim::{Answer, DEFAULT_APPID, DEFAULT_SECRET, SimOptions, Simulator};
use wxcourier::types::{Class, Secret};
use wxcourier::wechat::client::{CallError, TokenError, WechatClient};
use wxcourier::wechat::errcode::Classifier;
use wxcourier::wechat::token::{TokenKeeper, WechatTokenSource};

async fn sim(options: SimOptions) -> (Simulator, WechatClient) {
    let sim = Simulator::start("127.0.0.1:0", options).await.unwrap();
    // Generous: a thousand calls at once on two shared cores can take seconds, and these
    // tests are about which calls are made, not how fast.
    let client = WechatClient::new(&sim.base_url(), Duration::from_secs(10)).unwrap();
    (sim, client)
}

fn body(id: &str, touser: &str) -> Vec<u8> {
    let j = serde_json::to_vec(&common::job(id, touser)).unwrap();
    job::parse(&j, None).unwrap().wechat_body()
}

/// The app's stable token, straight from the simulator.
async fn stable_token(client: &WechatClient) -> Secret {
    client
        .stable_token(DEFAULT_APPID, &Secret::new(DEFAULT_SECRET))
        .await
        .unwrap()
        .token
}

fn keeper(client: &WechatClient, mode: TokenMode) -> Arc<TokenKeeper> {
    Arc::new(TokenKeeper::new(Box::new(WechatTokenSource {
        client: client.clone(),
        appid: DEFAULT_APPID.into(),
        secret: Secret::new(DEFAULT_SECRET),
        mode,
        fetched: Default::default(),
    })))
}

/// The classifier the worker builds from the default `wechat.*_codes`.
fn contract_classes() -> Classifier {
    wxcourier::startup::classifier(&WechatSettings::default())
}

#[tokio::test]
async fn an_expired_token_is_refused_with_a_token_class_code() {
    let (sim, client) = sim(SimOptions {
        token_ttl: Duration::from_millis(600),
        ..SimOptions::default()
    })
    .await;
    let grant = client
        .classic_token(DEFAULT_APPID, &Secret::new(DEFAULT_SECRET))
        .await
        .unwrap();
    let ok = client
        .send_template(&grant.token, body("exp-a", &openid(1)))
        .await
        .unwrap();
    assert_eq!(ok.errcode, 0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let late = client
        .send_template(&grant.token, body("exp-b", &openid(1)))
        .await
        .unwrap();
    assert_eq!(late.errcode, 42001);
    assert_eq!(contract_classes().classify(late.errcode), Class::Token);
    sim.stop();
}

#[tokio::test]
async fn the_keeper_fetches_a_new_token_before_the_old_one_expires() {
    let (sim, client) = sim(SimOptions {
        token_ttl: Duration::from_secs(2),
        ..SimOptions::default()
    })
    .await;
    let k = keeper(&client, TokenMode::Classic);
    let first = k.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1850)).await;
    let second = k.get().await.unwrap();
    assert_ne!(first.generation, second.generation);
    let r = client
        .send_template(&second.value, body("fresh", &openid(2)))
        .await
        .unwrap();
    assert_eq!(r.errcode, 0);
    assert_eq!(sim.stats().apps[DEFAULT_APPID].classic_token_calls, 2);
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_senders_on_an_invalidated_token_cause_exactly_one_refresh() {
    let (sim, client) = sim(SimOptions::default()).await;
    let k = keeper(&client, TokenMode::Classic);
    let bad = k.get().await.unwrap();
    sim.invalidate_tokens(DEFAULT_APPID);
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (k, client, bad) = (k.clone(), client.clone(), bad.clone());
        tasks.push(tokio::spawn(async move {
            let first = client
                .send_template(&bad.value, body(&format!("inv-{i}"), &openid(i)))
                .await
                .unwrap();
            assert_eq!(first.errcode, 40001);
            k.invalidate(&bad);
            let fresh = k.get().await.unwrap();
            client
                .send_template(&fresh.value, body(&format!("inv-{i}"), &openid(i)))
                .await
                .unwrap()
                .errcode
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 0);
    }
    let stats = sim.stats().apps[DEFAULT_APPID].clone();
    assert_eq!(
        stats.classic_token_calls, 2,
        "the first fetch and one refresh"
    );
    assert_eq!(stats.accepted, 1000);
    sim.stop();
}

#[tokio::test]
async fn stable_tokens_are_shared_and_never_forced() {
    let (sim, client) = sim(SimOptions::default()).await;
    let a = client
        .stable_token(DEFAULT_APPID, &Secret::new(DEFAULT_SECRET))
        .await
        .unwrap();
    let b = client
        .stable_token(DEFAULT_APPID, &Secret::new(DEFAULT_SECRET))
        .await
        .unwrap();
    assert_eq!(a.token, b.token);
    sim.stop();
}

#[tokio::test]
async fn bad_credentials_are_refused_with_their_codes_and_no_secret_in_the_error() {
    let (sim, client) = sim(SimOptions::default()).await;
    let secret = Secret::new("wrong-secret-value");
    let e = client
        .classic_token(DEFAULT_APPID, &secret)
        .await
        .unwrap_err();
    assert!(
        matches!(e, TokenError::Refused { errcode: 40125, .. }),
        "{e}"
    );
    assert!(!e.to_string().contains("wrong-secret-value"));
    let e = client.stable_token("wxunknown", &secret).await.unwrap_err();
    assert!(
        matches!(e, TokenError::Refused { errcode: 40013, .. }),
        "{e}"
    );
    sim.stop();
}

#[tokio::test]
async fn every_error_class_comes_back_as_wechat_sends_it() {
    let (sim, client) = sim(SimOptions::default()).await;
    let token = stable_token(&client).await;
    let c = contract_classes();
    let cases = [
        (-1, Class::Transient),
        (45011, Class::Transient),
        (45009, Class::Quota),
        (40001, Class::Token),
        (41006, Class::Token),
        (40003, Class::Permanent),
        (43004, Class::Permanent),
    ];
    for (i, (code, class)) in cases.into_iter().enumerate() {
        let user = openid(100 + i);
        sim.script(&user, vec![Answer::Code(code)]);
        let r = client
            .send_template(&token, body(&format!("class-{i}"), &user))
            .await
            .unwrap();
        assert_eq!((r.errcode, c.classify(r.errcode)), (code, class));
    }
    // Natural refusals from the simulator's own checks.
    let r = client
        .send_template(&token, body("bad-openid", "oTooShort"))
        .await
        .unwrap();
    assert_eq!(r.errcode, 40003);
    sim.stop();
}

#[tokio::test]
async fn transport_failures_are_typed_and_never_show_the_token() {
    let (sim, _) = sim(SimOptions::default()).await;
    // Short, so the hanging answer times out quickly.
    let client = WechatClient::new(&sim.base_url(), Duration::from_secs(1)).unwrap();
    let token = stable_token(&client).await;
    type Expect = fn(&CallError) -> bool;
    let cases: [(&str, Expect); 4] = [
        ("http500", |e| matches!(e, CallError::Status(500))),
        ("bad_json", |e| matches!(e, CallError::Body(_))),
        ("drop", |e| {
            matches!(e, CallError::Connect(_) | CallError::Body(_))
        }),
        ("hang", |e| matches!(e, CallError::Timeout)),
    ];
    for (i, (fault, expected)) in cases.into_iter().enumerate() {
        let user = openid(200 + i);
        sim.script(&user, vec![Answer::Named(fault.into())]);
        let e = client
            .send_template(&token, body(&format!("t-{i}"), &user))
            .await
            .unwrap_err();
        assert!(expected(&e), "{fault}: {e:?}");
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains(token.expose()) && !shown.contains("access_token="),
            "{fault}: {shown}"
        );
    }
    // Nothing listening at all.
    let dead = WechatClient::new("http://127.0.0.1:9", Duration::from_secs(1)).unwrap();
    let e = dead
        .send_template(&token, body("x", &openid(1)))
        .await
        .unwrap_err();
    assert!(matches!(e, CallError::Connect(_)), "{e:?}");
    assert!(!format!("{e} {e:?}").contains(token.expose()));
    sim.stop();
}

#[tokio::test]
async fn the_same_client_msg_id_is_accepted_once() {
    let (sim, client) = sim(SimOptions::default()).await;
    let token = stable_token(&client).await;
    let a = client
        .send_template(&token, body("same-id", &openid(7)))
        .await
        .unwrap();
    let b = client
        .send_template(&token, body("same-id", &openid(7)))
        .await
        .unwrap();
    assert_eq!(a.msgid, b.msgid);
    let s = sim.stats().apps[DEFAULT_APPID].clone();
    assert_eq!((s.accepted, s.duplicates), (1, 1));
    sim.stop();
}

#[tokio::test]
async fn a_spent_daily_quota_answers_45009() {
    let (sim, client) = sim(SimOptions {
        daily_quota: 2,
        ..SimOptions::default()
    })
    .await;
    let token = stable_token(&client).await;
    let codes: Vec<i64> = futures_util::future::join_all((0..3).map(|i| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            client
                .send_template(&token, body(&format!("q-{i}"), &openid(i)))
                .await
                .unwrap()
                .errcode
        }
    }))
    .await;
    assert_eq!(codes.iter().filter(|&&c| c == 45009).count(), 1);
    sim.stop();
}

/// Serves every connection one HTTP answer: `head` (status line and headers), then `body_len`
/// bytes of `x` (chunked when `head` says so), however long that takes.
async fn raw_server(head: &'static str, body_len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = tcp.read(&mut request).await;
                let _ = tcp.write_all(head.as_bytes()).await;
                let chunk = vec![b'x'; 64 * 1024];
                let chunked = head.contains("chunked");
                let mut sent = 0;
                while sent < body_len {
                    let n = chunk.len().min(body_len - sent);
                    let framed = if chunked {
                        [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat()
                    } else {
                        chunk[..n].to_vec()
                    };
                    if tcp.write_all(&framed).await.is_err() {
                        return;
                    }
                    sent += n;
                }
                if chunked {
                    let _ = tcp.write_all(b"0\r\n\r\n").await;
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_lookup_answer_over_its_bound_is_refused_without_reading_it_whole() {
    let token = Secret::new("tok-secret-123");
    let limit = 1024 * 1024;
    for (head, len) in [
        // Announced too big: refused before the body is read.
        (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 3145728\r\n\r\n",
            3 * 1024 * 1024,
        ),
        // No length announced: refused once the bound is passed.
        (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            3 * 1024 * 1024,
        ),
    ] {
        let client =
            WechatClient::new(&raw_server(head, len).await, Duration::from_secs(5)).unwrap();
        let e = client
            .lookup(
                "/cgi-bin/template/get_all_private_template",
                &token,
                None,
                limit,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CallError::Body(why) if why.contains("over 1048576 bytes")),
            "{head:?}: {e:?}"
        );
        assert!(!format!("{e} {e:?}").contains(token.expose()));
    }
    // Within the bound, the answer comes back whole.
    let client = WechatClient::new(
        &raw_server(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            200_000,
        )
        .await,
        Duration::from_secs(5),
    )
    .unwrap();
    let body = client
        .lookup(
            "/cgi-bin/template/get_all_private_template",
            &token,
            None,
            limit,
        )
        .await
        .unwrap();
    assert_eq!(body.len(), 200_000);
}

#[tokio::test]
async fn lookups_read_the_catalog_and_the_quota_and_drop_a_refused_token() {
    use wxcourier::sim::SimTemplate;
    use wxcourier::wechat::lookup::{Lookup, LookupError};
    let (sim, client) = sim(SimOptions::default()).await;
    sim.set_templates(
        DEFAULT_APPID,
        vec![SimTemplate {
            template_id: "order_paid".into(),
            title: "订单支付成功".into(),
            content: "{{first.DATA}}\n{{keyword1.DATA}}\n{{ keyword2.DATA }}".into(),
            ..SimTemplate::default()
        }],
    );
    let keeper = keeper(&client, TokenMode::Stable);
    let classifier = contract_classes();
    let lookup = Lookup {
        client: &client,
        keeper: &keeper,
        classifier: &classifier,
    };
    let listed = wxcourier::catalog::keeper::fetch(&lookup).await.unwrap();
    assert_eq!(listed.templates.len(), 1);
    assert_eq!(listed.templates[0].keys, ["first", "keyword1", "keyword2"]);
    let q = wxcourier::daily_quota::fetch(&lookup, "/cgi-bin/message/template/send")
        .await
        .unwrap();
    assert_eq!((q.daily_limit, q.used, q.remain), (1_000_000, 0, 1_000_000));
    let e = wxcourier::daily_quota::fetch(&lookup, "/cgi-bin/nope")
        .await
        .unwrap_err();
    assert!(
        matches!(e, LookupError::Refused { errcode: 76021, .. }),
        "{e:?}"
    );

    // A token WeChat no longer takes is dropped: the next lookup fetches a new one.
    sim.invalidate_tokens(DEFAULT_APPID);
    let e = wxcourier::catalog::keeper::fetch(&lookup)
        .await
        .unwrap_err();
    assert!(
        matches!(e, LookupError::Refused { errcode: 40001, .. }),
        "{e:?}"
    );
    assert!(wxcourier::catalog::keeper::fetch(&lookup).await.is_ok());
    assert_eq!(sim.stats().apps[DEFAULT_APPID].stable_token_calls, 2);
    sim.stop();
}
