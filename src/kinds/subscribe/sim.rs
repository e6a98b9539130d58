//! What the simulator's `bizsend` route refuses, beside the checks every route makes.

use serde_json::Value;

use crate::kinds::DeliveryEvent;

/// WeChat pushes `subscribe_msg_sent_event` with the result of every accepted
/// subscription notification.
pub(crate) const DELIVERY_EVENT: DeliveryEvent = DeliveryEvent::SubscribeMsgSent;

pub(crate) fn check(body: &Value) -> Option<(i64, String)> {
    crate::kinds::typed::sim_check(body)
}
