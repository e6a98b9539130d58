//! The contract's job and cancel schemas (`docs/schemas/job.json`, `cancel.json`), for the
//! parser's tests: a job the parser accepts must validate, or a producer checking its jobs by the
//! schema would refuse one the worker sends; jobs it refuses for a rule a schema can state must
//! not. The schemas are written by hand for producers in other languages; these tests keep
//! them from drifting.

use std::sync::LazyLock;

use jsonschema::Validator;
use serde_json::Value;

fn compile(name: &str, text: &str) -> Validator {
    let schema: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{name} is no schema: {e}"))
}

pub(super) static JOB: LazyLock<Validator> =
    LazyLock::new(|| compile("job.json", include_str!("../../docs/schemas/job.json")));
pub(super) static CANCEL: LazyLock<Validator> = LazyLock::new(|| {
    compile(
        "cancel.json",
        include_str!("../../docs/schemas/cancel.json"),
    )
});

/// Panics with every schema error when `value` does not validate.
pub(super) fn assert_valid(schema: &Validator, what: &str, value: &Value) {
    let errors: Vec<String> = schema
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} breaks its schema: {errors:?}\n{value:#}"
    );
}

pub(super) fn assert_invalid(schema: &Validator, what: &str, value: &Value) {
    assert!(
        !schema.is_valid(value),
        "{what} should break its schema\n{value:#}"
    );
}

/// The parser's tests call this with each job body they parse.
pub(super) fn job_agrees(body: &Value, accepted: bool) {
    if accepted {
        assert_valid(&JOB, "a job the parser accepts", body);
    }
}
