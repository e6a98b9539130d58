//! `miniprogram_subscribe`: the mini program's subscribe message.

mod errcodes;
mod outcome;
mod request;
mod sim;
mod validate;

use serde_json::{Map, Value};

use super::{DeliveryEvent, FieldError, Kind, Message, Override};
use crate::outcome::SendOutcome;

#[derive(Debug)]
pub(crate) struct MiniprogramSubscribe;

pub(crate) static KIND: MiniprogramSubscribe = MiniprogramSubscribe;

impl Kind for MiniprogramSubscribe {
    fn name(&self) -> &'static str {
        "miniprogram_subscribe"
    }
    fn fields(&self) -> &'static [&'static str] {
        &validate::FIELDS
    }
    fn validate(&self, _id: &str, obj: &mut Map<String, Value>) -> Result<Message, FieldError> {
        Ok(request::message(validate::read(obj)?))
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
