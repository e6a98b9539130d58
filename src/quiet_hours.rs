//! Quiet hours as pure time arithmetic: a daily window of local times (`apps.NAME.quiet_hours`,
//! which may cross midnight) in an IANA zone (`apps.NAME.timezone`), and the instant it ends.
//! The zone's rules come from the tz database bundled into the binary (`jiff`), never from the
//! machine's own zone or files, so every instance reads the same rules.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

/// The zone an app's quiet hours are read in when `apps.NAME.timezone` is not set.
pub const DEFAULT_ZONE: &str = "Asia/Shanghai";

const MINUTES_A_DAY: u16 = 24 * 60;

/// A daily window of local times `HH:MM-HH:MM`: from its start (inclusive) to its end
/// (exclusive), across midnight when the start is later than the end. Never empty.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct QuietWindow {
    /// Minutes after midnight.
    start: u16,
    end: u16,
}

impl QuietWindow {
    /// Reads `22:00-08:00`; the error is a rule that follows the key's name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let shape =
            || format!("{text:?} must be two times of day HH:MM-HH:MM, such as \"22:00-08:00\"");
        let (start, end) = text.split_once('-').ok_or_else(shape)?;
        let minutes = |part: &str| -> Result<u16, String> {
            let part = part.trim();
            let (h, m) = part.split_once(':').ok_or_else(shape)?;
            let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
            if !two_digits(h) || !two_digits(m) {
                return Err(shape());
            }
            let (h, m): (u16, u16) = (
                h.parse().map_err(|_| shape())?,
                m.parse().map_err(|_| shape())?,
            );
            if h > 23 || m > 59 {
                return Err(format!("{part:?} is not a time of day (00:00 to 23:59)"));
            }
            Ok(h * 60 + m)
        };
        let (start, end) = (minutes(start)?, minutes(end)?);
        if start == end {
            return Err(format!(
                "{text:?} is empty: it starts and ends at the same time (a whole day of quiet is no window)"
            ));
        }
        Ok(Self { start, end })
    }

    /// Whether a local time of day, in seconds after midnight, is quiet.
    fn contains(self, second_of_day: u32) -> bool {
        let (start, end) = (u32::from(self.start) * 60, u32::from(self.end) * 60);
        if start < end {
            (start..end).contains(&second_of_day)
        } else {
            second_of_day >= start || second_of_day < end
        }
    }

    /// The time of day the window ends.
    fn end_time(self) -> Time {
        Time::constant((self.end / 60) as i8, (self.end % 60) as i8, 0, 0)
    }

    /// How long each day is not quiet (on a day without a clock change).
    pub fn open_each_day(self) -> Duration {
        let open = (self.start + MINUTES_A_DAY - self.end) % MINUTES_A_DAY;
        Duration::from_secs(u64::from(open) * 60)
    }
}

impl fmt::Display for QuietWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

impl fmt::Debug for QuietWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl<'de> Deserialize<'de> for QuietWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)
            .map_err(|_| serde::de::Error::custom("must be a string such as \"22:00-08:00\""))?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for QuietWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// An IANA time zone, by the name it was given.
#[derive(Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// The zone named `name` in the bundled tz database; the error is a rule that follows the
    /// key's name.
    pub fn named(name: &str) -> Result<Self, String> {
        let tz = TimeZone::get(name).map_err(|_| {
            format!(
                "{name:?} is not a time zone of the IANA database, such as \"Asia/Shanghai\" or \
                 \"America/New_York\""
            )
        })?;
        Ok(Self {
            name: name.to_owned(),
            tz,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Default for Zone {
    fn default() -> Self {
        Self::named(DEFAULT_ZONE).expect("the bundled tz database has Asia/Shanghai")
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.name, f)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)
            .map_err(|_| serde::de::Error::custom("must be a string such as \"Asia/Shanghai\""))?;
        Self::named(&name).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// What becomes of a job that comes during quiet hours (`apps.NAME.quiet_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuietMode {
    /// It waits until they end, then goes within the spread.
    #[default]
    Defer,
    /// It ends `suppressed` with reason `quiet_hours`.
    Drop,
}

/// An app's quiet hours as the pipeline applies them.
#[derive(Clone, Debug)]
pub(crate) struct QuietPolicy {
    pub(crate) hours: QuietHours,
    pub(crate) mode: QuietMode,
    /// Deferred jobs leave over this long after the end (`apps.NAME.quiet_spread`).
    pub(crate) spread: Duration,
}

/// An app's quiet hours: a window read in a zone.
#[derive(Clone, Debug)]
pub(crate) struct QuietHours {
    pub(crate) window: QuietWindow,
    pub(crate) zone: Zone,
}

impl QuietHours {
    /// When the quiet hours that hold at `now` end: the first instant after it whose local
    /// time is out of the window. `None` when `now` is not quiet.
    ///
    /// Clock changes: the quiet hours follow the local clock, so a night that loses an hour is
    /// an hour shorter. An end that the clock skips (02:30 on a spring-forward night) is the
    /// instant the clock jumps past it; an end the clock shows twice (01:30 on a fall-back
    /// night) is its first showing, and the repeated hour is quiet again up to its second.
    pub(crate) fn end_if_quiet(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let now = to_timestamp(now);
        let local = self.zone.tz.to_datetime(now);
        let second_of_day = local.time().hour() as u32 * 3600
            + local.time().minute() as u32 * 60
            + local.time().second() as u32;
        if !self.window.contains(second_of_day) {
            return None;
        }
        // The end is today's or tomorrow's, whichever comes first after now.
        let today = local.date();
        [Some(today), today.tomorrow().ok()]
            .into_iter()
            .flatten()
            .filter_map(|date| self.end_on(date, now))
            .min()
            .map(to_offset_date_time)
    }

    /// The first instant after `now` at which the window's end shows on `date`'s local clock.
    fn end_on(&self, date: Date, now: Timestamp) -> Option<Timestamp> {
        let tz = &self.zone.tz;
        let at = date.to_datetime(self.window.end_time());
        let end = match tz.to_ambiguous_timestamp(at).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(at).ok()?,
            // Skipped: the clock jumps from before the end to after it at the transition, the
            // last one before the end read with the offset that held before it.
            AmbiguousOffset::Gap { before, .. } => {
                let past_it = before.to_timestamp(at).ok()?;
                tz.preceding(past_it).next()?.timestamp()
            }
            AmbiguousOffset::Fold { before, after } => {
                let first = before.to_timestamp(at).ok()?;
                if first > now {
                    first
                } else {
                    after.to_timestamp(at).ok()?
                }
            }
        };
        (end > now).then_some(end)
    }
}

/// How long after the end of quiet hours the job `id` goes: a share of `spread` read from its
/// id (FNV-1a), so the jobs held overnight leave over the first minutes rather than at once,
/// and one job always gets the same share.
pub(crate) fn spread_for(id: &str, spread: Duration) -> Duration {
    let millis = spread.as_millis().min(u128::from(u64::MAX)) as u64;
    if millis == 0 {
        return Duration::ZERO;
    }
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Duration::from_millis(hash % millis)
}

fn to_timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_nanosecond(t.unix_timestamp_nanos()).expect("a time the clock can show")
}

fn to_offset_date_time(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(t.as_nanosecond())
        .expect("within a day of a time the clock showed")
}

#[cfg(test)]
mod tests;
