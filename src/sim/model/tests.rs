//! The simulator's model, one rule at a time, without HTTP.

use super::*;
use crate::outcome::PreferenceStatus;
use crate::sim::push::{CallbackTarget, UserEvent};
use crate::sim::reports::UserEventError;

const USER: &str = "oia2TjuEGTNoeX76QEjQNrcURxG8";

fn model() -> Model {
    Model::new(SimOptions::default()).0
}

fn token(m: &Model, stable: bool) -> String {
    match m.token(
        Some("client_credential"),
        Some("wx0000000000000000"),
        Some("secret"),
        stable,
        false,
    ) {
        Reply::Json(v) => v["access_token"].as_str().unwrap().to_owned(),
        other => panic!("{other:?}"),
    }
}

fn send(m: &Model, token: &str, cmid: &str) -> serde_json::Value {
    let body = serde_json::json!({"touser": USER, "template_id": "t", "data": {"k": {"value": "v"}}, "client_msg_id": cmid});
    match m.send(
        Kind::Template,
        Some(token),
        &serde_json::to_vec(&body).unwrap(),
    ) {
        Reply::Json(v) => v,
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_credentials_get_40013_and_40125() {
    let m = model();
    assert_eq!(
        m.token(
            Some("client_credential"),
            Some("wxnope"),
            Some("x"),
            false,
            false
        ),
        error(40013, "invalid appid")
    );
    assert_eq!(
        m.token(
            Some("client_credential"),
            Some("wx0000000000000000"),
            Some("x"),
            false,
            false
        ),
        error(40125, "invalid appsecret")
    );
}

#[test]
fn a_stable_token_is_the_same_for_every_caller() {
    let m = model();
    assert_eq!(token(&m, true), token(&m, true));
}

#[test]
fn a_new_classic_token_retires_the_old_one_after_the_grace_period() {
    let m = Model::new(SimOptions {
        token_grace: Duration::from_millis(20),
        ..SimOptions::default()
    })
    .0;
    let old = token(&m, false);
    let new = token(&m, false);
    assert_ne!(old, new);
    assert_eq!(send(&m, &old, "a")["errcode"], 0);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(send(&m, &old, "b")["errcode"], 40001);
    assert_eq!(send(&m, &new, "c")["errcode"], 0);
}

#[test]
fn client_msg_id_is_deduplicated() {
    let m = model();
    let t = token(&m, true);
    let a = send(&m, &t, "same");
    let b = send(&m, &t, "same");
    assert_eq!(a["msgid"], b["msgid"]);
    assert!(a["msgid"].as_u64().unwrap() > (1u64 << 53));
    let s = m.stats();
    assert_eq!(
        (
            s.apps["wx0000000000000000"].accepted,
            s.apps["wx0000000000000000"].duplicates
        ),
        (1, 1)
    );
}

#[test]
fn a_refusing_user_gets_43101_until_they_accept_again() {
    let m = model();
    let t = token(&m, true);
    m.set_refusing(USER, true);
    assert_eq!(send(&m, &t, "r1")["errcode"], 43101);
    m.set_refusing(USER, false);
    assert_eq!(send(&m, &t, "r2")["errcode"], 0);
    assert_eq!(m.stats().apps["wx0000000000000000"].errcodes["43101"], 1);
}

#[test]
fn each_subscribe_route_answers_47003_naming_the_field_that_breaks_its_type() {
    let m = model();
    let t = token(&m, true);
    for name in ["subscribe", "miniprogram_subscribe"] {
        let kind: Kind = name.parse().unwrap();
        let send = |data: serde_json::Value| {
            let body = serde_json::json!({"touser": USER, "template_id": "t", "data": data});
            match m.send(kind, Some(&t), &serde_json::to_vec(&body).unwrap()) {
                Reply::Json(v) => v,
                other => panic!("{other:?}"),
            }
        };
        let ok = send(serde_json::json!({"thing1": {"value": "ok"}, "number2": {"value": "12"}}));
        assert_eq!(ok["errcode"], 0, "{name}: {ok}");
        assert!(ok["msgid"].as_u64().is_some());
        let bad =
            send(serde_json::json!({"thing1": {"value": "ok"}, "number2": {"value": "twelve"}}));
        assert_eq!(bad["errcode"], 47003, "{name}");
        assert!(
            bad["errmsg"]
                .as_str()
                .unwrap()
                .contains("data.number2.value"),
            "{bad}"
        );
    }
    assert!(
        m.sends()
            .iter()
            .any(|r| r.kind == Kind::MiniprogramSubscribe)
    );
}

fn answer(reply: Reply) -> serde_json::Value {
    match reply {
        Reply::Json(v) => v,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_template_list_is_the_apps_and_limits_which_templates_are_taken() {
    let m = model();
    let t = token(&m, true);
    assert_eq!(
        answer(m.template_list(Some(&t))),
        serde_json::json!({"template_list": []})
    );
    assert_eq!(answer(m.template_list(None))["errcode"], 41001);
    assert_eq!(answer(m.template_list(Some("nope")))["errcode"], 40001);
    // Without a list any template_id is taken; with one, only those listed.
    assert_eq!(send(&m, &t, "before")["errcode"], 0);
    let listed = SimTemplate {
        template_id: "other".into(),
        title: "订单".into(),
        content: "{{thing1.DATA}}".into(),
        ..SimTemplate::default()
    };
    m.set_templates("wx0000000000000000", vec![listed.clone()]);
    let list = answer(m.template_list(Some(&t)));
    assert_eq!(list["template_list"][0]["template_id"], "other");
    assert_eq!(list["template_list"][0]["content"], "{{thing1.DATA}}");
    assert_eq!(
        send(&m, &t, "after")["errcode"],
        40037,
        "template t is not listed"
    );
    assert_eq!(m.stats().apps["wx0000000000000000"].template_list_calls, 2);
}

#[test]
fn quota_get_counts_accepted_sends_per_endpoint() {
    let m = Model::new(SimOptions {
        daily_quota: 5,
        ..SimOptions::default()
    })
    .0;
    let t = token(&m, true);
    let quota = |path: &str| {
        answer(m.quota_get(
            Some(&t),
            &serde_json::to_vec(&serde_json::json!({ "cgi_path": path })).unwrap(),
        ))
    };
    let template = "/cgi-bin/message/template/send";
    assert_eq!(
        quota(template)["quota"],
        serde_json::json!({"daily_limit": 5, "used": 0, "remain": 5})
    );
    send(&m, &t, "1");
    send(&m, &t, "1"); // a de-duplicated repeat is not a second send
    send(&m, &t, "2");
    let q = quota(template);
    assert_eq!(
        (q["errcode"].as_i64(), q["errmsg"].as_str()),
        (Some(0), Some("ok"))
    );
    assert_eq!(
        q["quota"],
        serde_json::json!({"daily_limit": 5, "used": 2, "remain": 3})
    );
    assert_eq!(
        quota("/cgi-bin/message/subscribe/bizsend")["quota"]["used"],
        0,
        "each endpoint counts its own sends"
    );
    assert_eq!(quota("/cgi-bin/nope")["errcode"], 76021);
    assert_eq!(answer(m.quota_get(Some(&t), b"not json"))["errcode"], 47001);
    assert_eq!(answer(m.quota_get(None, b"{}"))["errcode"], 41001);
    m.set_quota_left("wx0000000000000000", 0);
    assert_eq!(
        quota(template)["quota"],
        serde_json::json!({"daily_limit": 2, "used": 2, "remain": 0})
    );
    assert_eq!(m.stats().apps["wx0000000000000000"].quota_left, 0);
}

#[test]
fn a_spent_quota_answers_45009() {
    let m = model();
    m.set_quota_left("wx0000000000000000", 1);
    let t = token(&m, true);
    assert_eq!(send(&m, &t, "1")["errcode"], 0);
    assert_eq!(send(&m, &t, "2")["errcode"], 45009);
}

#[test]
fn expired_tokens_get_42001_and_unknown_ones_40001() {
    let m = Model::new(SimOptions {
        token_ttl: Duration::from_millis(10),
        ..SimOptions::default()
    })
    .0;
    let t = token(&m, false);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(send(&m, &t, "x")["errcode"], 42001);
    assert_eq!(send(&m, "nope", "x")["errcode"], 40001);
}

fn target() -> CallbackTarget {
    CallbackTarget {
        url: "http://127.0.0.1:9/cb".into(),
        token: "t".into(),
        aes_key: None,
    }
}

fn reject(template_id: &str, status: PreferenceStatus) -> UserEvent {
    UserEvent::SubscribeMsgChangeEvent {
        templates: vec![crate::sim::push::Decision {
            template_id: template_id.into(),
            status,
            scene: None,
        }],
    }
}

#[test]
fn each_kind_pushes_its_own_result_event_after_an_accepted_send() {
    let (m, mut queue, _) = Model::new(SimOptions::default());
    m.set_callback("wx0000000000000000", Some(target()));
    let t = token(&m, true);
    let msgid = send(&m, &t, "a")["msgid"].as_u64().unwrap();
    let template = queue.try_recv().unwrap().push.xml;
    assert!(template.contains("TEMPLATESENDJOBFINISH"), "{template}");
    assert!(template.contains(&format!("<MsgID>{msgid}</MsgID>")));
    let body = serde_json::json!({"touser": USER, "template_id": "tplA", "data": {"thing1": {"value": "ok"}}});
    let kind = Kind::Subscribe;
    let Reply::Json(v) = m.send(kind, Some(&t), &serde_json::to_vec(&body).unwrap()) else {
        panic!()
    };
    let sent = queue.try_recv().unwrap().push.xml;
    let item = crate::callback::xml::message(&sent).unwrap();
    assert_eq!(item.fields["Event"], "subscribe_msg_sent_event");
    assert_eq!(item.items.len(), 1);
    assert_eq!(item.items[0]["MsgID"], v["msgid"].to_string());
    assert_eq!(
        (
            item.items[0]["TemplateId"].as_str(),
            item.items[0]["ErrorCode"].as_str()
        ),
        ("tplA", "0")
    );
}

#[test]
fn a_template_refused_in_a_user_event_is_answered_43101_until_accepted() {
    let (m, mut queue, _) = Model::new(SimOptions::default());
    let t = token(&m, true);
    assert_eq!(
        m.user_event(
            "wx0000000000000000",
            USER,
            reject("t", PreferenceStatus::Reject)
        ),
        Err(UserEventError::NoCallback("wx0000000000000000".into()))
    );
    m.set_callback("wx0000000000000000", Some(target()));
    m.user_event(
        "wx0000000000000000",
        USER,
        reject("t", PreferenceStatus::Reject),
    )
    .unwrap();
    let pushed = queue.try_recv().unwrap().push.xml;
    assert!(pushed.contains("subscribe_msg_change_event") && pushed.contains("reject"));
    assert_eq!(send(&m, &t, "r1")["errcode"], 43101);
    // Another template, and the same template to another user, are sent.
    let other =
        serde_json::json!({"touser": USER, "template_id": "u", "data": {"k": {"value": "v"}}});
    let Reply::Json(v) = m.send(
        Kind::Template,
        Some(&t),
        &serde_json::to_vec(&other).unwrap(),
    ) else {
        panic!()
    };
    assert_eq!(v["errcode"], 0);
    m.user_event(
        "wx0000000000000000",
        USER,
        reject("t", PreferenceStatus::Accept),
    )
    .unwrap();
    assert_eq!(send(&m, &t, "r2")["errcode"], 0);
    // Follows push, and change no answer.
    m.user_event("wx0000000000000000", USER, UserEvent::Unsubscribe)
        .unwrap();
    assert_eq!(send(&m, &t, "r3")["errcode"], 0);
    for bad_user in ["oShort", "", "x"] {
        assert!(matches!(
            m.user_event("wx0000000000000000", bad_user, UserEvent::Subscribe),
            Err(UserEventError::Invalid(_))
        ));
    }
    for bad_template in ["", "a]]>b", &"t".repeat(129)] {
        assert!(matches!(
            m.user_event(
                "wx0000000000000000",
                USER,
                reject(bad_template, PreferenceStatus::Reject)
            ),
            Err(UserEventError::Invalid(_))
        ));
    }
}
