//! The job wire format (CONTRACT §1): the envelope (`id`, `meta`, `not_after`, `not_before`,
//! `urgent`, `kind`) is read here, the rest by the job's `crate::kinds`; the result is a [`Job`] or a [`Rejection`].

pub(crate) mod cancel;
#[cfg(test)]
mod schema;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::kinds::{Kind, ReadOptions, Warnings};

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
    /// Not to be sent before this time: the job waits in the broker until then.
    pub(crate) not_before: Option<OffsetDateTime>,
    /// Passes the app's quiet hours.
    pub(crate) urgent: bool,
    pub(crate) meta: Option<Value>,
    /// What WeChat will not show as asked, or what was changed to send it; carried by every
    /// outcome of the job.
    pub(crate) warnings: Warnings,
}

impl Job {
    /// The JSON the kind's endpoint expects (for a template, with the job id as
    /// `client_msg_id` so WeChat itself drops a re-send of the same job).
    pub fn wechat_body(&self) -> Vec<u8> {
        self.body.clone()
    }

    /// [`Job::wechat_body`], borrowed: for a reader that needs no copy of its own.
    pub(crate) fn wechat_bytes(&self) -> &[u8] {
        &self.body
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

/// Parses and validates one message body with the contract's default reading. `message_id` is
/// the AMQP property, used when the body has no `id`.
pub fn parse(body: &[u8], message_id: Option<&str>) -> Result<Job, Rejection> {
    parse_with(body, message_id, ReadOptions::default())
}

/// Parses and validates one message body as an app's `options` ask (`apps.NAME.truncate`).
pub fn parse_with(
    body: &[u8],
    message_id: Option<&str>,
    options: ReadOptions,
) -> Result<Job, Rejection> {
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
    let not_before = obj.remove("not_before");
    let urgent = match obj.remove("urgent") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(r.reject("urgent", "must be true or false")),
    };
    if let Some(unknown) = obj.keys().find(|k| !kind.fields().contains(&k.as_str())) {
        return Err(r.reject(unknown.clone(), "is not a known field"));
    }
    let request = kind
        .read(&id, &mut obj, options)
        .map_err(|e| r.reject(e.field, e.rule))?;
    let not_after = read_time(&r, "not_after", not_after)?;
    let not_before = read_time(&r, "not_before", not_before)?;
    if let (Some(before), Some(after)) = (not_before, not_after)
        && before > after
    {
        return Err(r.reject(
            "not_before",
            "is after not_after: the job could never be sent",
        ));
    }
    Ok(Job {
        id,
        kind,
        touser: request.touser,
        template_id: request.template_id,
        body: request.body,
        not_after,
        not_before,
        urgent,
        meta: r.meta,
        warnings: request.warnings,
    })
}

/// An envelope time field: absent, null, or an RFC 3339 string.
fn read_time(
    r: &Reader,
    field: &str,
    value: Option<Value>,
) -> Result<Option<OffsetDateTime>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => OffsetDateTime::parse(&s, &Rfc3339).map(Some).map_err(|_| {
            r.reject(
                field,
                "must be an RFC 3339 time such as 2026-11-28T10:00:00Z",
            )
        }),
        Some(_) => Err(r.reject(field, "must be a string")),
    }
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
    const ENVELOPE: [&str; 6] = ["id", "meta", "not_after", "not_before", "urgent", "kind"];

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

    /// Parses `v`, and holds the contract's job schema to the verdict (a job accepted here
    /// must validate against docs/schemas/job.json).
    fn parse_value(v: &Value) -> Result<Job, Rejection> {
        let parsed = parse(&serde_json::to_vec(v).unwrap(), None);
        super::schema::job_agrees(v, parsed.is_ok());
        parsed
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

    use super::schema;

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
    fn not_before_and_urgent_are_read_from_the_envelope() {
        let mut v = with("not_before", json!("2026-11-28T18:00:00+08:00"));
        v["urgent"] = json!(true);
        let job = parse_value(&v).unwrap();
        assert_eq!(job.not_before.unwrap().unix_timestamp(), 1_795_860_000);
        assert!(job.urgent);
        let job = parse_value(&valid()).unwrap();
        assert_eq!((job.not_before, job.urgent), (None, false));
        assert!(
            !String::from_utf8(job.wechat_body())
                .unwrap()
                .contains("urgent")
        );
    }

    #[test]
    fn bad_scheduling_fields_are_rejected_by_name() {
        for (field, value, rule) in [
            ("not_before", json!("tomorrow"), "RFC 3339"),
            ("not_before", json!(1_795_860_000), "string"),
            ("urgent", json!("yes"), "true or false"),
        ] {
            let r = rejected(with(field, value));
            assert_eq!(r.field, field);
            assert!(r.rule.contains(rule), "{}", r.rule);
        }
        let mut v = with("not_before", json!("2026-11-28T11:00:00Z"));
        v["not_after"] = json!("2026-11-28T10:00:00Z");
        let r = rejected(v);
        assert_eq!(r.field, "not_before");
        assert!(r.rule.contains("after not_after"), "{}", r.rule);
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

    /// A category template's job (2023 on): typed keys, no `first` or `remark`, no colours.
    fn category_template() -> Value {
        json!({
            "id": "order-1842-paid",
            "touser": "oia2TjuEGTNoeX76QEjQNrcURxG8",
            "template_id": "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY",
            "data": {
                "thing13": {"value": "黄焖鸡米饭"},
                "character_string21": {"value": "SF1234567890"},
                "time4": {"value": "2026年11月28日 15:01"},
                "amount2": {"value": "¥260.00"},
                "phone_number3": {"value": "+86-0766-66888866"},
                "car_number5": {"value": "粤A8Z888挂"},
                "const6": {"value": "已支付"}
            }
        })
    }

    fn with_value(key: &str, value: &str) -> Value {
        let mut v = category_template();
        v["data"][key] = json!({ "value": value });
        v
    }

    #[test]
    fn a_category_template_job_is_valid_and_warns_of_nothing() {
        let job = parse_value(&category_template()).unwrap();
        assert_eq!(job.kind, Kind::Template);
        assert_eq!(job.warnings, Warnings::default());
    }

    #[test]
    fn each_typed_template_key_is_held_to_its_type_at_the_boundary_and_in_chinese() {
        let table: &[(&str, String, bool)] = &[
            ("thing13", "字".repeat(20), true),
            ("thing13", "字".repeat(21), false),
            ("thing13", "x".repeat(20), true),
            ("thing13", "x".repeat(21), false),
            ("character_string21", "A".repeat(32), true),
            ("character_string21", "A".repeat(33), false),
            ("character_string21", "单号123".into(), false),
            ("character_string21", String::new(), false),
            ("time4", "23:59".into(), true),
            ("time4", "24:00".into(), false),
            (
                "time4",
                "2026年11月28日 15:01~2026年11月28日 17:30".into(),
                true,
            ),
            ("time4", "下午三点".into(), false),
            ("amount2", "1234567890.99元".into(), true),
            ("amount2", "12345678901".into(), false),
            ("amount2", "人民币260.00元".into(), false),
            ("phone_number3", "1".repeat(17), true),
            ("phone_number3", "1".repeat(18), false),
            ("phone_number3", "电话13800138000".into(), false),
            ("car_number5", "粤A8Z8888".into(), true),
            ("car_number5", "粤A8Z88888".into(), false),
            ("car_number5", "粤A8Z8粤8".into(), false),
            ("const6", "字".repeat(20), true),
            ("const6", "字".repeat(21), false),
            ("number7", "260.50".into(), true),
            ("number7", "二百六".into(), false),
            ("date8", "2026-11-28".into(), true),
            ("date8", "2026-02-30x".into(), false),
            ("name9", "黄".repeat(10), true),
            ("name9", "黄".repeat(11), false),
            ("phrase10", "配送中".into(), true),
            ("phrase10", "正在配送途中".into(), false),
        ];
        for (key, value, ok) in table {
            let got = parse_value(&with_value(key, value));
            match (got, ok) {
                (Ok(_), true) => {}
                (Err(r), false) => {
                    assert_eq!(r.field, format!("data.{key}.value"), "{key} = {value:?}");
                    let kind = key.trim_end_matches(|c: char| c.is_ascii_digit());
                    assert!(r.rule.starts_with(&format!("{kind}: ")), "{}", r.rule);
                    assert_eq!(r.id.as_deref(), Some("order-1842-paid"));
                }
                (got, _) => panic!("{key} = {value:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn old_style_template_keys_are_checked_only_as_before() {
        let long = "字".repeat(200);
        let job = parse_value(&with(
            "data",
            json!({
                "first": {"value": long},
                "keyword1": {"value": "人民币260.00元 (any text)"},
                "keyword2": {"value": long},
                "remark": {"value": "谢谢"},
            }),
        ))
        .unwrap();
        let body: Value = serde_json::from_slice(&job.wechat_body()).unwrap();
        assert_eq!(
            body["data"]["keyword2"]["value"],
            long.as_str(),
            "sent unchanged"
        );
        let r = rejected(with(
            "data",
            json!({"keyword1": {"value": "x".repeat(1025)}}),
        ));
        assert_eq!(
            r.field, "data.keyword1.value",
            "the 1024-character rule still holds"
        );
    }

    #[test]
    fn first_remark_and_colours_are_warned_of_and_sent() {
        let mut v = with(
            "data",
            json!({
                "first.DATA": {"value": "您好", "color": "#173177"},
                "thing1": {"value": "黄焖鸡米饭"},
                "remark": {"value": "谢谢"}
            }),
        );
        v["topcolor"] = json!("#FF0000");
        let job = parse_value(&v).unwrap();
        assert_eq!(
            job.warnings.for_outcome(),
            [
                "data.first: not shown, WeChat no longer shows first and remark (2023)",
                "data.remark: not shown, WeChat no longer shows first and remark (2023)",
                "topcolor: ignored, WeChat no longer shows colours (2023)",
                "data.first.color: ignored, WeChat no longer shows colours (2023)",
            ]
        );
        let body: Value = serde_json::from_slice(&job.wechat_body()).unwrap();
        assert_eq!(
            body["data"]["first"]["color"], "#173177",
            "still sent as asked"
        );
        // The contract's own example has a coloured entry: a warning, never a rejection.
        let job = parse_value(&valid()).unwrap();
        assert_eq!(job.warnings.display.len(), 2, "{:?}", job.warnings);
    }

    #[test]
    fn truncate_is_the_apps_choice_and_says_what_it_cut() {
        let long = "您的餐品已经备好请尽快到一号窗口取餐谢谢光临";
        let v = with_value("thing13", long);
        let body = serde_json::to_vec(&v).unwrap();
        let r = parse(&body, None).unwrap_err();
        assert_eq!(r.field, "data.thing13.value");
        let job = parse_with(&body, None, ReadOptions { truncate: true }).unwrap();
        let sent: Value = serde_json::from_slice(&job.wechat_body()).unwrap();
        let want: String = long.chars().take(17).collect::<String>() + "…";
        assert_eq!(sent["data"]["thing13"]["value"], want.as_str());
        assert!(job.warnings.display.is_empty(), "{:?}", job.warnings);
        assert_eq!(job.warnings.shortened.len(), 1, "{:?}", job.warnings);
        assert!(
            job.warnings.shortened[0]
                .starts_with("data.thing13.value: shortened from 22 to 18 characters"),
            "{:?}",
            job.warnings
        );
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

    /// Jobs the parser refuses for a rule a schema can state: the schema refuses them too.
    #[test]
    fn jobs_the_parser_rejects_for_a_rule_a_schema_states_break_the_schema() {
        let valid = json!({
            "id": "order-1842-paid", "touser": "oia2TjuEGTNoeX76QEjQNrcURxG8",
            "template_id": "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY",
            "data": {"first": {"value": "Paid", "color": "#173177"}}
        });
        let subscribe = json!({
            "id": "s-1", "kind": "subscribe", "touser": "oia2", "template_id": "t1",
            "data": {"thing1": {"value": "x"}}
        });
        let cases: Vec<(&str, Value, Value)> = vec![
            ("id", valid.clone(), json!("has space")),
            ("touser", valid.clone(), json!("not an openid!")),
            ("template_id", valid.clone(), Value::Null),
            ("url", valid.clone(), json!("ftp://example.com")),
            ("topcolor", valid.clone(), json!("red")),
            ("kind", valid.clone(), json!("sms")),
            ("urgent", valid.clone(), json!("yes")),
            ("not_after", valid.clone(), json!("tomorrow")),
            ("meta", valid.clone(), json!([1])),
            ("unknown", valid.clone(), json!(1)),
            ("data", valid.clone(), json!({})),
            ("data", valid.clone(), json!({"bad key": {"value": "x"}})),
            ("data", valid.clone(), json!({"k": {"value": "{{x}}"}})),
            (
                "data",
                valid.clone(),
                json!({"k": {"value": "x".repeat(1025)}}),
            ),
            (
                "data",
                subscribe.clone(),
                json!({"keyword1": {"value": "x"}}),
            ),
            (
                "data",
                subscribe.clone(),
                json!({"thing1": {"value": "x", "color": "#000000"}}),
            ),
            ("url", subscribe.clone(), json!("https://example.com")),
            ("lang", subscribe.clone(), json!("zh_CN")),
        ];
        assert!(parse(&serde_json::to_vec(&valid).unwrap(), None).is_ok());
        schema::assert_valid(&schema::JOB, "the valid job", &valid);
        for (field, mut job, value) in cases {
            job[field] = value;
            let bytes = serde_json::to_vec(&job).unwrap();
            assert!(parse(&bytes, None).is_err(), "the parser takes {job}");
            schema::assert_invalid(&schema::JOB, &format!("a job with a bad {field}"), &job);
        }
    }
}
