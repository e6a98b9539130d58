//! Wall-clock time, behind one seam every layer may use: the pipeline's `not_after` is an
//! RFC 3339 instant, `retry.max_age` runs on Unix milliseconds carried in headers, an outcome
//! says when it finished and the callback's replay window compares a signed Unix timestamp,
//! so tokio's (pausable) clock cannot answer them. Every wait and elapsed time uses tokio's
//! clock instead. The verbs that stamp what they publish (`send`, `demo`) read the time of day
//! through the same trait.

use time::OffsetDateTime;

/// The time of day, as the pipeline and the callback read it.
pub(crate) trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;

    /// Seconds since the Unix epoch (the callback's signed `timestamp`); 0 before it.
    fn now_secs(&self) -> u64 {
        u64::try_from(self.now().unix_timestamp()).unwrap_or(0)
    }

    /// Milliseconds since the Unix epoch (the retry state's `first_try_ms`).
    fn now_ms(&self) -> u64 {
        (self.now().unix_timestamp_nanos() / 1_000_000) as u64
    }
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A wall clock that moves with tokio's clock from a fixed start: under paused time it moves
/// only as the test (or an auto-advanced sleep) moves it.
#[cfg(test)]
pub(crate) struct TokioClock {
    wall: OffsetDateTime,
    at: tokio::time::Instant,
}

#[cfg(test)]
impl TokioClock {
    pub(crate) fn starting_at(wall: OffsetDateTime) -> Self {
        Self {
            wall,
            at: tokio::time::Instant::now(),
        }
    }
}

#[cfg(test)]
impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        self.wall + self.at.elapsed()
    }
}

/// A clock that stands still at the time a test sets.
#[cfg(test)]
pub(crate) struct FixedClock(parking_lot::Mutex<OffsetDateTime>);

#[cfg(test)]
impl FixedClock {
    pub(crate) fn at(now: OffsetDateTime) -> Self {
        Self(parking_lot::Mutex::new(now))
    }

    pub(crate) fn set(&self, now: OffsetDateTime) {
        *self.0.lock() = now;
    }
}

#[cfg(test)]
impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_moves_with_paused_time_only() {
        let start = time::macros::datetime!(2026-01-01 00:00 UTC);
        let clock = TokioClock::starting_at(start);
        assert_eq!(clock.now(), start);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + Duration::from_secs(90));
        assert_eq!(clock.now_ms(), (start.unix_timestamp() as u64 + 90) * 1000);
        assert_eq!(clock.now_secs(), start.unix_timestamp() as u64 + 90);
    }

    #[test]
    fn a_fixed_clock_stays_where_it_is_set() {
        let start = time::macros::datetime!(2026-01-01 00:00 UTC);
        let clock = FixedClock::at(start);
        assert_eq!(clock.now(), start);
        clock.set(start + Duration::from_secs(5));
        assert_eq!(clock.now_secs(), start.unix_timestamp() as u64 + 5);
    }
}
