//! The job wire format (CONTRACT §1): parsing and validation into a [`Job`] or a [`Rejection`].

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Largest message body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest `meta` object, serialized.
pub const MAX_META_BYTES: usize = 4 * 1024;
const MAX_VALUE_CHARS: usize = 1024;
const MAX_URL_CHARS: usize = 1024;
/// How much of a field name a rejection repeats.
const MAX_FIELD_ECHO_BYTES: usize = 128;

/// Why a job was refused: the field and the rule it broke, plus whatever could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The job id, when one could be read and was valid.
    pub id: Option<String>,
    pub field: String,
    pub rule: String,
    /// The job's `meta`, when it could be read and was valid (echoed in the outcome).
    pub meta: Option<Value>,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// A validated job, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub touser: String,
    pub template_id: String,
    pub url: Option<String>,
    pub miniprogram: Option<MiniProgram>,
    pub topcolor: Option<String>,
    /// Entries in the order given, keys already stripped of a `.DATA` suffix.
    pub data: Vec<(String, DataEntry)>,
    pub not_after: Option<OffsetDateTime>,
    pub meta: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MiniProgram {
    pub appid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagepath: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataEntry {
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// The body of `POST /cgi-bin/message/template/send`.
#[derive(Serialize)]
struct SendRequest<'a> {
    touser: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram: Option<&'a MiniProgram>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topcolor: Option<&'a str>,
    data: DataMap<'a>,
    client_msg_id: &'a str,
}

struct DataMap<'a>(&'a [(String, DataEntry)]);

impl Serialize for DataMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Job {
    /// The JSON WeChat expects, with the job id as `client_msg_id` so WeChat itself drops a
    /// re-send of the same job.
    pub fn wechat_body(&self) -> Vec<u8> {
        let req = SendRequest {
            touser: &self.touser,
            template_id: &self.template_id,
            url: self.url.as_deref(),
            miniprogram: self.miniprogram.as_ref(),
            topcolor: self.topcolor.as_deref(),
            data: DataMap(&self.data),
            client_msg_id: &self.id,
        };
        serde_json::to_vec(&req).expect("a job always serializes")
    }

    /// Whether `not_after` has passed at `now`.
    pub fn expired_at(&self, now: OffsetDateTime) -> bool {
        self.not_after.is_some_and(|t| now > t)
    }
}

struct Reader {
    id: Option<String>,
    meta: Option<Value>,
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
        }
    }
}

const KNOWN_FIELDS: [&str; 9] = [
    "id",
    "touser",
    "template_id",
    "url",
    "miniprogram",
    "topcolor",
    "data",
    "not_after",
    "meta",
];

/// Parses and validates one message body. `message_id` is the AMQP property, used when the
/// body has no `id`.
pub fn parse(body: &[u8], message_id: Option<&str>) -> Result<Job, Rejection> {
    let mut r = Reader {
        id: message_id.filter(|m| is_job_id(m)).map(str::to_owned),
        meta: None,
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

    if let Some(unknown) = obj.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(r.reject(unknown.clone(), "is not a known field"));
    }

    let touser = required_string(&r, &mut obj, "touser")?;
    if !is_token_like(&touser, 64) {
        return Err(r.reject(
            "touser",
            "must be an OpenID: 1-64 characters of A-Z a-z 0-9 _ -",
        ));
    }
    let template_id = required_string(&r, &mut obj, "template_id")?;
    if !is_token_like(&template_id, 128) {
        return Err(r.reject("template_id", "must be 1-128 characters of A-Z a-z 0-9 _ -"));
    }
    let url = optional_string(&r, &mut obj, "url")?;
    if let Some(u) = &url {
        if u.chars().count() > MAX_URL_CHARS {
            return Err(r.reject("url", "must be at most 1024 characters"));
        }
        let ok = reqwest::Url::parse(u)
            .map(|p| matches!(p.scheme(), "http" | "https") && p.has_host())
            .unwrap_or(false);
        if !ok {
            return Err(r.reject("url", "must be an absolute http or https URL"));
        }
    }
    let miniprogram = match obj.remove("miniprogram") {
        None | Some(Value::Null) => None,
        Some(Value::Object(mut mp)) => {
            let appid = match mp.remove("appid") {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => {
                    return Err(r.reject(
                        "miniprogram.appid",
                        "is required and must be a non-empty string",
                    ));
                }
            };
            let pagepath = match mp.remove("pagepath") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(_) => return Err(r.reject("miniprogram.pagepath", "must be a string")),
            };
            if let Some(k) = mp.keys().next() {
                return Err(r.reject(format!("miniprogram.{k}"), "is not a known field"));
            }
            Some(MiniProgram { appid, pagepath })
        }
        Some(_) => return Err(r.reject("miniprogram", "must be an object")),
    };
    let topcolor = optional_string(&r, &mut obj, "topcolor")?;
    if let Some(c) = &topcolor
        && !is_color(c)
    {
        return Err(r.reject("topcolor", "must be a color #RRGGBB"));
    }
    let data = parse_data(&r, obj.remove("data"))?;
    let not_after = match optional_string(&r, &mut obj, "not_after")? {
        None => None,
        Some(s) => Some(OffsetDateTime::parse(&s, &Rfc3339).map_err(|_| {
            r.reject(
                "not_after",
                "must be an RFC 3339 time such as 2026-11-28T10:00:00Z",
            )
        })?),
    };
    Ok(Job {
        id,
        touser,
        template_id,
        url,
        miniprogram,
        topcolor,
        data,
        not_after,
        meta: r.meta,
    })
}

fn parse_data(r: &Reader, data: Option<Value>) -> Result<Vec<(String, DataEntry)>, Rejection> {
    let Some(Value::Object(map)) = data else {
        return Err(r.reject("data", "is required and must be an object"));
    };
    if map.is_empty() {
        return Err(r.reject("data", "must have at least one entry"));
    }
    let mut entries: Vec<(String, DataEntry)> = Vec::with_capacity(map.len());
    for (raw_key, entry) in map {
        let key = raw_key.strip_suffix(".DATA").unwrap_or(&raw_key);
        let field = format!("data.{raw_key}");
        if !is_data_key(key) {
            return Err(r.reject(
                field,
                "key must be 1-64 characters of A-Z a-z 0-9 _ (optionally ending in .DATA)",
            ));
        }
        if entries.iter().any(|(k, _)| k == key) {
            return Err(r.reject(field, "names the same entry twice (with and without .DATA)"));
        }
        let Value::Object(mut entry) = entry else {
            return Err(r.reject(field, "must be an object with a value"));
        };
        let value = match entry.remove("value") {
            Some(Value::String(s)) => s,
            _ => return Err(r.reject(format!("{field}.value"), "is required and must be a string")),
        };
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(r.reject(format!("{field}.value"), "must be at most 1024 characters"));
        }
        if value.contains("{{") || value.contains("}}") {
            return Err(r.reject(
                format!("{field}.value"),
                "must not contain {{ or }} (template markers)",
            ));
        }
        let color = match entry.remove("color") {
            None | Some(Value::Null) => None,
            Some(Value::String(c)) if is_color(&c) => Some(c),
            Some(_) => return Err(r.reject(format!("{field}.color"), "must be a color #RRGGBB")),
        };
        if let Some(k) = entry.keys().next() {
            return Err(r.reject(format!("{field}.{k}"), "is not a known field"));
        }
        entries.push((key.to_owned(), DataEntry { value, color }));
    }
    Ok(entries)
}

fn required_string(
    r: &Reader,
    obj: &mut Map<String, Value>,
    field: &str,
) -> Result<String, Rejection> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(r.reject(field, "is required")),
        Some(_) => Err(r.reject(field, "must be a string")),
    }
}

fn optional_string(
    r: &Reader,
    obj: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, Rejection> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(r.reject(field, "must be a string")),
    }
}

/// `[A-Za-z0-9._:-]{1,128}`: the idempotency key and WeChat's `client_msg_id`.
pub fn is_job_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn is_token_like(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn is_data_key(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_color(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(job.data.len(), 2);
        assert_eq!(job.data[0].0, "User");
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
        assert_eq!(job.data[0].0, "first");
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
}
