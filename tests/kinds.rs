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

/// A job for a category template (2023 on), whose keys are typed; `thing13` holds `thing`.
fn category_template_job(id: &str, touser: &str, thing: &str) -> Value {
    json!({
        "id": id,
        "touser": touser,
        "template_id": "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY",
        "data": {
            "thing13": {"value": thing},
            "character_string21": {"value": "SF1234567890"},
            "time4": {"value": "2026年11月28日 15:01"},
            "amount2": {"value": "¥260.00"}
        },
        "meta": {"order": 1842}
    })
}

/// 25 characters: over the 20 a `thing` may hold.
const LONG_THING: &str = "您的餐品已经备好请尽快到一号窗口取餐谢谢您光临本店";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_template_value_outside_its_rule_is_rejected_with_no_call_and_no_quota() {
    let mut t = spawn_app("kinds_tpl_typed", |_| {}).await;
    assert_eq!(LONG_THING.chars().count(), 25);
    t.publish(&category_template_job("tpl-long", &openid(10), LONG_THING))
        .await;
    let o = t.outcome_of("tpl-long").await;
    assert_eq!(o["status"], "rejected", "{o}");
    let error = o["error"].as_str().unwrap();
    assert!(
        error.starts_with("data.thing13.value: thing: at most 20 characters"),
        "{error}"
    );
    assert!(o.get("message_kind").is_none(), "a template outcome: {o}");
    assert_eq!(t.take_dead(1).await.len(), 1, "kept in wxcourier.dead");
    let stats = t.sim.stats().apps[DEFAULT_APPID].clone();
    assert_eq!(
        (stats.send_calls, stats.stable_token_calls),
        (0, 0),
        "no WeChat call, no quota spent"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncating_app_sends_the_shortened_value_and_warns_of_it() {
    let mut t = spawn_app("kinds_tpl_cut", |s| {
        for app in s.apps.values_mut() {
            app.truncate = true;
        }
    })
    .await;
    let mut j = category_template_job("tpl-cut", &openid(11), LONG_THING);
    j["data"]["remark"] = json!({"value": "感谢您的光临", "color": "#173177"});
    t.publish(&j).await;
    let o = t.outcome_of("tpl-cut").await;
    assert_eq!(o["status"], "sent", "{o}");
    let warnings: Vec<&str> = o["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("warnings: {o}"))
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].starts_with("data.thing13.value: shortened from 25 to 18 characters"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with("data.remark: not shown"),
        "{warnings:?}"
    );
    assert!(
        warnings[2].starts_with("data.remark.color: ignored"),
        "{warnings:?}"
    );

    let sends = t.sim.sends();
    let sent = sends
        .iter()
        .find(|r| r.touser == openid(11))
        .expect("the job reached WeChat");
    assert_eq!(sent.errcode, 0);
    let data = sent.data.as_ref().expect("the body's data");
    let want: String = LONG_THING.chars().take(17).collect::<String>() + "…";
    assert_eq!(data["thing13"]["value"], want.as_str());
    assert_eq!(
        data["character_string21"]["value"], "SF1234567890",
        "untouched"
    );

    // A job with nothing to warn of has no `warnings` field.
    t.publish(&category_template_job(
        "tpl-short",
        &openid(12),
        "黄焖鸡米饭",
    ))
    .await;
    let o = t.outcome_of("tpl-short").await;
    assert_eq!(o["status"], "sent", "{o}");
    assert!(o.get("warnings").is_none(), "{o}");
    t.stop().await;
}
