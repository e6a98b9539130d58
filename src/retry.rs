//! The retry schedule as data plus pure functions: backoff, jitter, delay tiers, and the
//! retry state a job carries from one try to the next (its header codec is in
//! `broker::headers`).

use std::time::Duration;

use backon::BackoffBuilder;

use crate::config::RetrySettings;

/// What a job carries from one try to the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RetryState {
    /// Every send call made for the job (the outcome's `attempts`).
    pub(crate) attempts: u32,
    /// How many of those WeChat answered with a quota code: the quota is not the job's
    /// fault, so they do not count toward `retry.max_attempts`.
    pub(crate) quota_sends: u32,
    pub(crate) first_try_ms: Option<u64>,
    pub(crate) quota_strikes: u32,
    /// The claim holder of the turn that scheduled this retry (16 hex digits), so the next
    /// turn can take over a claim that turn left behind (see `Idempotency::claim_as`).
    pub(crate) claim: Option<u64>,
    /// When the quiet hours that hold the job end, plus its spread (Unix milliseconds): set
    /// by the first hold, so each night's deferral is counted once however many hops it takes.
    pub(crate) quiet_until_ms: Option<u64>,
}

impl RetryState {
    /// Sends that count toward `retry.max_attempts`.
    pub(crate) fn counted_attempts(&self) -> u32 {
        self.attempts.saturating_sub(self.quota_sends)
    }
}

/// What to do after a failed try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait this long (one of the tiers) in the broker, then try again.
    RetryAfter(Duration),
    /// Stop: the job is `failed` (or `expired`, decided by the caller) for this reason.
    GiveUp(String),
}

/// The schedule, derived once from `[retry]`.
#[derive(Clone, Debug)]
pub struct Schedule {
    settings: RetrySettings,
    tiers: Vec<Duration>,
}

impl Schedule {
    pub fn new(settings: &RetrySettings) -> Self {
        Self {
            settings: settings.clone(),
            tiers: tiers_for(settings),
        }
    }

    /// Every delay a retry copy can wait: one broker queue each.
    pub fn tiers(&self) -> &[Duration] {
        &self.tiers
    }

    /// The un-jittered wait after `failures` transient failures (1 → `initial_delay`,
    /// doubling to `max_delay`).
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let mut steps = backon::ExponentialBuilder::new()
            .with_min_delay(self.settings.initial_delay.get())
            .with_max_delay(self.settings.max_delay.0)
            .with_factor(2.0)
            .without_max_times()
            .build();
        steps
            .nth(failures.saturating_sub(1).min(64) as usize)
            .unwrap_or(self.settings.max_delay.0)
    }

    /// The app pause (and the quota retry's wait) after `strikes` 45009 answers in a row.
    pub(crate) fn pause(&self, strikes: u32) -> Duration {
        let first = self.settings.pause.get();
        let doubled = first.saturating_mul(1u32 << strikes.saturating_sub(1).min(20));
        doubled.min(self.settings.max_pause.0)
    }

    /// After a transient failure. `jitter` and `pick` are uniform in [0, 1): the first spreads
    /// the wait over [½·backoff, backoff], the second rounds it to a neighbouring tier with the
    /// probability that keeps the expected wait, so a herd of failures splits up.
    pub(crate) fn after_transient(
        &self,
        state: &RetryState,
        now_ms: u64,
        jitter: f64,
        pick: f64,
    ) -> Next {
        if state.counted_attempts() >= self.settings.max_attempts.get() {
            return Next::GiveUp(format!("retries ran out after {} sends", state.attempts));
        }
        if let Some(reason) = self.too_old(state, now_ms) {
            return Next::GiveUp(reason);
        }
        let base = self.backoff(state.counted_attempts().max(1));
        let wanted = base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        Next::RetryAfter(self.round_to_tier(wanted, pick))
    }

    /// After a 45009, while the app is paused, or when the job could not be tried now: retry
    /// once `pause` is over, whatever `max_attempts` says, until `max_age`.
    pub(crate) fn after_pause(&self, state: &RetryState, now_ms: u64, pause: Duration) -> Next {
        if let Some(reason) = self.too_old(state, now_ms) {
            return Next::GiveUp(reason);
        }
        Next::RetryAfter(self.round_to_tier(pause, 0.0))
    }

    /// `retry.max_age`: how long a job may go on trying once it has started.
    pub(crate) fn max_age(&self) -> Duration {
        self.settings.max_age.get()
    }

    /// Whether the job has been trying for longer than `retry.max_age`.
    pub(crate) fn too_old(&self, state: &RetryState, now_ms: u64) -> Option<String> {
        let first = state.first_try_ms?;
        let age = Duration::from_millis(now_ms.saturating_sub(first));
        (age >= self.settings.max_age.get()).then(|| {
            format!(
                "still unsent {} after the first try (retry.max_age)",
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            )
        })
    }

    /// The wait toward a time `remaining` away that never overshoots it by more than the
    /// shortest tier: the longest tier that fits, or the shortest when none does. A wait
    /// longer than the longest tier is a chain of them, each delivery deciding again.
    pub(crate) fn tier_within(&self, remaining: Duration) -> Duration {
        self.tiers
            .iter()
            .rev()
            .find(|&&t| t <= remaining)
            .copied()
            .unwrap_or(self.tiers[0])
    }

    /// The tier at or below `wanted`, or the next one up with probability proportional to
    /// how close `wanted` is to it.
    pub(crate) fn round_to_tier(&self, wanted: Duration, pick: f64) -> Duration {
        let upper = self.tiers.iter().position(|&t| t >= wanted);
        match upper {
            None => *self.tiers.last().expect("at least one tier"),
            Some(0) => self.tiers[0],
            Some(i) if self.tiers[i] == wanted => wanted,
            Some(i) => {
                let (lo, hi) = (self.tiers[i - 1], self.tiers[i]);
                let share = (wanted - lo).as_secs_f64() / (hi - lo).as_secs_f64();
                if pick < share { hi } else { lo }
            }
        }
    }
}

/// Powers of two from the shortest wait to the longest, plus the configured end points, so
/// every configured delay is exact and the number of queues stays small.
fn tiers_for(s: &RetrySettings) -> Vec<Duration> {
    let lo = s.initial_delay.get().min(s.pause.get());
    let hi = s.max_delay.0.max(s.max_pause.0);
    let mut tiers = vec![
        s.initial_delay.get(),
        s.max_delay.0,
        s.pause.get(),
        s.max_pause.0,
    ];
    let mut t = lo;
    while t < hi {
        tiers.push(t);
        t = t.saturating_mul(2);
    }
    for d in &mut tiers {
        *d = Duration::from_millis(d.as_millis().max(1) as u64);
    }
    tiers.sort();
    tiers.dedup();
    tiers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Span;

    fn settings() -> RetrySettings {
        RetrySettings::default()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn backoff_doubles_from_initial_to_max() {
        let s = Schedule::new(&settings());
        let got: Vec<u64> = (1..=12).map(|n| s.backoff(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(s.backoff(1000), secs(600));
    }

    #[test]
    fn default_tiers_are_few_and_cover_every_configured_delay() {
        let s = Schedule::new(&settings());
        let t = s.tiers();
        assert!(t.len() <= 16, "{t:?}");
        for d in [secs(1), secs(600), secs(60), secs(3600)] {
            assert!(t.contains(&d), "{d:?} in {t:?}");
        }
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_wait_toward_a_time_never_overshoots_by_more_than_the_shortest_tier() {
        let s = Schedule::new(&settings());
        let longest = *s.tiers().last().unwrap();
        assert_eq!(s.tier_within(secs(30 * 86_400)), longest);
        assert_eq!(s.tier_within(Duration::from_millis(10)), s.tiers()[0]);
        // Each hop takes the longest tier that fits: the sum lands on the time, or one
        // shortest tier past it.
        for total in [1, 5, 61, 3_599, 3_601, 86_399] {
            let (mut left, mut hops) = (secs(total), 0);
            while left >= s.tiers()[0] {
                let hop = s.tier_within(left);
                assert!(hop <= left, "{hop:?} > {left:?}");
                left -= hop;
                hops += 1;
            }
            assert!(hops <= 40, "{total}s took {hops} hops");
        }
    }

    #[test]
    fn quota_pause_doubles_up_to_its_ceiling() {
        let s = Schedule::new(&settings());
        let got: Vec<u64> = (1..=8).map(|n| s.pause(n).as_secs()).collect();
        assert_eq!(got, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }

    #[test]
    fn transient_retries_stop_at_max_attempts() {
        let s = Schedule::new(&settings());
        let st = RetryState {
            attempts: 10,
            first_try_ms: Some(0),
            ..RetryState::default()
        };
        assert!(
            matches!(s.after_transient(&st, 1, 0.5, 0.5), Next::GiveUp(r) if r.contains("10 sends"))
        );
        let st = RetryState { attempts: 9, ..st };
        assert!(matches!(
            s.after_transient(&st, 1, 0.5, 0.5),
            Next::RetryAfter(_)
        ));
    }

    #[test]
    fn sends_answered_with_a_quota_code_do_not_count_toward_max_attempts() {
        let s = Schedule::new(&settings());
        // 10 probes answered 45009, then one -1: one counted attempt of ten.
        let st = RetryState {
            attempts: 11,
            quota_sends: 10,
            first_try_ms: Some(0),
            ..RetryState::default()
        };
        let Next::RetryAfter(d) = s.after_transient(&st, 1, 0.0, 0.0) else {
            panic!("a quota answer used up an attempt")
        };
        assert!(
            d <= s.backoff(1),
            "{d:?}: backs off as after a first failure"
        );
        let st = RetryState { attempts: 20, ..st };
        assert!(
            matches!(s.after_transient(&st, 1, 0.5, 0.5), Next::GiveUp(r) if r.contains("20 sends"))
        );
    }

    #[test]
    fn retries_stop_at_max_age_quota_ones_included() {
        let s = Schedule::new(&settings());
        let day_ms = 24 * 3600 * 1000;
        let st = RetryState {
            attempts: 1,
            first_try_ms: Some(0),
            quota_strikes: 50,
            ..RetryState::default()
        };
        assert!(
            matches!(s.after_pause(&st, day_ms, secs(60)), Next::GiveUp(r) if r.contains("max_age"))
        );
        assert!(
            matches!(s.after_pause(&st, day_ms - 1, secs(3600)), Next::RetryAfter(d) if d == secs(3600))
        );
        assert!(matches!(
            s.after_transient(&st, day_ms, 0.0, 0.0),
            Next::GiveUp(_)
        ));
    }

    #[test]
    fn jittered_waits_stay_within_half_to_full_backoff_rounded_to_tiers() {
        let s = Schedule::new(&settings());
        for attempts in 1..=9 {
            let base = s.backoff(attempts);
            for j in [0.0, 0.3, 0.99] {
                for p in [0.0, 0.5, 0.99] {
                    let st = RetryState {
                        attempts,
                        first_try_ms: Some(0),
                        ..RetryState::default()
                    };
                    let Next::RetryAfter(d) = s.after_transient(&st, 0, j, p) else {
                        panic!()
                    };
                    assert!(s.tiers().contains(&d));
                    assert!(d >= base / 2 && d <= base, "{attempts}: {d:?} vs {base:?}");
                }
            }
        }
    }

    #[test]
    fn stochastic_rounding_keeps_the_expected_wait() {
        let s = Schedule::new(&settings());
        let wanted = Duration::from_millis(1500);
        let n = 1000;
        let total: f64 = (0..n)
            .map(|i| s.round_to_tier(wanted, i as f64 / n as f64).as_secs_f64())
            .sum();
        assert!((total / n as f64 - 1.5).abs() < 0.01);
        assert_eq!(s.round_to_tier(Duration::from_millis(10), 0.9), secs(1));
        assert_eq!(s.round_to_tier(secs(100_000), 0.1), secs(3600));
    }

    #[test]
    fn sub_second_settings_make_sub_second_tiers() {
        let mut r = settings();
        r.initial_delay = Duration::from_millis(100).try_into().unwrap();
        r.max_delay = Span(Duration::from_millis(400));
        r.pause = Duration::from_millis(300).try_into().unwrap();
        r.max_pause = Span(Duration::from_millis(300));
        let s = Schedule::new(&r);
        let ms: Vec<u128> = s.tiers().iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 300, 400]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn every_transient_wait_is_a_tier_within_the_bounds(
                attempts in 0u32..40,
                first in 0u64..1_000_000,
                age in 0u64..200_000_000,
                jitter in 0.0f64..1.0,
                pick in 0.0f64..1.0,
            ) {
                let s = Schedule::new(&settings());
                let st = RetryState { attempts, first_try_ms: Some(first), ..RetryState::default() };
                match s.after_transient(&st, first + age, jitter, pick) {
                    Next::RetryAfter(d) => {
                        prop_assert!(attempts < 10 && age < 86_400_000);
                        prop_assert!(s.tiers().contains(&d));
                        prop_assert!(d >= secs(1) / 2 && d <= secs(600));
                    }
                    Next::GiveUp(_) => prop_assert!(attempts >= 10 || age >= 86_400_000),
                }
            }

            #[test]
            fn quota_waits_never_exceed_the_longest_pause(strikes in 0u32..100, pause_ms in 0u64..10_000_000) {
                let s = Schedule::new(&settings());
                prop_assert!(s.pause(strikes) <= secs(3600));
                let st = RetryState { first_try_ms: Some(0), quota_strikes: strikes, ..RetryState::default() };
                if let Next::RetryAfter(d) = s.after_pause(&st, 0, Duration::from_millis(pause_ms)) {
                    prop_assert!(s.tiers().contains(&d));
                }
            }
        }
    }
}
