//! Every message an integration test sees is held to the contract's JSON Schemas
//! (`docs/schemas/`): each job it publishes that the worker would accept, each outcome, report
//! and cancel answer it reads, and the headers of each message it takes out of
//! `wxcourier.dead`. A message that breaks its schema panics with the schema's errors, so a
//! change to the wire format that the schemas (and so producers in other languages) do not
//! know of fails the test that saw it.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use jsonschema::Validator;
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Connection};
use serde_json::{Map, Value};
use wxcourier::broker::tap::ResultsTap;

/// Each `docs/schemas/NAME.json` by NAME, compiled once per test binary.
static SCHEMAS: LazyLock<HashMap<String, Validator>> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas");
    let mut schemas = HashMap::new();
    for entry in std::fs::read_dir(&dir).expect("docs/schemas") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let validator = jsonschema::draft202012::new(&schema)
            .unwrap_or_else(|e| panic!("{} is no schema: {e}", path.display()));
        schemas.insert(name, validator);
    }
    schemas
});

/// Panics with the schema's errors unless `value` validates against `docs/schemas/NAME.json`.
pub fn assert_valid(name: &str, value: &Value) {
    let schema = SCHEMAS
        .get(name)
        .unwrap_or_else(|| panic!("no docs/schemas/{name}.json"));
    let errors: Vec<String> = schema
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "a message breaks docs/schemas/{name}.json: {errors:?}\n{value:#}"
    );
}

/// A result from `wxcourier.results`, by its `kind`.
pub fn check_result(result: &Value) {
    let schema = match result["kind"].as_str() {
        Some("send") => "outcome",
        Some("cancel") => "cancel-answer",
        Some("delivery") => "delivery-report",
        Some("preference") => "preference-report",
        Some("follow") => "follow-report",
        _ => panic!("a result of no kind the contract names: {result}"),
    };
    assert_valid(schema, result);
}

/// A job body a test publishes: one the worker's parser accepts must validate against
/// `job.json` (bodies a test makes broken on purpose are the parser's to refuse). Cancels are
/// left to the cancel reader's own unit test against `cancel.json`: the reader is not public.
pub fn check_published(body: &[u8], message_id: Option<&str>) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    if value["kind"] == "cancel" {
        return;
    }
    if wxcourier::job::parse(body, message_id).is_ok() {
        assert_valid("job", &value);
    }
}

/// The headers of a message taken out of `wxcourier.dead`: strings and integers (the broker's
/// own `x-death` table is left out).
pub fn check_dead_headers(props: &BasicProperties) {
    let mut headers = Map::new();
    if let Some(table) = props.headers().as_ref() {
        for (key, value) in table.inner() {
            let text = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.to_string(),
                AMQPValue::LongLongInt(n) => {
                    headers.insert(key.to_string(), Value::from(*n));
                    continue;
                }
                AMQPValue::LongUInt(n) => {
                    headers.insert(key.to_string(), Value::from(*n));
                    continue;
                }
                _ => continue,
            };
            headers.insert(key.to_string(), Value::String(text));
        }
    }
    assert_valid("dead-headers", &Value::Object(headers));
}

/// A [`ResultsTap`] that holds every result it hands out to its schema.
pub struct CheckedTap(ResultsTap);

impl CheckedTap {
    /// Subscribes to every result whose routing key matches `pattern` (e.g. `*.shop`).
    pub async fn open(conn: &Connection, pattern: &str) -> lapin::Result<Self> {
        ResultsTap::open(conn, pattern).await.map(Self)
    }

    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        let result = self.0.next(wait).await?;
        check_result(&result);
        Some(result)
    }

    pub async fn collect(&mut self, count: usize, wait: Duration) -> Vec<Value> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            match self.next(wait).await {
                Some(v) => out.push(v),
                None => break,
            }
        }
        out
    }
}
