//! WeChat's `errcode` → what the worker does with it (CONTRACT §4), decided in this one place.

use std::collections::HashSet;

use crate::types::Class;

/// The configured code sets (`wechat.*_codes`), applied to an errcode.
#[derive(Clone, Debug)]
pub struct Classifier {
    transient: HashSet<i64>,
    quota: HashSet<i64>,
    token: HashSet<i64>,
}

impl Classifier {
    pub(crate) fn new(transient: &[i64], quota: &[i64], token: &[i64]) -> Self {
        Self {
            transient: transient.iter().copied().collect(),
            quota: quota.iter().copied().collect(),
            token: token.iter().copied().collect(),
        }
    }

    /// The class of an `errcode` from an HTTP 200 answer. Transport failures (5xx, timeouts,
    /// unreadable bodies) are [`Class::Transient`] and never reach this function.
    pub fn classify(&self, errcode: i64) -> Class {
        if errcode == 0 {
            Class::Ok
        } else if self.token.contains(&errcode) {
            Class::Token
        } else if self.quota.contains(&errcode) {
            Class::Quota
        } else if self.transient.contains(&errcode) {
            Class::Transient
        } else {
            Class::Permanent
        }
    }
}

/// A short description of well-known codes, for the `error` field of a failed outcome.
pub(crate) fn describe(errcode: i64) -> &'static str {
    match errcode {
        -1 => "WeChat system busy",
        40001 => "access token invalid",
        40003 => "invalid OpenID",
        40013 => "invalid AppID",
        40014 => "invalid access token",
        40036 => "invalid template_id length",
        40037 => "invalid template_id",
        40125 => "invalid AppSecret",
        40164 => "caller IP not in the account's IP whitelist",
        41006 => "access token expired",
        42001 => "access token expired",
        43004 => "the user does not follow the account",
        43019 => "the user is on the account's blacklist",
        43101 => "the user refused this message",
        45009 => "API call limit reached (daily quota)",
        45011 => "API call too frequent",
        45168 => "the content has words WeChat does not allow",
        47003 => "argument invalid",
        48001 => "API not authorised for this account",
        48004 => "API banned for this account",
        50002 => "the user is limited",
        61007 => "API not granted to the platform by this account",
        61023 => "the account's authorisation of the platform is no longer valid",
        _ => "refused by WeChat",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_QUOTA, DEFAULT_TOKEN, DEFAULT_TRANSIENT};

    fn contract() -> Classifier {
        Classifier::new(&DEFAULT_TRANSIENT, &DEFAULT_QUOTA, &DEFAULT_TOKEN)
    }

    #[test]
    fn the_default_table_matches_the_contract() {
        let c = contract();
        let table: &[(i64, Class)] = &[
            (0, Class::Ok),
            (-1, Class::Transient),
            (45011, Class::Transient),
            (45009, Class::Quota),
            (40001, Class::Token),
            (41006, Class::Token),
            (40014, Class::Token),
            (42001, Class::Token),
            (40003, Class::Permanent),
            (40037, Class::Permanent),
            (43004, Class::Permanent),
            (47003, Class::Permanent),
            (40164, Class::Permanent),
            (99999, Class::Permanent),
        ];
        for &(code, class) in table {
            assert_eq!(c.classify(code), class, "errcode {code}");
        }
    }

    #[test]
    fn code_sets_come_from_config() {
        let c = Classifier::new(&[40003], &[], &[40001]);
        assert_eq!(c.classify(40003), Class::Transient);
        assert_eq!(c.classify(45009), Class::Permanent);
        assert_eq!(c.classify(-1), Class::Permanent);
        assert_eq!(c.classify(0), Class::Ok);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn every_errcode_has_exactly_the_contract_class(code in any::<i64>()) {
                let expected = match code {
                    0 => Class::Ok,
                    40001 | 41006 | 40014 | 42001 => Class::Token,
                    45009 => Class::Quota,
                    -1 | 45011 => Class::Transient,
                    _ => Class::Permanent,
                };
                prop_assert_eq!(contract().classify(code), expected);
            }
        }
    }
}
