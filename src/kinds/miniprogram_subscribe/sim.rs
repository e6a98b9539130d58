//! What the simulator's subscribe-send route refuses, beside the checks every route makes.

use serde_json::Value;

pub fn check(body: &Value) -> Option<(i64, String)> {
    if let Some(state) = body.get("miniprogram_state")
        && !matches!(state.as_str(), Some("developer" | "trial" | "formal"))
    {
        return Some((47003, "argument invalid! miniprogram_state invalid".into()));
    }
    crate::kinds::typed::sim_check(body)
}
