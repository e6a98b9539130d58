//! Message kinds (CONTRACT §1), a closed set: [`Kind`] names them, and each has one file that
//! holds what is its own — the job fields it reads and checks, the body and endpoint of its
//! WeChat request, the errcodes it reads differently. Every question about a kind is a `match`
//! on the enum below, so adding a kind is one file plus one enum arm, and the compiler lists
//! every match to extend. The envelope every kind shares (`id`, `meta`, `not_after`,
//! `not_before`, `urgent`, `kind`) is read in `crate::job`.

pub(crate) mod display;
pub(crate) mod fields;
mod miniprogram_subscribe;
mod request;
mod subscribe;
mod template;
pub(crate) mod typed;

pub use fields::FieldError;
pub use request::{Override, ReadOptions};
pub(crate) use request::{Request, Warnings};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::outcome::SendOutcome;

/// A message kind: which WeChat API a job is sent through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The service account's template message (`template`), the kind of a job that names none.
    #[default]
    Template,
    /// The service account's subscription notification (`subscribe`, `bizsend`).
    Subscribe,
    /// The mini program's subscribe message (`miniprogram_subscribe`).
    MiniprogramSubscribe,
}

impl Kind {
    /// Every kind, the default first.
    pub const ALL: [Kind; 3] = [Kind::Template, Kind::Subscribe, Kind::MiniprogramSubscribe];

    /// The job's `kind` and the config's `apps.NAME.kinds` entry: the one place a kind's name
    /// is spelled ([`FromStr`], [`fmt::Display`] and serde all read it here).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Template => "template",
            Kind::Subscribe => "subscribe",
            Kind::MiniprogramSubscribe => "miniprogram_subscribe",
        }
    }

    /// Every kind's name, for messages: `template, subscribe, …`.
    pub(crate) fn list() -> String {
        Kind::ALL.map(Kind::name).join(", ")
    }

    /// Job fields the kind reads, beside the envelope's.
    pub(crate) fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Template => &template::FIELDS,
            Kind::Subscribe => &subscribe::FIELDS,
            Kind::MiniprogramSubscribe => &miniprogram_subscribe::FIELDS,
        }
    }

    /// Reads and checks the kind's fields (removing them from `obj`) as the app's `options`
    /// ask, and builds the WeChat request; `id` is the job id.
    pub(crate) fn read(
        self,
        id: &str,
        obj: &mut Map<String, Value>,
        options: ReadOptions,
    ) -> Result<Request, FieldError> {
        match self {
            Kind::Template => template::read(id, obj, options),
            Kind::Subscribe => subscribe::read(obj, options),
            Kind::MiniprogramSubscribe => miniprogram_subscribe::read(obj, options),
        }
    }

    /// The path of the kind's WeChat endpoint, `/cgi-bin/…`.
    pub(crate) fn endpoint(self) -> &'static str {
        match self {
            Kind::Template => template::ENDPOINT,
            Kind::Subscribe => subscribe::ENDPOINT,
            Kind::MiniprogramSubscribe => miniprogram_subscribe::ENDPOINT,
        }
    }

    /// errcodes this kind reads differently from `wechat.*_codes` and `wechat.reason_codes`.
    pub(crate) fn overrides(self) -> &'static [Override] {
        match self {
            Kind::Template => &template::OVERRIDES,
            Kind::Subscribe => &subscribe::OVERRIDES,
            Kind::MiniprogramSubscribe => &miniprogram_subscribe::OVERRIDES,
        }
    }

    /// This kind's override of `code`, if any.
    pub(crate) fn override_of(self, code: i64) -> Option<&'static Override> {
        self.overrides().iter().find(|o| o.code == code)
    }

    /// Adds the kind's own fields to an outcome of one of its jobs: the subscribe kinds name
    /// themselves in `message_kind`; a template outcome has exactly the contract's fields.
    pub(crate) fn outcome_fields(self, outcome: &mut SendOutcome) {
        match self {
            Kind::Template => {}
            Kind::Subscribe | Kind::MiniprogramSubscribe => {
                outcome.message_kind = Some(self.name().into());
            }
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no kind's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of {}", Kind::list())]
pub struct UnknownKind;

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(name: &str) -> Result<Self, UnknownKind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or(UnknownKind)
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "names {:?}, which is not a kind: use {}",
                crate::text::bounded(&name, 64),
                Kind::list()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_reads_back_as_its_kind_and_template_is_the_default() {
        assert_eq!(Kind::default(), Kind::Template);
        assert_eq!(Kind::ALL[0], Kind::default());
        for kind in Kind::ALL {
            assert_eq!(kind.name().parse(), Ok(kind));
            assert_eq!(kind.to_string(), kind.name());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), kind);
        }
        assert_eq!("sms".parse::<Kind>(), Err(UnknownKind));
        assert_eq!("Template".parse::<Kind>(), Err(UnknownKind));
        let err = serde_json::from_str::<Kind>("\"sms\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"sms\"") && err.contains(&Kind::list()),
            "{err}"
        );
    }

    #[test]
    fn every_kind_has_its_own_endpoint() {
        let mut endpoints: Vec<_> = Kind::ALL.iter().map(|k| k.endpoint()).collect();
        endpoints.sort();
        endpoints.dedup();
        assert_eq!(endpoints.len(), Kind::ALL.len());
    }
}
