//! Template messages read every errcode as `wechat.*_codes` and `wechat.reason_codes` say.

use crate::kinds::Override;

pub(crate) const OVERRIDES: [Override; 0] = [];
