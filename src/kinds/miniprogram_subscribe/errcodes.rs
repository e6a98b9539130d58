//! errcodes the mini program's subscribe send answers that mean something of their own.

use crate::kinds::Override;
use crate::outcome::FailReason;

pub(crate) const OVERRIDES: [Override; 1] = [Override {
    code: 41030,
    class: None,
    reason: Some(FailReason::ContentRejected),
    describe: "page is not a published page of the mini program",
}];
