//! The app's send limits around the send (`apps.NAME.recipient_limit`, `cap_mode`,
//! `content_dedup`): met after the claim, so only one delivery of an id asks, and right before
//! the send, so a job that ends without one (rejected by the catalog, expired) takes nothing.
//!
//! The job reserves a slot in its recipient's window and its content's mark, atomically in the
//! shared state; an app that honours preferences has its gates read in the same step (one
//! round trip instead of two), and a gated job takes nothing. What becomes of the reservation:
//! - `sent` (including a delivery that finds its id already sent): kept; the window counts it.
//! - any other ending (failed, expired, a retry copy, a pause): given back at once, so the slot
//!   is free for another job; a retry copy asks again on its next turn.
//! - a job asking again under the same id (a retry copy, a redelivery) finds its own slot and
//!   takes no second one; an id already sent never gets this far (its claim says so).
//!
//! A give-back that fails leaves the slot taken until it leaves the window: the cap errs on the
//! side of sending less, never more.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::CapMode;
use crate::job::Job;
use crate::outcome::{OutcomeReason, SendStatus};
use crate::retry::RetryState;
use crate::state::{ContentWindow, LimitRequest, RecipientCap, Reservation, SendLimits};
use crate::worker::deps::Seams;

use super::step::{Outlet, STATE_DOWN, Step};
use super::turn::{ClaimHeld, Turn};

/// The reason of a `Wait::Until` for a job deferred by its recipient's cap.
pub(super) const OVER_CAP: &str = "its recipient's frequency cap is reached";

impl<S: Seams> Turn<'_, S> {
    /// The send, within the app's send limits: the job is suppressed or deferred when they
    /// refuse it, and gives its reservation back unless it was sent.
    pub(super) async fn send_within_limits(
        &self,
        outlet: &dyn Outlet,
        state: &mut RetryState,
        claim: &ClaimHeld,
    ) -> Step {
        let limits = self.app.limits;
        if limits.is_off() {
            return self.send(outlet, state, claim).await;
        }
        let digest = limits.content_dedup.map(|_| content_digest(self.job));
        let request = LimitRequest {
            id: &self.job.id,
            cap: limits.recipient_limit.map(|l| RecipientCap {
                touser: &self.job.touser,
                count: l.count,
                per: l.per.get(),
            }),
            content: limits
                .content_dedup
                .zip(digest.as_deref())
                .map(|(window, digest)| ContentWindow { digest, window }),
            gate: self.gate_ask(),
        };
        let store = &self.deps.store;
        match store.reserve(self.name, &request).await {
            Ok(Reservation::Granted) => {}
            // Without shared state the limits cannot be kept: the job waits in the broker.
            Err(_) => return self.not_now(state, STATE_DOWN),
            Ok(Reservation::Gated(gate)) => return self.held_back_by(state, &gate),
            Ok(Reservation::Duplicate) => {
                let window = humantime::format_duration(limits.content_dedup.unwrap_or_default());
                let why = format!(
                    "another job with the same template, recipient and data came within {window} \
                     (apps.{}.content_dedup)",
                    self.name
                );
                let o = self.suppressed(state, OutcomeReason::ContentDuplicate, &why);
                return Step::Finish(o);
            }
            Ok(Reservation::Capped { free_in }) => {
                if limits.cap_mode == CapMode::Defer {
                    let until = self.deps.clock.now() + free_in;
                    return self.wait_until(state, until, OVER_CAP);
                }
                let (count, per) = request
                    .cap
                    .map_or((0, Duration::ZERO), |c| (c.count.get(), c.per));
                let why = format!(
                    "its recipient has had {count} sends within {} (apps.{}.recipient_limit)",
                    humantime::format_duration(per),
                    self.name
                );
                let o = self.suppressed(state, OutcomeReason::FrequencyCap, &why);
                return Step::Finish(o);
            }
        }
        let step = self.send(outlet, state, claim).await;
        if !matches!(&step, Step::Finish(o) if o.status == SendStatus::Sent) {
            // Best effort: a slot not given back only leaves the window late.
            let _ = store.give_back(self.name, &request).await;
        }
        step
    }
}

/// What makes two jobs the same content: the kind and the WeChat body (template, recipient,
/// data, link), with its keys in a fixed order and without `client_msg_id`, which is the job
/// id. SHA-256, hex. The body is read once and written straight into the hash: its keys are
/// sorted where they lie, with no copy of the tree and no string between.
pub(super) fn content_digest(job: &Job) -> String {
    let mut body: Value = serde_json::from_slice(job.wechat_bytes()).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut body {
        fields.shift_remove("client_msg_id");
    }
    // The producer's key order does not count.
    body.sort_all_objects();
    let mut hash = Sha256::new();
    hash.update(job.kind.name().as_bytes());
    hash.update(b"\n");
    // Writing a Value into a hash cannot fail.
    let _ = serde_json::to_writer(Hashing(&mut hash), &body);
    hex::encode(hash.finalize())
}

/// A hash as an `io::Write`, so JSON is written into it as it is produced.
struct Hashing<'a>(&'a mut Sha256);

impl std::io::Write for Hashing<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
