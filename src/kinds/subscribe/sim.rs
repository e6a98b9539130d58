//! What the simulator's `bizsend` route refuses, beside the checks every route makes.

use serde_json::Value;

pub fn check(body: &Value) -> Option<(i64, String)> {
    crate::kinds::typed::sim_check(body)
}
