//! The routing key of everything on `wxcourier.results`: the outcomes, the reports and the
//! cancel answers (`outcome::cancel`) alike.

/// `STATUS.APP`, the routing key of every message on `wxcourier.results`.
pub(crate) fn routing_key(status: &str, app: &str) -> String {
    format!("{status}.{app}")
}
