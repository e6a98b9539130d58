//! Quiet hours (`apps.NAME.quiet_hours`): a job that comes while they hold is held until
//! they end, plus its share of the spread (`quiet_mode = "defer"`), or ends `suppressed` with
//! reason `quiet_hours` (`"drop"`); an urgent job passes. Each of the three is counted per app.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use time::{Duration, OffsetDateTime};

use crate::clock::Clock;
use crate::metrics::{AppLabel, Metrics};
use crate::outcome::{OutcomeReason, SendOutcome};
use crate::quiet_hours::{QuietMode, spread_for};
use crate::retry::RetryState;
use crate::worker::deps::Seams;

use super::step::{QUIET_HOURS, Step};
use super::turn::Turn;

/// The longest quiet hours can hold a job: a whole day, plus the hour a clock change can add.
/// A carried end further ahead was not written by a hold (a producer set the header).
const MAX_HOLD: Duration = Duration::hours(25);

impl<S: Seams> Turn<'_, S> {
    /// What the app's quiet hours decide before the claim (a hold, with `defer`): `None` lets
    /// the job go on.
    pub(super) fn quiet_hours(&self, state: &RetryState) -> Option<Step> {
        let policy = self.app.quiet.as_ref()?;
        if policy.mode == QuietMode::Drop {
            // Decided after the claim: a redelivered job that was already sent must come back
            // as its duplicate `sent`, never as a second, `suppressed`, outcome.
            return None;
        }
        let now = self.deps.clock.now();
        // A job already held goes on to the end it was given: a chain of delay tiers may bring
        // it back after the quiet hours end but before its share of the spread.
        if let Some(until) = state.quiet_until_ms.and_then(from_unix_ms)
            && until > now
            && until - now <= MAX_HOLD + policy.spread
            && !self.job.urgent
        {
            return Some(self.wait_until(state, until, QUIET_HOURS));
        }
        let end = policy.hours.end_if_quiet(now)?;
        let metrics = &self.deps.metrics;
        let count = |family: &Family<AppLabel, Counter>| {
            family.get_or_create(&Metrics::app(self.name)).inc();
        };
        if self.job.urgent {
            count(&metrics.quiet_hours_urgent);
            return None;
        }
        let until = end + spread_for(&self.job.id, policy.spread);
        let until_ms = unix_ms(until);
        let mut held = *state;
        // Each hop of the same hold carries the same end: counted at the first.
        if held.quiet_until_ms != Some(until_ms) {
            count(&metrics.quiet_hours_deferred);
            held.quiet_until_ms = Some(until_ms);
        }
        Some(self.wait_until(&held, until, QUIET_HOURS))
    }

    /// With `quiet_mode = "drop"`, after the claim: the `suppressed` outcome of a job that came
    /// during quiet hours, unless it is urgent.
    pub(super) fn dropped_by_quiet_hours(&self, state: &RetryState) -> Option<SendOutcome> {
        let policy = self.app.quiet.as_ref()?;
        if policy.mode != QuietMode::Drop {
            return None;
        }
        policy.hours.end_if_quiet(self.deps.clock.now())?;
        let counter = if self.job.urgent {
            &self.deps.metrics.quiet_hours_urgent
        } else {
            &self.deps.metrics.quiet_hours_dropped
        };
        counter.get_or_create(&Metrics::app(self.name)).inc();
        if self.job.urgent {
            return None;
        }
        let why = format!(
            "came during quiet hours ({} {})",
            policy.hours.window,
            policy.hours.zone.name()
        );
        Some(self.suppressed(state, OutcomeReason::QuietHours, &why))
    }
}

fn unix_ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn from_unix_ms(ms: u64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}
