//! errcodes `bizsend` answers that mean something of their own.

use crate::kinds::Override;
use crate::outcome::FailReason;
use crate::types::Class;

pub(crate) const OVERRIDES: [Override; 3] = [
    // Another message to the same user was being sent at that moment: try again later.
    Override {
        code: 43108,
        class: Some(Class::Transient),
        reason: None,
        describe: "another message to this user was being sent at the same time",
    },
    Override {
        code: 43107,
        class: None,
        reason: Some(FailReason::ConfigError),
        describe: "the account may not send subscription notifications",
    },
    Override {
        code: 41030,
        class: None,
        reason: Some(FailReason::ContentRejected),
        describe: "page is not a page of the mini program",
    },
];
