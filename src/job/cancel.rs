//! The cancel message (CONTRACT, *Delivery policy*): `{"kind": "cancel", "id": "JOB_ID"}`,
//! published like a job, to the jobs exchange with the app as routing key, so it reaches the
//! app's queue beside its jobs. Read strictly: the two fields and nothing else, a valid job id,
//! a small body. A message whose `kind` is `cancel` is always read as a cancel, so a malformed
//! one is refused as a cancel, by name, and never read as a job.

use serde_json::{Map, Value};

use super::{MAX_BODY_BYTES, Rejection, is_job_id};

/// The `kind` of a cancel.
pub(crate) const CANCEL_KIND: &str = "cancel";
/// Largest cancel accepted: a valid one is under 200 bytes.
pub(crate) const MAX_CANCEL_BYTES: usize = 1024;

/// A valid cancel of the job `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cancel {
    pub(crate) id: String,
}

impl Cancel {
    /// The message body of a cancel of `id`.
    pub(crate) fn body(id: &str) -> Vec<u8> {
        let cancel = serde_json::json!({ "kind": CANCEL_KIND, "id": id });
        serde_json::to_vec(&cancel).expect("a JSON value serializes")
    }
}

/// `Some` when `body` is a cancel: the cancel, or why it is refused. `None` for anything else,
/// which is read as a job.
pub(crate) fn read(body: &[u8]) -> Option<Result<Cancel, Rejection>> {
    // Jobs come far more often than cancels: only a body holding the word is parsed here (a
    // job's parse follows for the rare job that holds it in its data). A cancel that spells
    // its kind with escapes is not seen here, and is refused as a job of an unknown kind.
    if body.len() > MAX_BODY_BYTES || !body.windows(CANCEL_KIND.len()).any(|w| w == b"cancel") {
        return None;
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    if obj.get("kind").and_then(Value::as_str) != Some(CANCEL_KIND) {
        return None;
    }
    obj.remove("kind");
    Some(validate(obj, body.len()))
}

fn validate(mut obj: Map<String, Value>, size: usize) -> Result<Cancel, Rejection> {
    let id = obj.remove("id");
    let valid_id = match &id {
        Some(Value::String(s)) if is_job_id(s) => Some(s.clone()),
        _ => None,
    };
    let refuse = |field: &str, rule: String| Rejection {
        id: valid_id.clone(),
        field: crate::text::bounded(field, 128),
        rule,
        meta: None,
        kind: None,
    };
    if size > MAX_CANCEL_BYTES {
        return Err(refuse(
            "body",
            format!("is {size} bytes, over the 1 KiB limit of a cancel"),
        ));
    }
    if let Some(extra) = obj.keys().next() {
        return Err(refuse(
            extra,
            "is not a field of a cancel (only kind and id)".into(),
        ));
    }
    match (id, valid_id.clone()) {
        (_, Some(id)) => Ok(Cancel { id }),
        (None, None) => Err(refuse(
            "id",
            "is required: the id of the job to cancel".into(),
        )),
        (Some(_), None) => Err(refuse(
            "id",
            "must be 1-128 characters of A-Z a-z 0-9 . _ : -".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &[u8]) -> Rejection {
        match read(body) {
            Some(Err(r)) => r,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn a_cancel_names_the_job_and_nothing_else() {
        let body = Cancel::body("order-1:a_b.c");
        assert_eq!(
            read(&body),
            Some(Ok(Cancel {
                id: "order-1:a_b.c".into()
            }))
        );
        let spaced = br#" { "id" : "o-2", "kind" : "cancel" } "#;
        assert_eq!(read(spaced), Some(Ok(Cancel { id: "o-2".into() })));
    }

    #[test]
    fn anything_whose_kind_is_not_cancel_is_left_to_the_job_reader() {
        for body in [
            &br#"{"id":"j1","touser":"o1","template_id":"t1","data":{"k":{"value":"cancel"}}}"#[..],
            br#"{"id":"j1","kind":"template","meta":{"why":"cancel"}}"#,
            br#"{"id":"j1","kind":["cancel"]}"#,
            br#"["cancel"]"#,
            b"cancel",
            br#"{"id":"j1"}"#,
        ] {
            assert_eq!(read(body), None, "{}", String::from_utf8_lossy(body));
        }
        let huge = format!(
            r#"{{"kind":"cancel","id":"j","pad":"{}"}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        assert_eq!(
            read(huge.as_bytes()),
            None,
            "the job reader refuses its size"
        );
    }

    #[test]
    fn a_cancel_without_a_valid_id_is_refused_by_name() {
        let r = refused(br#"{"kind":"cancel"}"#);
        assert_eq!((r.field.as_str(), r.id.as_deref()), ("id", None));
        assert!(r.rule.contains("required"), "{r}");
        for bad in [
            r#"{"kind":"cancel","id":""}"#,
            r#"{"kind":"cancel","id":"has space"}"#,
            r#"{"kind":"cancel","id":12}"#,
            r#"{"kind":"cancel","id":null}"#,
        ] {
            let r = refused(bad.as_bytes());
            assert_eq!(r.field, "id", "{bad}");
            assert!(r.rule.contains("1-128 characters"), "{bad}: {r}");
        }
        let long = format!(r#"{{"kind":"cancel","id":"{}"}}"#, "x".repeat(129));
        assert_eq!(refused(long.as_bytes()).field, "id");
    }

    #[test]
    fn a_cancel_with_another_field_or_too_big_is_refused_keeping_its_id() {
        let r = refused(br#"{"kind":"cancel","id":"j1","touser":"o1"}"#);
        assert_eq!(r.field, "touser");
        assert!(r.rule.contains("only kind and id"), "{r}");
        assert_eq!(r.id.as_deref(), Some("j1"));
        let big = format!(
            r#"{{"kind":"cancel","id":"j1","pad":"{}"}}"#,
            "x".repeat(2000)
        );
        let r = refused(big.as_bytes());
        assert_eq!((r.field.as_str(), r.id.as_deref()), ("body", Some("j1")));
        assert!(r.rule.contains("over the 1 KiB limit"), "{r}");
        // A producer's own field name is echoed only in part.
        let wide = format!(r#"{{"kind":"cancel","id":"j1","{}":1}}"#, "f".repeat(600));
        assert!(refused(wide.as_bytes()).field.len() <= 128 + 3);
    }

    /// The cancel the code writes validates against docs/schemas/cancel.json, and cancels it
    /// refuses break it (and break the job schema too: a cancel is never a job).
    #[test]
    fn the_cancel_schema_agrees_with_the_reader() {
        use super::super::schema;
        use serde_json::json;

        let body: Value = serde_json::from_slice(&Cancel::body("o-1")).unwrap();
        schema::assert_valid(&schema::CANCEL, "the cancel the code writes", &body);
        assert!(read(&serde_json::to_vec(&body).unwrap()).is_some_and(|r| r.is_ok()));
        for refused in [
            json!({"kind": "cancel"}),
            json!({"kind": "cancel", "id": "has space"}),
            json!({"kind": "cancel", "id": "o-1", "meta": {}}),
        ] {
            let bytes = serde_json::to_vec(&refused).unwrap();
            assert!(matches!(read(&bytes), Some(Err(_))), "{refused}");
            schema::assert_invalid(&schema::CANCEL, "a cancel the code refuses", &refused);
            schema::assert_invalid(&schema::JOB, "a cancel read as a job", &refused);
        }
    }
}
