//! What the simulator's template route refuses, beside the checks every route makes.

use serde_json::Value;

use crate::kinds::DeliveryEvent;

/// WeChat pushes `TEMPLATESENDJOBFINISH` for every accepted template message.
pub(crate) const DELIVERY_EVENT: DeliveryEvent = DeliveryEvent::TemplateSendJobFinish;

pub(crate) fn check(body: &Value) -> Option<(i64, String)> {
    let template_id = body["template_id"].as_str().unwrap_or("");
    if template_id.is_empty() || template_id.len() > 128 {
        return Some((40037, "invalid template_id".into()));
    }
    if body["data"].as_object().is_none_or(|d| d.is_empty()) {
        return Some((47003, "argument invalid! data is empty".into()));
    }
    None
}
