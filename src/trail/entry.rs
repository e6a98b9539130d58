//! One step of a job's story and the story itself, as `status` prints them and the admin
//! endpoint serves them: `{"app", "id", "status", "trail": [{"at", "step", …}]}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::outcome::format_timestamp;

/// The most steps one job's story keeps; beyond it the oldest go first. A job retried for a
/// day in the longest delay tier takes a few dozen; the bound keeps a job that loops from
/// growing its key without end.
pub const MAX_STEPS: usize = 64;

/// What happened to the job at one step (`step` in the story).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    /// The worker took the job in, the first time.
    Received,
    /// A WeChat call that did not end the job: with its `errcode` and the wait chosen.
    Attempt,
    /// Held in a delay queue without a try: `until` when it comes back, and why.
    Waiting,
    /// WeChat accepted it: with its `msgid`.
    Sent,
    Failed,
    Rejected,
    Expired,
    /// Its id had already been sent: not sent again, with the first `msgid`.
    Duplicate,
    Cancelled,
    /// A delivery policy held it back: with its `reason`.
    Suppressed,
    /// WeChat's delivery report for its msgid: with the report's `status`.
    Delivery,
}

impl StepName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StepName::Received => "received",
            StepName::Attempt => "attempt",
            StepName::Waiting => "waiting",
            StepName::Sent => "sent",
            StepName::Failed => "failed",
            StepName::Rejected => "rejected",
            StepName::Expired => "expired",
            StepName::Duplicate => "duplicate",
            StepName::Cancelled => "cancelled",
            StepName::Suppressed => "suppressed",
            StepName::Delivery => "delivery",
        }
    }
}

/// One step: when (RFC 3339, milliseconds, UTC, as outcomes write it), which, and what is
/// known about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at: String,
    pub step: StepName,
    #[serde(flatten)]
    pub detail: Map<String, Value>,
}

impl Entry {
    pub fn new(at: OffsetDateTime, step: StepName) -> Self {
        Self {
            at: format_timestamp(at),
            step,
            detail: Map::new(),
        }
    }

    /// The same step with `key` set to `value` (a null `value` is left out).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        if !value.is_null() {
            self.detail.insert(key.to_owned(), value);
        }
        self
    }

    /// One stored step; `None` for text this version cannot read (written by a newer one, or
    /// damaged), which the story leaves out rather than failing whole.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(self).expect("a step always serializes")
    }
}

/// A job's whole story as kept: its steps in time order and the state the latest one leaves
/// it in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Story {
    pub app: String,
    pub id: String,
    /// The latest state: the last step's name, `retrying` after an attempt, and the report's
    /// own status (`delivered`, `blocked`, `delivery_failed`) after a delivery report.
    pub status: String,
    pub trail: Vec<Entry>,
}

impl Story {
    /// The story of these steps, in time order (a delivery report can be kept before the
    /// step that sent the job: both are recorded as they happen, by different parts); `None`
    /// when there is none.
    pub fn new(app: &str, id: &str, mut trail: Vec<Entry>) -> Option<Self> {
        // Every `at` has one fixed form, so text order is time order; the sort is stable, so
        // steps of one millisecond keep the order they were kept in.
        trail.sort_by(|a, b| a.at.cmp(&b.at));
        let last = trail.last()?;
        let status = match last.step {
            StepName::Attempt => "retrying".to_owned(),
            StepName::Delivery => last
                .detail
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("delivery")
                .to_owned(),
            step => step.as_str().to_owned(),
        };
        Some(Self {
            app: app.to_owned(),
            id: id.to_owned(),
            status,
            trail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn a_step_reads_as_at_step_and_its_details_side_by_side() {
        let e = Entry::new(datetime!(2026-11-28 09:12:03.1204 UTC), StepName::Sent)
            .with("msgid", 200228332u64)
            .with("errcode", Value::Null);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({"at": "2026-11-28T09:12:03.120Z", "step": "sent", "msgid": 200228332u64})
        );
        assert_eq!(Entry::decode(&e.encode()), Some(e));
    }

    #[test]
    fn a_step_this_version_cannot_read_is_left_out_not_an_error() {
        assert_eq!(Entry::decode(r#"{"at":"x","step":"teleported"}"#), None);
        assert_eq!(Entry::decode("not json"), None);
    }

    #[test]
    fn the_story_is_in_time_order_and_its_status_is_the_latest_state() {
        let at = |s: &str| Entry {
            at: s.into(),
            step: StepName::Received,
            detail: Map::new(),
        };
        let mut delivery = at("2026-11-28T09:12:05.000Z").with("status", "delivered");
        delivery.step = StepName::Delivery;
        let mut sent = at("2026-11-28T09:12:03.000Z");
        sent.step = StepName::Sent;
        let received = at("2026-11-28T09:12:01.000Z");
        let story = Story::new("shop", "j1", vec![received, delivery, sent]).unwrap();
        let steps: Vec<_> = story.trail.iter().map(|e| e.step.as_str()).collect();
        assert_eq!(steps, ["received", "sent", "delivery"]);
        assert_eq!(story.status, "delivered");
        let mut attempt = at("2026-11-28T09:12:02.000Z");
        attempt.step = StepName::Attempt;
        let story = Story::new("shop", "j1", vec![at("2026-11-28T09:12:01.000Z"), attempt]);
        assert_eq!(story.unwrap().status, "retrying");
        assert_eq!(Story::new("shop", "j1", Vec::new()), None);
    }
}
