//! Setting values that cannot hold a meaningless number: counts above 0 (`NonZero*`), a send
//! rate that is a finite number above 0, durations longer than 0s. Each refuses a bad value
//! while the file and the environment are read, with a rule that follows the key's name
//! ("apps.shop.rate_per_second must be > 0"), so the running parts need no fallback.

use std::fmt;
use std::marker::PhantomData;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::types::Span;

/// A count that must be above 0, read from any whole number and refused when it is 0,
/// negative, or too large for its type.
pub(crate) trait Count: Sized {
    const LIMIT: u64;
    fn from_nonzero(n: NonZeroU64) -> Option<Self>;
}

macro_rules! count {
    ($($t:ty: $max:expr),*) => {$(
        impl Count for $t {
            const LIMIT: u64 = $max;
            fn from_nonzero(n: NonZeroU64) -> Option<Self> {
                (n.get() <= Self::LIMIT).then(|| <$t>::try_from(n).ok()).flatten()
            }
        }
    )*};
}
// A `usize` count sizes a semaphore or a map in this process: kept at `u32::MAX`, far below
// what either refuses (a semaphore panics above `usize::MAX >> 3` permits).
count!(
    NonZeroU16: u16::MAX as u64,
    NonZeroU32: u32::MAX as u64,
    NonZeroUsize: u32::MAX as u64
);

/// `#[serde(deserialize_with = "count")]` for a `NonZero*` field.
pub(crate) fn count<'de, D: Deserializer<'de>, T: Count>(d: D) -> Result<T, D::Error> {
    struct Whole<T>(PhantomData<T>);
    impl<T: Count> Visitor<'_> for Whole<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a whole number from 1 to {}", T::LIMIT)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            let n = NonZeroU64::new(v).ok_or_else(|| E::custom("must be > 0"))?;
            T::from_nonzero(n).ok_or_else(|| E::custom(format!("must be at most {}", T::LIMIT)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom("must be > 0")),
            }
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<T, E> {
            Err(E::custom(format!("must be at most {}", T::LIMIT)))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) if v <= 0 => Err(E::custom("must be > 0")),
                Err(_) => self.visit_u128(v as u128),
            }
        }
    }
    d.deserialize_any(Whole(PhantomData))
}

/// Sends per second: finite, above 0, and at most [`Rate::MAX`] (one send a microsecond), at
/// least [`Rate::MIN`] (one a day), so the interval between sends is a duration a limiter can
/// keep.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Rate(f64);

impl Rate {
    pub const MAX: f64 = 1_000_000.0;
    pub const MIN: f64 = 1.0 / 86_400.0;

    /// `per_second` when it is a rate a limiter can keep; the rule it breaks otherwise.
    pub fn new(per_second: f64) -> Result<Self, String> {
        if per_second.is_nan() || per_second <= 0.0 {
            Err("must be > 0".into())
        } else if per_second > Self::MAX {
            Err(format!("must be at most {}", Self::MAX))
        } else if per_second < Self::MIN {
            Err("must be at least one a day (0.0000116)".into())
        } else {
            Ok(Self(per_second))
        }
    }

    pub fn per_second(self) -> f64 {
        self.0
    }

    /// The time between two sends at this rate (at least 1 µs).
    pub(crate) fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.0)
    }
}

impl TryFrom<f64> for Rate {
    type Error = String;

    fn try_from(per_second: f64) -> Result<Self, String> {
        Self::new(per_second)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Number;
        impl Visitor<'_> for Number {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of sends per second above 0")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Rate, E> {
                Rate::new(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Rate, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rate, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Rate, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Rate, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(Number)
    }
}

/// A duration longer than 0s and at most [`NonZeroSpan::MAX`], for waits and timeouts where
/// 0s means nothing (a timeout that fires at once, a retry with no wait) and a century would
/// overflow a clock. Written like [`Span`]: `"500ms"`, `"30s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NonZeroSpan(Span);

impl NonZeroSpan {
    /// A year: no timeout, first retry or pause means anything longer.
    pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

    pub fn new(duration: Duration) -> Option<Self> {
        (!duration.is_zero() && duration <= Self::MAX).then_some(Self(Span(duration)))
    }

    pub fn get(self) -> Duration {
        self.0.0
    }
}

impl TryFrom<Span> for NonZeroSpan {
    type Error = &'static str;

    fn try_from(span: Span) -> Result<Self, Self::Error> {
        Self::new(span.0).ok_or(if span.0.is_zero() {
            "must be longer than 0s"
        } else {
            "must be at most 365d"
        })
    }
}

impl TryFrom<Duration> for NonZeroSpan {
    type Error = &'static str;

    fn try_from(duration: Duration) -> Result<Self, Self::Error> {
        Span(duration).try_into()
    }
}

impl From<NonZeroSpan> for Span {
    fn from(span: NonZeroSpan) -> Span {
        span.0
    }
}

impl<'de> Deserialize<'de> for NonZeroSpan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Span::deserialize(d)?.try_into().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_refuses_what_no_limiter_can_keep() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e6, 1e-9] {
            assert!(Rate::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Rate::new(50.0).unwrap().interval(),
            Duration::from_millis(20)
        );
        assert_eq!(
            Rate::new(Rate::MAX).unwrap().interval(),
            Duration::from_micros(1)
        );
        assert!(Rate::new(Rate::MIN).is_ok());
    }

    #[test]
    fn a_zero_span_is_not_a_nonzero_span() {
        assert!(NonZeroSpan::new(Duration::ZERO).is_none());
        assert!(NonZeroSpan::new(NonZeroSpan::MAX + Duration::from_nanos(1)).is_none());
        assert!(NonZeroSpan::new(NonZeroSpan::MAX).is_some());
        assert_eq!(
            NonZeroSpan::new(Duration::from_millis(1)).unwrap().get(),
            Duration::from_millis(1)
        );
    }

    use super::super::tests::{MINIMAL, load};

    /// Every key whose type refuses 0: (section or `apps.shop`, field, is it a duration).
    const TYPED: [(&str, &str, bool); 17] = [
        ("amqp", "prefetch", false),
        ("amqp", "consumers_per_connection", false),
        ("amqp", "publish_timeout", true),
        ("wechat", "timeout", true),
        ("wechat", "max_in_flight", false),
        ("retry", "max_attempts", false),
        ("retry", "initial_delay", true),
        ("retry", "pause", true),
        ("retry", "max_age", true),
        ("state", "memory_capacity", false),
        ("state", "idempotency_ttl", true),
        ("http", "header_read_timeout", true),
        ("http", "request_timeout", true),
        ("http", "idle_timeout", true),
        ("http", "max_connections", false),
        ("apps.shop", "rate_per_second", false),
        ("apps.shop", "burst", false),
    ];

    /// 0, negative, NaN, huge, words, empty: as TOML values, and as variables.
    const HOSTILE_NUMBERS: [(&str, &str); 7] = [
        ("0", "0"),
        ("-1", "-1"),
        ("nan", "NaN"),
        ("inf", "inf"),
        ("99999999999", "99999999999999999999"),
        ("\"many\"", "many"),
        ("\"\"", ""),
    ];
    const HOSTILE_DURATIONS: [(&str, &str); 7] = [
        ("\"0s\"", "0s"),
        ("\"-1s\"", "-1s"),
        ("\"NaN\"", "NaN"),
        ("\"400d\"", "99999999999999999999h"),
        ("\"soon\"", "soon"),
        ("\"\"", ""),
        ("5", "5"),
    ];

    #[test]
    fn hostile_values_are_refused_naming_the_key_from_the_file_and_the_environment() {
        for (section, field, duration) in TYPED {
            let key = format!("{section}.{field}");
            let var = format!("WXCOURIER_{}", key.replace('.', "__").to_ascii_uppercase());
            let hostile = if duration {
                HOSTILE_DURATIONS
            } else {
                HOSTILE_NUMBERS
            };
            for (in_file, in_env) in hostile {
                let toml = if section == "apps.shop" {
                    format!("{MINIMAL}{field} = {in_file}\n")
                } else {
                    format!("{MINIMAL}[{section}]\n{field} = {in_file}\n")
                };
                let err = load(&toml, &[]).expect_err(&toml).to_string();
                assert!(err.starts_with(&key), "{key} = {in_file}: {err}");
                let err = load(MINIMAL, &[(&var, in_env)])
                    .expect_err(&var)
                    .to_string();
                assert!(
                    err.starts_with(&key) && err.contains(&var),
                    "{var}={in_env:?}: {err}"
                );
            }
        }
    }

    #[test]
    fn zero_is_refused_with_the_rule_after_the_key() {
        for (section, field, duration) in TYPED {
            let zero = if duration { "\"0s\"" } else { "0" };
            let toml = if section == "apps.shop" {
                format!("{MINIMAL}{field} = {zero}\n")
            } else {
                format!("{MINIMAL}[{section}]\n{field} = {zero}\n")
            };
            let rule = if duration {
                "must be longer than 0s"
            } else {
                "must be > 0"
            };
            assert_eq!(
                load(&toml, &[]).unwrap_err().to_string(),
                format!("{section}.{field} {rule}")
            );
        }
    }

    #[test]
    fn the_largest_values_each_type_holds_are_accepted() {
        let s = load(
            &format!(
                "[amqp]\nprefetch = 65535\n[http]\nmax_connections = 4294967295\n\
                 [retry]\nmax_age = \"365d\"\n{MINIMAL}rate_per_second = 1000000\n"
            ),
            &[],
        )
        .unwrap();
        assert_eq!(s.amqp.prefetch.get(), u16::MAX);
        assert_eq!(s.http.max_connections.get(), u32::MAX as usize);
        assert_eq!(s.retry.max_age.get(), NonZeroSpan::MAX);
        assert_eq!(s.apps["shop"].rate_per_second.per_second(), Rate::MAX);
        let s = load(MINIMAL, &[("WXCOURIER_APPS__SHOP__RATE_PER_SECOND", "0.5")]).unwrap();
        assert_eq!(
            s.apps["shop"].rate_per_second.interval(),
            Duration::from_secs(2)
        );
    }
}
