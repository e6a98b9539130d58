//! Every message kind end to end: real RabbitMQ, the worker, the simulator's route for the
//! kind, and the outcome on `wxcourier.results`.

mod common;

use common::*;
use serde_json::{Value, json};
use wxcourier::kinds::Kind;
use wxcourier::sim::{Answer, DEFAULT_APPID};

fn sends_all_kinds(s: &mut wxcourier::config::Settings) {
    for app in s.apps.values_mut() {
        app.kinds = Kind::ALL.into_iter().collect();
    }
}

fn subscribe_job(id: &str, kind: Kind, touser: &str) -> Value {
    let mut j = json!({
        "id": id,
        "kind": kind,
        "touser": touser,
        "template_id": "bDmywsp2oEHjwAadTGKkUHpC0RgBVPvfAKTeQfPxRl4",
        "page": "pages/order/detail?id=1842",
        "data": {
            "thing1": {"value": "您的餐品已备好"},
            "character_string2": {"value": "SF1234567890"},
            "amount3": {"value": "¥260.00"},
            "time4": {"value": "2026年11月28日 15:01"},
            "phrase5": {"value": "配送中"}
        },
        "meta": {"order": 1842}
    });
    if kind == Kind::MiniprogramSubscribe {
        j["miniprogram_state"] = json!("formal");
        j["lang"] = json!("zh_CN");
    }
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_is_sent_on_its_own_endpoint_and_says_so_in_its_outcome() {
    let mut t = spawn_app("kinds_all", sends_all_kinds).await;
    t.publish(&job("k-template", &openid(1))).await;
    t.publish(&subscribe_job("k-subscribe", Kind::Subscribe, &openid(2)))
        .await;
    t.publish(&subscribe_job(
        "k-mp",
        Kind::MiniprogramSubscribe,
        &openid(3),
    ))
    .await;
    // Outcomes arrive in any order.
    let outcomes = t.outcomes(3).await;
    for (id, kind) in [
        ("k-template", None),
        ("k-subscribe", Some("subscribe")),
        ("k-mp", Some("miniprogram_subscribe")),
    ] {
        let o = outcomes
            .iter()
            .find(|o| o["id"] == id)
            .unwrap_or_else(|| panic!("no outcome for {id}"));
        assert_eq!(o["status"], "sent", "{o}");
        if kind.is_some() {
            assert_eq!(o["meta"], json!({"order": 1842}), "meta is echoed");
        }
        assert!(o["msgid"].as_u64().is_some(), "{o}");
        assert_eq!(o["reason"], Value::Null);
        match kind {
            Some(k) => assert_eq!(o["message_kind"], k, "{o}"),
            // A template outcome keeps exactly the original fields.
            None => assert!(o.get("message_kind").is_none(), "{o}"),
        }
    }
    let sends = t.sim.sends();
    let kind_of = |user: &str| {
        sends
            .iter()
            .find(|r| r.touser == user)
            .map(|r| (r.kind, r.client_msg_id.clone()))
    };
    assert_eq!(
        kind_of(&openid(1)),
        Some((Kind::Template, Some("k-template".into())))
    );
    assert_eq!(kind_of(&openid(2)), Some((Kind::Subscribe, None)));
    assert_eq!(
        kind_of(&openid(3)),
        Some((Kind::MiniprogramSubscribe, None))
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_the_app_does_not_send_is_rejected_without_a_send() {
    let mut t = spawn_app("kinds_default", |_| {}).await;
    t.publish(&subscribe_job("not-mine", Kind::Subscribe, &openid(4)))
        .await;
    let o = t.outcome_of("not-mine").await;
    assert_eq!(o["status"], "rejected");
    assert_eq!(o["message_kind"], "subscribe");
    let error = o["error"].as_str().unwrap();
    assert!(
        error.starts_with("kind:") && error.contains("subscribe"),
        "{error}"
    );
    assert_eq!(t.take_dead(1).await.len(), 1, "kept in wxcourier.dead");
    assert_eq!(t.sim.stats().apps[DEFAULT_APPID].send_calls, 0);
    // The app still sends its own kind.
    t.publish(&job("mine", &openid(5))).await;
    assert_eq!(t.outcome_of("mine").await["status"], "sent");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_field_breach_is_rejected_before_any_send() {
    let mut t = spawn_app("kinds_typed", sends_all_kinds).await;
    for (i, kind) in [Kind::Subscribe, Kind::MiniprogramSubscribe]
        .into_iter()
        .enumerate()
    {
        let mut j = subscribe_job(&format!("typed-{i}"), kind, &openid(6));
        j["data"]["thing1"]["value"] = json!("这是一条超过二十个字的事物描述这是一条超过二十个字");
        t.publish(&j).await;
        let o = t.outcome_of(&format!("typed-{i}")).await;
        assert_eq!(o["status"], "rejected", "{o}");
        assert_eq!(o["message_kind"], kind.name(), "{o}");
        let error = o["error"].as_str().unwrap();
        assert!(
            error.starts_with("data.thing1.value: thing: at most 20 characters"),
            "{error}"
        );
    }
    let stats = t.sim.stats().apps[DEFAULT_APPID].clone();
    assert_eq!(
        (stats.send_calls, stats.stable_token_calls),
        (0, 0),
        "no quota and not even a token spent"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_refusals_and_overrides_reach_the_outcome() {
    let mut t = spawn_app("kinds_errors", sends_all_kinds).await;
    // A user who refused: failed, recipient_refused, and the outcome names its kind.
    let refuser = openid(7);
    t.sim.set_refusing(&refuser, true);
    t.publish(&subscribe_job("sub-refused", Kind::Subscribe, &refuser))
        .await;
    let o = t.outcome_of("sub-refused").await;
    assert_eq!(
        (
            o["status"].as_str(),
            o["reason"].as_str(),
            o["message_kind"].as_str()
        ),
        (Some("failed"), Some("recipient_refused"), Some("subscribe")),
        "{o}"
    );

    // 43108 (a concurrent send to the same user) is transient for bizsend: sent on retry.
    let busy = openid(8);
    t.sim.script(&busy, vec![Answer::Code(43108)]);
    t.publish(&subscribe_job("sub-43108", Kind::Subscribe, &busy))
        .await;
    let o = t.outcome_of("sub-43108").await;
    assert_eq!(
        (o["status"].as_str(), o["attempts"].as_u64()),
        (Some("sent"), Some(2)),
        "{o}"
    );

    // 41030 (a page not in the mini program) is the kind's content_rejected.
    let page = openid(9);
    t.sim.script(&page, vec![Answer::Code(41030)]);
    t.publish(&subscribe_job(
        "mp-41030",
        Kind::MiniprogramSubscribe,
        &page,
    ))
    .await;
    let o = t.outcome_of("mp-41030").await;
    assert_eq!(
        (o["status"].as_str(), o["reason"].as_str()),
        (Some("failed"), Some("content_rejected")),
        "{o}"
    );
    assert!(
        o["error"].as_str().unwrap().contains("page"),
        "the kind's own words: {o}"
    );
    t.stop().await;
}
