//! The contract's result schemas (`docs/schemas/outcome.json`, `cancel-answer.json` and the
//! three reports) held against the code: every outcome, report and cancel answer it builds, of
//! every status and reason, validates; and `docs/asyncapi.yaml` validates against the AsyncAPI
//! 3.0 schema kept beside them (`docs/schemas/vendor/`). The schemas are written by hand for
//! consumers in other languages; these tests keep them from drifting.

use std::sync::LazyLock;

use jsonschema::Validator;
use serde_json::{Value, json};
use time::macros::datetime;

use super::cancel::{CancelAnswer, CancelStatus};
use super::{
    DeliveryReport, DeliveryStatus, FollowReport, FollowStatus, OutcomeReason, PreferenceReport,
    PreferenceStatus, SendOutcome, SendStatus,
};

fn compile(name: &str, text: &str) -> Validator {
    let schema: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{name} is no schema: {e}"))
}

macro_rules! schema {
    ($file:literal) => {
        LazyLock::new(|| compile($file, include_str!(concat!("../../docs/schemas/", $file))))
    };
}

static OUTCOME: LazyLock<Validator> = schema!("outcome.json");
static CANCEL_ANSWER: LazyLock<Validator> = schema!("cancel-answer.json");
static DELIVERY: LazyLock<Validator> = schema!("delivery-report.json");
static PREFERENCE: LazyLock<Validator> = schema!("preference-report.json");
static FOLLOW: LazyLock<Validator> = schema!("follow-report.json");

/// Panics with every schema error when `value` does not validate.
fn assert_valid(schema: &Validator, what: &str, value: &Value) {
    let errors: Vec<String> = schema
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} breaks its schema: {errors:?}\n{value:#}"
    );
}

fn assert_invalid(schema: &Validator, what: &str, value: &Value) {
    assert!(
        !schema.is_valid(value),
        "{what} should break its schema\n{value:#}"
    );
}

fn serialized(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("serializes")
}

const FAILED_REASONS: [OutcomeReason; 11] = [
    OutcomeReason::RecipientRefused,
    OutcomeReason::NotFollowing,
    OutcomeReason::InvalidRecipient,
    OutcomeReason::TemplateInvalid,
    OutcomeReason::ContentRejected,
    OutcomeReason::NotPermitted,
    OutcomeReason::AuthorizationRevoked,
    OutcomeReason::QuotaExhausted,
    OutcomeReason::RetriesExhausted,
    OutcomeReason::ConfigError,
    OutcomeReason::Other,
];

const SUPPRESSED_REASONS: [OutcomeReason; 6] = [
    OutcomeReason::QuietHours,
    OutcomeReason::RecipientRefused,
    OutcomeReason::NotFollowing,
    OutcomeReason::FrequencyCap,
    OutcomeReason::ContentDuplicate,
    OutcomeReason::Paused,
];

fn outcome(status: SendStatus) -> SendOutcome {
    let mut o = SendOutcome::new("shop", status, datetime!(2026-11-28 09:12:03.12 UTC));
    o.id = Some("order-1842-paid".into());
    o.touser = Some("oia2TjuEGTNoeX76QEjQNrcURxG8".into());
    o.template_id = Some("ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY".into());
    o.meta = Some(json!({"order": 1842}));
    o
}

#[test]
fn every_status_and_reason_of_an_outcome_validates() {
    let mut all = Vec::new();
    let mut sent = outcome(SendStatus::Sent);
    (sent.msgid, sent.errcode, sent.errmsg, sent.attempts) =
        (Some(u64::MAX), Some(0), Some("ok".into()), 1);
    sent.warnings = vec!["topcolor: ignored, WeChat no longer shows colours (2023)".into()];
    all.push(sent.clone());
    // Accepted without a msgid, and a duplicate, which reports no WeChat answer.
    sent.msgid = None;
    all.push(sent.clone());
    sent.duplicate = true;
    (sent.errcode, sent.errmsg, sent.attempts) = (None, None, 0);
    all.push(sent);
    for reason in FAILED_REASONS {
        let mut failed = outcome(SendStatus::Failed);
        (failed.errcode, failed.errmsg, failed.attempts) = (Some(43101), Some("x".into()), 1);
        failed.error = Some("WeChat refused it".into());
        failed.reason = Some(reason);
        all.push(failed);
    }
    for reason in SUPPRESSED_REASONS {
        let mut suppressed = outcome(SendStatus::Suppressed);
        suppressed.error = Some("held back".into());
        suppressed.reason = Some(reason);
        all.push(suppressed);
    }
    let mut rejected =
        SendOutcome::new("shop", SendStatus::Rejected, datetime!(2026-01-01 0:00 UTC));
    rejected.error = Some("body: is not JSON".into());
    all.push(rejected);
    for status in [SendStatus::Expired, SendStatus::Cancelled] {
        all.push(outcome(status));
    }
    for kind in ["subscribe", "miniprogram_subscribe"] {
        let mut o = outcome(SendStatus::Sent);
        (o.msgid, o.errcode) = (Some(7), Some(0));
        o.message_kind = Some(kind.into());
        all.push(o);
    }
    for o in &all {
        assert_valid(&OUTCOME, "an outcome", &serialized(o));
    }
    let statuses: std::collections::HashSet<&str> = all.iter().map(|o| o.status.as_str()).collect();
    assert_eq!(statuses.len(), 6, "every status: {statuses:?}");
}

#[test]
fn the_outcome_schema_refuses_what_the_contract_forbids() {
    let mut failed = outcome(SendStatus::Failed);
    assert_invalid(
        &OUTCOME,
        "a failed outcome without a reason",
        &serialized(&failed),
    );
    failed.reason = Some(OutcomeReason::Paused);
    assert_invalid(
        &OUTCOME,
        "failed with a reason of suppressed",
        &serialized(&failed),
    );
    let mut sent = serialized(&outcome(SendStatus::Sent));
    sent["reason"] = json!("other");
    assert_invalid(&OUTCOME, "a sent outcome with a reason", &sent);
    let mut extra = serialized(&outcome(SendStatus::Sent));
    extra["surprise"] = json!(1);
    assert_invalid(
        &OUTCOME,
        "an outcome with a field the contract lacks",
        &extra,
    );
    let mut zero = serialized(&outcome(SendStatus::Sent));
    zero["msgid"] = json!(0);
    assert_invalid(&OUTCOME, "msgid 0", &zero);
}

#[test]
fn every_report_validates() {
    for status in [
        DeliveryStatus::Delivered,
        DeliveryStatus::Blocked,
        DeliveryStatus::DeliveryFailed,
    ] {
        let mut report = DeliveryReport {
            kind: "delivery".into(),
            app: "shop".into(),
            status,
            msgid: 200163836,
            touser: "oia2".into(),
            wechat_status: "success".into(),
            id: Some("order-1842-paid".into()),
            meta: Some(json!({"order": 1842})),
            event_time: 1395658920,
            template_id: None,
            errcode: None,
        };
        assert_valid(
            &DELIVERY,
            "a template delivery report",
            &serialized(&report),
        );
        (report.template_id, report.errcode) = (Some("VRR0".into()), Some(0));
        assert_valid(
            &DELIVERY,
            "a subscription delivery report",
            &serialized(&report),
        );
        (report.msgid, report.id, report.meta) = (0, None, None);
        assert_valid(&DELIVERY, "a report of no known job", &serialized(&report));
        report.errcode = None;
        assert_invalid(
            &DELIVERY,
            "template_id without errcode",
            &serialized(&report),
        );
    }
    for status in [PreferenceStatus::Accept, PreferenceStatus::Reject] {
        for (event, scene) in [
            ("subscribe_msg_popup_event", Some(2)),
            ("subscribe_msg_change_event", None),
        ] {
            let report = PreferenceReport {
                kind: "preference".into(),
                app: "shop".into(),
                openid: "oia2".into(),
                template_id: "VRR0".into(),
                status,
                event: event.into(),
                scene,
                event_time: 1610969440,
            };
            assert_valid(&PREFERENCE, "a preference report", &serialized(&report));
        }
    }
    for status in [FollowStatus::Subscribe, FollowStatus::Unsubscribe] {
        let report = FollowReport {
            kind: "follow".into(),
            app: "shop".into(),
            openid: "oia2".into(),
            status,
            event_time: 0,
        };
        assert_valid(&FOLLOW, "a follow report", &serialized(&report));
    }
}

#[test]
fn every_cancel_answer_validates() {
    for status in [CancelStatus::Accepted, CancelStatus::TooLate] {
        let answer = CancelAnswer::new("shop", Some("o-1".into()), status);
        assert_valid(&CANCEL_ANSWER, "a cancel answer", &serialized(&answer));
    }
    let mut refused = CancelAnswer::new("shop", None, CancelStatus::Rejected);
    assert_invalid(
        &CANCEL_ANSWER,
        "a rejection without its error",
        &serialized(&refused),
    );
    refused.error = Some("id: is required".into());
    assert_valid(&CANCEL_ANSWER, "a refused cancel", &serialized(&refused));
}

/// `docs/asyncapi.yaml` is an AsyncAPI 3.0 document by the specification's own schema, and
/// every schema file it names exists.
#[test]
fn the_asyncapi_document_validates_against_the_asyncapi_3_schema() {
    let doc: Value = serde_norway::from_str(include_str!("../../docs/asyncapi.yaml"))
        .expect("docs/asyncapi.yaml is YAML");
    let spec: Value = serde_json::from_str(include_str!(
        "../../docs/schemas/vendor/asyncapi-3.0.0.json"
    ))
    .unwrap();
    let spec = jsonschema::draft7::new(&spec).expect("the AsyncAPI schema compiles");
    let errors: Vec<String> = spec
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "docs/asyncapi.yaml: {errors:?}");

    let text = serde_json::to_string(&doc).unwrap();
    let named: Vec<&str> = text
        .split("./schemas/")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert!(named.len() >= 8, "{named:?}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas");
    for file in named {
        assert!(
            dir.join(file).is_file(),
            "docs/asyncapi.yaml names a missing {file}"
        );
    }
    // A document that breaks the specification is caught: the check can fail.
    let mut broken = doc.clone();
    broken["channels"]["jobs"]["bogus"] = json!(1);
    assert!(!spec.is_valid(&broken));
}
