//! What the simulator's subscribe-send route refuses, beside the checks every route makes.

use serde_json::Value;

use crate::kinds::DeliveryEvent;

/// WeChat pushes `subscribe_msg_sent_event` with the result of every accepted
/// mini-program subscribe message.
pub(crate) const DELIVERY_EVENT: DeliveryEvent = DeliveryEvent::SubscribeMsgSent;

pub(crate) fn check(body: &Value) -> Option<(i64, String)> {
    if let Some(state) = body.get("miniprogram_state")
        && !matches!(state.as_str(), Some("developer" | "trial" | "formal"))
    {
        return Some((47003, "argument invalid! miniprogram_state invalid".into()));
    }
    crate::kinds::typed::sim_check(body)
}
