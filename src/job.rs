//! The job wire format (CONTRACT §1): the envelope (`id`, `meta`, `not_after`, `kind`) is read
//! here, the rest by the job's `crate::kinds`; the result is a [`Job`] or a [`Rejection`].

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::kinds::Kind;

/// Largest message body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest `meta` object, serialized.
pub(crate) const MAX_META_BYTES: usize = 4 * 1024;
/// How much of a field name a rejection repeats.
const MAX_FIELD_ECHO_BYTES: usize = 128;

/// Why a job was refused: the field and the rule it broke, plus whatever could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The job id, when one could be read and was valid.
    pub(crate) id: Option<String>,
    pub(crate) field: String,
    pub(crate) rule: String,
    /// The job's `meta`, when it could be read and was valid (echoed in the outcome).
    pub(crate) meta: Option<Value>,
    /// The job's kind, once it was read.
    pub(crate) kind: Option<Kind>,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// A validated job, ready to send: the envelope, and its kind's message.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub kind: Kind,
    pub(crate) touser: String,
    pub(crate) template_id: String,
    /// The body of the kind's WeChat endpoint.
    body: Vec<u8>,
    pub(crate) not_after: Option<OffsetDateTime>,
    pub(crate) meta: Option<Value>,
}

impl Job {
    /// The JSON the kind's endpoint expects (for a template, with the job id as
    /// `client_msg_id` so WeChat itself drops a re-send of the same job).
    pub fn wechat_body(&self) -> Vec<u8> {
        self.body.clone()
    }

    /// Whether `not_after` has passed at `now`.
    pub(crate) fn expired_at(&self, now: OffsetDateTime) -> bool {
        self.not_after.is_some_and(|t| now > t)
    }
}

struct Reader {
    id: Option<String>,
    meta: Option<Value>,
    kind: Option<Kind>,
}

impl Reader {
    fn reject(&self, field: impl Into<String>, rule: impl Into<String>) -> Rejection {
        Rejection {
            id: self.id.clone(),
            // A field name can be the producer's own (an unknown key, a data key): echo only
            // enough of it to find it.
            field: crate::text::bounded(&field.into(), MAX_FIELD_ECHO_BYTES),
            rule: rule.into(),
            meta: self.meta.clone(),
            kind: self.kind,
        }
    }
}

/// Parses and validates one message body. `message_id` is the AMQP property, used when the
/// body has no `id`.
pub fn parse(body: &[u8], message_id: Option<&str>) -> Result<Job, Rejection> {
    let mut r = Reader {
        id: message_id.filter(|m| is_job_id(m)).map(str::to_owned),
        meta: None,
        kind: None,
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(r.reject(
            "body",
            format!("is {} bytes, over the 64 KiB limit", body.len()),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| r.reject("body", "is not UTF-8"))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| r.reject("body", format!("is not JSON ({e})")))?;
    let Value::Object(mut obj) = value else {
        return Err(r.reject("body", "must be a JSON object"));
    };

    // id and meta first, so every later rejection can carry them.
    let id = match obj.remove("id") {
        Some(Value::String(s)) if is_job_id(&s) => Some(s),
        Some(_) => {
            r.id = None;
            return Err(r.reject("id", "must be 1-128 characters of A-Z a-z 0-9 . _ : -"));
        }
        None => None,
    };
    if id.is_some() {
        r.id = id;
    }
    if let Some(meta) = obj.remove("meta") {
        match meta {
            Value::Object(_) => {
                let size = serde_json::to_vec(&meta)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                if size > MAX_META_BYTES {
                    return Err(r.reject("meta", format!("is {size} bytes, over the 4 KiB limit")));
                }
                r.meta = Some(meta);
            }
            _ => return Err(r.reject("meta", "must be a JSON object")),
        }
    }
    let Some(id) = r.id.clone() else {
        return Err(match message_id {
            Some(_) => r.reject(
                "id",
                "the message_id property must be 1-128 characters of A-Z a-z 0-9 . _ : -",
            ),
            None => r.reject("id", "is required (in the body or as the AMQP message_id)"),
        });
    };

    let kind = match obj.remove("kind") {
        None | Some(Value::Null) => Kind::default(),
        Some(Value::String(name)) => name.parse().map_err(|e| r.reject("kind", format!("{e}")))?,
        Some(_) => return Err(r.reject("kind", "must be a string")),
    };
    r.kind = Some(kind);
    let not_after = obj.remove("not_after");
    if let Some(unknown) = obj.keys().find(|k| !kind.fields().contains(&k.as_str())) {
        return Err(r.reject(unknown.clone(), "is not a known field"));
    }
    let request = kind
        .read(&id, &mut obj)
        .map_err(|e| r.reject(e.field, e.rule))?;
    let not_after = match not_after {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(OffsetDateTime::parse(&s, &Rfc3339).map_err(|_| {
            r.reject(
                "not_after",
                "must be an RFC 3339 time such as 2026-11-28T10:00:00Z",
            )
        })?),
        Some(_) => return Err(r.reject("not_after", "must be a string")),
    };
    Ok(Job {
        id,
        kind,
        touser: request.touser,
        template_id: request.template_id,
        body: request.body,
        not_after,
        meta: r.meta,
    })
}

/// `[A-Za-z0-9._:-]{1,128}`: the idempotency key and WeChat's `client_msg_id`.
pub(crate) fn is_job_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The envelope: the fields every kind shares, read in this file and nowhere else.
    const ENVELOPE: [&str; 4] = ["id", "meta", "not_after", "kind"];

    #[test]
    fn no_kind_reads_an_envelope_field() {
        for k in Kind::ALL {
            for f in k.fields() {
                assert!(!ENVELOPE.contains(f), "{k} reads {f}");
            }
        }
    }

    fn valid() -> Value {
        json!({
            "id": "order-1842-paid",
            "touser": "oia2TjuEGTNoeX76QEjQNrcURxG8",
            "template_id": "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY",
            "url": "https://example.com/orders/1842",
            "miniprogram": { "appid": "wx1234567890abcdef", "pagepath": "pages/order?id=1842" },
            "topcolor": "#FF0000",
            "data": {
                "User": { "value": "黄先生", "color": "#173177" },
                "Money": { "value": "人民币260.00元" }
            },
            "not_after": "2026-11-28T10:00:00Z",
            "meta": { "order": 1842 }
        })
    }

    fn parse_value(v: &Value) -> Result<Job, Rejection> {
        parse(&serde_json::to_vec(v).unwrap(), None)
    }

    fn rejected(v: Value) -> Rejection {
        parse_value(&v).expect_err("should be rejected")
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = valid();
        v[field] = value;
        v
    }

    fn without(field: &str) -> Value {
        let mut v = valid();
        v.as_object_mut().unwrap().remove(field);
        v
    }

    #[test]
    fn the_contract_example_is_valid() {
        let job = parse_value(&valid()).unwrap();
        assert_eq!(job.id, "order-1842-paid");
        assert_eq!(job.kind, Kind::Template);
        let body: Value = serde_json::from_slice(&job.wechat_body()).unwrap();
        assert_eq!(body["data"].as_object().unwrap().len(), 2);
        assert_eq!(job.meta, Some(json!({"order": 1842})));
        assert!(job.not_after.is_some());
    }

    #[test]
    fn the_wechat_body_carries_client_msg_id_and_keeps_data_order() {
        let job = parse_value(&valid()).unwrap();
        let body: Value = serde_json::from_slice(&job.wechat_body()).unwrap();
        assert_eq!(body["client_msg_id"], "order-1842-paid");
        assert_eq!(body["data"]["User"]["color"], "#173177");
        assert!(body["data"]["Money"].get("color").is_none());
        assert!(body.get("meta").is_none() && body.get("not_after").is_none());
        let text = String::from_utf8(job.wechat_body()).unwrap();
        assert!(text.find("User").unwrap() < text.find("Money").unwrap());
    }

    #[test]
    fn a_data_key_written_as_name_dot_data_means_name() {
        let job = parse_value(&with("data", json!({"first.DATA": {"value": "x"}}))).unwrap();
        let body: Value = serde_json::from_slice(&job.wechat_body()).unwrap();
        assert_eq!(body["data"]["first"]["value"], "x");
    }

    #[test]
    fn the_same_key_with_and_without_dot_data_is_rejected() {
        let r = rejected(with(
            "data",
            json!({"first.DATA": {"value": "x"}, "first": {"value": "y"}}),
        ));
        assert!(r.field.starts_with("data.first"));
    }

    #[test]
    fn template_markers_in_values_are_rejected() {
        for bad in ["a {{b", "c}} d"] {
            let r = rejected(with("data", json!({"k": {"value": bad}})));
            assert_eq!(r.field, "data.k.value");
            assert!(r.rule.contains("{{"));
        }
    }

    #[test]
    fn a_value_over_1024_characters_is_rejected_but_1024_multibyte_pass() {
        let ok = "黄".repeat(1024);
        assert!(parse_value(&with("data", json!({"k": {"value": ok}}))).is_ok());
        let r = rejected(with("data", json!({"k": {"value": "x".repeat(1025)}})));
        assert_eq!(r.field, "data.k.value");
    }

    #[test]
    fn unknown_fields_are_rejected_everywhere() {
        assert_eq!(rejected(with("tousr", json!("x"))).field, "tousr");
        assert_eq!(
            rejected(with(
                "data",
                json!({"k": {"value": "v", "colour": "#000000"}})
            ))
            .field,
            "data.k.colour"
        );
        assert_eq!(
            rejected(with("miniprogram", json!({"appid": "a", "page": "p"}))).field,
            "miniprogram.page"
        );
    }

    #[test]
    fn an_enormous_unknown_key_is_named_in_a_bounded_rejection() {
        let key = "k".repeat(60_000);
        let r = rejected(with(&key, json!(1)));
        assert!(r.field.len() <= MAX_FIELD_ECHO_BYTES, "{}", r.field.len());
        assert!(r.field.starts_with("kkk"), "{r:?}");
        assert!(r.to_string().ends_with("is not a known field"), "{r}");
    }

    #[test]
    fn every_required_field_is_named_when_missing() {
        for f in ["touser", "template_id", "data"] {
            assert_eq!(rejected(without(f)).field, f);
        }
        assert_eq!(rejected(without("id")).field, "id");
    }

    #[test]
    fn ids_are_checked_and_the_message_id_property_is_the_fallback() {
        let body = serde_json::to_vec(&without("id")).unwrap();
        assert_eq!(parse(&body, Some("from-prop:1")).unwrap().id, "from-prop:1");
        let in_body = serde_json::to_vec(&valid()).unwrap();
        assert_eq!(
            parse(&in_body, Some("other")).unwrap().id,
            "order-1842-paid"
        );
        let r = parse(&body, Some("has space")).unwrap_err();
        assert_eq!((r.field.as_str(), r.id.as_deref()), ("id", None));
        assert!(rejected(with("id", json!("x".repeat(129)))).id.is_none());
        assert!(rejected(with("id", json!("a/b"))).rule.contains("1-128"));
        assert!(rejected(with("id", json!(42))).id.is_none());
        assert!(parse_value(&with("id", json!("x".repeat(128)))).is_ok());
    }

    #[test]
    fn a_rejection_carries_the_id_and_meta_when_they_were_readable() {
        let r = rejected(with("touser", json!("bad openid!")));
        assert_eq!(r.id.as_deref(), Some("order-1842-paid"));
        assert_eq!(r.meta, Some(json!({"order": 1842})));
    }

    #[test]
    fn field_formats_are_enforced() {
        assert_eq!(
            rejected(with("touser", json!("x".repeat(65)))).field,
            "touser"
        );
        assert_eq!(
            rejected(with("template_id", json!("has space"))).field,
            "template_id"
        );
        assert_eq!(rejected(with("url", json!("ftp://x.com/"))).field, "url");
        assert_eq!(rejected(with("url", json!("/relative"))).field, "url");
        assert_eq!(
            rejected(with(
                "url",
                json!(format!("https://x.com/{}", "a".repeat(1020)))
            ))
            .field,
            "url"
        );
        assert_eq!(rejected(with("topcolor", json!("red"))).field, "topcolor");
        assert_eq!(
            rejected(with(
                "data",
                json!({"k": {"value": "v", "color": "#12345"}})
            ))
            .field,
            "data.k.color"
        );
        assert_eq!(
            rejected(with("not_after", json!("tomorrow"))).field,
            "not_after"
        );
        assert_eq!(
            rejected(with("miniprogram", json!({"pagepath": "p"}))).field,
            "miniprogram.appid"
        );
        assert_eq!(rejected(with("data", json!({}))).field, "data");
        assert_eq!(rejected(with("data", json!([]))).field, "data");
        assert_eq!(
            rejected(with("data", json!({"bad-key": {"value": "v"}}))).field,
            "data.bad-key"
        );
        assert_eq!(rejected(with("data", json!({"k": "v"}))).field, "data.k");
        assert_eq!(
            rejected(with("data", json!({"k": {"value": 5}}))).field,
            "data.k.value"
        );
        assert_eq!(rejected(with("meta", json!([1]))).field, "meta");
    }

    #[test]
    fn not_after_accepts_offsets() {
        let job = parse_value(&with("not_after", json!("2026-11-28T18:00:00+08:00"))).unwrap();
        assert_eq!(job.not_after.unwrap().unix_timestamp(), 1_795_860_000);
        assert!(job.expired_at(OffsetDateTime::from_unix_timestamp(1_795_860_001).unwrap()));
        assert!(!job.expired_at(OffsetDateTime::from_unix_timestamp(1_795_860_000).unwrap()));
    }

    #[test]
    fn size_limits_hold() {
        let big_meta = json!({"pad": "x".repeat(4100)});
        assert_eq!(rejected(with("meta", big_meta)).field, "meta");
        let mut body = serde_json::to_vec(&valid()).unwrap();
        body.resize(MAX_BODY_BYTES + 1, b' ');
        assert_eq!(parse(&body, None).unwrap_err().field, "body");
    }

    #[test]
    fn bodies_that_are_not_utf8_or_json_or_objects_are_rejected() {
        assert!(
            parse(&[0xff, 0xfe, b'{'], None)
                .unwrap_err()
                .rule
                .contains("UTF-8")
        );
        assert!(
            parse(b"{not json", None)
                .unwrap_err()
                .rule
                .contains("not JSON")
        );
        assert!(parse(b"[1,2]", None).unwrap_err().rule.contains("object"));
        assert!(parse(b"", None).unwrap_err().rule.contains("not JSON"));
        assert_eq!(
            parse(b"{}", Some("m1")).unwrap_err().id.as_deref(),
            Some("m1")
        );
    }

    fn subscribe(kind: &str) -> Value {
        json!({
            "id": "sub-1",
            "kind": kind,
            "touser": "oia2TjuEGTNoeX76QEjQNrcURxG8",
            "template_id": "tpl-sub",
            "page": "pages/order?id=1842",
            "data": {
                "thing1": {"value": "您的餐品已备好"},
                "amount2": {"value": "¥260.00"},
                "time3": {"value": "2026年11月28日 15:01"}
            },
            "not_after": "2026-11-28T10:00:00Z",
            "meta": {"order": 1842}
        })
    }

    #[test]
    fn the_kind_is_template_unless_named() {
        assert_eq!(parse_value(&valid()).unwrap().kind, Kind::Template);
        let j = parse_value(&with("kind", json!("template"))).unwrap();
        assert_eq!(j.kind, Kind::Template);
        assert_eq!(
            parse_value(&with("kind", Value::Null)).unwrap().kind,
            Kind::Template
        );
        let j = parse_value(&subscribe("miniprogram_subscribe")).unwrap();
        assert_eq!(j.kind, Kind::MiniprogramSubscribe);
    }

    #[test]
    fn an_unknown_or_malformed_kind_is_rejected_with_the_choices() {
        let r = rejected(with("kind", json!("sms")));
        assert_eq!(r.field, "kind");
        assert!(
            r.rule
                .contains("template, subscribe, miniprogram_subscribe"),
            "{}",
            r.rule
        );
        assert_eq!(r.id.as_deref(), Some("order-1842-paid"));
        assert_eq!(rejected(with("kind", json!(["template"]))).field, "kind");
        let r = rejected(with("kind", json!("x".repeat(10_000))));
        assert_eq!(r.field, "kind");
        assert!(r.rule.len() < 200);
    }

    #[test]
    fn each_subscribe_kind_builds_its_own_body_without_the_envelope() {
        let job = parse_value(&subscribe("subscribe")).unwrap();
        assert_eq!(job.kind.endpoint(), "/cgi-bin/message/subscribe/bizsend");
        let body: Value = serde_json::from_slice(&job.wechat_body()).unwrap();
        assert_eq!(body["page"], "pages/order?id=1842");
        assert_eq!(body["data"]["thing1"]["value"], "您的餐品已备好");
        for absent in ["client_msg_id", "kind", "meta", "not_after", "id"] {
            assert!(body.get(absent).is_none(), "{absent}");
        }

        let mut mp = subscribe("miniprogram_subscribe");
        mp["miniprogram_state"] = json!("trial");
        mp["lang"] = json!("en_US");
        let job = parse_value(&mp).unwrap();
        assert_eq!(job.kind.endpoint(), "/cgi-bin/message/subscribe/send");
        let body: Value = serde_json::from_slice(&job.wechat_body()).unwrap();
        assert_eq!(
            (body["miniprogram_state"].as_str(), body["lang"].as_str()),
            (Some("trial"), Some("en_US"))
        );
    }

    #[test]
    fn fields_of_one_kind_are_unknown_to_another() {
        let mut s = subscribe("subscribe");
        s["topcolor"] = json!("#FF0000");
        assert_eq!(rejected(s).field, "topcolor");
        let mut s = subscribe("subscribe");
        s["miniprogram_state"] = json!("formal");
        assert_eq!(rejected(s).field, "miniprogram_state");
        let mut s = subscribe("miniprogram_subscribe");
        s["miniprogram"] = json!({"appid": "wx1"});
        assert_eq!(rejected(s).field, "miniprogram");
        assert_eq!(rejected(with("page", json!("p"))).field, "page");
        let mut s = subscribe("subscribe");
        s["data"]["thing1"]["color"] = json!("#000000");
        assert_eq!(rejected(s).field, "data.thing1.color");
    }

    #[test]
    fn a_typed_field_breach_is_rejected_naming_the_field_and_the_rule() {
        for kind in [Kind::Subscribe, Kind::MiniprogramSubscribe] {
            let mut s = subscribe(kind.name());
            s["data"]["thing1"]["value"] = json!("字".repeat(21));
            let r = rejected(s);
            assert_eq!(r.field, "data.thing1.value", "{kind}");
            assert_eq!(r.kind, Some(kind));
            assert!(r.rule.contains("at most 20 characters"), "{}", r.rule);
            let mut s = subscribe(kind.name());
            s["data"]["time3"]["value"] = json!("tomorrow");
            assert_eq!(rejected(s).field, "data.time3.value");
            let mut s = subscribe(kind.name());
            s["data"] = json!({"keyword1": {"value": "x"}});
            let r = rejected(s);
            assert!(r.rule.contains("keyword type"), "{}", r.rule);
        }
        let mut s = subscribe("miniprogram_subscribe");
        s["miniprogram_state"] = json!("production");
        let r = rejected(s);
        assert_eq!(r.field, "miniprogram_state");
        assert!(r.rule.contains("developer, trial, formal"));
        let mut s = subscribe("miniprogram_subscribe");
        s["lang"] = json!("fr_FR");
        assert_eq!(rejected(s).field, "lang");
    }
}
