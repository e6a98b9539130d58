//! What one delivery adds to its job's story, read off the step the pipeline decided: taken
//! in (the first time), then a try that will be retried, a wait without a try, or the end.
//! Pure: the consumer keeps what this returns, beside settling the step.

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use super::pipeline::{Step, Wait};
use crate::outcome::format_timestamp;
use crate::outcome::{SendOutcome, SendStatus};
use crate::trail::{Entry, StepName};

/// A delivery as the consumer took it.
pub(crate) struct Taken<'a> {
    pub(crate) body: &'a [u8],
    pub(crate) message_id: Option<&'a str>,
    /// A retry copy coming back, not a job seen for the first time.
    pub(crate) returning: bool,
    /// Send calls made for the job before this delivery.
    pub(crate) attempts_before: u32,
    pub(crate) at: OffsetDateTime,
}

/// The job id and the steps to keep for it; `None` for a job with no id to keep them under.
pub(crate) fn steps_of(
    taken: &Taken,
    step: &Step,
    now: OffsetDateTime,
) -> Option<(String, Vec<Entry>)> {
    // A cancel message is not its job: the job's own delivery tells how it ended.
    if crate::job::cancel::read(taken.body).is_some() {
        return None;
    }
    let (id, last) = match step {
        Step::Answer { .. } => return None,
        Step::Finish(o) | Step::Reject { outcome: o, .. } => (o.id.clone()?, ending(o)),
        Step::Retry {
            after,
            state,
            wait,
            errcode,
        } => {
            let id = job_id(taken.body, taken.message_id)?;
            let until = format_timestamp(now + *after);
            let step = if state.attempts > taken.attempts_before {
                Entry::new(now, StepName::Attempt)
                    .with("attempts", state.attempts)
                    .with("errcode", *errcode)
                    .with("wait", wait_name(*wait))
                    .with("wait_ms", millis(*after))
                    .with("until", until)
            } else {
                Entry::new(now, StepName::Waiting)
                    .with("until", until)
                    .with("reason", wait_reason(*wait))
            };
            (id, step)
        }
    };
    let mut steps = Vec::with_capacity(2);
    if !taken.returning {
        steps.push(Entry::new(taken.at, StepName::Received));
    }
    steps.push(last);
    Some((id, steps))
}

/// The step a final outcome ends the story with, at the outcome's own time.
fn ending(o: &SendOutcome) -> Entry {
    let name = match o.status {
        SendStatus::Sent if o.duplicate => StepName::Duplicate,
        SendStatus::Sent => StepName::Sent,
        SendStatus::Failed => StepName::Failed,
        SendStatus::Rejected => StepName::Rejected,
        SendStatus::Expired => StepName::Expired,
        SendStatus::Cancelled => StepName::Cancelled,
        SendStatus::Suppressed => StepName::Suppressed,
    };
    let reason = o
        .reason
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null));
    Entry {
        at: o.finished_at.clone(),
        step: name,
        detail: Default::default(),
    }
    .with("msgid", o.msgid)
    .with("errcode", o.errcode)
    .with("attempts", (o.attempts > 0).then_some(o.attempts))
    .with("reason", reason)
    .with("error", o.error.clone())
}

fn wait_name(wait: Wait) -> &'static str {
    match wait {
        Wait::Transient => "backoff",
        Wait::Quota => "quota",
        Wait::NotNow(_) => "not_now",
        Wait::Until(_) => "until",
    }
}

fn wait_reason(wait: Wait) -> &'static str {
    match wait {
        Wait::Transient => "backoff after a failed send",
        Wait::Quota => "the app is paused: WeChat said its quota is spent (45009)",
        Wait::NotNow(why) | Wait::Until(why) => why,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The id of a job the pipeline read (a retry is only decided for one): the body's `id`, or
/// else the `message_id` property, as the job reader takes it.
fn job_id(body: &[u8], message_id: Option<&str>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    let from_body = serde_json::from_slice::<IdOnly>(body)
        .ok()
        .and_then(|j| j.id);
    from_body.or_else(|| message_id.map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RetryState;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 09:12:03 UTC);

    fn taken(returning: bool, attempts_before: u32) -> Taken<'static> {
        Taken {
            body: br#"{"id":"j1","touser":"u","template_id":"t","data":{"a":{"value":"b"}}}"#,
            message_id: None,
            returning,
            attempts_before,
            at: datetime!(2026-11-28 09:12:02 UTC),
        }
    }

    fn names(steps: &[Entry]) -> Vec<&'static str> {
        steps.iter().map(|e| e.step.as_str()).collect()
    }

    fn outcome(status: SendStatus) -> SendOutcome {
        let mut o = SendOutcome::new("shop", status, NOW);
        o.id = Some("j1".into());
        o
    }

    #[test]
    fn a_cancel_message_adds_nothing_to_its_job_story() {
        let cancel = Taken {
            body: br#"{"kind":"cancel","id":"j1"}"#,
            ..taken(false, 0)
        };
        let waiting = Step::Retry {
            after: Duration::from_secs(1),
            state: RetryState::default(),
            wait: Wait::NotNow("its id is being sent by another delivery"),
            errcode: None,
        };
        assert!(steps_of(&cancel, &waiting, NOW).is_none());
        let cancelled = Step::Finish(outcome(SendStatus::Cancelled));
        assert!(steps_of(&taken(false, 0), &cancelled, NOW).is_some());
    }

    #[test]
    fn a_first_delivery_that_is_sent_reads_received_then_sent_with_its_msgid() {
        let mut o = outcome(SendStatus::Sent);
        o.msgid = Some(200228332);
        o.attempts = 1;
        let (id, steps) = steps_of(&taken(false, 0), &Step::Finish(o), NOW).unwrap();
        assert_eq!(id, "j1");
        assert_eq!(names(&steps), ["received", "sent"]);
        assert_eq!(steps[0].at, "2026-11-28T09:12:02.000Z");
        assert_eq!(steps[1].at, "2026-11-28T09:12:03.000Z");
        assert_eq!(steps[1].detail["msgid"], 200228332);
        let (_, again) = steps_of(
            &taken(true, 1),
            &Step::Finish(outcome(SendStatus::Sent)),
            NOW,
        )
        .unwrap();
        assert_eq!(
            names(&again),
            ["sent"],
            "a retry copy is not received again"
        );
    }

    #[test]
    fn every_ending_is_named_by_its_status() {
        let mut dup = outcome(SendStatus::Sent);
        dup.duplicate = true;
        let mut suppressed = outcome(SendStatus::Suppressed);
        suppressed.reason = Some(crate::outcome::OutcomeReason::QuietHours);
        for (o, name) in [
            (dup, "duplicate"),
            (outcome(SendStatus::Failed), "failed"),
            (outcome(SendStatus::Expired), "expired"),
            (outcome(SendStatus::Cancelled), "cancelled"),
            (suppressed, "suppressed"),
        ] {
            let (_, steps) = steps_of(&taken(true, 0), &Step::Finish(o), NOW).unwrap();
            assert_eq!(names(&steps), [name]);
        }
        let (_, steps) = steps_of(
            &taken(true, 0),
            &Step::Finish({
                let mut o = outcome(SendStatus::Suppressed);
                o.reason = Some(crate::outcome::OutcomeReason::QuietHours);
                o
            }),
            NOW,
        )
        .unwrap();
        assert_eq!(steps[0].detail["reason"], "quiet_hours");
        let rejected = Step::Reject {
            outcome: outcome(SendStatus::Rejected),
            reason: "data: missing".into(),
        };
        let (_, steps) = steps_of(&taken(false, 0), &rejected, NOW).unwrap();
        assert_eq!(names(&steps), ["received", "rejected"]);
        let mut unreadable = outcome(SendStatus::Rejected);
        unreadable.id = None;
        let nameless = Step::Reject {
            outcome: unreadable,
            reason: "not JSON".into(),
        };
        assert!(
            steps_of(&taken(false, 0), &nameless, NOW).is_none(),
            "no id: nothing to keep"
        );
    }

    fn retry(attempts: u32, wait: Wait, errcode: Option<i64>) -> Step {
        Step::Retry {
            after: Duration::from_secs(5),
            state: RetryState {
                attempts,
                ..RetryState::default()
            },
            wait,
            errcode,
        }
    }

    #[test]
    fn a_try_to_be_retried_is_an_attempt_with_its_errcode_and_wait() {
        let (id, steps) =
            steps_of(&taken(true, 1), &retry(2, Wait::Transient, Some(-1)), NOW).unwrap();
        assert_eq!(id, "j1");
        let [attempt] = &steps[..] else {
            panic!("{steps:?}")
        };
        assert_eq!(attempt.step, StepName::Attempt);
        assert_eq!(attempt.detail["errcode"], -1);
        assert_eq!(attempt.detail["wait"], "backoff");
        assert_eq!(attempt.detail["wait_ms"], 5000);
        assert_eq!(attempt.detail["until"], "2026-11-28T09:12:08.000Z");
    }

    #[test]
    fn a_wait_without_a_try_is_waiting_until_it_comes_back_with_why() {
        let held = retry(0, Wait::Until("its not_before has not come"), None);
        let (_, steps) = steps_of(&taken(false, 0), &held, NOW).unwrap();
        assert_eq!(names(&steps), ["received", "waiting"]);
        assert_eq!(steps[1].detail["until"], "2026-11-28T09:12:08.000Z");
        assert_eq!(steps[1].detail["reason"], "its not_before has not come");
        let paused = retry(3, Wait::Quota, None);
        let (_, steps) = steps_of(&taken(true, 3), &paused, NOW).unwrap();
        assert_eq!(names(&steps), ["waiting"], "no call was made");
    }

    #[test]
    fn a_retry_takes_its_id_from_the_body_or_else_the_message_id() {
        let bare = Taken {
            body: br#"{"touser":"u"}"#,
            message_id: Some("from-prop"),
            ..taken(true, 0)
        };
        let (id, _) = steps_of(&bare, &retry(1, Wait::Transient, None), NOW).unwrap();
        assert_eq!(id, "from-prop");
    }
}
