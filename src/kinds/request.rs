//! What a kind gives the pipeline: the WeChat request it builds from a valid job, and the
//! errcodes it reads differently from the configured code sets.

use crate::outcome::FailReason;
use crate::types::Class;

/// The WeChat request a kind builds from a valid job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    pub(crate) touser: String,
    pub(crate) template_id: String,
    /// The JSON body of the kind's endpoint.
    pub(crate) body: Vec<u8>,
}

/// How one kind reads an errcode differently from `wechat.*_codes` and
/// `wechat.reason_codes`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Override {
    pub(crate) code: i64,
    /// The class to use instead of the configured one, if any.
    pub(crate) class: Option<Class>,
    /// The `reason` of a failed outcome, if any.
    pub(crate) reason: Option<FailReason>,
    /// Words for the `error` field of a failed outcome.
    pub(crate) describe: &'static str,
}
