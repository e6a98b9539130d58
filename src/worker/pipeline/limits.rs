//! The app's send limits around the send (`apps.NAME.recipient_limit`, `cap_mode`,
//! `content_dedup`): reserved in the same step of the state as the job's claim, and only when
//! the claim is fresh, so only one delivery of an id asks and the job pays no round trip more
//! than a job without limits. Their answer counts right before the send, after every other
//! policy; a job that ends before it (expired, dropped, rejected by the catalog) gives back
//! what it took.
//!
//! The job reserves a slot in its recipient's window and its content's mark, atomically in the
//! shared state; an app that honours preferences has its gates read in the same step (one
//! round trip instead of two), and a gated job takes nothing. What becomes of the reservation:
//! - `sent` (including a delivery that finds its id already sent): kept; the window counts it.
//! - any other ending (failed, expired, a retry copy, a pause, a catalog rejection): given back
//!   at once, so the slot is free for another job; a retry copy asks again on its next turn.
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

use super::step::{Outlet, Step};
use super::turn::{ClaimHeld, Turn};

/// The reason of a `Wait::Until` for a job deferred by its recipient's cap.
pub(super) const OVER_CAP: &str = "its recipient's frequency cap is reached";

impl<'t, S: Seams> Turn<'t, S> {
    /// The job's content digest, when the app de-duplicates content: computed before the
    /// claim, which takes the reservation in the same step.
    pub(super) fn digest_if_deduped(&self) -> Option<String> {
        self.app
            .limits
            .content_dedup
            .map(|_| content_digest(self.job))
    }

    /// What the job asks of the app's send limits (and of its gates, when it honours
    /// preferences too); `None` for an app without limits. `digest`: from
    /// [`Turn::digest_if_deduped`].
    pub(super) fn limit_request<'a>(&'a self, digest: Option<&'a str>) -> Option<LimitRequest<'a>>
    where
        't: 'a,
    {
        let limits = self.app.limits;
        if limits.is_off() {
            return None;
        }
        Some(LimitRequest {
            id: &self.job.id,
            cap: limits.recipient_limit.map(|l| RecipientCap {
                touser: &self.job.touser,
                count: l.count,
                per: l.per.get(),
            }),
            content: limits
                .content_dedup
                .zip(digest)
                .map(|(window, digest)| ContentWindow { digest, window }),
            gate: self.gate_ask(),
        })
    }

    /// The send, within the app's send limits: the job is suppressed or deferred when its
    /// reservation (taken with its claim) was refused, and gives it back unless it was sent.
    pub(super) async fn send_within_limits(
        &self,
        outlet: &dyn Outlet,
        state: &mut RetryState,
        claim: &ClaimHeld,
        reserved: Option<(&LimitRequest<'_>, Reservation)>,
    ) -> Step {
        let Some((request, reservation)) = reserved else {
            return self.send(outlet, state, claim).await;
        };
        let limits = self.app.limits;
        match reservation {
            Reservation::Granted => {}
            Reservation::Gated(gate) => return self.held_back_by(state, &gate),
            Reservation::Duplicate => {
                let window = humantime::format_duration(limits.content_dedup.unwrap_or_default());
                let why = format!(
                    "another job with the same template, recipient and data came within {window} \
                     (apps.{}.content_dedup)",
                    self.name
                );
                let o = self.suppressed(state, OutcomeReason::ContentDuplicate, &why);
                return Step::Finish(o);
            }
            Reservation::Capped { free_in } => {
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
            self.give_back(request).await;
        }
        step
    }

    /// Gives back a granted reservation of a job that ends without its send. Best effort: a
    /// slot not given back only leaves the window late.
    pub(super) async fn give_back(&self, request: &LimitRequest<'_>) {
        let _ = self.deps.store.give_back(self.name, request).await;
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
