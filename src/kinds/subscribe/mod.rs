//! `subscribe`: the service account's subscription notification (`bizsend`).

mod errcodes;
mod outcome;
mod request;
mod sim;
mod validate;

use serde_json::{Map, Value};

use super::{DeliveryEvent, FieldError, Kind, Message, Override};
use crate::outcome::SendOutcome;

#[derive(Debug)]
pub(crate) struct Subscribe;

pub(crate) static KIND: Subscribe = Subscribe;

impl Kind for Subscribe {
    fn name(&self) -> &'static str {
        "subscribe"
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
