//! `template`: the service account's template message (the default kind).

mod errcodes;
mod outcome;
mod request;
mod sim;
mod validate;

use serde_json::{Map, Value};

use super::{DeliveryEvent, FieldError, Kind, Message, Override};
use crate::outcome::SendOutcome;

#[derive(Debug)]
pub(crate) struct Template;

pub(crate) static KIND: Template = Template;

impl Kind for Template {
    fn name(&self) -> &'static str {
        "template"
    }
    fn fields(&self) -> &'static [&'static str] {
        &validate::FIELDS
    }
    fn validate(&self, id: &str, obj: &mut Map<String, Value>) -> Result<Message, FieldError> {
        let fields = validate::read(obj)?;
        Ok(request::message(fields, id))
    }
    fn endpoint(&self) -> &'static str {
        request::ENDPOINT
    }
    fn overrides(&self) -> &'static [Override] {
        &errcodes::OVERRIDES
    }
    fn outcome_fields(&self, outcome: &mut SendOutcome) {
        outcome::fill(outcome);
    }
    fn sim_check(&self, body: &Value) -> Option<(i64, String)> {
        sim::check(body)
    }
    fn delivery_event(&self) -> DeliveryEvent {
        sim::DELIVERY_EVENT
    }
}
