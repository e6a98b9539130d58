//! Respect "no" in the pipeline (`apps.NAME.honor_preferences`): with its claim held, a job a
//! preference gate holds back ends `suppressed` before any quota is spent; and WeChat's own
//! refusals (43101, 43004) set the gate, so the next job to that user is held back here.

use crate::clock::Clock;
use crate::outcome::SendStatus;
use crate::preferences::{GateChange, describe, reason};
use crate::retry::RetryState;
use crate::state::{Gate, GateAsk, StateResult};
use crate::worker::deps::Seams;

use super::step::{STATE_DOWN, Step};
use super::turn::Turn;

/// What the gate lookup found; `None` when the app does not honour preferences.
pub(super) type GateLookup = Option<StateResult<Option<Gate>>>;

impl<S: Seams> Turn<'_, S> {
    /// The gate that holds this job back, looked up while the claim is taken: the two share
    /// one round trip's wait in shared state. What it finds counts only once the claim is held
    /// ([`Turn::gated`]), so a job already sent still gets no second outcome. An app that also
    /// keeps a send limit reads its gates in the reservation instead ([`Turn::gate_ask`]).
    pub(super) async fn gate_lookup(&self) -> GateLookup {
        let gates = self.app.preferences.as_ref()?;
        let now = self.deps.clock.now().unix_timestamp();
        let job = self.job;
        Some(
            gates
                .holding(self.name, &job.touser, &job.template_id, now)
                .await,
        )
    }

    /// What the reservation of an app that honours preferences and keeps a send limit asks
    /// of the gates: the state reads them in the same step, from the gates the callback sets
    /// (one store per state, [`crate::state::State::gate_store`]).
    pub(super) fn gate_ask(&self) -> Option<GateAsk<'_>> {
        self.app.preferences.as_ref()?;
        Some(GateAsk {
            openid: &self.job.touser,
            template: &self.job.template_id,
            now: self.deps.clock.now().unix_timestamp(),
        })
    }

    /// The job's end when a gate holds it back: `suppressed` with the gate's reason. Without
    /// shared state the gate cannot be read, and the job waits like any other "not now".
    pub(super) fn gated(&self, state: &RetryState, lookup: GateLookup) -> Option<Step> {
        match lookup? {
            Ok(None) => None,
            Ok(Some(gate)) => Some(self.held_back_by(state, &gate)),
            Err(_) => Some(self.not_now(state, STATE_DOWN)),
        }
    }

    /// `suppressed`, with the reason of the gate that held the job back.
    pub(super) fn held_back_by(&self, state: &RetryState, gate: &Gate) -> Step {
        Step::Finish(self.suppressed(state, reason(gate), &describe(gate)))
    }

    /// After WeChat answered: a refusal that means the user said "no" sets the gate. The job
    /// itself ends as WeChat's answer has it; a gate that cannot be set is only logged, and
    /// WeChat answers the next job the same way.
    pub(super) async fn learn_from(&self, step: &Step) {
        let Some(gates) = self.app.preferences.as_ref() else {
            return;
        };
        let Step::Finish(o) = step else { return };
        let (SendStatus::Failed, Some(errcode)) = (o.status, o.errcode) else {
            return;
        };
        let Some(change) = GateChange::from_errcode(errcode, &self.job.template_id) else {
            return;
        };
        let now = self.deps.clock.now().unix_timestamp();
        if let Err(e) = gates.apply(self.name, &self.job.touser, &change, now).await {
            tracing::warn!(app = self.name, id = %self.job.id, errcode, error = %e, "cannot set the preference gate WeChat's refusal means");
        }
    }
}
