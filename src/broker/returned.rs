//! Results that no queue took: each counted under its app and status, and warned about once
//! per app and status, so a consumer that binds only some routing keys (or none yet) learns
//! what it misses without a log line per message.

use crate::metrics::Metrics;

/// Counts the result the broker returned from `wxcourier.results` under `routing_key`
/// (`STATUS.APP`), and warns the first time for its app and status. The publish itself
/// counted: the job is settled as usual.
pub(crate) fn count_returned(metrics: &Metrics, routing_key: &str) {
    let (status, app) = status_and_app(routing_key);
    if metrics.result_unrouted(app, status) == 0 {
        tracing::warn!(
            app,
            status,
            routing_key,
            "no queue takes these results: bind a queue to wxcourier.results for this routing \
             key, or set results.keep_unrouted to keep them; until then they are dropped and \
             counted in wxcourier_outcomes_unrouted_total (not logged again)"
        );
    }
}

/// `STATUS.APP` split at its first dot (an app name has none).
fn status_and_app(routing_key: &str) -> (&str, &str) {
    routing_key.split_once('.').unwrap_or((routing_key, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_app_and_status_is_counted_apart() {
        let m = Metrics::new();
        for key in [
            "failed.shop",
            "failed.shop",
            "delivered.shop",
            "failed.cafe",
        ] {
            count_returned(&m, key);
        }
        let text = m.render();
        for line in [
            "wxcourier_outcomes_unrouted_total{app=\"shop\",status=\"failed\"} 2",
            "wxcourier_outcomes_unrouted_total{app=\"shop\",status=\"delivered\"} 1",
            "wxcourier_outcomes_unrouted_total{app=\"cafe\",status=\"failed\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert_eq!(status_and_app("preference.shop"), ("preference", "shop"));
    }
}
