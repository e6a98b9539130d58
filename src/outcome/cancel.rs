//! The answer to a cancel (CONTRACT, *Delivery policy*), on `wxcourier.results` with routing
//! key `cancel.APP`: `{"kind": "cancel", "app", "id", "status"}`, and `error` when refused.
//! The cancelled job's own outcome, if it ends `cancelled`, is published apart, as every
//! outcome is.

use serde::Serialize;

use super::routing::routing_key;

/// The STATUS of a cancel answer's routing key, `cancel.APP`.
pub(crate) const ANSWER_STATUS: &str = "cancel";

/// What became of a cancel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CancelStatus {
    /// Kept: the job is not sent, and ends `cancelled` (now, or when it comes).
    Accepted,
    /// The job was sent already; it gets no second outcome.
    TooLate,
    /// The cancel could not be read or decided; its original is in `wxcourier.dead`.
    Rejected,
}

/// The answer to one cancel.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct CancelAnswer {
    kind: &'static str,
    pub(crate) app: String,
    /// The job id the cancel named; null when a refused cancel named none that is valid.
    pub(crate) id: Option<String>,
    pub(crate) status: CancelStatus,
    /// Why it was refused, as its dead copy says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl CancelAnswer {
    pub(crate) fn new(app: &str, id: Option<String>, status: CancelStatus) -> Self {
        Self {
            kind: "cancel",
            app: app.to_owned(),
            id,
            status,
            error: None,
        }
    }

    /// `cancel.APP`.
    pub(crate) fn routing_key(&self) -> String {
        routing_key(ANSWER_STATUS, &self.app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_reads_as_the_contract_has_it() {
        let a = CancelAnswer::new("shop", Some("o-1".into()), CancelStatus::TooLate);
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"kind": "cancel", "app": "shop", "id": "o-1", "status": "too_late"})
        );
        assert_eq!(a.routing_key(), "cancel.shop");
        let mut refused = CancelAnswer::new("shop", None, CancelStatus::Rejected);
        refused.error = Some("id: is required".into());
        assert_eq!(
            serde_json::to_value(&refused).unwrap(),
            serde_json::json!({"kind": "cancel", "app": "shop", "id": null, "status": "rejected", "error": "id: is required"})
        );
        let ok = CancelAnswer::new("shop", Some("o-2".into()), CancelStatus::Accepted);
        assert_eq!(serde_json::to_value(&ok).unwrap()["status"], "accepted");
    }
}
