//! Message kinds: what differs between a template message, a service-account subscription
//! notification and a mini-program subscribe message. Each kind is a folder with the same file
//! roles — `validate.rs` (its job fields), `request.rs` (WeChat endpoint and body),
//! `errcodes.rs` (its errcode overrides), `outcome.rs` (its outcome fields), `sim.rs` (what
//! the simulator checks on its route) — tied together in its `mod.rs`. The envelope every
//! kind shares (`id`, `meta`, `not_after`, `kind`) is read in [`crate::job`].
//!
//! A new kind is a new folder plus its name in the `register!` line below.

pub(crate) mod fields;
pub(crate) mod typed;

use serde_json::{Map, Value};

use crate::outcome::{FailReason, SendOutcome};
use crate::types::Class;

/// A field of a job and the rule it broke.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub(crate) field: String,
    pub(crate) rule: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// A kind's message, validated and ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub(crate) touser: String,
    pub(crate) template_id: String,
    /// The JSON body of the kind's WeChat endpoint.
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

/// One message kind.
pub trait Kind: Sync + std::fmt::Debug {
    /// The job's `kind`.
    fn name(&self) -> &'static str;
    /// Job fields the kind reads, beside the envelope's.
    fn fields(&self) -> &'static [&'static str];
    /// Reads and checks the kind's fields (removing them from `obj`) and builds the WeChat
    /// body; `id` is the job id.
    fn validate(&self, id: &str, obj: &mut Map<String, Value>) -> Result<Message, FieldError>;
    /// The path of the WeChat endpoint, `/cgi-bin/…`.
    fn endpoint(&self) -> &'static str;
    /// errcodes this kind reads differently.
    fn overrides(&self) -> &'static [Override];
    /// Adds the kind's own fields to an outcome of one of its jobs.
    fn outcome_fields(&self, outcome: &mut SendOutcome);
    /// The simulator's answer to a body the kind's endpoint would refuse: errcode and errmsg.
    fn sim_check(&self, body: &Value) -> Option<(i64, String)>;
    /// The event WeChat pushes with the final result of an accepted send of this kind (the
    /// simulator does the same).
    fn delivery_event(&self) -> DeliveryEvent;
}

/// How WeChat reports what became of a message it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// `TEMPLATESENDJOBFINISH`: the MsgID and a `Status` text.
    TemplateSendJobFinish,
    /// `subscribe_msg_sent_event`: a `<List>` item with the MsgID, `ErrorCode` and `ErrorStatus`.
    SubscribeMsgSent,
}

impl dyn Kind {
    /// This kind's override of `code`, if any.
    pub(crate) fn override_of(&self, code: i64) -> Option<&'static Override> {
        self.overrides().iter().find(|o| o.code == code)
    }
}

macro_rules! register {
    ($($kind:ident),+ $(,)?) => {
        $(pub(crate) mod $kind;)+
        /// Every kind, the default (`template`) first.
        pub(crate) static KINDS: &[&dyn Kind] = &[$(&$kind::KIND),+];
    };
}

register!(template, subscribe, miniprogram_subscribe);

/// The kind of a job that names none.
pub(crate) fn default_kind() -> &'static dyn Kind {
    KINDS[0]
}

/// The kind called `name`.
pub(crate) fn by_name(name: &str) -> Option<&'static dyn Kind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// Every kind's name, for messages: `template, subscribe, …`.
pub(crate) fn names() -> String {
    KINDS
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_template_is_the_default() {
        assert_eq!(default_kind().name(), "template");
        let mut names: Vec<_> = KINDS.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        let mut endpoints: Vec<_> = KINDS.iter().map(|k| k.endpoint()).collect();
        endpoints.sort();
        endpoints.dedup();
        assert_eq!(endpoints.len(), KINDS.len(), "one endpoint per kind");
        assert!(by_name("nope").is_none());
    }
}
